"""Fused IF/LIF scan over T as Triton kernels (CUDA), the GPU path of :func:`leaklib.neurons.lif_multistep`.

The currents ``[T, ...]`` are viewed as a flat ``[T, N]`` array; each Triton program owns a block
of ``N`` neurons, keeps their membrane in registers and walks the ``T`` steps (Algorithm 2)::

    u = v + I[t];  o = u > v_th;  v = 0 if o else u * beta

writing the spikes in the currents' dtype (the layer output) and, when a gradient is wanted, as
``uint8`` (saved for the backward, one byte per neuron and step). With the leak correction on, the
same pass also accumulates each neuron's spike count and leaky spike trace (``trace <- beta*trace
+ o``); :func:`leaklib.neurons.leak_correction` turns them into the per-neuron factor in torch.

The backward kernel walks the steps in reverse with the generalised Eq. 5 surrogate of
:mod:`leaklib.neurons`, ``dL/dI[t] = scale*corr * dL/do[t]`` where the neuron fired, else
``grad_beta * dL/dI[t+1]`` (``grad_beta`` = beta for the exact leak gradient, 1 for the detached
one; ``corr`` = 1 without the correction): one read of the gradient and of the spikes, one write,
no ``[T, N]`` temporaries. Floating-point contraction (FMA) is disabled so that every product and
sum is rounded as in the per-step torch reference: spikes, counts and traces are bit-identical for
float32/float64 input, and the gradient equals the reverse loop's. Half-precision currents are
computed in float32 (spikes and gradients are returned in the input dtype).

Safety (:func:`ready`): before its first use in a process the scan runs :func:`self_check` on the
tensor's (device, dtype) -- a small random input through the kernels and through the PyTorch
reference (torch forward, :func:`~leaklib.neurons.leak_correction`, the closed-form backward).
If the kernels fail to compile or launch, or disagree, one ``RuntimeWarning`` names the reason and
``LEAKLIB_TRITON=0``, and the PyTorch scan is used for the rest of the process. Kernels launch
under the tensor's CUDA device (``cuda:1`` works whatever the current device is).

The kernels also run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before
``triton`` is imported); the tests use that to check them on machines without a GPU.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings

import torch

__all__ = ["is_available", "ready", "self_check", "disabled_reason", "TritonLIFScan", "lif_scan"]

try:  # pragma: no cover - depends on the installation
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 -- no triton (e.g. CPU-only or macOS wheels): the torch scan is used
    triton = None
    tl = None

BLOCK = 512
_HALF = (torch.float16, torch.bfloat16)
_FLOATS = (torch.float32, torch.float64) + _HALF


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def is_available(tensor: torch.Tensor | None = None) -> bool:
    """Triton importable and able to run on ``tensor``'s device (CUDA, or any device under the interpreter).

    ``LEAKLIB_TRITON=0`` turns the Triton path off (the torch scan is used instead). This does not
    run the self-check; :func:`ready` does.
    """
    if triton is None or os.environ.get("LEAKLIB_TRITON", "1") == "0":
        return False
    if tensor is None:
        return torch.cuda.is_available() or _interpreting()
    return tensor.is_cuda or _interpreting()


if triton is not None:

    @triton.jit
    def _lif_forward_kernel(cur_ptr, out_ptr, spk_ptr, count_ptr, trace_ptr, params_ptr, T, N,
                            HALF: tl.constexpr, STORE_SPIKES: tl.constexpr, WITH_TRACE: tl.constexpr,
                            BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < N
        beta = tl.load(params_ptr)
        v_th = tl.load(params_ptr + 1)
        x0 = tl.load(cur_ptr + offs, mask=mask, other=0.0)
        if HALF:
            x0 = x0.to(tl.float32)
        v = tl.zeros_like(x0)
        count = tl.zeros_like(x0)
        trace = tl.zeros_like(x0)
        # walk the rows by pointer increments (64-bit addresses, no int32 overflow of t * N)
        cur = cur_ptr + offs
        out = out_ptr + offs
        spk = spk_ptr + offs
        for _ in range(T):
            x = tl.load(cur, mask=mask, other=0.0)
            if HALF:
                x = x.to(tl.float32)
            u = v + x
            fired = u > v_th
            o = fired.to(x0.dtype)  # 0/1 in the compute dtype (bool -> bf16 directly breaks the interpreter)
            tl.store(out, o.to(out_ptr.dtype.element_ty), mask=mask)
            if STORE_SPIKES:
                tl.store(spk, fired.to(tl.uint8), mask=mask)
                spk += N
            v = tl.where(fired, 0.0, u * beta)
            if WITH_TRACE:
                trace = trace * beta + o  # two roundings (no FMA), as trace.mul_(beta).add_(o)
                count = count + o
            cur += N
            out += N
        if WITH_TRACE:
            tl.store(count_ptr + offs, count, mask=mask)
            tl.store(trace_ptr + offs, trace, mask=mask)

    @triton.jit
    def _lif_backward_kernel(grad_ptr, spk_ptr, out_ptr, corr_ptr, params_ptr, T, N, LAST,
                             HALF: tl.constexpr, HAS_CORR: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < N
        scale = tl.load(params_ptr + 2)
        grad_beta = tl.load(params_ptr + 3)
        g0 = tl.load(grad_ptr + offs, mask=mask, other=0.0)
        if HALF:
            g0 = g0.to(tl.float32)
        carry = tl.zeros_like(g0)
        if HAS_CORR:
            factor = tl.load(corr_ptr + offs, mask=mask, other=0.0) * scale  # as corr * scale in torch
        else:
            factor = carry + scale
        # start at the last row (LAST = (T-1)*N, passed from Python as a 64-bit-safe int), walk back
        gp = grad_ptr + LAST + offs
        sp = spk_ptr + LAST + offs
        op = out_ptr + LAST + offs
        for _ in range(T):
            g = tl.load(gp, mask=mask, other=0.0)
            if HALF:
                g = g.to(tl.float32)
            fired = tl.load(sp, mask=mask, other=0) != 0
            carry = tl.where(fired, g * factor, carry * grad_beta)
            tl.store(op, carry.to(out_ptr.dtype.element_ty), mask=mask)
            gp -= N
            sp -= N
            op -= N


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _params(beta: float, v_th: float, scale: float, grad_beta: float, like: torch.Tensor) -> torch.Tensor:
    """``[beta, v_th, scale, grad_beta]`` rounded to the compute dtype, as torch rounds a Python scalar."""
    return torch.tensor([beta, v_th, scale, grad_beta], dtype=_compute_dtype(like.dtype), device=like.device)


def _launch_options() -> dict:
    # keep u*beta and v+x as separately rounded operations (no FMA), as in the torch reference
    return {} if _interpreting() else {"enable_fp_fusion": False}


def _device_guard(tensor: torch.Tensor):
    """Make ``tensor``'s CUDA device current while launching (Triton launches on the current device)."""
    if tensor.device.type == "cuda":
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()


def _launch_forward(x: torch.Tensor, out: torch.Tensor, spikes: torch.Tensor, count: torch.Tensor,
                    trace: torch.Tensor, params: torch.Tensor, store_spikes: bool, with_trace: bool) -> None:
    n = x[0].numel()
    if n == 0:
        return
    with _device_guard(x):
        _lif_forward_kernel[(triton.cdiv(n, BLOCK),)](
            x, out, spikes, count, trace, params, x.shape[0], n, HALF=x.dtype in _HALF, STORE_SPIKES=store_spikes,
            WITH_TRACE=with_trace, BLOCK_SIZE=BLOCK, **_launch_options())


def _launch_backward(g: torch.Tensor, spikes: torch.Tensor, grad: torch.Tensor, corr: torch.Tensor,
                     params: torch.Tensor, has_corr: bool) -> None:
    num_steps, n = spikes.shape[0], spikes[0].numel()
    if n == 0:
        return
    with _device_guard(g):
        _lif_backward_kernel[(triton.cdiv(n, BLOCK),)](
            g, spikes, grad, corr, params, num_steps, n, (num_steps - 1) * n, HALF=g.dtype in _HALF,
            HAS_CORR=has_corr, BLOCK_SIZE=BLOCK, **_launch_options())


class TritonLIFScan(torch.autograd.Function):
    """Forward scan and BPTT backward of Algorithm 2 / Eq. 5 (generalised, see :mod:`leaklib.neurons`) as two Triton kernels."""

    @staticmethod
    def forward(ctx, currents: torch.Tensor, beta: float, v_th: float, scale: float, grad_beta: float,  # type: ignore[override]
                correction: bool, mask: torch.Tensor | None, need_grad: bool) -> torch.Tensor:
        if currents.dtype not in _FLOATS:
            raise TypeError(f"Triton LIF scan needs floating-point currents, got {currents.dtype}")
        x = currents.contiguous()
        compute = _compute_dtype(x.dtype)
        with_trace = correction and need_grad
        out = torch.empty_like(x)
        spikes = torch.empty(x.shape if need_grad else (1,), dtype=torch.uint8, device=x.device)
        stats = torch.empty((2, x[0].numel()) if with_trace else (2, 1), dtype=compute, device=x.device)
        params = _params(beta, v_th, scale, grad_beta, x)
        _launch_forward(x, out, spikes, stats[0], stats[1], params, need_grad, with_trace)
        corr = None
        if with_trace:
            # [21]'s correction from the count and trace, in torch, with the dropout mask as LIFScan does
            count, trace = stats[0].view(x.shape[1:]), stats[1].view(x.shape[1:])
            from .neurons import leak_correction

            corr = leak_correction(trace, count, beta, mask).to(compute).reshape(-1).contiguous()
        ctx.save_for_backward(spikes, params, corr)
        ctx.need_grad = need_grad
        return out

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):  # type: ignore[override]
        spikes, params, corr = ctx.saved_tensors
        if not ctx.need_grad:  # pragma: no cover - autograd does not call backward then
            raise RuntimeError("the Triton LIF scan ran without gradient tracking")
        g = grad_spikes.contiguous()
        grad = torch.empty_like(g)
        _launch_backward(g, spikes, grad, params if corr is None else corr, params, corr is not None)
        return grad, None, None, None, None, None, None, None


def lif_scan(currents: torch.Tensor, beta: float, v_th: float = 1.0, eps: float = 0.0, *,
             grad_scale: float | None = None, grad_beta: float | None = None, correction: bool = False,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spikes ``[T, ...]`` of the IF/LIF scan (Algorithm 2) with the Eq. 5 BPTT backward, via Triton.

    ``grad_scale`` replaces ``1/(v_th + eps)``; ``grad_beta`` is the backward decay (default
    ``beta``, the exact gradient; 1 for [21]'s detached leak); ``correction`` applies [21]'s leak
    correction computed from the spikes, with the dropout ``mask`` ``[...]`` as
    :class:`leaklib.neurons.LIFScan` does. No self-check here: :func:`leaklib.neurons.lif_multistep`
    calls :func:`ready` first.
    """
    if triton is None:
        raise RuntimeError("triton is not installed; use leaklib.neurons.lif_multistep")
    if currents.dim() < 1 or currents.shape[0] < 1:
        raise ValueError(f"currents must have shape [T, ...] with T >= 1, got {tuple(currents.shape)}")
    scale = 1.0 / (float(v_th) + float(eps)) if grad_scale is None else float(grad_scale)
    grad_beta = float(beta) if grad_beta is None else float(grad_beta)
    need_grad = torch.is_grad_enabled() and currents.requires_grad
    if mask is not None:
        mask = mask.detach()
    return TritonLIFScan.apply(currents, float(beta), float(v_th), scale, grad_beta, bool(correction), mask,
                               need_grad)


# --- self-check and fallback -----------------------------------------------------------------------

#: (device, dtype) pairs whose self-check passed in this process.
_CHECKED: set[tuple[str, torch.dtype]] = set()
#: Why the Triton path was turned off in this process (None while it is usable).
_DISABLED: str | None = None

#: The semantics the self-check exercises, as (beta, v_th, scale, grad_beta, correction): [21]'s
#: default (detached leak, leak correction with a dropout mask), the exact leak gradient, and the
#: IF pooling neurons (threshold 0.75, surrogate factor 1).
_CHECK_CASES = ((0.9, 1.0, 1.0, 1.0, True), (0.8, 1.0, 1.0 / 1.2, 0.8, False), (1.0, 0.75, 1.0, 1.0, False))
#: Two layer sizes: N = 600 (not a multiple of 16) and N = 640 (a multiple of 16, as real layers are;
#: Triton compiles another variant for it), both more than one block with the last one partly masked.
_CHECK_SHAPES = ((13, 2, 300), (13, 4, 160))


def _tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-10, torch.float32: 1e-5}.get(dtype, 2e-2)


def _describe(exc: BaseException) -> str:
    lines = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {lines[:300]}".rstrip(": ")


def self_check(device: torch.device | str, dtype: torch.dtype) -> tuple[bool, str]:
    """Run the kernels on small random inputs on ``device``/``dtype`` against the PyTorch reference.

    The reference is the torch forward scan, :func:`~leaklib.neurons.leak_correction` and the
    closed-form backward (:func:`~leaklib.neurons._lif_scan_grad_closed_form`), computed in the
    kernels' compute dtype (float32 for half precision), for [21]'s default semantics, the exact
    leak gradient and the pooling neurons, with and without gradient tracking. Spikes must be
    equal and gradients within a dtype tolerance. Returns ``(ok, reason)``; a compile or launch
    error is caught and returned as the reason.
    """
    gen = torch.Generator().manual_seed(20200617)
    compute = _compute_dtype(dtype)
    try:
        with torch.inference_mode(False), torch.enable_grad():  # callers may be evaluating
            return _compare(device, dtype, compute, gen)
    except Exception as exc:  # noqa: BLE001 -- any compile/launch failure means: use the torch scan
        return False, _describe(exc)


def _compare(device: torch.device | str, dtype: torch.dtype, compute: torch.dtype,
             gen: torch.Generator) -> tuple[bool, str]:
    from .neurons import _lif_scan_grad_closed_form, _scan_forward_torch, leak_correction

    for shape in _CHECK_SHAPES:
        currents = (torch.randn(shape, generator=gen, dtype=torch.float64) * 0.6 + 0.3).to(device, dtype)
        grad_out = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
        mask = ((torch.rand(shape[1:], generator=gen) < 0.8).to(torch.float64) / 0.8).to(device, dtype)
        for beta, v_th, scale, grad_beta, correction in _CHECK_CASES:
            what = f"N={math.prod(shape[1:])}, beta={beta}, grad_beta={grad_beta}, correction={correction}"
            x = currents.to(compute)
            ref, trace = _scan_forward_torch(x, beta, v_th, correction)
            corr = leak_correction(trace, ref.sum(0), beta, mask) if correction else None
            ref_grad = _lif_scan_grad_closed_form(ref.bool(), grad_out.to(compute), grad_beta, scale, corr)
            ref = ref.to(dtype)
            xt = currents.detach().clone().requires_grad_(True)
            out = lif_scan(xt, beta, v_th, grad_scale=scale, grad_beta=grad_beta, correction=correction, mask=mask)
            (grad,) = torch.autograd.grad(out, xt, grad_out)
            with torch.no_grad():
                evaluated = lif_scan(currents, beta, v_th, grad_scale=scale, correction=correction)
            for name, spikes in (("training", out), ("evaluation", evaluated)):
                if spikes.dtype != dtype or spikes.shape != currents.shape:
                    return False, f"wrong output {spikes.dtype} {tuple(spikes.shape)} ({name}, {what})"
                if not torch.equal(spikes, ref):
                    wrong = int((spikes != ref).sum().item())
                    return False, (f"spikes differ from the PyTorch scan at {wrong} of {ref.numel()} places "
                                   f"({name}, {what})")
            ref_grad = ref_grad.to(dtype).to(compute)
            diff = (grad.to(compute) - ref_grad).abs().max().item()
            bound = _tolerance(dtype) * max(1.0, ref_grad.abs().max().item())
            if not diff <= bound:  # also catches NaN
                return False, f"gradients differ from the PyTorch scan by {diff:.3g} > {bound:.3g} ({what})"
    return True, "ok"


def disabled_reason() -> str | None:
    """Why the Triton scan was turned off in this process by a failed self-check (None if it was not)."""
    return _DISABLED


def ready(tensor: torch.Tensor) -> bool:
    """Whether :func:`lif_scan` may be used for ``tensor``: available and self-checked on its (device, dtype).

    The first call per (device, dtype) runs :func:`self_check`; on failure one ``RuntimeWarning``
    names the reason and ``LEAKLIB_TRITON=0``, and every later call returns False (the caller
    falls back to the PyTorch scan for the rest of the process).
    """
    global _DISABLED
    if _DISABLED is not None or not is_available(tensor) or tensor.dtype not in _FLOATS:
        return False
    key = (str(tensor.device), tensor.dtype)
    if key in _CHECKED:
        return True
    ok, reason = self_check(tensor.device, tensor.dtype)
    if ok:
        _CHECKED.add(key)
        return True
    _DISABLED = f"{tensor.device} {str(tensor.dtype).replace('torch.', '')}: {reason}"
    warnings.warn(f"leaklib: the Triton neuron scan failed its self-check on {_DISABLED}. Using the PyTorch "
                  "scan instead for the rest of this process (same results, slower); set LEAKLIB_TRITON=0 to "
                  "skip Triton and this check.", RuntimeWarning, stacklevel=3)
    return False

"""Fused IF/LIF scan over T as Triton kernels (CUDA), the GPU path of :class:`leaklib.neurons.LIFScan`.

The currents ``[T, ...]`` are viewed as a flat ``[T, N]`` array; each Triton program owns a block
of ``N`` neurons, keeps their membrane in registers and walks the ``T`` steps (Algorithm 2)::

    u = v + I[t];  o = u > v_th;  v = 0 if o else u * beta

writing the spikes in the currents' dtype (the layer output) and as ``uint8`` (saved for the
backward, one byte per neuron and step). The backward kernel walks the steps in reverse with the
Eq. 5 surrogate, ``dL/dI[t] = scale * dL/do[t]`` where the neuron fired, else ``beta * dL/dI[t+1]``
(``scale = 1/(v_th + eps)``): one read of the gradient and of the spikes, one write, no ``[T, N]``
temporaries. Floating-point contraction (FMA) is disabled so that every product and sum is
rounded as in the per-step torch reference: spikes are bit-identical for float32/float64 input.
Half-precision currents are computed in float32 (the spikes are returned in the input dtype).

The kernels also run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before
``triton`` is imported); the tests use that to check them on machines without a GPU.
"""

from __future__ import annotations

import os

import torch

__all__ = ["is_available", "TritonLIFScan", "lif_scan"]

try:  # pragma: no cover - depends on the installation
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 -- no triton (e.g. CPU-only or macOS wheels): the torch scan is used
    triton = None
    tl = None

BLOCK = 512


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def is_available(tensor: torch.Tensor | None = None) -> bool:
    """Triton importable and able to run on ``tensor``'s device (CUDA, or any device under the interpreter).

    ``LEAKLIB_TRITON=0`` turns the Triton path off (the torch scan is used instead).
    """
    if triton is None or os.environ.get("LEAKLIB_TRITON", "1") == "0":
        return False
    if tensor is None:
        return torch.cuda.is_available() or _interpreting()
    return tensor.is_cuda or _interpreting()


if triton is not None:

    @triton.jit
    def _lif_forward_kernel(cur_ptr, out_ptr, spk_ptr, params_ptr, T, N,
                            HALF: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < N
        beta = tl.load(params_ptr)
        v_th = tl.load(params_ptr + 1)
        x0 = tl.load(cur_ptr + offs, mask=mask, other=0.0)
        if HALF:
            x0 = x0.to(tl.float32)
        v = tl.zeros_like(x0)
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
            tl.store(out, fired.to(out_ptr.dtype.element_ty), mask=mask)
            tl.store(spk, fired.to(tl.uint8), mask=mask)
            v = tl.where(fired, 0.0, u * beta)
            cur += N
            out += N
            spk += N

    @triton.jit
    def _lif_backward_kernel(grad_ptr, spk_ptr, out_ptr, params_ptr, T, N, LAST,
                             HALF: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < N
        beta = tl.load(params_ptr)
        scale = tl.load(params_ptr + 2)
        g0 = tl.load(grad_ptr + offs, mask=mask, other=0.0)
        if HALF:
            g0 = g0.to(tl.float32)
        carry = tl.zeros_like(g0)
        # start at the last row (LAST = (T-1)*N, passed from Python as a 64-bit-safe int), walk back
        gp = grad_ptr + LAST + offs
        sp = spk_ptr + LAST + offs
        op = out_ptr + LAST + offs
        for _ in range(T):
            g = tl.load(gp, mask=mask, other=0.0)
            if HALF:
                g = g.to(tl.float32)
            fired = tl.load(sp, mask=mask, other=0) != 0
            carry = tl.where(fired, g * scale, carry * beta)
            tl.store(op, carry.to(out_ptr.dtype.element_ty), mask=mask)
            gp -= N
            sp -= N
            op -= N


def _params(beta: float, v_th: float, scale: float, like: torch.Tensor) -> torch.Tensor:
    """``[beta, v_th, scale]`` rounded to the compute dtype, as torch rounds a Python scalar."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return torch.tensor([beta, v_th, scale], dtype=dtype, device=like.device)


def _launch_options() -> dict:
    # keep u*beta and v+x as separately rounded operations (no FMA), as in the torch reference
    return {} if _interpreting() else {"enable_fp_fusion": False}


class TritonLIFScan(torch.autograd.Function):
    """Forward scan and BPTT backward of Algorithm 2 / Eq. 5 as two Triton kernels."""

    @staticmethod
    def forward(ctx, currents: torch.Tensor, beta: float, v_th: float, eps: float) -> torch.Tensor:  # type: ignore[override]
        if currents.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            raise TypeError(f"Triton LIF scan needs floating-point currents, got {currents.dtype}")
        x = currents.contiguous()
        num_steps = x.shape[0]
        n = x[0].numel()
        out = torch.empty_like(x)
        spikes = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
        params = _params(beta, v_th, 1.0 / (v_th + eps), x)
        half = x.dtype in (torch.float16, torch.bfloat16)
        if n > 0:
            grid = (triton.cdiv(n, BLOCK),)
            _lif_forward_kernel[grid](x, out, spikes, params, num_steps, n, HALF=half, BLOCK_SIZE=BLOCK,
                                      **_launch_options())
        ctx.save_for_backward(spikes, params)
        ctx.half = half
        return out

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):  # type: ignore[override]
        spikes, params = ctx.saved_tensors
        g = grad_spikes.contiguous()
        grad = torch.empty_like(g)
        n = spikes[0].numel()
        if n > 0:
            grid = (triton.cdiv(n, BLOCK),)
            _lif_backward_kernel[grid](g, spikes, grad, params, spikes.shape[0], n, (spikes.shape[0] - 1) * n,
                                       HALF=ctx.half,
                                       BLOCK_SIZE=BLOCK, **_launch_options())
        return grad, None, None, None


def lif_scan(currents: torch.Tensor, beta: float, v_th: float = 1.0, eps: float = 0.0) -> torch.Tensor:
    """Spikes ``[T, ...]`` of the IF/LIF scan (Algorithm 2) with the Eq. 5 BPTT backward, via Triton."""
    if triton is None:
        raise RuntimeError("triton is not installed; use leaklib.neurons.lif_multistep")
    if currents.dim() < 1 or currents.shape[0] < 1:
        raise ValueError(f"currents must have shape [T, ...] with T >= 1, got {tuple(currents.shape)}")
    return TritonLIFScan.apply(currents, float(beta), float(v_th), float(eps))

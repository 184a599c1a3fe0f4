"""IF/LIF neurons of Algorithm 2, the surrogate gradient of Eq. 5 and its leak correction.

Discrete dynamics, one time step ``t`` (Algorithm 2, design note)::

    u[t] = v[t-1] + I[t]                    # integrate the weighted spike-input
    o[t] = 1 if u[t] > v_th else 0           # Eq. 2
    v[t] = 0 if o[t] else beta * u[t]        # reset to rest, else leak by beta = exp(-1/tau_m)

``tau_m = inf`` gives ``beta = 1``: the IF neuron.

The backward pass (BPTT) is where the paper leaves choices open; the paper trains "as in [21]"
(Lee et al. 2020), whose code fixes them. Two knobs select them, and every network, profile and
run records both:

* ``leak_grad``. ``"detached"`` ([21], the default of every profile): the decay is applied in the
  forward pass but treated as a constant 1 in the backward pass, so the gradient passes through
  time unattenuated (``l * mem.detach() + mem - mem.detach()`` in [21]'s code). ``"exact"``: the
  gradient of the forward computation, attenuated by ``beta`` per silent step.
* ``correction``. Eq. 5's ``dO/dU = (O > 0) / (V_th + eps)``. ``"lee2020"`` ([21]): eps is [21]'s
  *leak correction*, a per-neuron factor on the spike gradient computed from the neuron's own
  spikes over the T steps, ``(LF > 1e-3) + ln(beta) * LF / Total`` with ``Total`` its spike count and
  ``LF`` its leaky spike trace (``LF <- beta*LF + o`` over the steps; see :func:`leak_correction`).
  ``"none"``: eps = 0, the straight-through factor ``1/V_th`` alone.

In both modes the reset is held constant in the backward pass (``o`` detached in ``u * (1 - o)``):
the gradient through a step at which the neuron fired is cut.

Implementations that must agree (tests check it):

* :func:`lif_multistep` with ``method="fused"`` (default): one :class:`torch.autograd.Function`
  (:class:`LIFScan`) that scans the recurrence over all ``T`` steps in its forward and computes
  the whole BPTT backward itself, on the CPU as a compiled loop (:mod:`leaklib.scan_cpu`, numba)
  or as a few torch ops per step where numba is absent, on CUDA in closed form or with the Triton
  kernels of :mod:`leaklib.triton_scan`. Spikes are kept as ``bool`` for the backward.
* ``method="stepwise"``: the reference, :func:`lif_step` applied ``T`` times and differentiated by
  autograd, with the leak correction applied by gradient hooks on every step's output, as [21]
  does it.

BPTT in closed form. With ``g = dL/do``, ``s`` the surrogate factor (``corr/V_th``) and ``b`` the
backward decay (``beta`` for exact, 1 for detached): ``dL/du[t] = s g[t] o[t] + b (1 - o[t])
dL/du[t+1]``. A fired step cuts the chain, a silent step passes ``b`` times the next one, so
``dL/du[t] = b**(n(t) - t) s g[n(t)]`` where ``n(t)`` is the first spike at or after ``t`` (zero if
there is none).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = [
    "LEAK_GRADS",
    "CORRECTIONS",
    "TRACE_FLOOR",
    "decay_factor",
    "leak_correction",
    "NotADropoutMask",
    "spike_fn",
    "decay",
    "lif_step",
    "lif_multistep",
    "lif_trace",
    "leaky_integrate",
    "LIFNeuron",
    "SpikeFunction",
    "LIFScan",
    "LIFPoolScan",
    "lif_pool_available",
    "lif_pool_multistep",
]

LeakGrad = Literal["detached", "exact"]
Correction = Literal["lee2020", "none"]

#: How the backward pass treats the leak: "detached" ([21]: gradient 1 through time) or "exact".
LEAK_GRADS: tuple[str, ...] = ("detached", "exact")
#: Eq. 5's epsilon: "lee2020" ([21]'s per-neuron leak correction) or "none" (eps = 0).
CORRECTIONS: tuple[str, ...] = ("lee2020", "none")
#: [21] counts a neuron's leaky spike trace as "active" above this value (``LF.gt(1e-3)``).
TRACE_FLOOR = 1e-3


def decay_factor(tau_m: float) -> float:
    """Per-step membrane decay ``beta = exp(-1/tau_m)`` (Algorithm 2); 1 for the IF neuron (tau_m = inf)."""
    tau = float(tau_m)
    if math.isnan(tau) or tau <= 0:
        raise ValueError(f"tau_m must be > 0 or inf, got {tau_m!r}")
    return 1.0 if math.isinf(tau) else math.exp(-1.0 / tau)


def _check_threshold(v_th: float, eps: float) -> None:
    if not v_th > 0:
        raise ValueError(f"v_th must be > 0, got {v_th!r}")
    if not v_th + eps > 0:
        raise ValueError(f"v_th + eps must be > 0 (Eq. 5 divides by it), got v_th={v_th}, eps={eps}")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _grad_scale(v_th: float, eps: float, grad_scale: float | None) -> float:
    """The straight-through factor of Eq. 5, ``1/(v_th + eps)``, unless ``grad_scale`` is given."""
    _check_threshold(v_th, eps)
    if grad_scale is None:
        return 1.0 / (v_th + eps)
    if not (math.isfinite(grad_scale) and grad_scale > 0):
        raise ValueError(f"grad_scale must be a positive number, got {grad_scale!r}")
    return float(grad_scale)


def leak_correction(trace: torch.Tensor, count: torch.Tensor, beta: float,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """[21]'s leak correction of Eq. 5, one factor per neuron: ``(LF > 1e-3) + ln(beta) * LF / Total``.

    ``trace`` is the leaky spike trace at the last step, ``LF = sum_t beta**(T-1-t) o[t]``, and
    ``count`` the spike count ``Total = sum_t o[t]``, both ``[...]``. [21] computes both on the
    dropout-masked spikes; ``mask`` (one value per neuron, shared over time) does the same here. A
    neuron that never fired gets 0 (its gradient is zero anyway); the IF neuron (``beta = 1``) gets 1
    once it has fired. It multiplies the straight-through factor: ``1/(V_th + eps) = corr / V_th``.
    """
    if trace.shape != count.shape:
        raise ValueError(f"trace and count must have the same shape, got {tuple(trace.shape)} and "
                         f"{tuple(count.shape)}")
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta!r}")
    if mask is not None:
        trace, count = trace * mask, count * mask
    total = count + (count < TRACE_FLOOR).to(count.dtype)  # [21] adds 1 where there is no spike
    return (trace > TRACE_FLOOR).to(trace.dtype) + math.log(beta) * (trace / total)


class SpikeFunction(torch.autograd.Function):
    """Heaviside spike ``O = (U > v_th)`` (Eq. 2) with the Eq. 5 surrogate ``dO/dU = scale * (O > 0)``."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, v_th: float, scale: float) -> torch.Tensor:  # type: ignore[override]
        spikes = u > v_th
        ctx.save_for_backward(spikes)
        ctx.scale = scale
        return spikes.to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (spikes,) = ctx.saved_tensors
        return grad_out * spikes.to(grad_out.dtype) * ctx.scale, None, None


def spike_fn(u: torch.Tensor, v_th: float = 1.0, eps: float = 0.0, grad_scale: float | None = None) -> torch.Tensor:
    """Spike output of Eq. 2, differentiable through the surrogate of Eq. 5 (``1/(v_th + eps)`` or ``grad_scale``)."""
    return SpikeFunction.apply(u, v_th, _grad_scale(v_th, eps, grad_scale))


def decay(x: torch.Tensor, beta: float, leak_grad: LeakGrad = "exact") -> torch.Tensor:
    """The leak ``beta * x``; with ``leak_grad="detached"`` its gradient is 1 instead of ``beta`` ([21])."""
    _check_choice("leak_grad", leak_grad, LEAK_GRADS)
    y = beta * x
    if leak_grad == "exact" or beta == 1.0:
        return y
    return y.detach() + (x - x.detach())  # value beta*x exactly (x - x = 0), gradient 1


def lif_step(v: torch.Tensor, current: torch.Tensor, beta: float, v_th: float = 1.0, eps: float = 0.0, *,
             leak_grad: LeakGrad = "exact", grad_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of Algorithm 2: returns ``(o[t], v[t])`` from ``v[t-1]`` and ``I[t]``."""
    u = v + current
    o = spike_fn(u, v_th, eps, grad_scale)
    v_next = decay(u * (1.0 - o.detach()), beta, leak_grad)
    return o, v_next


def _cpu_kernels():
    """:mod:`leaklib.scan_cpu` when numba is usable (``LEAKLIB_NUMBA=0`` turns it off), else None."""
    try:
        from . import scan_cpu
    except ImportError:
        return None
    return scan_cpu if scan_cpu.available() else None


class LIFScan(torch.autograd.Function):
    """Fused multi-step IF/LIF layer: forward scan over T, BPTT backward in one node (Algorithm 2, Eq. 5)."""

    @staticmethod
    def forward(ctx, currents: torch.Tensor, beta: float, v_th: float, scale: float, grad_beta: float,  # type: ignore[override]
                correction: bool, mask: torch.Tensor | None, for_backward: bool = True) -> torch.Tensor:
        # for_backward=False (no gradient will be asked for): neither spikes nor correction are kept
        kernels = _cpu_kernels() if not currents.is_cuda else None
        if kernels is not None:  # the spikes in the currents' dtype come straight from the scan
            out, fired, count, trace = kernels.scan_forward_out(currents, beta, v_th, for_backward)
        else:
            out, trace = _scan_forward_torch(currents, beta, v_th, correction and for_backward)
            fired = out.bool() if for_backward else None
            count = out.sum(0) if correction and for_backward else None
        if for_backward:
            corr = _scan_correction(kernels, trace, count, beta, mask) if correction else None
            ctx.save_for_backward(fired, corr)
            ctx.scale, ctx.grad_beta = scale, grad_beta
        return out

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):  # type: ignore[override]
        fired, corr = ctx.saved_tensors
        if fired.is_cuda or _cpu_kernels() is None:  # the numba scan takes any layout
            grad_spikes = grad_spikes.contiguous()
        grad = _lif_scan_grad(fired, grad_spikes, ctx.grad_beta, ctx.scale, corr)
        return grad, None, None, None, None, None, None, None


class LIFPoolScan(torch.autograd.Function):
    """A layer of IF/LIF neurons, 2x2 average pooling of its spikes and [21]'s pooling neurons in one CPU scan.

    Forward ``currents [T, B, C, H, W]`` -> the pooling neurons' spikes ``[T, B, C, H/2, W/2]``,
    plus the spike counts of both layers (not differentiable); the same numbers as
    :class:`LIFScan`, ``F.avg_pool2d(., 2)`` and a second :class:`LIFScan` (IF, threshold
    ``pool_v_th``, surrogate factor ``pool_scale``, no correction), without materialising the
    layer's spikes or the averages (:func:`leaklib.scan_cpu.scan_pool_forward`).
    """

    @staticmethod
    def forward(ctx, currents: torch.Tensor, beta: float, v_th: float, scale: float, grad_beta: float,  # type: ignore[override]
                correction: bool, pool_v_th: float, pool_scale: float, pool_channels_last: bool,
                for_backward: bool, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from . import scan_cpu

        dropout = None  # the mask as keep flags and a scale, made once for the forward and the backward
        if mask is not None:
            if tuple(mask.shape) != tuple(currents.shape[1:]):
                raise ValueError(f"mask must have the shape of one step {tuple(currents.shape[1:])}, "
                                 f"got {tuple(mask.shape)}")
            dropout = scan_cpu.dropout_of(mask)
            if dropout is None:
                raise NotADropoutMask("the fused pooling scan takes a dropout mask (every entry 0 or one common "
                                      "value 1/(1-p)); run lif_multistep and the pooling one after the other "
                                      "for any other")
        out, fired, pool_fired, count, trace, pool_count = scan_cpu.scan_pool_forward(
            currents, beta, v_th, pool_v_th, for_backward, pool_channels_last, dropout)
        if for_backward:
            corr = None
            if correction:  # the dropout's keep flags are in the trace's (NHWC) order: no copy of the mask;
                # a mask of another dtype than the currents takes the torch formula (which promotes to it)
                same_dtype = mask is None or mask.dtype == currents.dtype
                corr = _scan_correction(scan_cpu, trace, count, beta, dropout if same_dtype else mask)
            ctx.save_for_backward(fired, pool_fired, corr)
            ctx.scale, ctx.grad_beta, ctx.pool_scale, ctx.dropout = scale, grad_beta, pool_scale, dropout
        ctx.mark_non_differentiable(count, pool_count)
        return out, count, pool_count

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, *_counts: torch.Tensor):  # type: ignore[override]
        from . import scan_cpu

        fired, pool_fired, corr = ctx.saved_tensors
        grad = scan_cpu.scan_pool_backward(fired, pool_fired, grad_out, ctx.grad_beta, ctx.scale, corr, ctx.pool_scale,
                                           ctx.dropout)
        return grad, None, None, None, None, None, None, None, None, None, None


def _scan_correction(kernels, trace: torch.Tensor, count: torch.Tensor, beta: float, mask) -> torch.Tensor:
    """[21]'s correction of a CPU scan's trace and count: numba's one pass where it applies, else :func:`leak_correction`.

    ``mask`` is a dropout mask tensor or the scan's :class:`~leaklib.scan_cpu.Dropout` (keep flags
    in the trace's NHWC order, made from a mask of the trace's dtype). Both give the torch formula's
    numbers, bit for bit (tests); a mask of another dtype takes the torch formula itself.
    """
    if kernels is not None and (mask is None or isinstance(mask, kernels.Dropout)
                                or (mask.dtype == trace.dtype and mask.shape == trace.shape)):
        return kernels.leak_correction(trace, count, beta, TRACE_FLOOR, mask)
    return leak_correction(trace, count, beta, mask)


def _scan_forward_torch(currents: torch.Tensor, beta: float, v_th: float,
                        with_trace: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Spikes ``[T, ...]`` (in the currents' dtype) and, if asked, the leaky trace, as a few torch ops per step."""
    # Arithmetic instead of masked_fill/where (bool-masked kernels run ~6 ns/element on the CPU,
    # float ops ~0.3): v <- u * keep with keep = beta - beta*o in {0, beta}, the same products as
    # beta*u*(1-o) of lif_step, so the spikes are bit-identical to the per-step reference.
    out = torch.empty(currents.shape, dtype=currents.dtype, device=currents.device)
    v = torch.zeros_like(out[0])
    keep = torch.empty_like(v)
    trace = torch.zeros_like(v) if with_trace else None
    beta_t = torch.tensor(beta, dtype=currents.dtype, device=currents.device)
    for t in range(currents.shape[0]):
        v.add_(currents[t])
        fired = torch.gt(v, v_th, out=out[t])
        torch.add(beta_t, fired, alpha=-beta, out=keep)
        v.mul_(keep)
        if trace is not None:
            trace.mul_(beta).add_(fired)
    return out, trace


def _lif_scan_grad(spikes: torch.Tensor, grad_spikes: torch.Tensor, grad_beta: float, scale: float,
                   corr: torch.Tensor | None = None) -> torch.Tensor:
    """BPTT of the scan: ``dL/dI[t] = scale*corr * dL/do[t]`` where ``o[t]``, plus ``grad_beta*(1-o[t]) * dL/dI[t+1]``.

    On the CPU: the compiled loop of :mod:`leaklib.scan_cpu` if numba is usable, else a two-op
    reverse recurrence (about ten times faster on the CPU than the closed form's cummin/gather,
    measured on 2 cores at T=25). On CUDA: the closed form (:func:`_lif_scan_grad_closed_form`).
    """
    if spikes.is_cuda:
        return _lif_scan_grad_closed_form(spikes, grad_spikes, grad_beta, scale, corr)
    kernels = _cpu_kernels()
    if kernels is not None:
        return kernels.scan_backward(spikes, grad_spikes, grad_beta, scale, corr)
    # per step, cache-sized float ops only: bool->float via the uint8 view (bool casts and where
    # are the slow kernels), grad[t] = g[t]*o[t]*s + (b - b*o[t]) * grad[t+1]
    as_uint8 = spikes.view(torch.uint8)
    grad = torch.empty(grad_spikes.shape, dtype=grad_spikes.dtype, device=grad_spikes.device)
    fired = torch.empty_like(grad[0])
    keep = torch.empty_like(fired)
    factor = None if corr is None else corr * scale
    beta_t = torch.tensor(grad_beta, dtype=grad.dtype, device=grad.device)
    num_steps = spikes.shape[0]
    for t in range(num_steps - 1, -1, -1):
        fired.copy_(as_uint8[t])
        g = torch.mul(grad_spikes[t], fired, out=grad[t])
        if factor is not None:
            g.mul_(factor)
        elif scale != 1.0:
            g.mul_(scale)
        if t < num_steps - 1:
            torch.add(beta_t, fired, alpha=-grad_beta, out=keep)
            g.addcmul_(keep, grad[t + 1])
    return grad


def _lif_scan_grad_closed_form(spikes: torch.Tensor, grad_spikes: torch.Tensor, grad_beta: float,
                               scale: float, corr: torch.Tensor | None = None, *,
                               block: int = 1 << 22) -> torch.Tensor:
    """``dL/dI[t] = grad_beta**(n(t)-t) * scale*corr * dL/do[n(t)]``, n(t) the next spike at or after t (vectorised over T).

    Valid for every ``grad_beta`` in [0, 1] (``beta`` underflows to 0 for tiny tau_m; ``0**0 = 1``):
    the decay is an integer power, never a logarithm. The neurons are processed in column blocks of
    about ``block`` elements ``[T, n]``, so that no temporary (``cummin``'s and ``gather``'s int64
    indices among them) grows with ``N``; half precision is computed in float32.
    """
    num_steps = spikes.shape[0]
    flat_spikes = spikes.reshape(num_steps, -1)
    flat_grad = grad_spikes.reshape(num_steps, -1)
    n = flat_grad.shape[1]
    out = torch.empty(flat_grad.shape, dtype=grad_spikes.dtype, device=grad_spikes.device)
    work = torch.float32 if grad_spikes.dtype in (torch.float16, torch.bfloat16) else grad_spikes.dtype
    factor = None if corr is None else (corr.to(work) * scale).reshape(-1)
    steps = torch.arange(num_steps, dtype=torch.int32, device=spikes.device).unsqueeze(1)
    base = torch.tensor(grad_beta, dtype=work, device=grad_spikes.device)
    width = max(1, block // num_steps)
    for start in range(0, n, width):
        cols = slice(start, min(n, start + width))
        # index of the spike at t, or num_steps (a zero row) where the neuron is silent from t on
        at = torch.where(flat_spikes[:, cols], steps, num_steps)
        next_spike = torch.flip(torch.cummin(torch.flip(at, (0,)), dim=0).values, (0,))
        g = flat_grad[:, cols].to(work)
        padded = torch.cat([g, g.new_zeros((1, g.shape[1]))], dim=0)
        grad = torch.gather(padded, 0, next_spike.long())
        if grad_beta != 1.0:
            grad.mul_(torch.pow(base, (next_spike - steps).to(work)))  # pow(0, 0) = 1
        if factor is None:
            if scale != 1.0:
                grad.mul_(scale)
        else:
            grad.mul_(factor[cols])
        out[:, cols] = grad
    return out.view(grad_spikes.shape)


def lif_multistep(currents: torch.Tensor, tau_m: float, v_th: float = 1.0, eps: float = 0.0,
                  method: Literal["fused", "stepwise"] = "fused", *, leak_grad: LeakGrad = "exact",
                  correction: Correction = "none", mask: torch.Tensor | None = None,
                  grad_scale: float | None = None) -> torch.Tensor:
    """Spikes ``[T, ...]`` of IF/LIF neurons driven by input currents ``[T, ...]`` (Algorithm 2, Eq. 5).

    ``leak_grad`` and ``correction`` choose the backward pass (module docstring); ``mask`` is the
    dropout mask ``[...]`` applied to these spikes afterwards (it only enters the leak correction, as
    in [21]); ``grad_scale`` replaces ``1/(v_th + eps)`` (the pooling neurons of [21] use 1).
    """
    if currents.dim() < 1 or currents.shape[0] < 1:
        raise ValueError(f"currents must have shape [T, ...] with T >= 1, got {tuple(currents.shape)}")
    beta = decay_factor(tau_m)
    scale = _grad_scale(v_th, eps, grad_scale)
    _check_choice("leak_grad", leak_grad, LEAK_GRADS)
    _check_choice("correction", correction, CORRECTIONS)
    if mask is not None and mask.shape != currents.shape[1:]:
        raise ValueError(f"mask must have the shape of one step {tuple(currents.shape[1:])}, got {tuple(mask.shape)}")
    grad_beta = beta if leak_grad == "exact" else 1.0
    use_correction = correction == "lee2020"
    if method == "fused":
        if currents.is_cuda:
            from . import triton_scan

            if triton_scan.ready(currents):  # importable, not turned off, self-checked on this device and dtype
                return triton_scan.lif_scan(currents, beta, float(v_th), grad_scale=scale, grad_beta=grad_beta,
                                            correction=use_correction, mask=None if mask is None else mask.detach())
        return LIFScan.apply(currents, beta, float(v_th), scale, grad_beta, use_correction,
                             None if mask is None else mask.detach(), _for_backward(currents))
    if method == "stepwise":
        neuron = LIFNeuron(tau_m, v_th, eps, method="stepwise", leak_grad=leak_grad, correction=correction,
                           grad_scale=grad_scale)
        out = [neuron.step(currents[t]) for t in range(currents.shape[0])]
        neuron.finish(mask)
        return torch.stack(out)
    raise ValueError(f"method must be 'fused' or 'stepwise', got {method!r}")


def _for_backward(currents: torch.Tensor) -> bool:
    """Whether a backward pass can follow (else the scans keep nothing for it)."""
    return torch.is_grad_enabled() and currents.requires_grad


def lif_pool_available(currents: torch.Tensor) -> bool:
    """Whether :func:`lif_pool_multistep` can run on these currents (CPU, numba, float32/64, ``[T, B, C, H, W]``)."""
    return (not currents.is_cuda and currents.dtype in (torch.float32, torch.float64) and currents.dim() == 5
            and currents.shape[-1] % 2 == 0 and currents.shape[-2] % 2 == 0 and _cpu_kernels() is not None)


def lif_pool_multistep(currents: torch.Tensor, tau_m: float, v_th: float = 1.0, eps: float = 0.0, *,
                       leak_grad: LeakGrad = "exact", correction: Correction = "none", grad_scale: float | None = None,
                       pool_v_th: float = 0.75, pool_grad_scale: float = 1.0, pool_channels_last: bool = True,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IF/LIF neurons (as :func:`lif_multistep`), 2x2 average pooling, then [21]'s pooling neurons, fused (CPU).

    Returns ``(pool_spikes, counts, pool_counts)``: the pooling neurons' spikes ``[T, B, C, H/2,
    W/2]`` (channels-last memory unless ``pool_channels_last=False``) and, without gradient, the
    spike counts over T of the layer ``[B, C, H, W]`` and of the pooling neurons. The pooling
    neurons are non-leaky, threshold ``pool_v_th``, reset to 0, surrogate factor
    ``pool_grad_scale``. ``mask`` ``[B, C, H, W]`` is a dropout mask of the layer's spikes, shared
    over T, as in :func:`lif_multistep` (it enters the leak correction) and applied before the
    pooling, as the network applies it; the counts are those of the unmasked spikes. It must be a
    dropout mask (every entry 0 or one common value ``1/(1-p)``; :class:`NotADropoutMask`
    otherwise). Needs numba (:func:`lif_pool_available`).
    """
    if not lif_pool_available(currents):
        raise ValueError(f"lif_pool_multistep needs float32/64 CPU currents [T, B, C, H, W] with even H, W and "
                         f"numba; got {tuple(currents.shape)} {currents.dtype} on {currents.device}")
    beta = decay_factor(tau_m)
    scale = _grad_scale(v_th, eps, grad_scale)
    pool_scale = _grad_scale(pool_v_th, 0.0, pool_grad_scale)
    _check_choice("leak_grad", leak_grad, LEAK_GRADS)
    _check_choice("correction", correction, CORRECTIONS)
    grad_beta = beta if leak_grad == "exact" else 1.0
    return LIFPoolScan.apply(currents, beta, float(v_th), scale, grad_beta, correction == "lee2020", float(pool_v_th),
                             pool_scale, bool(pool_channels_last), _for_backward(currents),
                             None if mask is None else mask.detach())


class NotADropoutMask(ValueError):
    """A mask given to the fused pooling scan has other values than 0 and one common scale."""


@torch.no_grad()
def lif_trace(currents: torch.Tensor, tau_m: float, v_th: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Membrane ``u[t]`` before the threshold test and spikes ``o[t]``, both ``[T, ...]`` (for Fig. 1)."""
    beta = decay_factor(tau_m)
    _check_threshold(v_th, 0.0)
    v = torch.zeros_like(currents[0])
    membrane, spikes = [], []
    for t in range(currents.shape[0]):
        u = v + currents[t]
        o = (u > v_th).to(currents.dtype)
        membrane.append(u)
        spikes.append(o)
        v = beta * u * (1.0 - o)
    return torch.stack(membrane), torch.stack(spikes)


def leaky_integrate(currents: torch.Tensor, tau_m: float, leak_grad: LeakGrad = "exact") -> torch.Tensor:
    """Output-layer membrane at the last step, ``u_L[T] = sum_t beta**(T-t) I_L[t]`` (Algorithm 2, no spikes).

    With ``leak_grad="detached"`` ([21]) the value is the same and the gradient is 1 for every step.
    """
    _check_choice("leak_grad", leak_grad, LEAK_GRADS)
    beta = decay_factor(tau_m)
    num_steps = currents.shape[0]
    if beta == 1.0:
        return currents.sum(0)
    weights = beta ** torch.arange(num_steps - 1, -1, -1, dtype=currents.dtype, device=currents.device)
    value = torch.tensordot(weights, currents, dims=([0], [0]))
    if leak_grad == "exact":
        return value
    total = currents.sum(0)
    return value.detach() + (total - total.detach())


class LIFNeuron(nn.Module):
    """A layer of IF/LIF neurons (Algorithm 2) with the Eq. 5 surrogate and the chosen backward pass.

    ``forward(currents, mask)`` takes all steps ``[T, B, ...]`` at once. The per-step reference:
    ``step(current)`` advances a stateful neuron; after the last step ``finish(mask)`` applies the
    leak correction (gradient hooks on every step's output, as [21]) and resets the state.
    """

    def __init__(self, tau_m: float, v_th: float = 1.0, eps: float = 0.0,
                 method: Literal["fused", "stepwise"] = "fused", *, leak_grad: LeakGrad = "exact",
                 correction: Correction = "none", grad_scale: float | None = None) -> None:
        super().__init__()
        self.beta = decay_factor(tau_m)
        self.scale = _grad_scale(v_th, eps, grad_scale)
        _check_choice("leak_grad", leak_grad, LEAK_GRADS)
        _check_choice("correction", correction, CORRECTIONS)
        self.tau_m, self.v_th, self.eps, self.method = float(tau_m), float(v_th), float(eps), method
        self.leak_grad, self.correction, self.grad_scale = leak_grad, correction, grad_scale
        self.v: torch.Tensor | None = None
        self._outputs: list[torch.Tensor] = []

    def forward(self, currents: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return lif_multistep(currents, self.tau_m, self.v_th, self.eps, self.method, leak_grad=self.leak_grad,
                             correction=self.correction, mask=mask, grad_scale=self.grad_scale)

    def step(self, current: torch.Tensor) -> torch.Tensor:
        if self.v is None:
            self.v = torch.zeros_like(current)
        o, self.v = lif_step(self.v, current, self.beta, self.v_th, self.eps, leak_grad=self.leak_grad,
                             grad_scale=self.grad_scale)
        if self.correction != "none":
            self._outputs.append(o)
        return o

    def finish(self, mask: torch.Tensor | None = None) -> None:
        """End of a sequence of :meth:`step` calls: register the leak correction's hooks, reset the state."""
        if self.correction == "lee2020" and self._outputs:
            spikes = torch.stack([o.detach() for o in self._outputs])
            weights = self.beta ** torch.arange(len(spikes) - 1, -1, -1, dtype=spikes.dtype, device=spikes.device)
            trace = torch.tensordot(weights, spikes, dims=([0], [0]))
            corr = leak_correction(trace, spikes.sum(0), self.beta, None if mask is None else mask.detach())
            for o in self._outputs:
                if o.requires_grad:
                    o.register_hook(lambda grad, corr=corr: grad * corr)
        self.reset()

    def reset(self) -> None:
        self.v = None
        self._outputs = []

    def extra_repr(self) -> str:
        return (f"tau_m={self.tau_m:g}, v_th={self.v_th:g}, grad_scale={self.scale:g}, leak_grad={self.leak_grad!r}, "
                f"correction={self.correction!r}, method={self.method!r}")

"""Compiled CPU scan of an IF/LIF layer over T (Algorithm 2) and its BPTT backward (Eq. 5), via numba.

The currents ``[T, ...]`` are viewed as a flat ``[T, N]`` array (``N`` = neurons of a layer times
batch). Forward, per neuron, from ``v = 0`` (Algorithm 2, reset to rest)::

    u = v + I[t]
    o[t] = 1 if u > v_th else 0          # Eq. 2, strictly greater
    v = u * keep,  keep = beta if o[t] == 0 else 0

with ``beta = exp(-1/tau_m)`` (1 for the IF neuron, ``tau_m = inf``). The same pass accumulates,
per neuron, the spike count ``sum_t o[t]`` and the leaky spike trace ``trace <- beta*trace + o[t]``
(``= sum_t beta**(T-1-t) o[t]``), from which a leak correction can be computed.

Backward (BPTT with the Eq. 5 surrogate ``dO/dU = scale * (O > 0)``, ``scale = 1/(v_th + eps)``),
given ``g = dL/do``::

    dL/dI[T-1] = scale * corr * g[T-1] * o[T-1]
    dL/dI[t]   = scale * corr * g[t] * o[t] + grad_beta * (1 - o[t]) * dL/dI[t+1]

``grad_beta = beta`` is the exact gradient of the leak; ``grad_beta = 1`` treats the leak as
detached (as in the reference training code of Lee et al. 2020). ``corr`` is an optional
per-neuron multiplier of the surrogate (None: 1).

Exactness. The spikes are bit-identical to the per-step torch reference
``v = beta * u * (1 - o)`` for float32 and float64: every scalar is rounded to the currents' dtype
before it enters the kernel (as torch rounds a Python scalar against a tensor), the loops compute
in that dtype only (numba would promote ``float32 * float`` to float64), and floating-point
contraction is off (``fastmath=False``: no fused multiply-add of ``u*keep`` into the next ``v + I``).

Speed. The inner loops are branchless (the spike enters as 0/1 arithmetic) and run over the
contiguous neuron axis inside the loop over ``t``, so they vectorise; the kernels are
single-threaded (one process per core trains best on a small shared CPU; see
``benchmarks/README.md``). They are compiled on first use per dtype and cached on disk
(numba's ``cache=True``: next to this file, else in the user cache directory); where no cache
directory is writable the kernels are compiled in memory only.

Fused pooling. :func:`scan_pool_forward` / :func:`scan_pool_backward` run a layer, the 2x2
average pooling of its spikes and the non-leaky pooling neurons of Lee et al. 2020 in one scan,
so that neither the layer's float spikes nor the averages are written out; the numbers are those
of the three steps run one after the other (tests).

Tensors are shared with numpy without copies (``.numpy()`` on contiguous CPU tensors). Currents
``[T, B, C, H, W]`` stored channels-last (NHWC per step, what a channels-last convolution
writes) are scanned in that memory order and the results keep the layout; any other
non-contiguous input is made contiguous first.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["available", "scan_forward", "scan_backward", "scan_forward_out", "scan_pool_forward",
           "scan_pool_backward", "leak_correction", "Dropout", "dropout_of"]

try:  # numba is optional: without it the torch scan of leaklib.neurons is used
    import numba
except Exception:  # noqa: BLE001 -- any import failure (missing, broken llvmlite) means "not available"
    numba = None

_DTYPES = (torch.float32, torch.float64)
_NP_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def available() -> bool:
    """numba importable and not switched off by the environment variable ``LEAKLIB_NUMBA=0``."""
    return numba is not None and os.environ.get("LEAKLIB_NUMBA", "1") != "0"


def _njit(fn=None, **extra):
    """``numba.njit`` with the on-disk cache, or without it where no cache directory is writable."""
    if fn is None:
        return lambda f: _njit(f, **extra)
    options = dict(fastmath=False, nogil=True, boundscheck=False, **extra)
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available" (no writable directory)
        return numba.njit(cache=False, **options)(fn)


def _run(kernel, *args):
    """Call a kernel; if saving the compiled code to the cache fails, go on without the cache."""
    try:
        return kernel(*args)
    except OSError as exc:  # the compiled code is registered in memory; only the disk write failed
        warnings.warn(f"leaklib.scan_cpu: numba cache disabled ({exc})", RuntimeWarning, stacklevel=3)
        for dispatcher in _DISPATCHERS:
            dispatcher._cache = numba.core.caching.NullCache()
        return kernel(*args)


if numba is not None:

    # The kernels call one function per time step on rows of the [T, N] arrays. Written as one
    # loop nest instead, LLVM hoists the vectoriser's run-time aliasing check out of the loop over
    # t; for the backward (t descending, reading the row just written) that check fails and the
    # whole scan runs scalar, 1.7-3.8x slower (see benchmarks/README.md).

    @_njit
    def _forward_step(cur_t, spikes_t, v, count, trace, beta, v_th):  # pragma: no cover - compiled
        for n in range(cur_t.shape[0]):  # contiguous, independent neurons: vectorised
            u = v[n] + cur_t[n]
            fired = u > v_th
            spikes_t[n] = fired
            # keep = beta - beta*o in {beta, 0} (dtype * bool stays in the dtype): u*keep is the
            # product beta*u of the reference, or 0
            v[n] = u * (beta - beta * fired)
            count[n] += fired
            trace[n] = trace[n] * beta + fired

    @_njit
    def _forward_two_steps(cur_a, cur_b, spikes_a, spikes_b, v, count, trace, beta, v_th):  # pragma: no cover
        """Steps t and t+1 in one pass over the neurons: v, count and trace stay in registers in between.

        The same operations in the same order as two ``_forward_step`` calls (bit-identical), with
        half the traffic to the per-neuron state: 1.3-1.6x faster on a 16x8x8 layer, measured.
        """
        for n in range(cur_a.shape[0]):
            u = v[n] + cur_a[n]
            fired = u > v_th
            spikes_a[n] = fired
            total = count[n] + fired
            leaky = trace[n] * beta + fired
            u = u * (beta - beta * fired) + cur_b[n]
            fired = u > v_th
            spikes_b[n] = fired
            v[n] = u * (beta - beta * fired)
            count[n] = total + fired
            trace[n] = leaky * beta + fired

    @_njit
    def _forward_kernel(cur, params, spikes, count, trace):  # pragma: no cover - compiled
        """Algorithm 2 over ``cur [T, N]``; ``params = [beta, v_th]`` in ``cur``'s dtype."""
        v = np.zeros(cur.shape[1], cur.dtype)
        num_steps = cur.shape[0]
        for t in range(0, num_steps - 1, 2):
            _forward_two_steps(cur[t], cur[t + 1], spikes[t], spikes[t + 1], v, count, trace, params[0], params[1])
        if num_steps % 2:
            _forward_step(cur[num_steps - 1], spikes[num_steps - 1], v, count, trace, params[0], params[1])

    @_njit
    def _backward_step(spikes_t, grad_out_t, coef, grad_beta, grad_next, grad_t):  # pragma: no cover - compiled
        for n in range(grad_out_t.shape[0]):
            fired = spikes_t[n]  # uint8 0/1; dtype * uint8 stays in the dtype
            grad_t[n] = coef[n] * grad_out_t[n] * fired + (grad_beta - grad_beta * fired) * grad_next[n]

    @_njit
    def _backward_two_steps(spikes_a, spikes_b, grad_out_a, grad_out_b, coef, grad_beta, grad_next, grad_a,
                            grad_b):  # pragma: no cover - compiled
        """Steps t+1 (b) then t (a) of the BPTT in one pass: the same operations as two ``_backward_step``."""
        for n in range(coef.shape[0]):
            fired = spikes_b[n]
            g = coef[n] * grad_out_b[n] * fired + (grad_beta - grad_beta * fired) * grad_next[n]
            grad_b[n] = g
            fired = spikes_a[n]
            grad_a[n] = coef[n] * grad_out_a[n] * fired + (grad_beta - grad_beta * fired) * g

    @_njit
    def _backward_kernel(spikes, grad_out, coef, params, grad):  # pragma: no cover - compiled
        """BPTT of Algorithm 2 with the Eq. 5 surrogate; ``coef [N] = scale*corr``, ``params = [grad_beta]``."""
        num_steps = grad_out.shape[0]
        zeros = np.zeros(grad_out.shape[1], grad_out.dtype)  # dL/dI[T] = 0
        t = num_steps - 1
        if num_steps % 2:
            _backward_step(spikes[t], grad_out[t], coef, params[0], zeros, grad[t])
            t -= 1
        while t >= 1:  # steps t and t-1 together (1.3x faster than one at a time, measured)
            grad_next = zeros if t == num_steps - 1 else grad[t + 1]
            _backward_two_steps(spikes[t - 1], spikes[t], grad_out[t - 1], grad_out[t], coef, params[0], grad_next,
                                grad[t - 1], grad[t])
            t -= 2


    # A layer of neurons whose spikes feed a 2x2 average pooling and a layer of pooling neurons
    # (non-leaky IF, reset to 0; Lee et al. 2020): one scan does both layers, so that neither the
    # float spikes of the layer nor the pooled averages are ever written out. The layer's neurons
    # are in channels-last order (NHWC per step: the four inputs of a pooling window are four
    # contiguous runs over the channels, so the pooling neurons vectorise over C). Per step: the
    # layer's step over its neurons (vectorised, as above), then the pooling neurons reading their
    # windows from the row of uint8 spikes just written (in cache). ``dims = [B, H, W, C, cl]``:
    # the layer's map and whether the pooling neurons' float spikes are written channels-last (1)
    # or NCHW (0, e.g. before a fully connected layer); their uint8 copy is always NHWC.

    @_njit
    def _forward_step_out(cur_t, spikes_t, out_t, v, count, trace, beta, v_th):  # pragma: no cover - compiled
        for n in range(cur_t.shape[0]):
            u = v[n] + cur_t[n]
            fired = u > v_th
            spikes_t[n] = fired
            out_t[n] = fired  # the spikes in the currents' dtype as well (no cast afterwards)
            v[n] = u * (beta - beta * fired)
            count[n] += fired
            trace[n] = trace[n] * beta + fired

    @_njit
    def _forward_out_kernel(cur, params, spikes, out, count, trace):  # pragma: no cover - compiled
        """As ``_forward_kernel``, also writing the spikes in ``cur``'s dtype into ``out``.

        ``spikes`` has T rows, or two reused in turn (nothing kept for a backward).
        """
        v = np.zeros(cur.shape[1], cur.dtype)
        num_steps, rows = cur.shape[0], spikes.shape[0]
        for t in range(0, num_steps - 1, 2):
            _forward_two_steps(cur[t], cur[t + 1], spikes[t % rows], spikes[(t + 1) % rows], v, count, trace,
                               params[0], params[1])
            _copy_spikes(spikes[t % rows], out[t])
            _copy_spikes(spikes[(t + 1) % rows], out[t + 1])
        if num_steps % 2:
            t = num_steps - 1
            _forward_step_out(cur[t], spikes[t % rows], out[t], v, count, trace, params[0], params[1])

    @_njit
    def _copy_spikes(spikes_t, out_t):  # pragma: no cover - compiled
        for n in range(out_t.shape[0]):
            out_t[n] = spikes_t[n]

    # LLVM vectorises a loop only if it can check at run time that its arrays do not overlap, and
    # it gives up beyond a few arrays: each loop below touches at most four, so the pooling runs
    # in three passes per step (4x faster than one loop doing it all, measured).
    #
    # Dropout. A dropout mask has two values, 0 and one scale m = 1/(1-p): the pooling counts the
    # spikes that dropout keeps (o AND keep, uint8) and scales the count by m; the backward gives m
    # times a window's quarter only to kept neurons (a coefficient of 0 for the dropped ones). The
    # masked and unmasked scans are one code path, unmasked being m = 1 and every neuron kept.

    @_njit
    def _pool_gather(spikes_t, keep, dims, scale, pooled, pair):  # pragma: no cover - compiled
        """2x2 averages of the dropout-masked spikes ``scale * (spikes_t AND keep)`` (uint8, NHWC) into ``pooled``.

        ``keep`` is the dropout's uint8 keep flags ``[N]`` or empty (no dropout, ``scale = 1``);
        ``pair`` a uint8 buffer of one image row. F.avg_pool2d sums a window as
        ``((x00 + x01) + x10) + x11``; with every x in {0, m} that sum is ``a*m`` rounded once, ``a``
        the number of spikes in the window: 2m is exact, round(3m) is one rounding, and
        round(round(3m) + m) = 4m, since the error of round(3m) is at most half a unit of 4m and a
        tie occurs only for an even significand of m, where 4m is the even neighbour (where 2m or
        4m overflows, both sides are inf; also checked on millions of scales, tests). So
        ``(a*m)/4`` is bit-identical to pooling the masked spikes with F.avg_pool2d (which sums in
        the dtype) for any dropout scale; ``a/4`` without dropout. The count is exact in any
        order: per pair of image rows, the vertical sums over the whole row (one long contiguous
        loop), then the horizontal ones over runs of C channels (1.5x faster than four runs of C
        per window, measured once in isolation; see benchmarks/README.md).
        """
        batch, height, width, channels = dims[0], dims[1], dims[2], dims[3]
        h2, w2 = height // 2, width // 2
        row = width * channels
        quarter = pooled.dtype.type(0.25)
        for b in range(batch):
            for i in range(h2):
                a = (b * height + 2 * i) * row  # the pair of rows 2i, 2i + 1 of image b
                top, bottom = spikes_t[a:a + row], spikes_t[a + row:a + 2 * row]
                if keep.shape[0]:
                    keep_top, keep_bottom = keep[a:a + row], keep[a + row:a + 2 * row]
                    for x in range(row):
                        pair[x] = (top[x] & keep_top[x]) + (bottom[x] & keep_bottom[x])
                else:
                    for x in range(row):
                        pair[x] = top[x] + bottom[x]
                k = (b * h2 + i) * w2 * channels
                for j in range(w2):
                    left = pair[2 * j * channels:(2 * j + 1) * channels]
                    right = pair[(2 * j + 1) * channels:(2 * j + 2) * channels]
                    out = pooled[k + j * channels:k + (j + 1) * channels]
                    for c in range(channels):
                        out[c] = (pooled.dtype.type(left[c] + right[c]) * scale) * quarter

    @_njit
    def _if_step(cur_t, spikes_t, out_t, v, count, v_th):  # pragma: no cover - compiled
        """One step of non-leaky IF neurons (beta = 1) reset to 0, writing uint8 and float spikes."""
        one = v.dtype.type(1.0)
        for n in range(cur_t.shape[0]):
            u = v[n] + cur_t[n]
            fired = u > v_th
            spikes_t[n] = fired
            out_t[n] = fired
            v[n] = u * (one - one * fired)
            count[n] += fired

    # Before a fully connected layer the pooling neurons' spikes go out in NCHW order. Per image
    # that is a transpose of a small [H*W, C] matrix; a contiguous read per spatial position and
    # strided writes is 3x faster than walking the windows (measured on [2*2, 32]).

    @_njit
    def _to_nchw(row, dims, out_t):  # pragma: no cover - compiled
        """A pooled NHWC row written in NCHW order (before a fully connected layer)."""
        batch, positions, channels = dims[0], (dims[1] // 2) * (dims[2] // 2), dims[3]
        size = positions * channels
        for b in range(batch):
            src, dst = row[b * size:(b + 1) * size], out_t[b * size:(b + 1) * size]
            for p in range(positions):
                for c in range(channels):
                    dst[c * positions + p] = src[p * channels + c]

    @_njit
    def _from_nchw(grad_t, dims, row):  # pragma: no cover - compiled
        """Inverse of ``_to_nchw``."""
        batch, positions, channels = dims[0], (dims[1] // 2) * (dims[2] // 2), dims[3]
        size = positions * channels
        for b in range(batch):
            src, dst = grad_t[b * size:(b + 1) * size], row[b * size:(b + 1) * size]
            for p in range(positions):
                for c in range(channels):
                    dst[p * channels + c] = src[c * positions + p]

    @_njit
    def _pool_forward_kernel(cur, params, dims, keep, spikes, pool_spikes, pool_out, count, trace,
                             pool_count):  # pragma: no cover - compiled
        """``params = [beta, v_th, pool_v_th, scale]`` (dropout scale, see ``_pool_gather``);
        ``keep`` uint8 [N] (dropout: 1 kept, 0 dropped) or empty; ``spikes``/``pool_spikes``: T rows or two."""
        n_pool = pool_out.shape[1]
        v = np.zeros(cur.shape[1], cur.dtype)
        vp = np.zeros(n_pool, cur.dtype)
        pooled = np.empty(n_pool, cur.dtype)
        row = np.empty(n_pool, cur.dtype)
        pair = np.empty(dims[2] * dims[3], np.uint8)
        num_steps, rows, pool_rows = cur.shape[0], spikes.shape[0], pool_spikes.shape[0]
        for t in range(0, num_steps, 2):
            if t + 1 < num_steps:
                _forward_two_steps(cur[t], cur[t + 1], spikes[t % rows], spikes[(t + 1) % rows], v, count, trace,
                                   params[0], params[1])
            else:
                _forward_step(cur[t], spikes[t % rows], v, count, trace, params[0], params[1])
            for step in range(t, min(t + 2, num_steps)):
                _pool_gather(spikes[step % rows], keep, dims, params[3], pooled, pair)
                if dims[4]:
                    _if_step(pooled, pool_spikes[step % pool_rows], pool_out[step], vp, pool_count, params[2])
                else:
                    _if_step(pooled, pool_spikes[step % pool_rows], row, vp, pool_count, params[2])
                    _to_nchw(row, dims, pool_out[step])

    @_njit
    def _unpool_backward_step(spikes_t, gp, coef, grad_beta, scale, grad_next, grad_t,
                              dims):  # pragma: no cover - compiled
        """The layer's BPTT step (as ``_backward_step``) with ``dL/do = (gp/4) * scale`` of its window's ``gp``.

        ``scale`` is the dropout scale (1: none); a dropped neuron has ``coef = 0``. (Where
        ``(gp/4)*scale`` overflows, a dropped neuron gets 0*inf = nan where dropout's own backward
        gives 0; the kept neurons get +-inf either way, so the step is lost in both.) Walks the 2x2
        windows: each of the four corners is a run of C contiguous neurons sharing the window's
        gradient (no upsampled gradient is written; 1.2-1.4x faster than doing so).
        """
        batch, height, width, channels = dims[0], dims[1], dims[2], dims[3]
        h2, w2 = height // 2, width // 2
        quarter = gp.dtype.type(0.25)
        window = np.empty(channels, gp.dtype)
        for b in range(batch):
            for i in range(h2):
                for j in range(w2):
                    k = ((b * h2 + i) * w2 + j) * channels
                    g_k = gp[k:k + channels]
                    for c in range(channels):  # avg_pool2d's backward, then dropout's (x scale)
                        window[c] = (g_k[c] * quarter) * scale
                    a = ((b * height + 2 * i) * width + 2 * j) * channels
                    for corner in range(4):
                        s = a + (corner // 2) * width * channels + (corner % 2) * channels
                        fired_s, coef_s = spikes_t[s:s + channels], coef[s:s + channels]
                        next_s, out = grad_next[s:s + channels], grad_t[s:s + channels]
                        for c in range(channels):
                            fired = fired_s[c]
                            out[c] = coef_s[c] * window[c] * fired + (grad_beta - grad_beta * fired) * next_s[c]

    @_njit
    def _pool_backward_kernel(spikes, pool_spikes, grad_pool, coef, params, dims, grad):  # pragma: no cover
        """``params = [grad_beta, pool_scale, scale]`` (dropout scale, 1: none; ``coef`` 0 for dropped neurons):
        BPTT through pooling neurons, pooling, layer."""
        n_pool = pool_spikes.shape[1]
        last = grad.shape[0] - 1
        gp = np.zeros(n_pool, grad.dtype)          # pooling neurons' dL/dI at t
        gp_next = np.zeros(n_pool, grad.dtype)     # ... at t + 1 (two buffers: in place would not vectorise)
        pool_coef = np.full(n_pool, params[1], grad.dtype)
        row = np.empty(n_pool, grad.dtype)
        zeros = np.zeros(grad.shape[1], grad.dtype)
        one = grad.dtype.type(1.0)
        for t in range(last, -1, -1):
            if dims[4]:
                g_t = grad_pool[t]
            else:
                _from_nchw(grad_pool[t], dims, row)
                g_t = row
            _backward_step(pool_spikes[t], g_t, pool_coef, one, gp_next, gp)  # IF: grad_beta = 1
            grad_next = zeros if t == last else grad[t + 1]
            _unpool_backward_step(spikes[t], gp, coef, params[0], params[2], grad_next, grad[t], dims)
            gp, gp_next = gp_next, gp

    # error_model="numpy": a division by zero gives inf/nan as in torch (not ZeroDivisionError), and
    # the loop needs no zero check, which would keep it from vectorising (8x slower)
    @_njit(error_model="numpy")
    def _correction_kernel(trace, count, mask, keep, params, corr):  # pragma: no cover - compiled
        """[21]'s leak correction per neuron, ``params = [ln(beta), floor, scale]`` in the dtype.

        The dropout mask is ``mask`` [N] (any values), or ``scale`` where ``keep`` [N] (uint8) is 1
        and 0 elsewhere, or none (both empty). The operations of
        :func:`leaklib.neurons.leak_correction` in the same order and dtype.
        """
        zero = corr.dtype.type(0.0)
        one = corr.dtype.type(1.0)
        log_beta, floor, scale = params[0], params[1], params[2]
        masked, kept = mask.shape[0] > 0, keep.shape[0] > 0
        for n in range(corr.shape[0]):
            leaky, total = trace[n], count[n]
            if masked:
                leaky, total = leaky * mask[n], total * mask[n]
            elif kept:
                m = scale * keep[n]  # the mask's value: scale or 0, exactly
                leaky, total = leaky * m, total * m
            total = total + (one if total < floor else zero)  # [21] adds 1 where there is no spike
            corr[n] = (one if leaky > floor else zero) + log_beta * (leaky / total)

    @_njit
    def _keep_kernel(mask, keep):  # pragma: no cover - compiled
        """``keep`` (uint8, NHWC order) = ``mask [B, C, H, W] != 0``; returns the common nonzero value (0: none, nan: two)."""
        batch, channels, height, width = mask.shape
        scale = 0.0
        same = True
        for b in range(batch):
            for c in range(channels):
                for h in range(height):
                    for w in range(width):
                        m = mask[b, c, h, w]
                        kept = m != 0
                        keep[((b * height + h) * width + w) * channels + c] = kept
                        if kept:
                            if scale == 0.0:
                                scale = m
                            elif m != scale:
                                same = False
        return scale if same else np.nan

    _DISPATCHERS = (_forward_step, _forward_two_steps, _forward_kernel, _backward_step, _backward_two_steps,
                    _backward_kernel, _forward_step_out, _copy_spikes, _forward_out_kernel, _pool_gather,
                    _if_step, _to_nchw, _from_nchw, _pool_forward_kernel, _unpool_backward_step,
                    _pool_backward_kernel, _correction_kernel, _keep_kernel)


def _require_numba() -> None:
    if numba is None:
        raise RuntimeError("numba is not installed; use the torch scan of leaklib.neurons")


def _check_tensor(name: str, x, dtypes=_DTYPES) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU tensor (the numba scan runs on the CPU), got device {x.device}")
    if x.dtype not in dtypes:
        allowed = ", ".join(str(d) for d in dtypes)
        raise ValueError(f"{name} must have dtype {allowed}, got {x.dtype}")


def _check_time_major(name: str, x: torch.Tensor) -> None:
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape [T, ...] with T >= 1, got {tuple(x.shape)}")


#: [T, B, C, H, W] -> [T, B, H, W, C] (channels-last memory order per step) and back
_TO_NHWC = (0, 1, 3, 4, 2)
_TO_NCHW = (0, 1, 4, 2, 3)


def _channels_last(x: torch.Tensor) -> bool:
    """``x [T, B, C, H, W]`` stored channels-last per step (NHWC; what a channels_last convolution writes)."""
    return x.dim() == 5 and not x.is_contiguous() and x.permute(_TO_NHWC).is_contiguous()


def _as_2d(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """``[T, ...]`` -> ``[T, N]`` in NCHW or NHWC neuron order (a view when ``x`` is stored so), detached."""
    x = x.detach()
    if channels_last:
        x = x.permute(_TO_NHWC)
    if not x.is_contiguous():
        x = x.contiguous()
    return x.view(x.shape[0], -1)


def _from_2d(flat: torch.Tensor, shape: tuple[int, ...], channels_last: bool) -> torch.Tensor:
    """Inverse of :func:`_as_2d`: ``[T', N]`` -> ``[T', *shape[1:]]`` (a view with the layout's strides)."""
    if channels_last:
        _, batch, channels, height, width = shape
        return flat.view(flat.shape[0], batch, height, width, channels).permute(_TO_NCHW)
    return flat.view((flat.shape[0],) + tuple(shape[1:]))


def _layout(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``x [T, ...]`` as ``[T, N]`` in its own memory order (NHWC if channels-last, else NCHW) and that order."""
    channels_last = _channels_last(x)
    return _as_2d(x, channels_last), channels_last


def scan_forward(currents: torch.Tensor, beta: float,
                 v_th: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spikes, spike count and leaky spike trace of IF/LIF neurons driven by ``currents [T, ...]``.

    Algorithm 2 with ``beta = exp(-1/tau_m)`` (1: IF) and threshold ``v_th`` (Eq. 2, strict ``>``).

    Returns ``(spikes, count, trace)``: ``spikes`` is a ``torch.bool`` tensor of ``currents``'
    shape; ``count = sum_t o[t]`` and ``trace = sum_t beta**(T-1-t) o[t]`` have shape
    ``currents.shape[1:]`` and ``currents``' dtype (float32 or float64). Channels-last currents
    ``[T, B, C, H, W]`` are scanned in place and give channels-last results; any other layout is
    made contiguous first.
    """
    _require_numba()
    _check_tensor("currents", currents)
    _check_time_major("currents", currents)
    beta, v_th = _check_beta_threshold(beta, v_th)
    cur, cl = _layout(currents)
    num_steps, n_neurons = cur.shape
    spikes = torch.empty((num_steps, n_neurons), dtype=torch.uint8)
    count = torch.zeros(n_neurons, dtype=cur.dtype)
    trace = torch.zeros(n_neurons, dtype=cur.dtype)
    if n_neurons > 0:
        np_dtype = cur.numpy().dtype
        params = np.array([beta, v_th], dtype=np_dtype)  # rounded to the dtype, as torch does
        _run(_forward_kernel, cur.numpy(), params, spikes.numpy(), count.numpy(), trace.numpy())
    shape = tuple(currents.shape)
    return (_from_2d(spikes.view(torch.bool), shape, cl), _from_2d(count.view(1, -1), shape, cl)[0],
            _from_2d(trace.view(1, -1), shape, cl)[0])


def _coef(corr: torch.Tensor | None, scale: float, shape: tuple[int, ...], n_neurons: int,
          dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """``scale * corr`` per neuron as a contiguous ``[N]`` tensor of ``dtype`` in the scan's neuron order."""
    if corr is None:
        return torch.full((n_neurons,), scale, dtype=dtype)
    _check_tensor("corr", corr, (torch.float16, torch.bfloat16, torch.float32, torch.float64))
    neuron_shape = tuple(shape[1:])
    if tuple(corr.shape) not in (neuron_shape, (n_neurons,)):
        raise ValueError(f"corr must have shape {neuron_shape} or ({n_neurons},) (one value per neuron), "
                         f"got {tuple(corr.shape)}")
    corr = _as_2d(corr.detach().reshape((1,) + neuron_shape), channels_last).view(n_neurons)  # the scan's order
    return (corr.to(dtype) * scale).contiguous()


def scan_backward(spikes_bool: torch.Tensor, grad_spikes: torch.Tensor, grad_beta: float, scale: float,
                  corr: torch.Tensor | None) -> torch.Tensor:
    """``dL/dI [T, ...]`` of the scan (BPTT through Algorithm 2 with the Eq. 5 surrogate).

    ``dL/dI[t] = scale*corr*g[t]*o[t] + grad_beta*(1 - o[t])*dL/dI[t+1]`` with ``g = grad_spikes``
    (``dL/do``), ``o = spikes_bool`` from :func:`scan_forward`, ``scale = 1/(v_th + eps)``,
    ``grad_beta`` = ``beta`` (exact leak gradient) or 1 (detached leak), and ``corr`` a per-neuron
    multiplier of shape ``spikes_bool.shape[1:]`` or ``[N]`` (None: 1). Returned in
    ``grad_spikes``' dtype, in the layout of ``spikes_bool`` (channels-last or contiguous).
    """
    _require_numba()
    _check_tensor("spikes_bool", spikes_bool, (torch.bool,))
    _check_tensor("grad_spikes", grad_spikes)
    _check_time_major("spikes_bool", spikes_bool)
    if grad_spikes.shape != spikes_bool.shape:
        raise ValueError(f"grad_spikes must have the shape of spikes_bool {tuple(spikes_bool.shape)}, "
                         f"got {tuple(grad_spikes.shape)}")
    grad_beta, scale = _check_finite(grad_beta=grad_beta, scale=scale)
    spk, cl = _layout(spikes_bool)
    spk = spk.view(torch.uint8)
    g = _as_2d(grad_spikes, cl)
    num_steps, n_neurons = g.shape
    shape = tuple(spikes_bool.shape)
    coef = _coef(corr, scale, shape, n_neurons, g.dtype, cl)
    grad = torch.empty((num_steps, n_neurons), dtype=g.dtype)
    if n_neurons > 0:
        params = np.array([grad_beta], dtype=g.numpy().dtype)
        _run(_backward_kernel, spk.numpy(), g.numpy(), coef.numpy(), params, grad.numpy())
    return _from_2d(grad, shape, cl)


def _check_finite(**values: float) -> tuple[float, ...]:
    out = []
    for name, value in values.items():
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        out.append(value)
    return tuple(out)


def _check_beta_threshold(beta: float, v_th: float) -> tuple[float, float]:
    beta, v_th = float(beta), float(v_th)
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta = exp(-1/tau_m) must be in (0, 1], got {beta!r}")
    if not (v_th > 0.0 and math.isfinite(v_th)):
        raise ValueError(f"v_th must be finite and > 0, got {v_th!r}")
    return beta, v_th


def scan_forward_out(currents: torch.Tensor, beta: float, v_th: float, keep_spikes: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """:func:`scan_forward` that also returns the spikes in ``currents``' dtype, written by the scan itself.

    Returns ``(out, spikes, count, trace)``: ``out`` the 0/1 spikes in ``currents``' dtype, shape
    and layout, ``spikes`` the same as ``torch.bool`` (what the backward needs) or None with
    ``keep_spikes=False`` (then two rows are written in turn: a forward without gradient).
    """
    _require_numba()
    _check_tensor("currents", currents)
    _check_time_major("currents", currents)
    beta, v_th = _check_beta_threshold(beta, v_th)
    cur, cl = _layout(currents)
    num_steps, n_neurons = cur.shape
    out = torch.empty((num_steps, n_neurons), dtype=cur.dtype)
    spikes = torch.empty((num_steps if keep_spikes else min(2, num_steps), n_neurons), dtype=torch.uint8)
    count = torch.zeros(n_neurons, dtype=cur.dtype)
    trace = torch.zeros(n_neurons, dtype=cur.dtype)
    if n_neurons > 0:
        params = np.array([beta, v_th], dtype=cur.numpy().dtype)
        _run(_forward_out_kernel, cur.numpy(), params, spikes.numpy(), out.numpy(), count.numpy(), trace.numpy())
    shape = tuple(currents.shape)
    kept = _from_2d(spikes.view(torch.bool), shape, cl) if keep_spikes else None
    return (_from_2d(out, shape, cl), kept, _from_2d(count.view(1, -1), shape, cl)[0],
            _from_2d(trace.view(1, -1), shape, cl)[0])


def _check_pool_map(name: str, x: torch.Tensor) -> None:
    if x.dim() != 5 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"{name} must have shape [T, B, C, H, W] with even H and W (2x2 pooling), "
                         f"got {tuple(x.shape)}")


def _pool_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[:-2]) + (shape[-2] // 2, shape[-1] // 2)


class Dropout(NamedTuple):
    """A dropout mask as the pooling scans take it: ``keep`` (uint8 ``[N]``, NHWC order, 1 kept) and its ``scale``."""

    keep: torch.Tensor
    scale: float


def dropout_of(mask: torch.Tensor) -> Dropout | None:
    """``mask [B, C, H, W]`` as a :class:`Dropout`, or None where it is not a dropout mask.

    A dropout mask has every entry 0 or one common positive finite value (``1/(1-p)``); an all-zero
    mask has scale 1. One compiled pass over the mask in its own layout.
    """
    _require_numba()
    _check_tensor("mask", mask)
    if mask.dim() != 4:
        raise ValueError(f"mask must have shape [B, C, H, W], got {tuple(mask.shape)}")
    keep = torch.empty(mask.numel(), dtype=torch.uint8)
    scale = float(_run(_keep_kernel, mask.detach().numpy(), keep.numpy())) if mask.numel() else 0.0
    if not (math.isfinite(scale) and scale >= 0.0):
        return None
    return Dropout(keep, scale if scale > 0 else 1.0)


def _dropout(mask: torch.Tensor | Dropout | None, shape: tuple[int, ...], np_dtype) -> tuple[torch.Tensor, float]:
    """The uint8 ``keep`` [N] (NHWC) and the scale in ``np_dtype`` of a dropout mask; no mask: empty, 1."""
    if mask is None:
        return torch.empty(0, dtype=torch.uint8), 1.0
    if isinstance(mask, torch.Tensor):
        _check_tensor("mask", mask)
        if tuple(mask.shape) != tuple(shape[1:]):
            raise ValueError(f"mask must have the shape of one step {tuple(shape[1:])}, got {tuple(mask.shape)}")
        dropout = dropout_of(mask)
        if dropout is None:
            raise ValueError("mask must be a dropout mask: every entry 0 or one common positive finite value "
                             "1/(1-p)")
        mask = dropout
    _check_dropout(mask, math.prod(shape[1:]))
    return mask.keep, _scale_in(mask.scale, np_dtype)


def _scale_in(scale, np_dtype) -> float:
    """A dropout scale rounded to ``np_dtype``, which must keep it positive and finite."""
    with np.errstate(over="ignore", under="ignore"):  # the errors below say what went wrong
        rounded = float(np_dtype.type(float(scale)))
    if not (math.isfinite(rounded) and rounded > 0):
        raise ValueError(f"the dropout scale {scale!r} {'overflows' if rounded else 'underflows'} {np_dtype}")
    return rounded


def _check_dropout(dropout, n_neurons: int) -> None:
    """A :class:`Dropout` of ``n_neurons`` keep flags (uint8 0/1, one dimension, CPU) and a positive finite scale."""
    if not isinstance(dropout, Dropout):
        raise TypeError(f"mask must be a [B, C, H, W] tensor or a Dropout, got {type(dropout).__name__}")
    keep, scale = dropout
    if not (isinstance(keep, torch.Tensor) and keep.dtype == torch.uint8 and keep.dim() == 1
            and keep.device.type == "cpu" and keep.is_contiguous()):
        raise ValueError("Dropout.keep must be a contiguous one-dimensional uint8 CPU tensor (dropout_of makes it)")
    if keep.numel() != n_neurons:
        raise ValueError(f"Dropout.keep has {keep.numel()} flags for {n_neurons} neurons")
    try:
        finite = isinstance(scale, numbers.Real) and math.isfinite(float(scale)) and scale > 0
    except OverflowError:  # an int beyond float's range
        finite = False
    if not finite:
        raise ValueError(f"Dropout.scale must be a positive finite number, got {scale!r}")
    if keep.numel() and int(keep.max()) > 1:
        raise ValueError("Dropout.keep must hold 0 (dropped) or 1 (kept)")


def scan_pool_forward(currents: torch.Tensor, beta: float, v_th: float, pool_v_th: float,
                      keep_spikes: bool = True, pool_channels_last: bool = True, mask: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor,
                                 torch.Tensor, torch.Tensor]:
    """IF/LIF neurons driven by ``currents [T, B, C, H, W]``, 2x2 average pooling of their spikes, pooling neurons.

    The pooling neurons (Lee et al. 2020) are non-leaky IF neurons with threshold ``pool_v_th``,
    reset to 0, driven by the 2x2 averages ``(o00 + o01 + o10 + o11) / 4`` of the layer's spikes.
    Returns ``(pool_out, spikes, pool_spikes, count, trace, pool_count)``: ``pool_out`` the pooling
    neurons' spikes ``[T, B, C, H/2, W/2]`` in ``currents``' dtype (channels-last, or contiguous
    with ``pool_channels_last=False``); ``spikes`` and ``pool_spikes`` as ``torch.bool`` for the
    backward, or None with ``keep_spikes=False``; ``count``/``trace`` of the layer as
    :func:`scan_forward`; ``pool_count`` the pooling neurons' spike counts. The same numbers as
    :func:`scan_forward`, 2x2 averaging and a second :func:`scan_forward` (IF, ``pool_v_th``).
    The scan runs over channels-last currents; others are copied to that layout first. ``mask``
    (``[B, C, H, W]``, dropout of the layer's spikes, shared over T) makes the pooling average
    the masked spikes ``o * m``, in F.avg_pool2d's order; the counts stay those of ``o``.
    """
    _require_numba()
    _check_tensor("currents", currents)
    _check_time_major("currents", currents)
    _check_pool_map("currents", currents)
    beta, v_th = _check_beta_threshold(beta, v_th)
    _, pool_v_th = _check_beta_threshold(1.0, pool_v_th)
    cur = _as_2d(currents, True)
    num_steps, n_neurons = cur.shape
    shape = tuple(currents.shape)
    pool_shape = _pool_shape(shape)
    n_pool = n_neurons // 4
    rows = num_steps if keep_spikes else min(2, num_steps)  # two rows in turn: steps t, t+1 are scanned together
    spikes = torch.empty((rows, n_neurons), dtype=torch.uint8)
    pool_spikes = torch.empty((rows, n_pool), dtype=torch.uint8)
    pool_out = torch.empty((num_steps, n_pool), dtype=cur.dtype)
    count = torch.zeros(n_neurons, dtype=cur.dtype)
    trace = torch.zeros(n_neurons, dtype=cur.dtype)
    pool_count = torch.zeros(n_pool, dtype=cur.dtype)
    np_dtype = cur.numpy().dtype
    keep, scale = _dropout(mask, shape, np_dtype)
    if n_neurons > 0:
        params = np.array([beta, v_th, pool_v_th, scale], dtype=np_dtype)
        _, batch, channels, height, width = shape
        dims = np.array([batch, height, width, channels, int(pool_channels_last)], dtype=np.int64)
        _run(_pool_forward_kernel, cur.numpy(), params, dims, keep.numpy(), spikes.numpy(), pool_spikes.numpy(),
             pool_out.numpy(), count.numpy(), trace.numpy(), pool_count.numpy())
    kept = ((_from_2d(spikes.view(torch.bool), shape, True), _from_2d(pool_spikes.view(torch.bool), pool_shape, True))
            if keep_spikes else (None, None))
    return (_from_2d(pool_out, pool_shape, pool_channels_last), *kept, _from_2d(count.view(1, -1), shape, True)[0],
            _from_2d(trace.view(1, -1), shape, True)[0], _from_2d(pool_count.view(1, -1), pool_shape, True)[0])


def scan_pool_backward(spikes_bool: torch.Tensor, pool_spikes_bool: torch.Tensor, grad_pool: torch.Tensor,
                       grad_beta: float, scale: float, corr: torch.Tensor | None,
                       pool_scale: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``dL/dI [T, B, C, H, W]`` (channels-last) of :func:`scan_pool_forward` from ``grad_pool = dL/d pool_out``.

    BPTT through the pooling neurons (surrogate factor ``pool_scale``, no leak), the 2x2 average
    (a quarter of each window's gradient to each of its four inputs) and the layer (as
    :func:`scan_backward` with ``grad_beta``, ``scale`` and the per-neuron ``corr``); with the
    forward's dropout ``mask``, each input's quarter is multiplied by its ``m``.
    """
    _require_numba()
    _check_tensor("spikes_bool", spikes_bool, (torch.bool,))
    _check_tensor("pool_spikes_bool", pool_spikes_bool, (torch.bool,))
    _check_tensor("grad_pool", grad_pool)
    _check_time_major("spikes_bool", spikes_bool)
    _check_pool_map("spikes_bool", spikes_bool)
    shape = tuple(spikes_bool.shape)
    pool_shape = _pool_shape(shape)
    if tuple(pool_spikes_bool.shape) != pool_shape or tuple(grad_pool.shape) != pool_shape:
        raise ValueError(f"pool_spikes_bool and grad_pool must have shape {pool_shape}, got "
                         f"{tuple(pool_spikes_bool.shape)} and {tuple(grad_pool.shape)}")
    grad_beta, scale, pool_scale = _check_finite(grad_beta=grad_beta, scale=scale, pool_scale=pool_scale)
    g, grad_cl = _layout(grad_pool)
    spk = _as_2d(spikes_bool, True).view(torch.uint8)
    pool_spk = _as_2d(pool_spikes_bool, True).view(torch.uint8)
    num_steps, n_neurons = spk.shape
    coef = _coef(corr, scale, shape, n_neurons, g.dtype, True)
    keep, dropout_scale = _dropout(mask, shape, g.numpy().dtype)
    if keep.numel():
        coef.mul_(keep)  # x 0 or 1 (exact): a dropped neuron gets no gradient
    grad = torch.empty((num_steps, n_neurons), dtype=g.dtype)
    if n_neurons > 0:
        params = np.array([grad_beta, pool_scale, dropout_scale], dtype=g.numpy().dtype)
        _, batch, channels, height, width = shape
        dims = np.array([batch, height, width, channels, int(grad_cl)], dtype=np.int64)
        _run(_pool_backward_kernel, spk.numpy(), pool_spk.numpy(), g.numpy(), coef.numpy(), params, dims, grad.numpy())
    return _from_2d(grad, shape, True)


def leak_correction(trace: torch.Tensor, count: torch.Tensor, beta: float, floor: float,
                    mask: torch.Tensor | Dropout | None = None) -> torch.Tensor:
    """:func:`leaklib.neurons.leak_correction` as one compiled pass: ``(LF > floor) + ln(beta) * LF / Total``.

    ``trace``, ``count`` and ``mask`` (or None) are CPU tensors of one shape and one dtype (float32
    or float64); the result has ``trace``'s shape and dtype, bit-identical to the torch formula,
    and is channels-last where ``trace`` is (the layout the pooling scan returns). ``mask`` may also
    be the :class:`Dropout` of a channels-last ``[B, C, H, W]`` trace (its keep flags are in that order).
    """
    _require_numba()
    _check_tensor("trace", trace)
    _check_tensor("count", count)
    if count.shape != trace.shape or count.dtype != trace.dtype:
        raise ValueError(f"count must have trace's shape {tuple(trace.shape)} and dtype {trace.dtype}, got "
                         f"{tuple(count.shape)} {count.dtype}")
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta!r}")
    # the scans' [T, ...] layout helpers, with the neurons as one step: NHWC order where trace is channels-last
    stepped = trace.unsqueeze(0)
    channels_last = _channels_last(stepped)
    empty_mask, keep, scale = torch.empty(0, dtype=trace.dtype), torch.empty(0, dtype=torch.uint8), 1.0
    if isinstance(mask, Dropout):  # its keep flags are in NHWC order: the trace must be stored so
        if not (trace.dim() == 4 and trace.permute(0, 2, 3, 1).is_contiguous()):
            raise ValueError("a Dropout mask needs a channels-last [B, C, H, W] trace")
        _check_dropout(mask, trace.numel())
        keep, scale, mask, channels_last = mask.keep, _scale_in(mask.scale, _NP_DTYPES[trace.dtype]), None, True
    elif mask is not None:
        _check_tensor("mask", mask)
        if mask.shape != trace.shape or mask.dtype != trace.dtype:
            raise ValueError(f"mask must have trace's shape {tuple(trace.shape)} and dtype {trace.dtype}, got "
                             f"{tuple(mask.shape)} {mask.dtype}")
    flat_trace = _as_2d(stepped, channels_last)
    corr = torch.empty_like(flat_trace)
    if corr.numel():
        np_dtype = flat_trace.numpy().dtype
        params = np.array([math.log(beta), floor, scale], dtype=np_dtype)  # rounded to the dtype, as torch does
        flat_mask = _as_2d(mask.unsqueeze(0), channels_last)[0] if mask is not None else empty_mask
        _run(_correction_kernel, flat_trace[0].numpy(), _as_2d(count.unsqueeze(0), channels_last)[0].numpy(),
             flat_mask.numpy(), keep.numpy(), params, corr[0].numpy())
    return _from_2d(corr, tuple(stepped.shape), channels_last)[0]

"""Tests of leaklib.scan_cpu: the numba scan of Algorithm 2 and its BPTT backward (Eq. 5 surrogate).

Expected values come from an independent per-step torch computation written in this file (the
forward recurrence, and autograd through a straight-through spike function), or are worked out by
hand in the comments; never from running the code under test.
"""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("numba")

from leaklib import scan_cpu  # noqa: E402

TAUS = [5.0, 30.0, 100.0, math.inf]
DTYPES = [torch.float32, torch.float64]
SHAPES = [(60, 37), (25, 3, 4, 5), (1, 9), (8, 1), (1,), (1, 1)]


def _beta(tau_m: float) -> float:
    return 1.0 if math.isinf(tau_m) else math.exp(-1.0 / tau_m)


def ref_forward(currents: torch.Tensor, beta: float, v_th: float) -> torch.Tensor:
    """Per-step reference of Algorithm 2 in torch ops (spikes in the currents' dtype)."""
    v = torch.zeros_like(currents[0])
    out = []
    for t in range(currents.shape[0]):
        u = v + currents[t]
        o = (u > v_th).to(currents.dtype)
        out.append(o)
        v = beta * u * (1.0 - o)
    return torch.stack(out)


class _Spike(torch.autograd.Function):
    """Heaviside spike with the Eq. 5 straight-through surrogate, times a per-neuron ``corr``."""

    @staticmethod
    def forward(ctx, u, v_th, scale, corr):  # type: ignore[override]
        o = (u > v_th).to(u.dtype)
        ctx.save_for_backward(o, corr)
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        o, corr = ctx.saved_tensors
        return grad_out * o * ctx.scale * corr, None, None, None


def ref_grad(currents, beta, v_th, grad_beta, scale, corr, grad_spikes):
    """Autograd through the per-step recurrence: leak of value ``beta*u``, gradient ``grad_beta``.

    Returns ``(dL/dI, spikes)`` with ``L = sum(spikes * grad_spikes)``; the reset ``(1 - o)`` is a
    constant of the backward (``o`` detached).
    """
    x = currents.detach().clone().requires_grad_(True)
    c = torch.ones_like(x[0]) if corr is None else corr.to(x.dtype)
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        u = v + x[t]
        o = _Spike.apply(u, v_th, scale, c)
        decayed = u * grad_beta + (u * beta - u * grad_beta).detach()
        v = decayed * (1.0 - o.detach())
        out.append(o)
    spikes = torch.stack(out)
    (spikes * grad_spikes).sum().backward()
    return x.grad, spikes.detach()


def _currents(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    # mean drive below threshold plus noise: spikes, silent stretches and negative inputs
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 0.5 + 0.3).to(dtype)


# ---------------------------------------------------------------------------------------------
# forward: bit-identical spikes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tau_m", TAUS)
@pytest.mark.parametrize("v_th", [1.0, 0.3])
@pytest.mark.parametrize("shape", SHAPES)
def test_spikes_bit_identical_to_per_step_reference(shape, v_th, tau_m, dtype):
    beta = _beta(tau_m)
    currents = _currents(shape, dtype, seed=hash((shape, v_th, tau_m)) % 2**31)
    spikes, count, trace = scan_cpu.scan_forward(currents, beta, v_th)
    expected = ref_forward(currents, beta, v_th)
    assert spikes.dtype == torch.bool and spikes.shape == currents.shape
    assert torch.equal(spikes, expected.bool())
    assert count.shape == currents.shape[1:] and count.dtype == dtype
    assert trace.shape == currents.shape[1:] and trace.dtype == dtype
    assert torch.equal(count, expected.sum(0))
    if currents.numel() > 100:  # the large cases exercise both branches of the neuron
        assert 0.02 < expected.mean().item() < 0.9


def test_long_run_has_leak_sensitive_spikes():
    """Over T=300 steps the LIF spikes differ from the IF spikes, and both match the reference."""
    currents = _currents((300, 256), torch.float32, seed=7) * 0.3
    lif, _, _ = scan_cpu.scan_forward(currents, _beta(30.0), 1.0)
    if_, _, _ = scan_cpu.scan_forward(currents, 1.0, 1.0)
    assert torch.equal(lif, ref_forward(currents, _beta(30.0), 1.0).bool())
    assert torch.equal(if_, ref_forward(currents, 1.0, 1.0).bool())
    assert lif.sum() < if_.sum()  # the leak loses charge


@pytest.mark.parametrize("dtype", DTYPES)
def test_threshold_is_strict_and_compared_in_the_dtype(dtype):
    # a current equal to v_th rounded to the dtype does not fire (strict >); the next
    # representable value up does. float32(0.3) = 0.30000001192... > 0.3: a kernel comparing a
    # float32 membrane against the double 0.3 would fire on the first column.
    v_th = 0.3
    at = torch.tensor(v_th, dtype=dtype)
    above = torch.nextafter(at, torch.tensor(1.0, dtype=dtype))
    below = torch.nextafter(at, torch.tensor(0.0, dtype=dtype))
    currents = torch.stack([at, above, below]).view(1, 3)
    spikes, count, _ = scan_cpu.scan_forward(currents, 0.9, v_th)
    assert spikes.tolist() == [[False, True, False]]
    assert count.tolist() == [0.0, 1.0, 0.0]


def test_leak_is_rounded_in_float32():
    """A float32 leak computed with the double beta would fire where the reference does not.

    Step 0: a current ``a`` below v_th = 0.75 leaves ``v1 = fl32(fl32(beta) * a)``. Step 1 adds
    ``0.75 - v1`` (exact in float32), so the reference membrane is exactly v_th: no spike (strict
    ``>``). With ``fl32(beta_double * a)``, one ulp larger for the ``a`` chosen here, the membrane
    would be one ulp above v_th (same binade [0.5, 1), so representable): a spike.
    """
    beta, v_th = _beta(30.0), 0.75
    b32 = torch.tensor(beta, dtype=torch.float32)
    cands = torch.linspace(0.56, 0.74, 2001, dtype=torch.float32)
    ref_v1 = b32 * cands
    promoted_v1 = (beta * cands.double()).float()
    a = cands[promoted_v1 > ref_v1][0]
    v1, v1_promoted = b32 * a, (beta * a.double()).float()
    current = torch.tensor(v_th, dtype=torch.float32) - v1
    assert v1 + current == v_th and v1_promoted + current > v_th  # the case discriminates
    currents = torch.stack([a, current]).view(2, 1)
    assert ref_forward(currents, beta, v_th).flatten().tolist() == [0.0, 0.0]
    spikes, _, _ = scan_cpu.scan_forward(currents, beta, v_th)
    assert spikes.flatten().tolist() == [False, False]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="checks x86 instructions")
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_vectorised_without_fused_multiply_add(dtype):
    """No FMA (it would round ``u*keep + I`` once instead of twice) and packed (SIMD) float ops."""
    import numba

    x = torch.ones(3, 4, dtype=dtype)
    spikes, _, _ = scan_cpu.scan_forward(x, 0.9, 1.0)
    scan_cpu.scan_backward(spikes, x, 0.9, 1.0, None)
    packed = "mulps" if dtype == torch.float32 else "mulpd"
    for kernel in (scan_cpu._forward_kernel, scan_cpu._backward_kernel):
        sig = next(s for s in kernel.signatures if str(s[-1].dtype) == str(dtype).removeprefix("torch."))
        # numba cannot show the assembly of code loaded from its cache: recompile, same options
        options = {k: v for k, v in kernel.targetoptions.items() if k != "nopython"}
        fresh = numba.njit(**options)(kernel.py_func)
        fresh.compile(sig)
        asm = fresh.inspect_asm(sig)
        assert not re.search(r"\bv?f(n)?m(add|sub)\d", asm), "fused multiply-add in the compiled kernel"
        assert packed in asm, "inner loop not vectorised"


@pytest.mark.parametrize("dtype", DTYPES)
def test_count_and_trace_hand_built(dtype):
    beta = _beta(5.0)  # 0.8187
    v_th = 1.0
    # neuron a: 1.5 > 1 fires (v=0); 0.2 silent (v=0.2*beta); 0.2*beta+1.2 = 1.36 fires; 2.0 fires
    #   -> o = [1, 0, 1, 1], count 3, trace = beta**3 + beta + 1
    # neuron b: 0.6; 0.6*beta+0.6 = 1.091 fires; 0.6; 1.091 fires -> o = [0, 1, 0, 1], trace = beta**2 + 1
    # neuron c: never reaches 1 (0.1 per step, at most 0.1/(1-beta) = 0.55) -> count 0, trace 0
    currents = torch.tensor([[1.5, 0.6, 0.1], [0.2, 0.6, 0.1], [1.2, 0.6, 0.1], [2.0, 0.6, 0.1]], dtype=dtype)
    spikes, count, trace = scan_cpu.scan_forward(currents, beta, v_th)
    assert spikes.T.tolist() == [[True, False, True, True], [False, True, False, True], [False] * 4]
    assert count.tolist() == [3.0, 2.0, 0.0]
    rtol = 1e-6 if dtype == torch.float32 else 1e-14
    expected = torch.tensor([beta**3 + beta + 1, beta**2 + 1, 0.0], dtype=torch.float64)
    torch.testing.assert_close(trace.double(), expected, rtol=rtol, atol=0.0)


def test_if_trace_equals_count():
    currents = _currents((40, 50), torch.float64, seed=3)
    _, count, trace = scan_cpu.scan_forward(currents, 1.0, 0.8)
    assert count.sum() > 0
    assert torch.equal(trace, count)  # beta = 1: trace = sum_t o[t]


def test_trace_matches_weighted_sum_of_spikes():
    beta = _beta(30.0)
    currents = _currents((50, 64), torch.float64, seed=11)
    spikes, _, trace = scan_cpu.scan_forward(currents, beta, 1.0)
    weights = beta ** torch.arange(49, -1, -1, dtype=torch.float64)
    torch.testing.assert_close(trace, (weights[:, None] * spikes.double()).sum(0), rtol=1e-12, atol=0.0)


def test_non_contiguous_and_requires_grad_input():
    base = _currents((6, 20, 30), torch.float32, seed=5)
    currents = base.transpose(1, 2)  # [T, 30, 20], not contiguous
    assert not currents.is_contiguous()
    spikes, count, _ = scan_cpu.scan_forward(currents.requires_grad_(True), 0.95, 0.5)
    expected = ref_forward(currents.detach(), 0.95, 0.5)
    assert spikes.shape == currents.shape and count.shape == (30, 20)
    assert torch.equal(spikes, expected.bool())
    assert torch.equal(count, expected.sum(0))


def test_no_neurons():
    spikes, count, trace = scan_cpu.scan_forward(torch.zeros(5, 0, 3), 0.9, 1.0)
    assert spikes.shape == (5, 0, 3) and count.shape == (0, 3) and trace.shape == (0, 3)
    grad = scan_cpu.scan_backward(spikes, torch.zeros(5, 0, 3), 0.9, 1.0, None)
    assert grad.shape == (5, 0, 3)


def test_input_is_not_modified():
    currents = _currents((10, 16), torch.float32, seed=2)
    copy = currents.clone()
    scan_cpu.scan_forward(currents, 0.9, 1.0)
    assert torch.equal(currents, copy)


# ---------------------------------------------------------------------------------------------
# backward


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("tau_m", [5.0, 30.0, math.inf])
@pytest.mark.parametrize("exact_leak", [True, False])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.75])
@pytest.mark.parametrize("with_corr", [False, True])
def test_gradient_matches_autograd_reference(with_corr, scale, exact_leak, tau_m, dtype, rtol):
    beta = _beta(tau_m)
    grad_beta = beta if exact_leak else 1.0
    v_th = 0.75
    shape = (30, 4, 6)
    currents = _currents(shape, dtype, seed=13)
    g = torch.Generator().manual_seed(17)
    grad_spikes = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    corr = (torch.rand(shape[1:], generator=g, dtype=torch.float64) * 2 + 0.1).to(dtype) if with_corr else None
    expected, ref_spikes = ref_grad(currents, beta, v_th, grad_beta, scale, corr, grad_spikes)
    spikes, _, _ = scan_cpu.scan_forward(currents, beta, v_th)
    assert torch.equal(spikes, ref_spikes.bool())
    grad = scan_cpu.scan_backward(spikes, grad_spikes, grad_beta, scale, corr)
    assert grad.dtype == dtype and grad.shape == shape
    torch.testing.assert_close(grad, expected, rtol=rtol, atol=rtol * 1e-3)
    # the recurrence matters here: silent steps receive gradient from later spikes
    silent = ~spikes
    assert (grad[silent] != 0).any()


def test_backward_hand_computed():
    # T=3, two neurons, scale = 1/0.75 = 4/3, grad_beta = 0.9
    # neuron a: o = [0, 0, 1], g = [0.3, -0.7, 1.1], corr 2:
    #   dI[2] = 4/3*2*1.1 = 2.9333...; dI[1] = 0.9*dI[2] = 2.64; dI[0] = 0.9*dI[1] = 2.376
    # neuron b: o = [1, 0, 1], g = [0.5, 2.0, -0.25], corr 0.5:
    #   dI[2] = 4/3*0.5*(-0.25) = -1/6; dI[1] = 0.9*(-1/6) = -0.15; dI[0] = 4/3*0.5*0.5 = 1/3
    #   (the spike at t=0 cuts the chain; g[1] of a silent step contributes nothing)
    spikes = torch.tensor([[False, True], [False, False], [True, True]])
    g = torch.tensor([[0.3, 0.5], [-0.7, 2.0], [1.1, -0.25]], dtype=torch.float64)
    corr = torch.tensor([2.0, 0.5], dtype=torch.float64)
    grad = scan_cpu.scan_backward(spikes, g, 0.9, 1 / 0.75, corr)
    expected = torch.tensor([[2.376, 1 / 3], [2.64, -0.15], [1.1 * 8 / 3, -1 / 6]], dtype=torch.float64)
    torch.testing.assert_close(grad, expected, rtol=1e-14, atol=1e-15)


def test_backward_single_step_and_flat_corr():
    spikes = torch.tensor([[True, False, True]])
    g = torch.tensor([[2.0, 3.0, -1.0]])
    corr = torch.tensor([0.5, 4.0, 3.0])
    grad = scan_cpu.scan_backward(spikes, g, 1.0, 2.0, corr)
    assert grad.tolist() == [[2.0, 0.0, -6.0]]  # 2*0.5*2, silent, 2*3*(-1)


def test_backward_accepts_flat_corr_for_multi_dim_neurons():
    spikes = torch.tensor([[[True, False], [False, True]]] * 2)  # [T=2, 2, 2]
    g = torch.ones(2, 2, 2, dtype=torch.float64)
    corr = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    grad_flat = scan_cpu.scan_backward(spikes, g, 0.5, 1.0, corr)
    grad_shaped = scan_cpu.scan_backward(spikes, g, 0.5, 1.0, corr.view(2, 2))
    assert torch.equal(grad_flat, grad_shaped)
    # fired neurons (1 and 4): corr*g at both steps; silent ones: 0
    assert grad_flat[0].tolist() == [[1.0, 0.0], [0.0, 4.0]]


# ---------------------------------------------------------------------------------------------
# argument checks, availability, cache


def test_forward_rejects_bad_input():
    with pytest.raises(ValueError, match=r"shape \[T, \.\.\.\]"):
        scan_cpu.scan_forward(torch.tensor(1.0), 0.9, 1.0)
    with pytest.raises(ValueError, match="T >= 1"):
        scan_cpu.scan_forward(torch.zeros(0, 4), 0.9, 1.0)
    with pytest.raises(ValueError, match="CPU tensor"):
        scan_cpu.scan_forward(torch.zeros(3, 4, device="meta"), 0.9, 1.0)
    with pytest.raises(ValueError, match="dtype"):
        scan_cpu.scan_forward(torch.zeros(3, 4, dtype=torch.int32), 0.9, 1.0)
    with pytest.raises(ValueError, match="dtype"):
        scan_cpu.scan_forward(torch.zeros(3, 4, dtype=torch.float16), 0.9, 1.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        scan_cpu.scan_forward([[1.0]], 0.9, 1.0)
    for beta in (0.0, 1.5, math.nan):
        with pytest.raises(ValueError, match="beta"):
            scan_cpu.scan_forward(torch.zeros(3, 4), beta, 1.0)
    for v_th in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="v_th"):
            scan_cpu.scan_forward(torch.zeros(3, 4), 0.9, v_th)


def test_backward_rejects_bad_input():
    spikes = torch.zeros(3, 4, dtype=torch.bool)
    g = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="shape of spikes_bool"):
        scan_cpu.scan_backward(spikes, torch.zeros(3, 5), 0.9, 1.0, None)
    with pytest.raises(ValueError, match="spikes_bool must have dtype torch.bool"):
        scan_cpu.scan_backward(spikes.float(), g, 0.9, 1.0, None)
    with pytest.raises(ValueError, match="CPU tensor"):
        scan_cpu.scan_backward(spikes, torch.zeros(3, 4, device="meta"), 0.9, 1.0, None)
    with pytest.raises(ValueError, match="T >= 1"):
        scan_cpu.scan_backward(torch.zeros(0, 4, dtype=torch.bool), torch.zeros(0, 4), 0.9, 1.0, None)
    with pytest.raises(ValueError, match="corr must have shape"):
        scan_cpu.scan_backward(spikes, g, 0.9, 1.0, torch.ones(3))
    with pytest.raises(ValueError, match="corr must be a CPU tensor"):
        scan_cpu.scan_backward(spikes, g, 0.9, 1.0, torch.ones(4, device="meta"))
    with pytest.raises(ValueError, match="scale"):
        scan_cpu.scan_backward(spikes, g, 0.9, math.inf, None)
    with pytest.raises(ValueError, match="grad_beta"):
        scan_cpu.scan_backward(spikes, g, math.nan, 1.0, None)


def test_without_numba_not_available_and_functions_refuse(monkeypatch):
    monkeypatch.setattr(scan_cpu, "numba", None)
    assert scan_cpu.available() is False
    with pytest.raises(RuntimeError, match="numba is not installed"):
        scan_cpu.scan_forward(torch.ones(2, 3), 0.9, 1.0)
    with pytest.raises(RuntimeError, match="numba is not installed"):
        scan_cpu.scan_backward(torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3), 0.9, 1.0, None)


def test_available_respects_environment(monkeypatch):
    monkeypatch.delenv("LEAKLIB_NUMBA", raising=False)
    assert scan_cpu.available() is True
    monkeypatch.setenv("LEAKLIB_NUMBA", "0")
    assert scan_cpu.available() is False
    monkeypatch.setenv("LEAKLIB_NUMBA", "1")
    assert scan_cpu.available() is True


_CACHE_SCRIPT = textwrap.dedent("""
    import importlib, sys, warnings
    import numba, torch
    from numba.core import caching

    def unwritable(self):
        raise PermissionError(13, "read-only", self.get_cache_path())

    good = caching._CacheLocator.ensure_cache_path
    # 1. no writable cache directory at all: import works, kernels compile in memory only
    caching._CacheLocator.ensure_cache_path = unwritable
    from leaklib import scan_cpu
    assert isinstance(scan_cpu._forward_kernel._cache, caching.NullCache)
    x = torch.tensor([[0.5, 1.5], [0.6, 0.1]])
    assert scan_cpu.scan_forward(x, 1.0, 1.0)[0].tolist() == [[False, True], [True, False]]
    # 2. the directory is writable at import but saving fails: one warning, result still correct
    caching._CacheLocator.ensure_cache_path = good
    numba.config.CACHE_DIR = sys.argv[1]
    scan_cpu = importlib.reload(scan_cpu)
    assert not isinstance(scan_cpu._forward_kernel._cache, caching.NullCache)
    caching._CacheLocator.ensure_cache_path = unwritable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert scan_cpu.scan_forward(x, 1.0, 1.0)[0].tolist() == [[False, True], [True, False]]
    assert any("cache disabled" in str(w.message) for w in caught), [str(w.message) for w in caught]
    # the other dtype and the backward compile without another warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, _, _ = scan_cpu.scan_forward(x.double(), 1.0, 1.0)
        g = scan_cpu.scan_backward(s, torch.ones(2, 2, dtype=torch.float64), 1.0, 1.0, None)
        # o = [[0, 1], [1, 0]], g = 1, IF: dI[1] = o[1] = [1, 0]; dI[0] = o[0] + (1 - o[0]) * dI[1] = [1, 1]
        assert g.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    print("OK")
""")


def test_cache_fails_soft_without_writable_directory(tmp_path):
    root = Path(scan_cpu.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, str(tmp_path / "cache")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """The same values ``[T, B, C, H, W]`` stored NHWC per step (as a channels_last convolution writes them)."""
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_last_currents_scanned_in_their_layout(dtype):
    beta = _beta(30.0)
    currents = _currents((20, 3, 5, 4, 6), dtype, seed=21)
    stored = _channels_last(currents)
    assert not stored.is_contiguous()
    spikes, count, trace = scan_cpu.scan_forward(stored, beta, 1.0)
    expected = ref_forward(currents, beta, 1.0)
    assert torch.equal(spikes, expected.bool()) and torch.equal(count, expected.sum(0))
    # results keep the layout: no copy into NCHW on the way in or out
    assert spikes.stride() == stored.stride() and count.stride() == stored.stride()[1:]
    g = torch.Generator().manual_seed(22)
    grad_spikes = torch.randn(currents.shape, generator=g, dtype=torch.float64).to(dtype)
    corr = (torch.rand(currents.shape[1:], generator=g, dtype=torch.float64) + 0.5).to(dtype)
    reference = scan_cpu.scan_backward(spikes.contiguous(), grad_spikes, 1.0, 2.0, corr)
    for grad_in, corr_in in ((grad_spikes, corr), (_channels_last(grad_spikes), trace * 0 + corr),
                             (grad_spikes, corr.reshape(-1))):  # a flat corr is in NCHW order, as its view
        grad = scan_cpu.scan_backward(spikes, grad_in, 1.0, 2.0, corr_in)
        assert grad.stride() == stored.stride()
        assert torch.equal(grad, reference)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("num_steps", [30, 31, 1])
def test_forward_out_writes_the_reference_spikes_in_the_dtype(num_steps, channels_last, dtype):
    beta = _beta(5.0)
    currents = _currents((num_steps, 2, 3, 4, 4), dtype, seed=23)
    stored = _channels_last(currents) if channels_last else currents
    expected = ref_forward(currents, beta, 1.0)
    for keep in (True, False):
        out, spikes, count, trace = scan_cpu.scan_forward_out(stored, beta, 1.0, keep_spikes=keep)
        assert out.dtype == dtype and out.stride() == stored.stride()
        assert torch.equal(out, expected)
        assert torch.equal(count, expected.sum(0))
        assert torch.equal(trace, scan_cpu.scan_forward(currents, beta, 1.0)[2])
        assert (spikes is None) if not keep else torch.equal(spikes, expected.bool())


# ---------------------------------------------------------------------------------------------
# a layer, 2x2 average pooling and pooling neurons in one scan


def _ref_pool_layer(currents, beta, v_th, pool_v_th, grad_beta, scale, corr, grad_pool, mask=None):
    """Independent reference: autograd through the per-step layer, F.avg_pool2d and IF pooling neurons.

    The pooling neurons' surrogate factor is 1 and they have no leak; a dropout ``mask`` multiplies
    the layer's spikes before the pooling. Returns the pooling neurons' spikes, the layer's spikes
    and ``dL/dI`` of ``L = sum(pool_spikes * grad_pool)``.
    """
    from torch.nn import functional as F

    x = currents.detach().clone().requires_grad_(True)
    num_steps, batch = x.shape[:2]
    c = torch.ones_like(x[0]) if corr is None else corr.to(x.dtype)
    v = torch.zeros_like(x[0])
    vp = None
    layer, pooled_out = [], []
    for t in range(num_steps):
        u = v + x[t]
        o = _Spike.apply(u, v_th, scale, c)
        v = (u * grad_beta + (u * beta - u * grad_beta).detach()) * (1.0 - o.detach())
        p = F.avg_pool2d(o if mask is None else o * mask, 2)
        up = p if vp is None else vp + p
        op = _Spike.apply(up, pool_v_th, 1.0, torch.ones_like(up))
        vp = up * (1.0 - op.detach())
        layer.append(o)
        pooled_out.append(op)
    spikes, pool_spikes = torch.stack(layer), torch.stack(pooled_out)
    (pool_spikes * grad_pool).sum().backward()
    return pool_spikes.detach(), spikes.detach(), x.grad


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("tau_m, exact_leak", [(30.0, False), (5.0, True), (math.inf, False)])
@pytest.mark.parametrize("pool_channels_last", [True, False])
@pytest.mark.parametrize("input_channels_last", [True, False])
@pytest.mark.parametrize("num_steps", [25, 24])  # the scans take two steps at a time: odd and even T
def test_pool_scan_equals_layer_pooling_and_pooling_neurons(num_steps, input_channels_last, pool_channels_last,
                                                           tau_m, exact_leak, dtype, rtol):
    beta = _beta(tau_m)
    grad_beta = beta if exact_leak else 1.0
    shape = (num_steps, 2, 3, 6, 4)
    currents = (_currents(shape, torch.float64, seed=31) + 0.25).to(dtype)
    g = torch.Generator().manual_seed(32)
    pool_shape = shape[:3] + (3, 2)
    grad_pool = torch.randn(pool_shape, generator=g, dtype=torch.float64).to(dtype)
    corr = (torch.rand(shape[1:], generator=g, dtype=torch.float64) + 0.5).to(dtype)
    ref_pool, ref_spikes, ref_grad_in = _ref_pool_layer(currents, beta, 1.0, 0.75, grad_beta, 1.25, corr, grad_pool)
    stored = _channels_last(currents) if input_channels_last else currents
    out, spikes, pool_spikes, count, trace, pool_count = scan_cpu.scan_pool_forward(
        stored, beta, 1.0, 0.75, pool_channels_last=pool_channels_last)
    assert out.shape == pool_shape and out.dtype == dtype
    assert out.is_contiguous() != pool_channels_last
    assert torch.equal(out, ref_pool) and torch.equal(pool_spikes, ref_pool.bool())
    assert torch.equal(spikes, ref_spikes.bool())
    assert torch.equal(count, ref_spikes.sum(0)) and torch.equal(pool_count, ref_pool.sum(0))
    assert torch.equal(trace, scan_cpu.scan_forward(currents, beta, 1.0)[2])
    assert 0 < ref_pool.mean() < 1 and 0 < ref_spikes.mean() < 1  # both layers spike, not always
    grad = scan_cpu.scan_pool_backward(spikes, pool_spikes, grad_pool, grad_beta, 1.25, corr)
    torch.testing.assert_close(grad, ref_grad_in, rtol=rtol, atol=rtol * 1e-3)
    assert (grad[~spikes] != 0).any()  # gradient reaches silent steps through the recurrence
    # without a backward to follow: the same output and counts, no spikes kept
    lean = scan_cpu.scan_pool_forward(stored, beta, 1.0, 0.75, keep_spikes=False,
                                      pool_channels_last=pool_channels_last)
    assert lean[1] is None and lean[2] is None
    assert torch.equal(lean[0], out) and torch.equal(lean[3], count) and torch.equal(lean[5], pool_count)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keep", [0.8, 0.7])  # 1/keep = 1.25 exact; 1/0.7 rounded
def test_pool_scan_with_dropout_mask_equals_pooling_the_masked_spikes(keep, dtype):
    beta = _beta(30.0)
    shape = (24, 3, 4, 4, 6)
    currents = (_currents(shape, torch.float64, seed=33) + 0.25).to(dtype)
    g = torch.Generator().manual_seed(34)
    mask = ((torch.rand(shape[1:], generator=g) < keep).to(dtype) / keep)
    pool_shape = shape[:3] + (2, 3)
    grad_pool = torch.randn(pool_shape, generator=g, dtype=torch.float64).to(dtype)
    corr = (torch.rand(shape[1:], generator=g, dtype=torch.float64) + 0.5).to(dtype)
    ref_pool, ref_spikes, ref_grad_in = _ref_pool_layer(currents, beta, 1.0, 0.75, 1.0, 1.0, corr, grad_pool, mask)
    out, spikes, pool_spikes, count, _, pool_count = scan_cpu.scan_pool_forward(
        _channels_last(currents), beta, 1.0, 0.75, mask=mask)
    assert torch.equal(out, ref_pool) and torch.equal(spikes, ref_spikes.bool())
    assert torch.equal(count, ref_spikes.sum(0))  # counts of the spikes, not of the masked spikes
    unmasked = scan_cpu.scan_pool_forward(_channels_last(currents), beta, 1.0, 0.75)[0]
    assert not torch.equal(out, unmasked)  # the mask reached the pooling
    grad = scan_cpu.scan_pool_backward(spikes, pool_spikes, grad_pool, 1.0, 1.0, corr, mask=mask)
    assert torch.equal(grad, ref_grad_in)  # the reference's products in its order: bit for bit
    assert (grad[:, mask == 0] == 0).all() and (grad[:, mask != 0] != 0).any()  # dropped neurons get none
    with pytest.raises(ValueError, match="mask must have the shape"):
        scan_cpu.scan_pool_forward(currents, beta, 1.0, 0.75, mask=mask[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_window_of_masked_spikes_sums_to_one_rounding_of_count_times_scale(dtype):
    # what the pooling scan relies on: adding a copies of m one after another (F.avg_pool2d's order)
    # gives a*m rounded once, for a <= 4 and any m; checked on a million scales and their neighbours
    g = torch.Generator().manual_seed(40)
    significand = torch.rand(200_000, generator=g, dtype=torch.float64).add(1.0)  # [1, 2)
    info = torch.finfo(dtype)
    top = 127 if dtype == torch.float32 else 1023  # the largest exponent: 2m overflows there
    exponents = [-140 if dtype == torch.float32 else -1070, -20, -1, 0, 1, 20, top - 2, top - 1, top]  # subnormals too
    m = torch.cat([torch.ldexp(significand, torch.tensor(float(e), dtype=torch.float64)).to(dtype) for e in exponents])
    m = torch.cat([m, torch.nextafter(m, torch.full_like(m, math.inf)), 1 / torch.arange(1, 1000, dtype=dtype),
                   torch.tensor([info.tiny, info.max, 1.0], dtype=dtype)])
    assert m.isfinite().all() and (m > 0).all()
    two = m + m
    three = two + m
    assert torch.equal(two, 2 * m) and torch.equal(three, 3 * m) and torch.equal(three + m, 4 * m)
    assert three[-2:-1].isinf().all()  # overflow: inf on both sides


@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_gather_of_masked_spikes_equals_avg_pool2d_for_many_scales(dtype):
    from torch.nn import functional as F

    def nhwc_bytes(x):
        return x.permute(0, 2, 3, 1).contiguous().view(torch.uint8).view(-1).numpy()

    g = torch.Generator().manual_seed(41)
    batch, channels, height, width = 3, 5, 4, 6
    dims = torch.tensor([batch, height, width, channels, 1]).numpy()
    pair = torch.empty(width * channels, dtype=torch.uint8).numpy()
    for keep in [0.9, 0.8, 0.7, 0.55, 0.3, 0.123, 1 / 3, 0.999]:
        spikes = torch.rand(batch, channels, height, width, generator=g) < 0.8  # full windows are common
        kept = torch.rand(spikes.shape, generator=g) < keep
        scale = float(torch.tensor(1.0, dtype=dtype) / keep)
        masked = (spikes & kept).to(dtype) * scale  # what the network pools: o * m
        refs = [F.avg_pool2d(masked.contiguous(memory_format=layout), 2)
                for layout in (torch.channels_last, torch.contiguous_format)]
        # the keep flags ANDed in the scan, or spikes given already masked with no flags: the same
        for spikes_in, keep_in in ((spikes, kept), (spikes & kept, None)):
            pooled = torch.empty(batch, height // 2, width // 2, channels, dtype=dtype)
            flags = torch.empty(0, dtype=torch.uint8).numpy() if keep_in is None else nhwc_bytes(keep_in)
            scan_cpu._pool_gather(nhwc_bytes(spikes_in), flags, dims, pooled.numpy().dtype.type(scale),
                                  pooled.view(-1).numpy(), pair)
            for ref in refs:
                assert torch.equal(pooled.permute(0, 3, 1, 2), ref), keep


def test_dropout_of_reads_keep_flags_in_nhwc_order_and_the_scale():
    mask = torch.zeros(2, 3, 2, 2)
    mask[0, 1, 0, 1] = mask[1, 2, 1, 0] = mask[1, 0, 0, 0] = 1 / 0.7
    dropout = scan_cpu.dropout_of(mask)
    assert dropout is not None and dropout.scale == float(torch.tensor(1 / 0.7, dtype=torch.float32))
    expected = (mask != 0).permute(0, 2, 3, 1).reshape(-1)  # NHWC: the scans' neuron order
    assert torch.equal(dropout.keep.bool(), expected)
    assert torch.equal(scan_cpu.dropout_of(mask.contiguous(memory_format=torch.channels_last)).keep, dropout.keep)
    assert scan_cpu.dropout_of(torch.zeros(1, 1, 2, 2)).scale == 1.0  # everything dropped: any scale would do
    assert scan_cpu.dropout_of(torch.full((1, 2, 2, 2), 2.0)).keep.all()  # nothing dropped
    for bad in ([1.0, 2.0], [0.0, -1.0], [math.inf, 0.0], [math.nan, 0.0]):
        assert scan_cpu.dropout_of(torch.tensor(bad + [0.0, 0.0]).view(1, 1, 2, 2)) is None, bad
    with pytest.raises(ValueError, match="dropout mask"):
        scan_cpu.scan_pool_forward(torch.ones(2, 1, 1, 2, 2), 1.0, 1.0, 0.75,
                                   mask=torch.tensor([1.0, 2.0, 0.0, 0.0]).view(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        scan_cpu.dropout_of(torch.ones(4))
    currents = torch.ones(2, 2, 3, 2, 2)
    good = scan_cpu.dropout_of((torch.rand(2, 3, 2, 2) < 0.5) / 0.5)
    bad = {"flags": scan_cpu.Dropout(good.keep * 2, good.scale), "length": scan_cpu.Dropout(good.keep[:-1], 2.0),
           "2-d": scan_cpu.Dropout(good.keep.view(2, -1), 2.0), "dtype": scan_cpu.Dropout(good.keep.float(), 2.0),
           "nan": scan_cpu.Dropout(good.keep, math.nan), "negative": scan_cpu.Dropout(good.keep, -2.0),
           "string": scan_cpu.Dropout(good.keep, "2")}
    for name, dropout in bad.items():
        with pytest.raises(ValueError, match="Dropout"):
            scan_cpu.scan_pool_forward(currents, 1.0, 1.0, 0.75, mask=dropout)
    with pytest.raises(TypeError, match="Dropout"):
        scan_cpu.scan_pool_forward(currents, 1.0, 1.0, 0.75, mask=[1.0, 0.0])
    with pytest.raises(ValueError, match="overflows"):  # a float64 scale beyond float32's range
        scan_cpu.scan_pool_forward(currents, 1.0, 1.0, 0.75, mask=scan_cpu.Dropout(good.keep, 1e300))
    with pytest.raises(ValueError, match="underflows"):
        scan_cpu.scan_pool_forward(currents, 1.0, 1.0, 0.75, mask=scan_cpu.Dropout(good.keep, 1e-50))
    with pytest.raises(ValueError, match="Dropout.scale"):
        scan_cpu.scan_pool_forward(currents, 1.0, 1.0, 0.75, mask=scan_cpu.Dropout(good.keep, 10 ** 400))
    numpy_scale = scan_cpu.Dropout(good.keep, torch.tensor(2.0).numpy()[()])  # a numpy float32 is a number too
    assert torch.equal(scan_cpu.scan_pool_forward(currents, 1.0, 1.0, 0.75, mask=numpy_scale)[0],
                       scan_cpu.scan_pool_forward(currents, 1.0, 1.0, 0.75, mask=good)[0])
    trace = torch.ones(2, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="overflows"):  # the correction checks the scale the same way
        scan_cpu.leak_correction(trace, trace, 0.9, 1e-3, scan_cpu.Dropout(good.keep, 1e300))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("tau_m", [5.0, 30.0, math.inf])
def test_compiled_leak_correction_equals_the_torch_formula(tau_m, channels_last, dtype):
    from leaklib.neurons import TRACE_FLOOR, leak_correction as _leak_correction_torch

    beta = _beta(tau_m)
    g = torch.Generator().manual_seed(42)
    shape = (4, 3, 4, 6)
    trace = torch.rand(shape, generator=g, dtype=torch.float64).mul(3).to(dtype)
    count = torch.randint(0, 6, shape, generator=g).to(dtype)
    floor = float(torch.tensor(TRACE_FLOOR, dtype=dtype))
    # at and around the floor (strict >), and never fired (Total = 0 -> 1)
    trace.view(-1)[:6] = torch.tensor([0.0, floor, math.nextafter(floor, 1), math.nextafter(floor, 0),
                                       TRACE_FLOOR, 2.0], dtype=dtype)
    count.view(-1)[:3] = 0.0
    count.view(-1)[6:8] = -1.0  # Total = -1 + 1 = 0: LF/0 = inf, 0/0 = nan, as in torch (no exception)
    trace.view(-1)[7] = 0.0
    mask = (torch.rand(shape, generator=g) < 0.7).to(dtype) / 0.7
    mask.view(-1)[6:8] = 1.0
    if channels_last:
        trace, count = (x.contiguous(memory_format=torch.channels_last) for x in (trace, count))
    for m in (None, mask):
        got = scan_cpu.leak_correction(trace, count, beta, TRACE_FLOOR, m)
        ref = _leak_correction_torch(trace, count, beta, m)
        assert got.shape == ref.shape and got.dtype == dtype
        torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)  # bit for bit, nan where torch has nan
        assert got.isnan().any() and (got.isinf().any() or beta == 1.0)  # IF: ln(1) * inf = nan
        assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    dropout_mask = (torch.rand(shape, generator=g) < 0.7).to(dtype) / 0.7
    dropout = scan_cpu.dropout_of(dropout_mask)
    assert dropout is not None
    if channels_last:  # the pooling scan's case: the dropout as keep flags in NHWC order and a scale
        got = scan_cpu.leak_correction(trace, count, beta, TRACE_FLOOR, dropout)
        torch.testing.assert_close(got, _leak_correction_torch(trace, count, beta, dropout_mask), rtol=0, atol=0,
                                   equal_nan=True)
    else:
        with pytest.raises(ValueError, match="channels-last"):
            scan_cpu.leak_correction(trace, count, beta, TRACE_FLOOR, dropout)
    flat = scan_cpu.leak_correction(trace.reshape(-1), count.reshape(-1), beta, TRACE_FLOOR)
    torch.testing.assert_close(flat, _leak_correction_torch(trace.reshape(-1), count.reshape(-1), beta), rtol=0,
                               atol=0, equal_nan=True)
    with pytest.raises(ValueError, match="count must have"):
        scan_cpu.leak_correction(trace, count[:1], beta, TRACE_FLOOR)
    with pytest.raises(ValueError, match="mask must have"):
        scan_cpu.leak_correction(trace, count, beta, TRACE_FLOOR, mask.double() if dtype == torch.float32 else mask.float())
    with pytest.raises(ValueError, match="beta"):
        scan_cpu.leak_correction(trace, count, 1.5, TRACE_FLOOR)


def test_pool_scan_by_hand():
    # one channel, a 2x2 map, IF layer (v_th 1) and one pooling neuron (threshold 0.75), 3 steps:
    # currents per step (row-major):  t0 [1.5, 1.5, 1.5, 0.2]  -> layer fires 1,1,1,0; average 0.75 -> not > 0.75
    #                                 t1 [0.0, 0.0, 0.0, 0.9]  -> neuron 4: 0.2+0.9 = 1.1 fires; average 0.25
    #                                                             pooling neuron 0.75+0.25 = 1.0 fires, reset
    #                                 t2 [2.0, 0.0, 0.0, 0.0]  -> fires 1; average 0.25 -> 0.25, silent
    currents = torch.tensor([[1.5, 1.5, 1.5, 0.2], [0.0, 0.0, 0.0, 0.9], [2.0, 0.0, 0.0, 0.0]],
                            dtype=torch.float64).view(3, 1, 1, 2, 2)
    out, spikes, pool_spikes, count, _, pool_count = scan_cpu.scan_pool_forward(currents, 1.0, 1.0, 0.75)
    assert out.flatten().tolist() == [0.0, 1.0, 0.0]
    assert count.flatten().tolist() == [2.0, 1.0, 1.0, 1.0] and pool_count.flatten().tolist() == [1.0]
    # backward with dL/d pool_out = [0, 2, 5], pool surrogate 1, no leak, layer scale 1, no corr:
    # pooling neuron: dI[2] = 0 (silent, last); dI[1] = 2 (fired); dI[0] = dI[1] = 2 (silent)
    # each input gets a quarter: 0.5 at t0 and t1, 0 at t2; the layer: fired steps take it, silent
    # steps pass on the next step's gradient:
    #   neuron 1: o = [1, 0, 1]: dI = [0.5, 0, 0]; neurons 2, 3: o = [1, 0, 0]: dI = [0.5, 0, 0]
    #   neuron 4: o = [0, 1, 0]: dI[2] = 0, dI[1] = 0.5, dI[0] = dI[1] = 0.5
    grad = scan_cpu.scan_pool_backward(spikes, pool_spikes, torch.tensor([0.0, 2.0, 5.0], dtype=torch.float64)
                                       .view(3, 1, 1, 1, 1), 1.0, 1.0, None)
    assert grad.reshape(3, 4).tolist() == [[0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]]


def test_pool_scan_rejects_odd_maps_and_mismatched_gradients():
    with pytest.raises(ValueError, match="even H and W"):
        scan_cpu.scan_pool_forward(torch.zeros(2, 1, 1, 3, 4), 0.9, 1.0, 0.75)
    with pytest.raises(ValueError, match="even H and W"):
        scan_cpu.scan_pool_forward(torch.zeros(2, 4, 4), 0.9, 1.0, 0.75)
    _, spikes, pool_spikes, *_ = scan_cpu.scan_pool_forward(torch.zeros(2, 1, 1, 2, 2), 0.9, 1.0, 0.75)
    with pytest.raises(ValueError, match="grad_pool must have shape"):
        scan_cpu.scan_pool_backward(spikes, pool_spikes, torch.zeros(2, 1, 1, 2, 2), 1.0, 1.0, None)

"""Tests of leaklib.neurons: Algorithm 2 (IF/LIF with reset to 0), the Eq. 5 surrogate, the fused scan.

Expected values are worked out by hand in the comments, or come from an independent computation
written in this file (an explicit recurrence, or a straight-through surrogate built from plain torch
ops), never from running the code under test.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from leaklib.neurons import (
    LIFNeuron,
    LIFScan,
    _lif_scan_grad,
    _lif_scan_grad_closed_form,
    decay_factor,
    leaky_integrate,
    lif_multistep,
    lif_step,
    lif_trace,
    spike_fn,
)

CURRENTS = [0.6, 0.6, 0.0, 1.5, 0.2]
B2 = math.exp(-0.5)  # beta for tau_m = 2


def _seq(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# decay factor and argument checks


@pytest.mark.parametrize("tau, beta", [(1.0, math.exp(-1.0)), (2.0, math.exp(-0.5)), (10.0, math.exp(-0.1)),
                                       (math.inf, 1.0), ("inf", 1.0), (100, math.exp(-0.01))])
def test_decay_factor_values(tau, beta):
    assert decay_factor(tau) == pytest.approx(beta, rel=1e-15)


@pytest.mark.parametrize("tau", [0.0, -1.0, -math.inf, math.nan])
def test_decay_factor_rejects_nonpositive_and_nan(tau):
    with pytest.raises(ValueError, match="tau_m"):
        decay_factor(tau)


@pytest.mark.parametrize("tau", [0.0, -3.0, math.nan])
def test_bad_tau_rejected_by_multistep_and_neuron(tau):
    with pytest.raises(ValueError):
        lif_multistep(torch.ones(3, 2), tau)
    with pytest.raises(ValueError):
        LIFNeuron(tau)


@pytest.mark.parametrize("v_th, eps", [(1.0, -1.0), (1.0, -1.5), (0.5, -0.5), (0.0, 0.0), (-1.0, 3.0)])
def test_threshold_plus_eps_must_be_positive(v_th, eps):
    u = torch.ones(3)
    with pytest.raises(ValueError, match="v_th"):
        spike_fn(u, v_th, eps)
    with pytest.raises(ValueError, match="v_th"):
        lif_multistep(torch.ones(4, 3), 2.0, v_th, eps)
    with pytest.raises(ValueError, match="v_th"):
        LIFNeuron(2.0, v_th, eps)


def test_multistep_rejects_empty_time_and_unknown_method():
    with pytest.raises(ValueError, match="T >= 1"):
        lif_multistep(torch.ones(0, 3), 2.0)
    with pytest.raises(ValueError, match="method"):
        lif_multistep(torch.ones(4, 3), 2.0, method="scan")


# ---------------------------------------------------------------------------------------------
# hand-computed sequences


def test_if_sequence_by_hand():
    # IF (beta = 1), v_th = 1, currents 0.6, 0.6, 0.0, 1.5, 0.2:
    # t0: u = 0.6           no spike, v = 0.6
    # t1: u = 0.6+0.6 = 1.2 spike,    v = 0      (reset to rest)
    # t2: u = 0.0           no spike, v = 0
    # t3: u = 1.5           spike,    v = 0
    # t4: u = 0.2           no spike, v = 0.2
    expected_spikes = [0.0, 1.0, 0.0, 1.0, 0.0]
    expected_u = [0.6, 1.2, 0.0, 1.5, 0.2]
    for method in ("fused", "stepwise"):
        spikes = lif_multistep(_seq(CURRENTS), math.inf, 1.0, method=method)
        assert spikes.tolist() == expected_spikes
    u, o = lif_trace(_seq(CURRENTS), math.inf, 1.0)
    assert o.tolist() == expected_spikes
    torch.testing.assert_close(u, _seq(expected_u), rtol=0, atol=1e-12)


def test_lif_sequence_by_hand():
    # LIF tau_m = 2, beta = exp(-0.5) = 0.6065307, v_th = 1, same currents:
    # t0: u = 0.6                        no spike, v = 0.6 b              = 0.363918
    # t1: u = 0.6 + 0.6 b     = 0.963918 no spike (IF fired here), v = (0.6 + 0.6 b) b = 0.584646
    # t2: u = (0.6 + 0.6 b) b = 0.584646 no spike, v = (0.6 + 0.6 b) b^2 = 0.354606
    # t3: u = 1.5 + 0.354606  = 1.854606 spike,    v = 0
    # t4: u = 0.2                        no spike
    b = B2
    expected_spikes = [0.0, 0.0, 0.0, 1.0, 0.0]
    expected_u = [0.6, 0.6 + 0.6 * b, (0.6 + 0.6 * b) * b, 1.5 + (0.6 + 0.6 * b) * b ** 2, 0.2]
    assert expected_u[1] == pytest.approx(0.963918, abs=1e-6)
    assert expected_u[3] == pytest.approx(1.854606, abs=1e-6)
    for method in ("fused", "stepwise"):
        spikes = lif_multistep(_seq(CURRENTS), 2.0, 1.0, method=method)
        assert spikes.tolist() == expected_spikes
    u, o = lif_trace(_seq(CURRENTS), 2.0, 1.0)
    assert o.tolist() == expected_spikes
    torch.testing.assert_close(u, _seq(expected_u), rtol=0, atol=1e-12)


def test_threshold_is_strict_and_reset_is_to_zero():
    # IF, v_th = 1: 0.5 + 0.5 = 1.0 exactly, not > 1 -> no spike; +0.25 -> 1.25 spike -> v = 0;
    # then 0.75 -> u = 0.75 (not 0.75 + 0.25 = 1.0: the reset discards the excess).
    currents = _seq([0.5, 0.5, 0.25, 0.75, 0.25])
    # t4: u = 0.75 + 0.25 = 1.0 -> no spike again
    u, o = lif_trace(currents, math.inf, 1.0)
    assert o.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert u.tolist() == [0.5, 1.0, 1.25, 0.75, 1.0]
    assert lif_multistep(currents, math.inf).tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_other_threshold_by_hand():
    # v_th = 0.5, tau_m = 2: t0 u = 0.4 (no), v = 0.4 b = 0.24261; t1 u = 0.24261 + 0.3 = 0.54261 (spike)
    # t2 u = 0.3 (no), v = 0.3 b = 0.18196; t3 u = 0.18196 + 0.3 = 0.48196 (no: leak, IF would fire)
    currents = _seq([0.4, 0.3, 0.3, 0.3])
    assert lif_multistep(currents, 2.0, v_th=0.5).tolist() == [0.0, 1.0, 0.0, 0.0]
    # IF: t0 0.4, t1 0.7 (spike), t2 0.3, t3 0.6 (spike)
    assert lif_multistep(currents, math.inf, v_th=0.5).tolist() == [0.0, 1.0, 0.0, 1.0]


def test_if_equals_beta_one_and_large_tau_approaches_if():
    gen = torch.Generator().manual_seed(1)
    currents = torch.rand(40, 3, 50, generator=gen, dtype=torch.float64) * 0.7
    u_if, o_if = lif_trace(currents, math.inf)
    # IF is the explicit recurrence with beta = 1
    v = torch.zeros(3, 50, dtype=torch.float64)
    for t in range(40):
        u = v + currents[t]
        assert torch.equal(u_if[t], u)
        o = u > 1.0
        assert torch.equal(o_if[t], o.double())
        v = torch.where(o, torch.zeros_like(u), u)
    # a huge tau_m: beta = 1 - 1e-10, same spikes, membranes within T * 1e-10 * max|u|
    u_big, o_big = lif_trace(currents, 1e10)
    assert torch.equal(o_big, o_if)
    torch.testing.assert_close(u_big, u_if, rtol=0, atol=1e-8)
    # a moderate tau_m leaks: fewer spikes than IF with positive currents
    _, o_lif = lif_trace(currents, 5.0)
    assert o_lif.sum() < o_if.sum()


def test_lif_trace_random_against_explicit_recurrence():
    gen = torch.Generator().manual_seed(2)
    currents = torch.randn(30, 4, 7, generator=gen, dtype=torch.float64)
    beta = math.exp(-1 / 3.0)
    u_lib, o_lib = lif_trace(currents, 3.0, v_th=0.8)
    v = torch.zeros(4, 7, dtype=torch.float64)
    for t in range(30):
        u = v + currents[t]
        o = u > 0.8
        torch.testing.assert_close(u_lib[t], u, rtol=0, atol=1e-12)
        assert torch.equal(o_lib[t].bool(), o)
        v = torch.where(o, torch.zeros_like(u), beta * u)


# ---------------------------------------------------------------------------------------------
# the surrogate of Eq. 5


@pytest.mark.parametrize("v_th, eps", [(1.0, -0.2), (1.0, 0.3), (0.5, -0.1), (2.0, 0.0)])
def test_spike_fn_forward_and_surrogate_gradient(v_th, eps):
    u = torch.tensor([-3.0, 0.0, 0.5 * v_th, v_th, v_th + 1e-3, 1.5 * v_th, 4.0 * v_th],
                     dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([0.3, -1.0, 2.0, 0.7, -0.4, 1.1, 0.9], dtype=torch.float64)
    o = spike_fn(u, v_th, eps)
    hard = (u.detach() > v_th).double()  # u == v_th does not fire
    assert o.tolist() == hard.tolist() == [0, 0, 0, 0, 1, 1, 1]
    (weights * o).sum().backward()
    # dL/dU = w * dO/dU, dO/dU = (O > 0) / (v_th + eps)
    expected = weights * hard / (v_th + eps)
    torch.testing.assert_close(u.grad, expected, rtol=1e-14, atol=0)


def test_lif_gradient_by_hand():
    # tau_m = 2, currents of test_lif_sequence_by_hand: the only spike is at t3. L = sum_t w_t o_t.
    # dL/dI[t] = scale * beta**(n(t)-t) * w[n(t)], n(t) the first spike at or after t:
    #   t0..t3 -> n = 3: scale*w3*b^3, scale*w3*b^2, scale*w3*b, scale*w3; t4 (no later spike) -> 0.
    # The w of the silent steps do not matter (Eq. 5 is zero where O = 0).
    v_th, eps = 1.0, -0.25
    scale = 1.0 / (v_th + eps)
    w = _seq([0.5, -2.0, 3.0, 1.7, 4.0])
    b = B2
    expected = _seq([scale * 1.7 * b ** 3, scale * 1.7 * b ** 2, scale * 1.7 * b, scale * 1.7, 0.0])
    for method in ("fused", "stepwise"):
        currents = _seq(CURRENTS).requires_grad_()
        (w * lif_multistep(currents, 2.0, v_th, eps, method=method)).sum().backward()
        torch.testing.assert_close(currents.grad, expected, rtol=1e-12, atol=1e-14)


def test_if_gradient_by_hand():
    # IF, spikes at t1 and t3 (test_if_sequence_by_hand); beta = 1, eps = 0, scale = 1:
    # dL/dI = [w1, w1, w3, w3, 0]
    w = _seq([0.5, -2.0, 3.0, 1.7, 4.0])
    for method in ("fused", "stepwise"):
        currents = _seq(CURRENTS).requires_grad_()
        (w * lif_multistep(currents, math.inf, method=method)).sum().backward()
        torch.testing.assert_close(currents.grad, _seq([-2.0, -2.0, 1.7, 1.7, 0.0]), rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# fused scan versus stepwise reference


def _reference_bptt(currents, beta, v_th, eps):
    """Independent BPTT: straight-through surrogate from plain torch ops, reset detached (Eq. 5)."""
    v = torch.zeros_like(currents[0])
    out = []
    for t in range(currents.shape[0]):
        u = v + currents[t]
        hard = (u > v_th).to(u.dtype).detach()
        o = hard + (u - u.detach()) * hard / (v_th + eps)  # value: hard; d o / d u = hard / (v_th + eps)
        out.append(o)
        v = beta * u * (1.0 - hard)
    return torch.stack(out)


SHAPES = [(1,), (7,), (12, 3), (9, 2, 5), (6, 2, 3, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", [math.inf, 2.0, 30.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_equals_stepwise_and_reference(shape, tau, dtype):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, tau, dtype)).encode()))
    base = (torch.rand(shape, generator=gen, dtype=torch.float64) * 1.4 - 0.2).to(dtype)
    grad_w = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    v_th, eps = 1.0, (0.0 if math.isinf(tau) else -0.15)
    results = {}
    for name in ("fused", "stepwise", "reference"):
        currents = base.clone().requires_grad_()
        if name == "reference":
            spikes = _reference_bptt(currents, decay_factor(tau), v_th, eps)
        else:
            spikes = lif_multistep(currents, tau, v_th, eps, method=name)
        assert spikes.dtype == dtype and spikes.shape == shape
        (grad_w * spikes).sum().backward()
        results[name] = (spikes.detach(), currents.grad)
    spikes_f, grad_f = results["fused"]
    assert torch.equal(spikes_f, results["stepwise"][0])
    assert torch.equal(spikes_f, results["reference"][0])
    if shape[0] > 1:
        assert 0 < spikes_f.sum() < spikes_f.numel()  # the case is not trivial
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(grad_f, results["stepwise"][1], **tol)
    torch.testing.assert_close(grad_f, results["reference"][1], **tol)


def test_stepwise_lif_step_bptt_equals_lifscan():
    # autograd through T calls of lif_step (the per-step API) against LIFScan.apply directly
    gen = torch.Generator().manual_seed(5)
    base = torch.rand(20, 3, 6, generator=gen, dtype=torch.float64) * 0.9
    w = torch.randn(20, 3, 6, generator=gen, dtype=torch.float64)
    beta, v_th, eps = decay_factor(4.0), 0.9, -0.2
    cur_a = base.clone().requires_grad_()
    v = torch.zeros(3, 6, dtype=torch.float64)
    outs = []
    for t in range(20):
        o, v = lif_step(v, cur_a[t], beta, v_th, eps)
        outs.append(o)
    loss_a = (w * torch.stack(outs)).sum()
    loss_a.backward()
    cur_b = base.clone().requires_grad_()
    loss_b = (w * LIFScan.apply(cur_b, beta, v_th, 1.0 / (v_th + eps), beta, False, None)).sum()
    loss_b.backward()
    assert loss_a.item() == loss_b.item()
    torch.testing.assert_close(cur_a.grad, cur_b.grad, rtol=1e-12, atol=1e-13)
    assert cur_a.grad.abs().sum() > 0


@pytest.mark.parametrize("numba_scan", ["1", "0"])
def test_forward_without_gradient_gives_the_same_spikes(numba_scan, monkeypatch):
    monkeypatch.setenv("LEAKLIB_NUMBA", numba_scan)
    gen = torch.Generator().manual_seed(6)
    currents = (torch.rand(15, 4, 7, generator=gen) * 1.2).requires_grad_()
    kwargs = dict(leak_grad="detached", correction="lee2020")
    with_grad = lif_multistep(currents, 10.0, **kwargs)
    with torch.no_grad():
        without = lif_multistep(currents, 10.0, **kwargs)
    assert torch.equal(with_grad.detach(), without)
    assert with_grad.grad_fn is not None and without.grad_fn is None
    assert len(with_grad.grad_fn.saved_tensors) == 2  # spikes and the leak correction, for the backward


@pytest.mark.parametrize("beta", [1.0, math.exp(-1 / 30), math.exp(-0.5), 0.1])
@pytest.mark.parametrize("shape", [(1, 4), (25, 3, 5), (16, 2, 2, 3, 3)])
def test_scan_backward_loop_equals_closed_form(beta, shape):
    gen = torch.Generator().manual_seed(7)
    spikes = torch.rand(shape, generator=gen) < 0.3
    grad_spikes = torch.randn(shape, generator=gen, dtype=torch.float64)
    loop = _lif_scan_grad(spikes, grad_spikes, beta, 1.25)
    closed = _lif_scan_grad_closed_form(spikes, grad_spikes, beta, 1.25)
    torch.testing.assert_close(loop, closed, rtol=1e-12, atol=1e-14)
    # and both equal the recurrence dL/dI[t] = scale g[t] if o[t] else beta dL/dI[t+1], written here
    expected = torch.zeros_like(grad_spikes)
    nxt = torch.zeros_like(grad_spikes[0])
    for t in range(shape[0] - 1, -1, -1):
        nxt = torch.where(spikes[t], 1.25 * grad_spikes[t], beta * nxt)
        expected[t] = nxt
    torch.testing.assert_close(loop, expected, rtol=1e-12, atol=1e-14)


def test_closed_form_by_hand():
    # one neuron, spikes at t = 1 and t = 4 of T = 6, g = [1, 2, 3, 4, 5, 6], beta = 0.5, scale = 2:
    # n(t) = 1, 1, 4, 4, 4, none -> dL/dI = 2 * [0.5 * 2, 2, 0.25 * 5, 0.5 * 5, 5, 0]
    spikes = torch.tensor([0, 1, 0, 0, 1, 0], dtype=torch.bool).view(6, 1)
    g = torch.arange(1.0, 7.0, dtype=torch.float64).view(6, 1)
    expected = torch.tensor([2.0, 4.0, 2.5, 5.0, 10.0, 0.0], dtype=torch.float64).view(6, 1)
    torch.testing.assert_close(_lif_scan_grad_closed_form(spikes, g, 0.5, 2.0), expected, rtol=1e-15, atol=0)
    torch.testing.assert_close(_lif_scan_grad(spikes, g, 0.5, 2.0), expected, rtol=1e-15, atol=0)


# ---------------------------------------------------------------------------------------------
# output integrator and the stateful neuron


@pytest.mark.parametrize("tau", [math.inf, 1.0, 7.0, 100.0])
def test_leaky_integrate_equals_recurrence(tau):
    gen = torch.Generator().manual_seed(3)
    currents = torch.randn(13, 2, 5, generator=gen, dtype=torch.float64)
    beta = 1.0 if math.isinf(tau) else math.exp(-1.0 / tau)
    u = torch.zeros(2, 5, dtype=torch.float64)
    for t in range(13):
        u = beta * u + currents[t]
    torch.testing.assert_close(leaky_integrate(currents, tau), u, rtol=1e-12, atol=1e-12)


def test_leaky_integrate_by_hand():
    # tau_m = 2: u_L[3] = b^2 * 1 + b * 2 + 3
    currents = _seq([1.0, 2.0, 3.0])
    assert leaky_integrate(currents, 2.0).item() == pytest.approx(B2 ** 2 + 2 * B2 + 3, rel=1e-14)
    assert leaky_integrate(currents, math.inf).item() == 6.0


def test_leaky_integrate_is_differentiable():
    currents = _seq([1.0, 2.0, 3.0]).requires_grad_()
    leaky_integrate(currents, 2.0).backward()
    torch.testing.assert_close(currents.grad, _seq([B2 ** 2, B2, 1.0]), rtol=1e-14, atol=0)


@pytest.mark.parametrize("tau", [math.inf, 3.0])
def test_neuron_step_sequence_equals_forward(tau):
    gen = torch.Generator().manual_seed(4)
    currents = torch.rand(15, 2, 8, generator=gen, dtype=torch.float64)
    neuron = LIFNeuron(tau, v_th=0.9, eps=-0.1)
    full = neuron(currents)
    steps = torch.stack([neuron.step(currents[t]) for t in range(15)])
    assert torch.equal(full, steps)
    assert 0 < full.sum() < full.numel()
    # state persists between steps and reset clears it: stepping again after reset repeats the run
    neuron.reset()
    again = torch.stack([neuron.step(currents[t]) for t in range(15)])
    assert torch.equal(again, full)
    # the state left after the last step is the membrane of the explicit recurrence
    beta = decay_factor(tau)
    v = torch.zeros(2, 8, dtype=torch.float64)
    for t in range(15):
        u = v + currents[t]
        v = torch.where(u > 0.9, torch.zeros_like(u), beta * u)
    torch.testing.assert_close(neuron.v, v, rtol=1e-12, atol=1e-14)


def test_neuron_stepwise_method_equals_fused_module():
    gen = torch.Generator().manual_seed(6)
    base = torch.rand(10, 4, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(10, 4, 3, generator=gen, dtype=torch.float64)
    grads = []
    for method in ("fused", "stepwise"):
        currents = base.clone().requires_grad_()
        (w * LIFNeuron(5.0, method=method)(currents)).sum().backward()
        grads.append(currents.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("leak_grad, correction", [("detached", "lee2020"), ("exact", "none")])
def test_lif_pool_multistep_equals_layer_pooling_and_pooling_neurons(leak_grad, correction):
    pytest.importorskip("numba")
    from torch.nn import functional as F

    from leaklib.neurons import lif_pool_available, lif_pool_multistep

    gen = torch.Generator().manual_seed(8)
    base = torch.rand(30, 2, 3, 4, 6, generator=gen, dtype=torch.float64) * 1.3 - 0.1
    weights = torch.randn(30, 2, 3, 2, 3, generator=gen, dtype=torch.float64)
    kwargs = dict(leak_grad=leak_grad, correction=correction)
    a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
    assert lif_pool_available(a)
    fused, counts, pool_counts = lif_pool_multistep(a, 20.0, 1.0, -0.2, pool_v_th=0.75, pool_grad_scale=1.0, **kwargs)
    layer = lif_multistep(b, 20.0, 1.0, -0.2, **kwargs)
    pooled = F.avg_pool2d(layer.flatten(0, 1), 2).unflatten(0, (30, 2))
    reference = lif_multistep(pooled, math.inf, 0.75, grad_scale=1.0)
    assert torch.equal(fused, reference)
    assert torch.equal(counts, layer.detach().sum(0)) and torch.equal(pool_counts, reference.detach().sum(0))
    assert not counts.requires_grad
    (weights * fused).sum().backward()
    (weights * reference).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-14)
    assert a.grad.abs().sum() > 0
    assert not lif_pool_available(base[..., :3])  # an odd map cannot be 2x2-pooled
    with pytest.raises(ValueError, match="lif_pool_multistep needs"):
        lif_pool_multistep(base[..., :3], 20.0)



@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.float64])
def test_the_scans_leak_correction_is_the_torch_formula_for_every_mask_they_pass(mask_dtype):
    """The scans' correction (numba where it applies) gives leak_correction's numbers, dtype included."""
    pytest.importorskip("numba")
    from leaklib import scan_cpu
    from leaklib.neurons import _scan_correction, leak_correction, lif_pool_multistep

    g = torch.Generator().manual_seed(51)
    shape = (2, 3, 4, 4)
    trace = (torch.rand(shape, generator=g) * 2).contiguous(memory_format=torch.channels_last)
    count = torch.randint(-1, 4, shape, generator=g).float().contiguous(memory_format=torch.channels_last)
    mask = ((torch.rand(shape, generator=g) < 0.7).to(mask_dtype) / 0.7)
    beta = math.exp(-1 / 20)
    expected = leak_correction(trace, count, beta, mask)
    assert expected.dtype == torch.promote_types(torch.float32, mask_dtype)
    passed = [mask] + ([scan_cpu.dropout_of(mask)] if mask_dtype == torch.float32 else [])
    for m in passed + [None]:
        got = _scan_correction(scan_cpu, trace, count, beta, m)
        want = expected if m is not None else leak_correction(trace, count, beta)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    # and through the fused pooling scan: a float64 mask on float32 currents is the torch formula's business
    currents = (torch.rand((5,) + shape, generator=g) * 1.5).requires_grad_(True)
    grads = []
    for fused in (True, False):
        currents.grad = None
        if fused:
            out, _, _ = lif_pool_multistep(currents, 20.0, leak_grad="detached", correction="lee2020", mask=mask)
        else:
            spikes = lif_multistep(currents, 20.0, leak_grad="detached", correction="lee2020", mask=mask)
            pooled = torch.nn.functional.avg_pool2d((spikes * mask).flatten(0, 1), 2).unflatten(0, (5, 2))
            out = lif_multistep(pooled, math.inf, 0.75, grad_scale=1.0)
        out.sum().backward()
        grads.append(currents.grad.clone())
    torch.testing.assert_close(grads[0].double(), grads[1].double(), rtol=1e-6, atol=1e-9)

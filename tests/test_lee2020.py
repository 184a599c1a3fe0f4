"""The training semantics of [21] (Lee et al. 2020), which the paper follows, against references written here.

[21]'s VGG9 code (src/cifar10_VGG9.py of chan8972/Enabling_Spikebased_Backpropagation) runs one time
step through all layers at a time. Its hidden neuron: add the current; ``ex = threshold(mem, thr, 0)``
(the membrane where it exceeds the threshold); ``mem - ex`` (hard reset); a Heaviside of ``ex`` whose
gradient passes where ``ex > 0``; the decay written ``l*mem.detach() + mem - mem.detach()`` (value
``l*mem``, gradient 1); the spike rescaled in the backward pass by ``1/thr``. After the forward pass,
each neuron's spike gradient at every step is multiplied by ``(LF > 1e-3) + ln(l) LF / Total`` through
hooks on the (dropout-masked) outputs. Pooling: 2x2 average into non-leaky neurons, threshold 0.75,
hard reset, gradient 1. The functions below restate that in our own words, one step at a time, with
plain torch autograd; leaklib's fused layers must give the same spikes and gradients.

One deliberate difference, stated in the training chapter: [21]'s output layer decays after adding the
last input (its prediction carries one more factor ``l``); leaklib follows Algorithm 2,
``U_L[t] = l U_L[t-1] + W_L O[t]``, and so does the reference here.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from leaklib.models import SNN
from leaklib.neurons import TRACE_FLOOR, decay_factor, leak_correction, lif_multistep

TINY = "8x8x2-4C3-2P-5C3-2P-12FC-3o"


class _Heaviside(torch.autograd.Function):
    """[21]'s spike: 1 where the input is positive; the gradient passes unchanged where it is."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x > 0).to(grad.dtype)


def _lee_lif_step(mem, current, thr, leak):
    mem = mem + current
    exceeded = F.threshold(mem, thr, 0.0)
    mem = mem - exceeded
    out = _Heaviside.apply(exceeded)
    mem = leak * mem.detach() + mem - mem.detach()
    out = out.detach() + out / thr - (out / thr).detach()
    return mem, out


def _lee_pool_step(mem, spikes_in, thr=0.75):
    mem = mem + F.avg_pool2d(spikes_in, 2)
    exceeded = F.threshold(mem, thr, 0.0)
    return mem - exceeded, _Heaviside.apply(exceeded)


def _lee_correction(leaky_trace, total, leak):
    total = total + (total < 1e-3).to(total.dtype)
    return (leaky_trace > 1e-3).to(total.dtype) + math.log(leak) * leaky_trace / total


def _lee_network(net: SNN, spikes: torch.Tensor, masks: list[torch.Tensor | None]) -> torch.Tensor:
    """The TINY net (conv-pool-conv-pool-fc-out) step by step as [21] writes its VGG9, hooks included."""
    leak = decay_factor(net.tau_m)
    num_steps, batch = spikes.shape[:2]
    conv1, conv2, fc, out_layer = (b.linear for b in net.blocks)
    mems = [torch.zeros(batch, 4, 8, 8, dtype=spikes.dtype), torch.zeros(batch, 4, 4, 4, dtype=spikes.dtype),
            torch.zeros(batch, 5, 4, 4, dtype=spikes.dtype), torch.zeros(batch, 5, 2, 2, dtype=spikes.dtype),
            torch.zeros(batch, 12, dtype=spikes.dtype)]
    hidden = {0: conv1, 2: conv2, 4: fc}  # neuron layers that are LIF (the others are pooling neurons)
    traces = {k: torch.zeros_like(mems[k]) for k in hidden}
    totals = {k: torch.zeros_like(mems[k]) for k in hidden}
    outputs: dict[int, list[torch.Tensor]] = {k: [] for k in hidden}
    mem_out = torch.zeros(batch, 3, dtype=spikes.dtype)
    for t in range(num_steps):
        x = spikes[t]
        for k in range(5):
            if k in hidden:
                layer_in = x.flatten(1) if k == 4 else x
                mems[k], x = _lee_lif_step(mems[k], hidden[k](layer_in), 1.0, leak)
                mask = masks[list(hidden).index(k)]
                if mask is not None:
                    x = x * mask
                traces[k] = leak * traces[k] + x.detach()
                totals[k] = totals[k] + x.detach()
                outputs[k].append(x)
            else:
                mems[k], x = _lee_pool_step(mems[k], x)
        mem_out = leak * mem_out.detach() + mem_out - mem_out.detach()  # Algorithm 2: decay, then add
        mem_out = mem_out + out_layer(x)
    for k in hidden:
        factor = _lee_correction(traces[k], totals[k], leak)
        for out in outputs[k]:
            out.register_hook(lambda grad, factor=factor: grad * factor)
    return mem_out / num_steps


def _spikes(shape, seed, num_steps):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    fire = torch.rand((num_steps,) + tuple(shape), generator=gen, dtype=torch.float64) < x.abs()
    return torch.sign(x) * fire.double()


def _fused_equals_lee_network(net, spikes, target, seed):
    """Outputs and Eq. 5 loss gradients of ``net`` equal those of [21]'s step-by-step network on the same
    dropout masks (drawn from ``seed``); returns the fused network's gradients."""
    masks = net._dropout_masks(len(spikes[0]), spikes.device, spikes.dtype, torch.Generator().manual_seed(seed))
    ours = net(spikes, generator=torch.Generator().manual_seed(seed))
    (0.5 * ((ours - target) ** 2).sum(1).mean()).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    ref = _lee_network(net, spikes, masks)
    (0.5 * ((ref - target) ** 2).sum(1).mean()).backward()
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for name, p in net.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-8, atol=1e-12, msg=name)
    return grads


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("tau", [math.inf, 30.0, 5.0])
def test_fused_network_equals_lee2020_written_step_by_step(tau, dropout):
    torch.manual_seed(3)
    net = SNN(TINY, tau, init_gain=3.0, dropout=dropout).double()  # the defaults are [21]'s semantics
    assert (net.leak_grad, net.correction, net.pooling) == ("detached", "lee2020", "spiking")
    spikes = _spikes((4,) + net.input_shape, seed=4, num_steps=12)
    target = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]
    grads = _fused_equals_lee_network(net, spikes, target, seed=5)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name


@pytest.mark.parametrize("numba", ["1", "0"])
@pytest.mark.parametrize("num_steps, batch, tau", [(3, 1, 30.0), (7, 2, 0.5), (5, 1, math.inf)])
def test_lee2020_written_step_by_step_edge_cases(num_steps, batch, tau, numba, monkeypatch):
    # few and odd numbers of steps (the numba scans take two steps per pass), a batch of one, a leak
    # that nearly empties the membrane every step; the fused scans and, with LEAKLIB_NUMBA=0, the torch ones
    monkeypatch.setenv("LEAKLIB_NUMBA", numba)
    torch.manual_seed(7)
    net = SNN(TINY, tau, init_gain=4.0, dropout=0.3).double()
    spikes = _spikes((batch,) + net.input_shape, seed=8, num_steps=num_steps)
    target = torch.eye(3, dtype=torch.float64)[:batch]
    grads = _fused_equals_lee_network(net, spikes, target, seed=9)
    assert grads["blocks.3.linear.weight"].abs().sum() > 0


def test_detached_and_exact_gradients_differ_only_through_the_leak():
    # for IF (beta = 1) both are the same; for LIF they differ: the detached gradient is not attenuated
    torch.manual_seed(0)
    currents = torch.rand(30, 50, dtype=torch.float64) * 0.6
    w = torch.randn(30, 50, dtype=torch.float64)
    grads = {}
    for tau in (math.inf, 10.0):
        for mode in ("detached", "exact"):
            c = currents.clone().requires_grad_()
            (w * lif_multistep(c, tau, leak_grad=mode)).sum().backward()
            grads[tau, mode] = c.grad
    assert torch.equal(grads[math.inf, "detached"], grads[math.inf, "exact"])
    assert not torch.allclose(grads[10.0, "detached"], grads[10.0, "exact"])
    # where the next spike is k steps later, exact = beta**k * detached
    beta = decay_factor(10.0)
    spikes = lif_multistep(currents, 10.0).bool()
    for n in range(5):
        fired = torch.nonzero(spikes[:, n]).flatten().tolist()
        for t in range(30):
            nxt = next((f for f in fired if f >= t), None)
            if nxt is None:
                assert grads[10.0, "exact"][t, n] == 0 and grads[10.0, "detached"][t, n] == 0
            else:
                torch.testing.assert_close(grads[10.0, "exact"][t, n], beta ** (nxt - t) * grads[10.0, "detached"][t, n])


def test_leak_correction_on_a_hand_computed_spike_train():
    # spikes [1, 0, 1, 1] over T = 4: Total = 3, LF = beta^3 + beta + 1 (trace at the last step)
    beta = decay_factor(30.0)
    currents = torch.tensor([[1.5], [0.0], [1.5], [1.5]], dtype=torch.float64)
    assert lif_multistep(currents, 30.0).flatten().tolist() == [1.0, 0.0, 1.0, 1.0]
    lf = beta**3 + beta + 1
    expected = 1 + math.log(beta) * lf / 3  # = 0.96809...: a 3.2 % smaller gradient than IF's
    factor = leak_correction(torch.tensor([lf], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64), beta)
    assert abs(factor.item() - expected) < 1e-15 and 0.968 < expected < 0.9681
    # the fused layer applies it: the gradient of sum(w * o) w.r.t. the current at each fired step is w * factor / v_th
    c = currents.clone().requires_grad_()
    w = torch.tensor([[2.0], [3.0], [5.0], [7.0]], dtype=torch.float64)
    (w * lif_multistep(c, 30.0, leak_grad="detached", correction="lee2020")).sum().backward()
    # step 1 is silent: it passes step 2's gradient through the detached leak (factor 1)
    want = torch.tensor([[2.0], [5.0], [5.0], [7.0]], dtype=torch.float64) * expected
    torch.testing.assert_close(c.grad, want, rtol=1e-14, atol=0)


def test_leak_correction_edge_cases():
    beta = decay_factor(30.0)
    zero = leak_correction(torch.tensor([0.0]), torch.tensor([0.0]), beta)  # never fired: 0, no division by 0
    assert zero.item() == 0.0
    assert leak_correction(torch.tensor([2.0]), torch.tensor([2.0]), 1.0).item() == 1.0  # IF: 1 once fired
    # [21] computes the trace on the dropout-masked spikes: a mask of 1.25 lifts a trace of 0.0009 over 1e-3
    trace, count = torch.tensor([0.0009]), torch.tensor([1.0])
    plain = leak_correction(trace, count, beta).item()
    masked = leak_correction(trace, count, beta, mask=torch.tensor([1.25])).item()
    assert 0.0009 < TRACE_FLOOR < 0.0009 * 1.25
    assert plain == pytest.approx(math.log(beta) * 0.0009) and masked == pytest.approx(1 + math.log(beta) * 0.0009)
    assert leak_correction(trace, count, beta, mask=torch.tensor([0.0])).item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        leak_correction(torch.zeros(2), torch.zeros(3), beta)


def test_pooling_neuron_by_hand():
    # one 2x2 window; inputs per step (average in brackets): [1,0,0,0] (.25), [1,1,0,0] (.5), [1,0,0,0] (.25),
    # [1,1,1,1] (1). Membrane .25, .75 (not > .75: silent), 1.0 -> spike and reset, 1.0 -> spike.
    torch.manual_seed(0)
    net = SNN("2x2x1-2P-1FC-1o", math.inf).double()
    block = net.blocks[0]
    x = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    x = x.view(4, 1, 1, 2, 2).requires_grad_()
    with torch.no_grad():
        block.linear.weight.fill_(1.0)
    currents = block(x)  # the FC map of the pooled spikes, weight 1: the pooling neuron's spikes themselves
    assert currents.flatten().tolist() == [0.0, 0.0, 1.0, 1.0]
    g = torch.tensor([2.0, 3.0, 5.0, 7.0], dtype=torch.float64)
    (currents.flatten() * g).sum().backward()
    # pooling neuron: gradient 1 where it fired, else passed on from the next step (no leak): [5, 5, 5, 7];
    # the average hands a quarter to each of the four inputs
    want = torch.tensor([5.0, 5.0, 5.0, 7.0], dtype=torch.float64).view(4, 1, 1, 1, 1) / 4
    torch.testing.assert_close(x.grad, want.expand(4, 1, 1, 2, 2), rtol=0, atol=0)


def test_average_pooling_ablation_passes_the_averages_on():
    torch.manual_seed(0)
    net = SNN("2x2x1-2P-1FC-1o", math.inf, pooling="average").double()
    with torch.no_grad():
        net.blocks[0].linear.weight.fill_(1.0)
    x = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.float64).view(2, 1, 1, 2, 2)
    assert net.blocks[0](x).flatten().tolist() == [0.25, 0.5]
    assert net.pool_shapes == []


@pytest.mark.parametrize("bad", [dict(leak_grad="both"), dict(correction="eps"), dict(pooling="max")])
def test_unknown_semantics_are_rejected(bad):
    with pytest.raises(ValueError, match="must be one of"):
        SNN(TINY, 30.0, **bad)


def _one_early_spike(num_steps=36, neurons=4):
    """Currents under which every neuron fires at step 0 only (1.5 > 1, then nothing)."""
    currents = torch.zeros((num_steps, neurons), dtype=torch.float64)
    currents[0] = 1.5
    return currents


@pytest.mark.parametrize("path", ["fused", "torch-scan", "stepwise"])
def test_dropout_mask_lifts_a_trace_over_the_floor(path, monkeypatch):
    # [21] computes LF on the dropout-masked spikes. A neuron that fired once, 35 steps before the end, at
    # tau_m = 5 has LF = e^-7 = 9.1e-4: under 1e-3 unmasked, over it times 1.25. Its factor is then
    # 1 + ln(beta) LF / Total = 1 - 0.2 e^-7 (about 1), not ln(beta) LF / Total (about -1.8e-4)
    if path == "torch-scan":
        monkeypatch.setenv("LEAKLIB_NUMBA", "0")
    beta = decay_factor(5.0)
    assert 0.8e-3 < beta**35 < TRACE_FLOOR < 1.25 * beta**35
    currents = _one_early_spike().requires_grad_()
    mask = torch.tensor([1.25, 1.25, 0.0, 1.25], dtype=torch.float64)
    w = torch.tensor([2.0, 3.0, 5.0, 7.0], dtype=torch.float64)
    method = "stepwise" if path == "stepwise" else "fused"
    spikes = lif_multistep(currents, 5.0, method=method, leak_grad="detached", correction="lee2020", mask=mask)
    assert spikes.sum(0).tolist() == [1.0] * 4 and spikes[0].tolist() == [1.0] * 4
    (spikes[0] * mask * w).sum().backward()
    factor = 1 + math.log(beta) * beta**35  # LF / Total = (1.25 e^-7) / 1.25
    torch.testing.assert_close(currents.grad[0], w * mask * factor, rtol=1e-14, atol=0)
    assert currents.grad[1:].abs().sum() == 0


def test_dropout_mask_lifts_a_trace_over_the_floor_in_the_fused_pooling_scan():
    # the same neuron inside the fused layer + 2x2 pooling + pooling neurons scan: the window's four neurons
    # fire at step 0, the pooling neuron sees 4 * 1.25 / 4 > 0.75 and fires; each neuron gets a quarter of
    # its gradient, times its mask, times the factor computed on the masked trace
    from leaklib.neurons import lif_pool_available, lif_pool_multistep

    currents = _one_early_spike().view(36, 1, 1, 2, 2).requires_grad_()
    if not lif_pool_available(currents):
        pytest.skip("the fused pooling scan needs numba")
    beta = decay_factor(5.0)
    mask = torch.full((1, 1, 2, 2), 1.25, dtype=torch.float64)
    pooled, counts, _ = lif_pool_multistep(currents, 5.0, leak_grad="detached", correction="lee2020", mask=mask)
    assert pooled.flatten().tolist() == [1.0] + [0.0] * 35 and counts.flatten().tolist() == [1.0] * 4
    (3.0 * pooled[0]).sum().backward()
    factor = 1 + math.log(beta) * beta**35
    torch.testing.assert_close(currents.grad[0].flatten(), torch.full((4,), 3.0 / 4 * 1.25 * factor,
                                                                       dtype=torch.float64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("numba", ["1", "0"])
def test_pooling_threshold_is_0_75_for_averages_of_masked_spikes(numba, monkeypatch):
    # with unmasked spikes every pooled membrane is a multiple of 0.25, so any threshold in [0.75, 1) gives
    # the same spikes. Dropout-masked spikes are not: with keep = 0.95, three of four spikes average
    # 3 / (4 * 0.95) = 0.789, over [21]'s 0.75 (a threshold of 0.8 would stay silent); three unmasked
    # spikes average 0.75 exactly, not over it (strict >)
    monkeypatch.setenv("LEAKLIB_NUMBA", numba)
    net = SNN("2x2x1-1C1-2P-1FC-1o", math.inf, dropout=0.05).double().train()
    with torch.no_grad():
        net.blocks[0].linear.weight.fill_(2.0)  # the conv neurons fire at every step of a spike input
    spikes = torch.ones((1, 2) + net.input_shape, dtype=torch.float64)
    keep = 1 / 0.95
    masks = [torch.tensor([[[[keep, keep], [keep, 0.0]]]], dtype=torch.float64),
             torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]], dtype=torch.float64)]
    monkeypatch.setattr(net, "_dropout_masks", lambda *args: [torch.cat(masks), None])
    _, rec = net(spikes, record=True)
    assert rec.spike_counts[0].flatten().tolist() == [1.0] * 8
    assert rec.pool_counts[1].flatten().tolist() == [1.0, 0.0]


@pytest.mark.parametrize("name", ["paper", "paper-smoke"])
def test_paper_profiles_take_lee2020s_sgd_step(name):
    # [21]'s optimiser: SGD(lr=0.0033, weight_decay=5e-4), no momentum, on MSELoss(size_average=False),
    # the squared error summed over the batch and the classes (no 1/2). The paper profiles train on
    # Eq. 5's loss averaged over the batch; at the profile's batch their step must be [21]'s step
    from leaklib.profiles import get_profile

    profile = get_profile(name)
    batch = profile.batch_size
    torch.manual_seed(2)
    ours = SNN(TINY, 30.0, init_gain=3.0, leak_grad=profile.leak_grad, correction=profile.correction,
               pooling=profile.pooling).double()
    theirs = SNN(TINY, 30.0).double()
    theirs.load_state_dict(ours.state_dict())
    spikes = _spikes((batch,) + ours.input_shape, seed=6, num_steps=8)
    labels = torch.arange(batch) % 3
    target = torch.eye(3, dtype=torch.float64)[labels]

    sgd = torch.optim.SGD(ours.parameters(), lr=profile.lr, momentum=profile.momentum,
                          weight_decay=profile.weight_decay)
    (0.5 * ((ours(spikes) - target) ** 2).sum(1).mean()).backward()
    sgd.step()
    lee_sgd = torch.optim.SGD(theirs.parameters(), lr=0.0033, weight_decay=5e-4)
    torch.nn.MSELoss(reduction="sum")(theirs(spikes), target).backward()
    lee_sgd.step()
    for (key, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15, msg=key)


def test_every_profile_keeps_lee2020s_weight_decay_relative_to_its_loss():
    # [21]: weight decay 5e-4 on a loss summed over the batch without the 1/2, 2 * batch times ours
    from leaklib.profiles import PROFILES, lee2020_weight_decay

    assert lee2020_weight_decay(64) == 5e-4 / 128 == 3.90625e-6 and lee2020_weight_decay(1) == 2.5e-4
    for profile in PROFILES.values():
        assert profile.weight_decay == lee2020_weight_decay(profile.batch_size), profile.name
        assert profile.momentum == 0.0, profile.name

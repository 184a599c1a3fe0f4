"""Tests of leaklib.models: spec strings (Sec. 4.1), initialisation, multi-step vs stepwise execution,
dropout shared over time, the analysis Record, and the synapse map used to count synaptic operations.

Expected values are worked out by hand (layer lists, parameter counts, fan-out counts) or computed
here independently (explicit recurrences, convolutions with the block's own weights).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from leaklib.models import ARCHITECTURES, INIT_GAIN, Block, LayerSpec, SNN, build_snn, parse_spec

CIFAR = "32x32x3-64C3-64C3-2P-128C3-128C3-2P-256C3-256C3-256C3-2P-1024FC-10o"
SVHN = "32x32x3-64C3-64C3-2P-256C3-256C3-256C3-2P-1024FC-10o"
TINY = "8x8x2-4C3-2P-5C3-2P-12FC-3o"  # small net with every kind of layer: conv, pool, fc, output
#: The training semantics before [21]'s were adopted (exact leak gradient, eps = 0, averaged pooling):
#: still selectable, and still equal to the per-step reference.
LEGACY = dict(leak_grad="exact", correction="none", pooling="average")


def _conv(n, k=3):
    return LayerSpec("conv", n, k)


def _spikes(shape, seed, dtype=torch.float32, num_steps=4):
    """Signed Poisson spikes of a random image in [-1, 1] (independent of leaklib.encoding)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=dtype) * 2 - 1
    fire = torch.rand((num_steps,) + tuple(shape), generator=gen, dtype=dtype) < x.abs()
    return torch.sign(x) * fire.to(dtype)


@pytest.fixture(scope="module")
def cifar_net():
    torch.manual_seed(0)
    return build_snn("cifar10", math.inf)


# ---------------------------------------------------------------------------------------------
# spec strings


def test_architectures_are_the_paper_strings():
    assert ARCHITECTURES["cifar10"] == CIFAR
    assert ARCHITECTURES["svhn"] == SVHN
    assert "digits" in ARCHITECTURES and ARCHITECTURES["digits"].startswith("8x8x1-")


def test_parse_cifar10():
    shape, layers = parse_spec(CIFAR)
    assert shape == (3, 32, 32)  # (C, H, W) from HxWxC
    pool = LayerSpec("pool", 2)
    assert layers == [_conv(64), _conv(64), pool, _conv(128), _conv(128), pool,
                      _conv(256), _conv(256), _conv(256), pool, LayerSpec("fc", 1024), LayerSpec("output", 10)]


def test_parse_svhn():
    shape, layers = parse_spec(SVHN)
    assert shape == (3, 32, 32)
    pool = LayerSpec("pool", 2)
    assert layers == [_conv(64), _conv(64), pool, _conv(256), _conv(256), _conv(256), pool,
                      LayerSpec("fc", 1024), LayerSpec("output", 10)]


def test_parse_other_kernel_and_non_square_input():
    shape, layers = parse_spec(" 28x20x1-16C5-4P-100FC-7o ")
    assert shape == (1, 28, 20)
    assert layers == [_conv(16, 5), LayerSpec("pool", 4), LayerSpec("fc", 100), LayerSpec("output", 7)]


def test_2s_is_read_as_pooling():
    _, with_s = parse_spec("32x32x3-64C3-2s-1024FC-10o")
    _, with_p = parse_spec("32x32x3-64C3-2P-1024FC-10o")
    assert with_s == with_p
    assert with_s[1] == LayerSpec("pool", 2)
    # and the network built from it pools: 4 channels x 4 x 4 inputs to the FC layer
    net = SNN("8x8x1-4C3-2s-6FC-3o", math.inf)
    assert net.blocks[1].linear.in_features == 4 * 4 * 4


@pytest.mark.parametrize("spec, message", [
    ("32x32x3-64X3-10o", "unknown token"),
    ("32x32x3-64C3-relu-10o", "unknown token"),
    ("32x32x3-64C3-1024FC", "output"),
    ("32x32x3-10o-64C3-10o", "output"),
    ("32x32x3-64C3-10o-10o", "output"),
    ("64C3-1024FC-10o", "input shape"),
    ("32x32-64C3-10o", "input shape"),
    ("32x32x3-64C4-10o", "odd kernel"),
    ("32x32x3-64C-10o", "odd kernel"),
    ("32x32x3-2P3-10o", "kernel"),
    ("32x32x3-0C3-10o", "positive"),
    ("32x32x3", "output"),
    ("32x32x3-64C3-2P-10o", "pooling"),
])
def test_bad_specs_raise_helpful_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_bad_networks_raise():
    with pytest.raises(ValueError, match="pool"):
        SNN("6x6x1-4C3-4P-3o", math.inf)  # 6 is not divisible by 4
    with pytest.raises(ValueError, match="convolution"):
        SNN("6x6x1-8FC-4C3-3o", math.inf)
    with pytest.raises(ValueError, match="dropout"):
        SNN(TINY, math.inf, dropout=1.0)
    with pytest.raises(ValueError, match="tau_m"):
        SNN(TINY, 0.0)
    with pytest.raises(ValueError, match="unknown dataset"):
        build_snn("mnist", math.inf)


# ---------------------------------------------------------------------------------------------
# sizes and initialisation


def test_cifar10_parameter_count_by_hand(cifar_net):
    # conv k*k*cin*cout, fc in*out, no biases; three 2x2 poolings: 32 -> 4, so 256*4*4 = 4096 into the FC
    conv = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    expected = sum(9 * cin * cout for cin, cout in conv) + 4096 * 1024 + 1024 * 10
    assert expected == 5_938_880
    assert sum(p.numel() for p in cifar_net.parameters()) == expected
    assert not any("bias" in name for name, _ in cifar_net.named_parameters())


def test_cifar10_hidden_shapes(cifar_net):
    assert cifar_net.hidden_shapes == [(64, 32, 32), (64, 32, 32), (128, 16, 16), (128, 16, 16),
                                       (256, 8, 8), (256, 8, 8), (256, 8, 8), (1024,)]
    assert len(cifar_net.neurons) == 8 and len(cifar_net.blocks) == 9
    assert cifar_net.num_classes == 10 and cifar_net.input_shape == (3, 32, 32)


def test_weights_normal_with_variance_gain_squared_over_fan_in(cifar_net):
    # He initialisation as [21]'s VGG9: N(0, 2 / fan_in) with fan_in = k*k*cin for conv, in_features for fc;
    # the relative std error of a std estimate is 1/sqrt(2n)
    assert INIT_GAIN == math.sqrt(2.0)
    checks = {5: 9 * 256, 6: 9 * 256, 7: 4096, 1: 9 * 64}
    for index, fan_in in checks.items():
        w = cifar_net.blocks[index].linear.weight.detach()
        assert w[0].numel() == fan_in
        target = math.sqrt(2.0 / fan_in)
        assert abs(w.std().item() / target - 1) < 0.02, index
        assert abs(w.mean().item()) < 5 * target / math.sqrt(w.numel())
        # normal, not uniform: the excess kurtosis of a normal is 0 (uniform: -1.2)
        kurt = ((w - w.mean()) ** 4).mean() / w.var() ** 2 - 3
        assert abs(kurt.item()) < 0.1


# ---------------------------------------------------------------------------------------------
# multi-step (fused) versus Algorithm 2 step by step


def _pair(spec, tau, eps=0.0, dropout=0.0, gain=1.0, seed=0, **semantics):
    torch.manual_seed(seed)
    fused = SNN(spec, tau, eps=eps, dropout=dropout, init_gain=2.5, **semantics).double()
    with torch.no_grad():  # larger weights so that every layer spikes and every gradient is nontrivial
        for block in fused.blocks:
            block.linear.weight.mul_(gain)
    stepwise = SNN(spec, tau, eps=eps, dropout=dropout, method="stepwise", **semantics).double()
    stepwise.load_state_dict(fused.state_dict())
    return fused, stepwise


@pytest.mark.parametrize("semantics", [LEGACY, {}], ids=["legacy", "lee2020"])
@pytest.mark.parametrize("tau, eps", [(math.inf, 0.0), (30.0, -0.1), (3.0, 0.0)])
@pytest.mark.parametrize("spec, gain", [(TINY, 2.5), (ARCHITECTURES["digits"], 3.0)])
def test_fused_forward_and_gradients_equal_stepwise(spec, gain, tau, eps, semantics):
    fused, stepwise = _pair(spec, tau, eps, gain=gain, **semantics)
    spikes = _spikes((3,) + fused.input_shape, seed=1, dtype=torch.float64, num_steps=6)
    target = torch.eye(fused.num_classes, dtype=torch.float64)[[0, 1, 2]]
    outputs, grads = [], []
    for net in (fused, stepwise):
        out = net(spikes)
        assert out.shape == (3, net.num_classes)
        (0.5 * ((out - target) ** 2).sum(1).mean()).backward()  # Eq. 5 loss
        outputs.append(out.detach())
        grads.append({name: p.grad.clone() for name, p in net.named_parameters()})
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-10, atol=1e-12)
    assert torch.equal(outputs[0].argmax(1), outputs[1].argmax(1))
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-12, msg=name)
        assert grads[0][name].abs().sum() > 0, name  # every layer receives gradient


@pytest.mark.parametrize("semantics", [LEGACY, {}], ids=["legacy", "lee2020"])
def test_fused_equals_stepwise_with_dropout_and_same_generator(semantics):
    fused, stepwise = _pair(TINY, 20.0, dropout=0.3, gain=2.5, **semantics)
    spikes = _spikes((2,) + fused.input_shape, seed=2, dtype=torch.float64, num_steps=5)
    a = fused(spikes, generator=torch.Generator().manual_seed(9))
    b = stepwise(spikes, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # a different dropout draw changes the prediction (dropout is active in train mode)
    c = fused(spikes, generator=torch.Generator().manual_seed(10))
    assert not torch.allclose(a, c)


def test_stepwise_rejects_record():
    _, stepwise = _pair(TINY, math.inf)
    with pytest.raises(ValueError, match="record"):
        stepwise(_spikes((1,) + stepwise.input_shape, 0, torch.float64), record=True)


@pytest.mark.parametrize("shape", [(4, 2, 1, 32, 32), (4, 2, 3, 28, 32), (2, 3, 32, 32), (4, 2, 32, 32, 3),
                                   (4, 1, 2, 3, 32, 32)])
def test_wrong_input_shape_raises(cifar_net, shape):
    with pytest.raises(ValueError, match="expected input spikes"):
        cifar_net(torch.zeros(shape))


# ---------------------------------------------------------------------------------------------
# dropout


def test_dropout_mask_shared_over_time_and_absent_in_eval():
    torch.manual_seed(3)
    net = SNN("8x8x2-16C3-2P-16C3-2P-64FC-3o", math.inf, dropout=0.5)
    with torch.no_grad():
        for block in net.blocks:
            block.linear.weight.mul_(2.5)
    spikes = _spikes((8,) + net.input_shape, seed=4, num_steps=12)
    net.train()
    _, rec = net(spikes, generator=torch.Generator().manual_seed(5), record=True)
    for layer in range(len(net.neurons)):
        counts = rec.spike_counts[layer]  # spikes before dropout, summed over T
        passed = rec.input_counts[layer + 1]  # |x * mask| summed over T: what the next block sees
        assert passed.shape == counts.shape
        # one mask for all steps: each neuron passes all its spikes (scaled by 1/keep = 2) or none.
        # A mask drawn per step would pass a part of a neuron's spikes.
        all_or_none = (passed == 0) | torch.isclose(passed, 2 * counts)
        assert all_or_none.all(), layer
        active = counts >= 2  # neurons that spiked at least twice (where a per-step mask would show)
        dropped = (passed == 0) & active
        assert active.sum() > 100
        frac = dropped.sum().item() / active.sum().item()
        n = active.sum().item()
        assert abs(frac - 0.5) <= 5 * math.sqrt(0.25 / n), (layer, frac)
    # eval mode: no dropout, the next block sees exactly the spikes
    net.eval()
    _, rec = net(spikes, generator=torch.Generator().manual_seed(5), record=True)
    for layer in range(len(net.neurons)):
        assert torch.equal(rec.input_counts[layer + 1], rec.spike_counts[layer])


def test_dropout_zero_in_train_mode_is_deterministic():
    torch.manual_seed(4)
    net = SNN(TINY, 10.0, dropout=0.0).train()
    spikes = _spikes((2,) + net.input_shape, seed=6)
    a = net(spikes, generator=torch.Generator().manual_seed(1))
    b = net(spikes, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# the analysis record


@pytest.mark.parametrize("tau", [math.inf, 5.0])
def test_record_contents(tau):
    torch.manual_seed(7)
    net = SNN(TINY, tau, init_gain=2.5, **LEGACY).double()
    with torch.no_grad():
        for block in net.blocks:
            block.linear.weight.mul_(2.5)
    num_steps, batch = 7, 3
    spikes = _spikes((batch,) + net.input_shape, seed=8, dtype=torch.float64, num_steps=num_steps)
    with torch.no_grad():
        plain = net(spikes)
        pred, rec = net(spikes, record=True)
    assert torch.equal(plain, pred)
    assert rec.num_steps == num_steps
    # shapes
    assert net.hidden_shapes == [(4, 8, 8), (5, 4, 4), (12,)]
    assert [tuple(c.shape) for c in rec.spike_counts] == [(batch,) + s for s in net.hidden_shapes]
    in_shapes = [net.input_shape] + net.hidden_shapes
    assert [tuple(c.shape) for c in rec.input_counts] == [(batch,) + s for s in in_shapes]
    assert [tuple(n.shape) for n in rec.current_norms] == [(num_steps, batch)] * 3
    assert rec.output_currents.shape == (num_steps, batch, 3)
    # input counts of block 0: |input spikes| summed over T; of later blocks: the spike counts
    assert torch.equal(rec.input_counts[0], spikes.abs().sum(0))
    for layer in range(3):
        assert torch.equal(rec.input_counts[layer + 1], rec.spike_counts[layer])
        assert (rec.spike_counts[layer] > 0).any()
    # output currents through the leaky integrator: u_L[T] = sum_t beta^(T-1-t) I_L[t] (t from 0), and
    # the prediction is u_L[T] / T
    beta = 1.0 if math.isinf(tau) else math.exp(-1.0 / tau)
    weights = torch.tensor([beta ** (num_steps - 1 - t) for t in range(num_steps)], dtype=torch.float64)
    u_last = (weights.view(-1, 1, 1) * rec.output_currents).sum(0)
    torch.testing.assert_close(u_last, pred * num_steps, rtol=1e-12, atol=1e-12)
    # layer 0 by hand: currents W_0 O_0[t] = conv(spikes[t]), their L2 norm per sample, and the
    # spikes of the explicit Algorithm 2 recurrence
    w0, w1 = net.blocks[0].linear.weight, net.blocks[1].linear.weight
    v = torch.zeros((batch,) + net.hidden_shapes[0], dtype=torch.float64)
    count = torch.zeros_like(v)
    for t in range(num_steps):
        current = F.conv2d(spikes[t], w0, padding=1)
        norm = current.pow(2).sum(dim=(1, 2, 3)).sqrt()
        torch.testing.assert_close(rec.current_norms[0][t], norm, rtol=1e-12, atol=1e-12)
        u = v + current
        fired = u > 1.0
        count += fired
        v = torch.where(fired, torch.zeros_like(u), beta * u)
        # layer 1 sees the 2x2 average of those spikes through its own conv
        pooled = fired.double().view(batch, 4, 4, 2, 4, 2).mean(dim=(3, 5))
        norm1 = F.conv2d(pooled, w1, padding=1).pow(2).sum(dim=(1, 2, 3)).sqrt()
        torch.testing.assert_close(rec.current_norms[1][t], norm1, rtol=1e-12, atol=1e-12)
    assert torch.equal(rec.spike_counts[0], count)
    assert (rec.current_norms[1] > 0).any()


def test_record_current_norm_of_fc_block_by_hand():
    # a net with one FC hidden layer: current = W x, norm over the neurons
    torch.manual_seed(11)
    net = SNN("2x2x1-3FC-2o", math.inf).double()
    spikes = _spikes((2, 1, 2, 2), seed=12, dtype=torch.float64, num_steps=3)
    _, rec = net(spikes, record=True)
    w = net.blocks[0].linear.weight  # [3, 4]
    for t in range(3):
        current = spikes[t].reshape(2, 4) @ w.T
        torch.testing.assert_close(rec.current_norms[0][t], current.norm(dim=1), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# synapse map (synaptic-operation counts)


def test_synapse_map_conv_fan_out_by_hand():
    # 3x3 conv, padding 1, on a 3x3 map, 2 input channels, 5 output channels. A spike at a corner
    # reaches the 2x2 output positions around it (4), on an edge 2x3 (6), at the centre all 3x3 (9),
    # for each of the 5 output channels.
    block = Block((2, 3, 3), 1, LayerSpec("conv", 5, 3))
    expected = {(0, 0): 4, (0, 2): 4, (2, 0): 4, (2, 2): 4, (0, 1): 6, (1, 0): 6, (1, 2): 6, (2, 1): 6, (1, 1): 9}
    for (i, j), fan_out in expected.items():
        for channel in (0, 1):
            x = torch.zeros(1, 2, 3, 3)
            x[0, channel, i, j] = 1.0
            out = block.synapse_map(x)
            assert out.shape == (1, 5, 3, 3)
            assert out.sum().item() == 5 * fan_out
            assert ((out > 0).sum(dim=(2, 3)) == fan_out).all()  # per output channel
    # linear in the spike counts: all nine positions of both channels -> 2 * 5 * (4*4 + 4*6 + 9) = 490
    assert block.synapse_map(torch.ones(1, 2, 3, 3)).sum().item() == 2 * 5 * (16 + 24 + 9)
    # the weights themselves play no part
    with torch.no_grad():
        block.linear.weight.mul_(-7.0)
    assert block.synapse_map(torch.ones(1, 2, 3, 3)).sum().item() == 490


def test_synapse_map_pool_then_fc_by_hand():
    # 2x2 pooling counted as a sum, then an FC layer of 7 neurons: every input spike drives 7 synapses
    block = Block((2, 4, 4), 2, LayerSpec("fc", 7))
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 0, 0] = 1.0
    assert block.synapse_map(x).sum().item() == 7
    x[0, 0, 1, 1] = 3.0  # same pooling window, a count of 3
    x[0, 1, 3, 2] = 2.0
    out = block.synapse_map(x)
    assert out.shape == (1, 7)
    assert torch.equal(out, torch.full((1, 7), 6.0))


def test_synapse_map_pool_then_conv_by_hand():
    # 2x2 pool of a 4x4 map -> 2x2 map; a 3x3 conv with padding 1 on a 2x2 map reaches all 4 positions
    block = Block((1, 4, 4), 2, LayerSpec("conv", 3, 3))
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 3, 3] = 1.0
    out = block.synapse_map(x)
    assert out.shape == (1, 3, 2, 2)
    assert out.sum().item() == 3 * 4
@pytest.mark.parametrize("dataset, batch, num_steps", [("digits", 4, 8), ("svhn", 2, 20), ("cifar10", 2, 40)])
@pytest.mark.parametrize("tau", [30.0, 100.0, math.inf])
def test_fresh_net_spikes_in_every_hidden_layer(dataset, batch, num_steps, tau):
    # He initialisation and [21]'s spiking pooling: every layer of a fresh net spikes within the first
    # image. Each pooling and IF layer delays the activity by a few steps, so the last of the 8 hidden
    # layers of the CIFAR-10 net first fires after 25-40 steps (later with more leak; the paper uses T = 100)
    torch.manual_seed(0)
    net = SNN(ARCHITECTURES[dataset], tau)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((batch,) + net.input_shape, generator=gen) * 2 - 1
    spikes = torch.sign(x) * (torch.rand((num_steps, batch) + net.input_shape, generator=gen) < x.abs()).float()
    with torch.no_grad():
        _, rec = net(spikes, record=True)
        per_layer = [int(c.sum()) for c in rec.spike_counts]
        assert all(n > 0 for n in per_layer), per_layer
        if dataset == "cifar10":  # the delay is real: after 20 steps the last hidden layer is still silent
            _, early = net(spikes[:20], record=True)
            assert early.spike_counts[0].sum() > 0 and early.spike_counts[-1].sum() == 0


def test_spec_with_only_an_output_layer():
    # a linear read-out without hidden layers: either supported or a ValueError, never IndexError
    try:
        shape, layers = parse_spec("8x8x1-10o")
    except ValueError:
        return
    assert shape == (1, 8, 8) and [l.kind for l in layers] == ["output"]


def test_fast_2x2_pooling_equals_avg_pool2d_in_values_and_gradients():
    from torch.nn import functional as F

    from leaklib.models import _AvgPool2x2

    torch.manual_seed(3)
    x = (torch.rand(5, 3, 6, 8) < 0.3).double() * torch.tensor(4 / 3, dtype=torch.float64)
    x = x + torch.randn_like(x) * 0.1
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(5, 3, 3, 4, dtype=torch.float64)
    out_fast, out_ref = _AvgPool2x2.apply(a), F.avg_pool2d(b, 2)
    assert torch.allclose(out_fast, out_ref, atol=1e-14)
    (out_fast * g).sum().backward()
    (out_ref * g).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-14)


@pytest.mark.parametrize("dropout", [0.0, 0.2, 0.3])
@pytest.mark.parametrize("record", [False, "counts", "full"])
@pytest.mark.parametrize("grad", [True, False])
def test_fused_pooling_scan_equals_layers_run_one_by_one(grad, record, dropout, monkeypatch):
    """The CPU scan that fuses a layer, the next 2x2 pooling and its pooling neurons changes no number."""
    import leaklib.models as models

    pytest.importorskip("numba")
    torch.manual_seed(12)
    net = SNN(ARCHITECTURES["digits"], 30.0, init_gain=3.0, dropout=dropout)  # [21]'s semantics: spiking pooling
    spikes = _spikes((5,) + net.input_shape, seed=13, num_steps=20)
    target = torch.eye(10)[[0, 1, 2, 3, 4]]
    results, calls = [], []
    fused_scan = models.lif_pool_multistep
    monkeypatch.setattr(models, "lif_pool_multistep", lambda *a, **k: calls.append(1) or fused_scan(*a, **k))
    for fused in (True, False):
        if not fused:
            assert len(calls) == 2  # both poolings of the digits net ran fused
            monkeypatch.setattr(models, "lif_pool_available", lambda currents: False)
        net.zero_grad()
        generator = torch.Generator().manual_seed(16)  # the same dropout masks in both passes
        with torch.set_grad_enabled(grad):
            out = net(spikes, generator, record=record) if record else net(spikes, generator)
        pred, rec = out if record else (out, None)
        if grad:
            (0.5 * ((pred - target) ** 2).sum(1).mean()).backward()
        results.append((pred.detach(), rec, [None if p.grad is None else p.grad.clone() for p in net.parameters()]))
    (pred_a, rec_a, grads_a), (pred_b, rec_b, grads_b) = results
    assert torch.equal(pred_a, pred_b)
    for a, b in zip(grads_a, grads_b):
        assert (a is None) == (b is None) == (not grad)
        if grad:  # the same products in the same order: bit for bit, with and without dropout
            assert torch.equal(a, b)
    if record:
        assert [t.item() for t in rec_a.spike_totals] == [t.item() for t in rec_b.spike_totals]
        assert all(t > 0 for t in rec_a.spike_totals)
    if record == "full":
        for name in ("spike_counts", "input_counts", "pool_counts", "current_norms"):
            for a, b in zip(getattr(rec_a, name), getattr(rec_b, name)):
                assert (a is None) == (b is None), name
                if a is not None and name == "input_counts":  # count * m against m added count times
                    torch.testing.assert_close(a, b, rtol=1e-6, atol=0, msg=name)
                elif a is not None:
                    assert torch.equal(a, b), name
        assert torch.equal(rec_a.output_currents, rec_b.output_currents)


def test_a_mask_that_is_not_a_dropout_mask_runs_the_layers_one_by_one(monkeypatch):
    """The fused pooling scan takes dropout masks (0 or one scale); any other mask runs the unfused path."""
    import leaklib.models as models
    from leaklib.neurons import NotADropoutMask

    pytest.importorskip("numba")
    torch.manual_seed(14)
    net = SNN(ARCHITECTURES["digits"], 30.0, init_gain=3.0, dropout=0.2)
    spikes = _spikes((2,) + net.input_shape, seed=15, num_steps=12)
    g = torch.Generator().manual_seed(17)
    masks = [(torch.rand((2,) + shape, generator=g) + 0.5) for shape in net.hidden_shapes]  # many values
    monkeypatch.setattr(net, "_dropout_masks", lambda *args: masks)
    with pytest.raises(NotADropoutMask):
        models.lif_pool_multistep(torch.zeros((3, 2) + tuple(net.hidden_shapes[0])), 30.0, mask=masks[0])
    declined = []
    fused_scan = models.lif_pool_multistep

    def spy(*a, **k):
        try:
            return fused_scan(*a, **k)
        except NotADropoutMask:
            declined.append(1)
            raise

    monkeypatch.setattr(models, "lif_pool_multistep", spy)
    pred = net(spikes)
    assert len(declined) == 2
    for module in net.modules():  # an independent reference: Algorithm 2 step by step, the same masks
        if hasattr(module, "method"):
            module.method = "stepwise"
    torch.testing.assert_close(pred, net(spikes), rtol=1e-6, atol=1e-7)


def test_lif_pool_scan_takes_a_mask_tensor_as_its_dropout():
    """LIFPoolScan given the mask tensor (no Dropout) pools the masked spikes, as lif_pool_multistep does."""
    from leaklib.neurons import LIFPoolScan, NotADropoutMask, lif_pool_multistep

    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(18)
    currents = (torch.rand((6, 2, 3, 4, 4), generator=g) * 1.5).requires_grad_(True)
    mask = (torch.rand((2, 3, 4, 4), generator=g) < 0.6).float() / 0.6
    grad_out = torch.randn((6, 2, 3, 2, 2), generator=g)
    results = []
    for call in ("multistep", "function"):
        currents.grad = None
        if call == "multistep":
            out, _, _ = lif_pool_multistep(currents, 30.0, leak_grad="detached", correction="lee2020", mask=mask)
        else:  # beta, v_th, scale, grad_beta, correction, pool_v_th, pool_scale, channels-last, for_backward, mask
            out, _, _ = LIFPoolScan.apply(currents, math.exp(-1 / 30), 1.0, 1.0, 1.0, True, 0.75, 1.0, True, True, mask)
        (out * grad_out).sum().backward()
        results.append((out.detach(), currents.grad.clone()))
    (out_a, grad_a), (out_b, grad_b) = results
    assert torch.equal(out_a, out_b) and torch.equal(grad_a, grad_b)  # forward, backward and correction masked
    assert (grad_b[:, mask == 0] == 0).all() and (grad_b[:, mask != 0] != 0).any()
    with torch.no_grad():
        unmasked, _, _ = lif_pool_multistep(currents, 30.0)
        assert not torch.equal(out_b, unmasked)
        args = (currents, math.exp(-1 / 30), 1.0, 1.0, 1.0, False, 0.75, 1.0, True, False)
        with pytest.raises(NotADropoutMask):
            LIFPoolScan.apply(*args, mask + torch.rand(mask.shape, generator=g))
        with pytest.raises(ValueError, match="shape of one step"):  # as many entries, the wrong order
            LIFPoolScan.apply(*args, mask.permute(0, 2, 3, 1).contiguous())


_FAULTS_SCRIPT = """
import resource, sys, torch
from leaklib.models import SNN
if sys.argv[1] == "forward":  # the first CPU forward tunes malloc (unless LEAKLIB_MALLOPT=0)
    SNN("4x4x1-2C3-2o", 30.0)(torch.zeros(2, 1, 1, 4, 4))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(4 << 20).sum()  # 16 MiB, allocated and freed once before counting
before = faults()
for _ in range(10):
    torch.ones(4 << 20).sum()
print(faults() - before)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc malloc")
def test_cpu_forward_keeps_freed_memory_for_reuse():
    """After an SNN forward on the CPU, a freed 16 MiB block is reused: no page faults to map it again."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    counts = {}
    for label, arg, env in (("tuned", "forward", {}), ("off", "forward", {"LEAKLIB_MALLOPT": "0"}),
                            ("untouched", "none", {})):
        full_env = {k: v for k, v in os.environ.items() if k != "LEAKLIB_MALLOPT"}
        full_env.update(PYTHONPATH=str(root), OMP_NUM_THREADS="1", **env)
        result = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, arg], env=full_env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        counts[label] = int(result.stdout.strip().splitlines()[-1])
    if counts["untouched"] < 1000:
        pytest.skip(f"this malloc does not unmap freed 16 MiB blocks ({counts})")
    assert counts["tuned"] < 100 <= counts["off"], counts


@pytest.mark.parametrize("record", [False, "counts", "full"])
def test_eval_forward_in_slices_equals_one_pass(record, monkeypatch):
    """Without gradient the CPU runs a large batch in slices; every number is the one-pass number."""
    import leaklib.models as models

    torch.manual_seed(14)
    net = SNN(ARCHITECTURES["digits"], 30.0, init_gain=3.0).eval()
    spikes = _spikes((7,) + net.input_shape, seed=15, num_steps=12)
    with torch.no_grad():
        whole = net(spikes, record=record)
        per_image = 12 * 4 * 16 * 8 * 8  # T * float32 bytes * the largest layer (16x8x8)
        monkeypatch.setattr(models, "EVAL_CHUNK_BYTES", 3 * per_image)
        assert net._eval_chunk(spikes) == 3  # slices of 3, 3 and 1 images
        sliced = net(spikes, record=record)
    with torch.enable_grad():
        assert net._eval_chunk(spikes) == 7  # with gradient: one pass
    net.train()
    with torch.no_grad():
        assert net._eval_chunk(spikes) == 7  # training mode (dropout draws): one pass
    if not record:
        assert torch.equal(whole, sliced)
        return
    (pred_a, rec_a), (pred_b, rec_b) = whole, sliced
    assert torch.equal(pred_a, pred_b)
    torch.testing.assert_close(torch.stack(rec_a.spike_totals), torch.stack(rec_b.spike_totals), rtol=1e-6, atol=0)
    if record == "full":
        for name in ("spike_counts", "input_counts", "pool_counts", "current_norms"):
            for a, b in zip(getattr(rec_a, name), getattr(rec_b, name), strict=True):
                assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), name
        assert torch.equal(rec_a.output_currents, rec_b.output_currents)
    else:
        assert rec_b.counts_only and not rec_b.spike_counts

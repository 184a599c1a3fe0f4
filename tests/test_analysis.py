"""Analyses of Sec. 4 on hand-computable cases: sparsity, spectra, robustness, SSE window, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from leaklib.analysis import (
    critical_frequency,
    enwsi,
    evaluate,
    measure_clean,
    spectrum_frame,
    spectrum_moments,
    spike_rates,
    spike_train_spectrum,
    sse_table,
    synaptic_ops,
    target_neuron_critical_frequency,
    verdict,
)
from leaklib.models import SNN, Record
from leaklib.train import evaluate_clean


def _conv_net(weight: float) -> SNN:
    """3x3 grey input -> 2 channels of 3x3 conv (all weights ``weight``) -> 2 outputs (18 synapses each)."""
    model = SNN("3x3x1-2C3-2o", math.inf)
    with torch.no_grad():
        model.blocks[0].linear.weight.fill_(weight)
    return model


# ---------------------------------------------------------------------------------------------- sparsity

def test_synaptic_ops_of_a_corner_and_a_centre_spike_by_hand():
    model = _conv_net(0.0)  # silent hidden layer: only the input layer's synapses count
    spikes = torch.zeros(3, 2, 1, 3, 3)
    spikes[0, 0, 0, 0, 0] = 1.0     # image 0: corner spike drives 2x2 positions x 2 channels = 8 synapses
    spikes[1, 1, 0, 1, 1] = -1.0    # image 1: a negative centre spike drives 3x3 x 2 = 18
    spikes[2, 1, 0, 1, 1] = 1.0     # and again at t=2: 36 in all
    _, record = model(spikes, record=True)
    assert synaptic_ops(record, model).tolist() == [8.0, 36.0]


def test_synaptic_ops_count_hidden_spikes_into_the_output_layer():
    model = _conv_net(2.0)  # current 2 > v_th = 1: the 8 neurons reached by the corner spike fire
    spikes = torch.zeros(3, 1, 1, 3, 3)
    spikes[0, 0, 0, 0, 0] = 1.0
    spikes[2, 0, 0, 0, 0] = -1.0    # drives 8 synapses, current -2: no hidden spikes
    _, record = model(spikes, record=True)
    # input layer 8 + 8; hidden layer: 8 spikes x 2 output synapses
    assert synaptic_ops(record, model).item() == 8 + 8 + 8 * 2


def test_synaptic_ops_count_pooling_as_a_sum():
    model = SNN("4x4x1-1C1-2P-3FC-2o", math.inf, pooling="average")
    with torch.no_grad():
        model.blocks[0].linear.weight.fill_(2.0)  # 1x1 conv: each input spike makes its hidden neuron fire
        model.blocks[1].linear.weight.zero_()     # the FC layer stays silent
    spikes = torch.zeros(1, 1, 1, 4, 4)
    spikes[0, 0, 0, 0, 0] = spikes[0, 0, 0, 1, 1] = 1.0  # two spikes in the same 2x2 pooling window
    _, record = model(spikes, record=True)
    # input: 2 spikes x 1 synapse; conv layer: 2 spikes through one pooled unit x 3 FC neurons each
    assert synaptic_ops(record, model).item() == 2 + 2 * 3


@pytest.mark.parametrize("spikes_in_window, pool_fires", [(2, False), (3, False), (4, True)])
def test_synaptic_ops_with_spiking_pooling(spikes_in_window, pool_fires):
    model = SNN("4x4x1-1C1-2P-3FC-2o", math.inf)  # [21]: the 2x2 average drives a pooling neuron (threshold 0.75)
    with torch.no_grad():
        model.blocks[0].linear.weight.fill_(2.0)  # 1x1 conv: each input spike makes its hidden neuron fire
        model.blocks[1].linear.weight.zero_()
    spikes = torch.zeros(1, 1, 1, 4, 4)
    for i, j in [(0, 0), (1, 1), (0, 1), (1, 0)][:spikes_in_window]:
        spikes[0, 0, 0, i, j] = 1.0
    _, record = model(spikes, record=True)
    # input: k spikes x 1 synapse; conv layer: k spikes into the pooling window x 1 synapse; the pooling
    # neuron (membrane k/4, fires only above 0.75) x 3 FC synapses if it fires
    k = spikes_in_window
    assert synaptic_ops(record, model).item() == k + k + (3 if pool_fires else 0)


def test_spike_rates_of_a_fixed_record():
    record = Record(num_steps=5, spike_counts=[
        torch.tensor([[4.0, 0.0, 1.0, 5.0], [0.0, 0.0, 0.0, 0.0]]),   # layer 1: 4 neurons
        torch.tensor([[2.0, 2.0], [5.0, 3.0]]),                       # layer 2: 2 neurons
    ])
    rates = spike_rates(record)
    # layer 1: image 0 10/(4*5), image 1 0 -> mean 25%; layer 2: 4/10, 8/10 -> 60%
    assert rates["per_layer"] == pytest.approx([25.0, 60.0])
    # overall: image 0 14/30, image 1 8/30 -> mean 11/30
    assert rates["overall"] == pytest.approx(100 * 11 / 30)


def test_spike_rates_rejects_a_record_of_another_model():
    record = Record(num_steps=1, spike_counts=[torch.zeros(1, 3)])
    with pytest.raises(ValueError, match="shapes"):
        spike_rates(record, _conv_net(1.0))


def test_enwsi_of_hand_set_weights():
    model = SNN("1x1x2-2FC-1o", math.inf)
    with torch.no_grad():
        model.blocks[0].linear.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 3.0]]))
    spikes = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).view(2, 1, 2, 1, 1)  # t=0: (1, 1); t=1: (1, 0)
    spikes = torch.cat([spikes, torch.zeros(2, 1, 2, 1, 1)], dim=1)     # image 1 silent
    _, record = model(spikes, record=True)
    # image 0: W o = (3, 3) -> sqrt(18), then (1, 0) -> 1; image 1: 0, 0
    assert enwsi(record) == pytest.approx([(math.sqrt(18) + 1) / 4])


# ---------------------------------------------------------------------------------------------- spectra

def test_critical_frequency_of_a_sinusoid_is_its_frequency():
    t = torch.arange(100.0)
    signals = torch.stack([torch.sin(math.pi * 0.3 * t) + 5.0,          # 15 cycles / 100 steps; offset removed
                           torch.cos(math.pi * 0.62 * t),
                           torch.sin(math.pi * 0.1 * t) + 0.1 * torch.sin(math.pi * 0.9 * t)], dim=1)
    # the last one: 1/1.01 ~ 99% of the power at 0.1, so 70% is reached there
    assert critical_frequency(signals).tolist() == pytest.approx([0.3, 0.62, 0.1])
    # with fraction 0.995 the 0.9 component is needed
    assert critical_frequency(signals[:, 2], 0.995).item() == pytest.approx(0.9)


def test_critical_frequency_of_white_noise_is_the_fraction():
    noise = torch.randn(200, 3000, generator=torch.Generator().manual_seed(0))
    for fraction in (0.7, 0.4):
        values = critical_frequency(noise, fraction)
        assert values.mean().item() == pytest.approx(fraction, abs=0.01)


def test_critical_frequency_of_a_constant_signal_is_nan():
    values = critical_frequency(torch.stack([torch.full((10,), 0.1), torch.zeros(10), torch.arange(10.0)], 1))
    assert math.isnan(values[0]) and math.isnan(values[1]) and 0 < values[2] <= 1
    with pytest.raises(ValueError):
        critical_frequency(torch.zeros(10), fraction=0.0)


def test_target_neuron_critical_frequency_picks_the_label_current():
    t = torch.arange(20.0)
    currents = torch.zeros(20, 2, 3)
    currents[:, 0, 1] = torch.cos(math.pi * 0.5 * t)   # image 0, class 1: 0.5
    currents[:, 0, 2] = torch.cos(math.pi * 0.9 * t)
    currents[:, 1, 2] = torch.cos(math.pi * 0.2 * t)   # image 1, class 2: 0.2
    record = Record(num_steps=20, output_currents=currents)
    assert target_neuron_critical_frequency(record, torch.tensor([1, 2])).tolist() == pytest.approx([0.5, 0.2])


def test_spectrum_sums_to_the_variance_and_is_per_image():
    gen = torch.Generator().manual_seed(1)
    spikes = torch.randn(16, 3, 2, 2, 2, generator=gen)   # T=16 (even: the Nyquist bin), 3 images, 8 trains
    freqs, power = spike_train_spectrum(spikes)
    assert freqs.tolist() == pytest.approx([k / 8 for k in range(9)]) and power.shape == (3, 9)
    variance = spikes.double().flatten(2).var(0, unbiased=False).mean(1)  # Parseval, per image
    assert power.sum(1).tolist() == pytest.approx(variance.tolist())
    assert power[:, 0].abs().max().item() < 1e-12  # mean removed


def test_spectrum_moments_and_frame():
    freqs = torch.tensor([0.0, 0.5, 1.0])
    mean, std = spectrum_moments(freqs, torch.tensor([[0.0, 2.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert mean[:2].tolist() == pytest.approx([0.5, 0.75]) and std[:2].tolist() == pytest.approx([0.0, 0.25])
    assert math.isnan(mean[2]) and math.isnan(std[2])
    frame = spectrum_frame(freqs, torch.ones(2, 3), condition="clean")
    assert len(frame) == 6 and set(frame["condition"]) == {"clean"} and frame["image"].tolist() == [0, 0, 0, 1, 1, 1]


# ---------------------------------------------------------------------------------------------- robustness

def _tiny():
    torch.manual_seed(0)
    model = SNN("4x4x1-4C3-2P-8FC-6o", 30.0, init_gain=2.5)
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(12, 1, 4, 4, generator=gen)
    labels = torch.randint(0, 6, (12,), generator=gen)
    return model, images, labels


def test_evaluate_is_deterministic_and_shares_severity_zero_with_measure_clean():
    model, images, labels = _tiny()
    kwargs = dict(num_steps=6, severities=range(0, 3), batch_size=5, seed=7, progress=False)
    first = evaluate(model, images, labels, **kwargs)
    second = evaluate(model, images, labels, **kwargs)
    pd.testing.assert_frame_equal(first, second)
    other = evaluate(model, images, labels, **{**kwargs, "seed": 8})
    assert not first["accuracy"].equals(other["accuracy"])  # the seed drives the encoding
    assert len(first) == 2 * 2 * 3
    assert list(first.columns) == ["scenario", "noise", "severity", "level", "accuracy", "n"]
    clean = first[first["severity"] == 0]
    assert clean["accuracy"].nunique() == 1 and (first["n"] == 12).all()
    measured = measure_clean(model, images, labels, num_steps=6, batch_size=5, seed=7, noisy=(1, "gaussian", 2),
                             progress=False)
    assert measured["accuracy"] == clean["accuracy"].iloc[0]
    row = first[(first["scenario"] == 1) & (first["noise"] == "gaussian") & (first["severity"] == 2)]
    assert measured["noisy_accuracy"] == row["accuracy"].item()
    reference = evaluate_clean(model, _Data(images, labels), 6, 5, seed=7, device=torch.device("cpu"))
    assert measured["accuracy"] == reference["accuracy"] and measured["sse"] == pytest.approx(reference["sse"])


class _Data:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)


def test_measure_clean_agrees_with_the_per_record_functions():
    model, images, labels = _tiny()
    out = measure_clean(model, images, labels, num_steps=6, batch_size=12, seed=2, progress=False)
    gen = torch.Generator().manual_seed(2)
    from leaklib.encoding import normalize_images, poisson_spikes
    model.eval()
    with torch.no_grad():
        _, record = model(poisson_spikes(normalize_images(images), gen, 6), record=True)
    rates = spike_rates(record, model)
    assert out["spike_rate"] == pytest.approx(rates["overall"])
    assert out["spike_rate_per_layer"] == pytest.approx(rates["per_layer"])
    assert out["synaptic_ops"] == pytest.approx(synaptic_ops(record, model).mean().item())
    assert out["enwsi"] == pytest.approx(enwsi(record))
    expected = target_neuron_critical_frequency(record, labels).tolist()
    np.testing.assert_array_equal(np.array(out["critical_frequency"]), np.array(expected))
    assert len(out["critical_frequency_noisy"]) == 12 and out["noisy"] == {"scenario": 1, "noise": "gaussian",
                                                                           "severity": 5}


def test_evaluate_rejects_unknown_noise():
    model, images, labels = _tiny()
    with pytest.raises(ValueError):
        evaluate(model, images, labels, num_steps=2, noises=("pink",), progress=False)


# ---------------------------------------------------------------------------------------------- SSE window

def test_sse_table_averages_the_last_window_per_run():
    records = [{"dataset": "d", "tau_m": 30.0, "seed": 1, "epoch": e, "train_sse": float(e), "test_sse": 2.0 * e,
                "train_acc": 0.1 * e, "test_acc": 0.0} for e in range(1, 16)]
    records += [{"dataset": "d", "tau_m": math.inf, "seed": 1, "epoch": e, "train_sse": float(e), "test_sse": 0.0,
                 "train_acc": 0.0, "test_acc": 1.0} for e in (2, 1)]
    out = sse_table(records)
    first, second = out.iloc[0], out.iloc[1]
    # 15 epochs: window round(15 * 20/150) = 2 -> epochs 14, 15
    assert first["window"] == 2 and first["train_sse"] == 14.5 and first["test_sse"] == 29.0
    assert first["train_acc"] == pytest.approx(1.45)
    # 2 epochs: at least one epoch -> the last (epoch 2, whatever the row order)
    assert second["window"] == 1 and second["train_sse"] == 2.0 and second["epochs"] == 2
    with pytest.raises(KeyError):
        sse_table([{"epoch": 1, "train_sse": 1.0}])


# ---------------------------------------------------------------------------------------------- verdicts

def test_verdict_rules_on_synthetic_numbers():
    inf, rising = math.inf, {math.inf: [1.0, 1.2], 100.0: [2.0, 2.2], 30.0: [3.0, 3.2]}
    assert verdict(rising, "increasing_with_leak")[0] == "reproduced"
    assert verdict(rising, "decreasing_with_leak")[0] == "not reproduced"
    assert verdict(rising, "lif_above_if")[0] == "reproduced"
    # 100 and 30 overlap: trend inconclusive, but both LIF clearly above IF
    close = {inf: [1.0, 1.2], 100.0: [2.0, 2.4], 30.0: [2.2, 2.6]}
    assert verdict(close, "increasing_with_leak")[0] == "inconclusive"
    assert verdict(close, "lif_above_if")[0] == "reproduced"
    # one seed: no spread -> inconclusive, never a verdict
    status, reason = verdict({inf: [1.0], 30.0: [5.0]}, "increasing_with_leak")
    assert status == "inconclusive" and "seed" in reason
    # a wrong-direction separated pair wins over a right-direction one
    mixed = {inf: [1.0, 1.1], 100.0: [3.0, 3.1], 30.0: [2.0, 2.1]}
    assert verdict(mixed, "increasing_with_leak")[0] == "not reproduced"
    # tau keys as strings (JSON) work the same
    assert verdict({str(k): v for k, v in rising.items()}, "increasing_with_leak")[0] == "reproduced"
    # NaNs are dropped before counting seeds
    assert verdict({inf: [1.0, math.nan], 30.0: [2.0, 2.1]}, "increasing_with_leak")[0] == "inconclusive"


def test_verdict_similar_needs_a_tolerance():
    data = {math.inf: [0.90, 0.91], 30.0: [0.895, 0.905]}
    assert verdict(data, "similar", tolerance=0.01)[0] == "reproduced"
    assert verdict({math.inf: [0.9, 0.91], 30.0: [0.7, 0.71]}, "similar", tolerance=0.05)[0] == "not reproduced"
    assert verdict({math.inf: [0.9, 1.0], 30.0: [0.8, 0.9]}, "similar", tolerance=0.05)[0] == "inconclusive"
    with pytest.raises(ValueError):
        verdict(data, "similar")
    with pytest.raises(ValueError):
        verdict(data, "bigger")


# ---------------------------------------------------------------------------------------------- chapter tables

from leaklib.analysis import (  # noqa: E402
    critical_frequency_frame,
    input_spectra,
    robustness_summary,
    values_by_tau,
)


def _robustness_rows(tau: float, seed: int, accuracies: list[float]) -> list[dict]:
    return [{"dataset": "d", "tau_m": tau, "seed": seed, "scenario": 1, "noise": "gaussian", "severity": s,
             "accuracy": a} for s, a in enumerate(accuracies)]


def test_robustness_summary_clean_mean_worst_and_drop_by_hand():
    table = pd.DataFrame(_robustness_rows(30.0, 1, [0.9, 0.8, 0.6]) + _robustness_rows(math.inf, 1, [1.0, 0.5, 0.1]))
    summary = robustness_summary(table.sample(frac=1.0, random_state=0), noisy_severities=[1, 2]).set_index("tau_m")
    assert summary.loc[30.0, "clean"] == pytest.approx(0.9)
    assert summary.loc[30.0, "mean_noisy"] == pytest.approx(0.7)
    assert summary.loc[30.0, "at_worst"] == pytest.approx(0.6)
    assert summary.loc[30.0, "drop"] == pytest.approx(0.3)
    assert summary.loc[math.inf, "mean_noisy"] == pytest.approx(0.3)
    assert summary.loc[math.inf, "drop"] == pytest.approx(0.9)
    assert (summary["worst_severity"] == 2).all()
    with pytest.raises(ValueError, match="lacks severities"):
        robustness_summary(table, noisy_severities=[1, 2, 3])
    with pytest.raises(ValueError, match="lacks severities"):
        robustness_summary(table[table.severity > 0], noisy_severities=[1, 2])


def test_values_by_tau_filters_rows_and_feeds_verdict():
    table = pd.DataFrame({"tau_m": [30.0, 30.0, math.inf, math.inf, 30.0],
                          "scenario": [1, 1, 1, 1, 2], "x": [0.9, 0.8, 0.5, 0.4, 0.0]})
    values = values_by_tau(table, "x", scenario=1)
    assert values == {30.0: [0.9, 0.8], math.inf: [0.5, 0.4]}
    assert verdict(values, "lif_above_if")[0] == "reproduced"
    with pytest.raises(ValueError, match="no rows"):
        values_by_tau(table, "x", scenario=3)
    with pytest.raises(KeyError):
        values_by_tau(table, "missing")


def test_input_spectra_clean_is_white_and_scenario2_gaussian_adds_sigma_squared():
    torch.manual_seed(0)
    images = torch.rand(40, 1, 8, 8)
    num_steps, sigma = 40, 0.5  # Gaussian severity 5 of the severity table
    frame = input_spectra(images, num_steps=num_steps, seed=3, batch_size=16, conditions={
        "clean": (1, "gaussian", 0), "again": (2, "impulse", 0), "noisy": (2, "gaussian", 5)})
    assert list(dict.fromkeys(frame.condition)) == ["clean", "again", "noisy"]
    assert len(frame) == 3 * 40 * (num_steps // 2 + 1)
    clean, again, noisy = (frame[frame.condition == c] for c in ("clean", "again", "noisy"))
    np.testing.assert_array_equal(clean.power.to_numpy(), again.power.to_numpy())  # same generator seed
    # Parseval: a train's powers sum to its variance (ddof=0); scenario 2 adds independent noise of
    # variance sigma^2 to the same spikes, i.e. sigma^2 (T-1)/T of sample variance on average.
    added = noisy.groupby("image").power.sum().mean() - clean.groupby("image").power.sum().mean()
    assert added == pytest.approx(sigma**2 * (num_steps - 1) / num_steps, rel=0.03)
    # fresh randomness each step: the clean spectrum is flat, so its centre is that of the grid's weights
    freqs = clean.frequency.unique()
    weights = np.where((freqs > 0) & (freqs < 1), 2.0, np.where(freqs == 1, 1.0, 0.0))  # single-sided, T even
    flat_centre = float((weights * freqs).sum() / weights.sum())
    mean_power = torch.tensor(clean.groupby("frequency").power.mean().to_numpy())
    centre, _ = spectrum_moments(torch.tensor(freqs), mean_power)
    assert centre.item() == pytest.approx(flat_centre, abs=0.01)
    with pytest.raises(ValueError):
        input_spectra(images, num_steps=4, conditions={})


def test_critical_frequency_frame_one_row_per_image_nan_kept():
    table = pd.DataFrame([
        {"dataset": "d", "tau_m": 30.0, "seed": 1, "critical_frequency": [0.1, math.nan],
         "critical_frequency_noisy": [0.2, 0.3]},
        {"dataset": "d", "tau_m": math.inf, "seed": 2, "critical_frequency": [0.4, 0.5],
         "critical_frequency_noisy": [0.6, 0.7]},
    ])
    frame = critical_frequency_frame(table)
    assert len(frame) == 8
    assert list(frame.columns) == ["dataset", "tau_m", "seed", "condition", "image", "critical_frequency"]
    row = frame[(frame.tau_m == 30.0) & (frame.condition == "clean")]
    assert row.image.tolist() == [0, 1] and row.critical_frequency.iloc[0] == 0.1
    assert math.isnan(row.critical_frequency.iloc[1])
    noisy = frame[(frame.tau_m == math.inf) & (frame.condition == "noisy")]
    assert noisy.critical_frequency.tolist() == [0.6, 0.7] and (noisy.seed == 2).all()
    with pytest.raises(KeyError):
        critical_frequency_frame(table.drop(columns="critical_frequency_noisy"))


from leaklib.analysis import paired_verdict  # noqa: E402


def test_paired_verdict_uses_per_seed_differences():
    before = {math.inf: [0.30, 0.40, 0.50], 30.0: [0.20, 0.25, 0.30]}
    # differences +0.02, +0.03, +0.04 (mean 0.03, std 0.01) and +0.01 each: both separated upwards,
    # although the 'after' values overlap the 'before' values across seeds
    after = {math.inf: [0.32, 0.43, 0.54], 30.0: [0.21, 0.26, 0.31]}
    assert paired_verdict(before, after, "increase")[0] == "reproduced"
    outcome, reason = paired_verdict(before, after, "decrease")
    assert outcome == "not reproduced" and "IF" in reason
    mixed = {math.inf: [0.32, 0.39, 0.51], 30.0: [0.21, 0.26, 0.31]}  # IF: +0.02, -0.01, +0.01 -> unresolved
    assert paired_verdict(before, mixed, "increase")[0] == "inconclusive"
    nan = {math.inf: [0.32, math.nan, math.nan], 30.0: [0.21, 0.26, 0.31]}
    assert paired_verdict(before, nan, "increase")[0] == "inconclusive"
    with pytest.raises(ValueError):
        paired_verdict(before, {math.inf: [0.1, 0.2, 0.3]}, "increase")
    with pytest.raises(ValueError):
        paired_verdict(before, after, "up")

"""Noise severities calibrated on the IF networks (leaklib.robustness), the severity table, and Fig. 3's axis.

The calibration is checked against a stub network whose accuracy is a known function of the noise
level: it is right exactly when the first-step input of a pixel whose clean spikes are always 0
stays below 1 in magnitude. On that pixel impulse noise (either scenario) is wrong with probability
p_s, so accuracy = 1 - p_s; scenario 2 Gaussian noise gives accuracy = P(|sigma_s z| < 1); scenario 1
Gaussian noise codes sigma_s z, so accuracy = 1 - E[min(sigma_s |z|, 1)].
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate, optimize, special, stats

from leaklib.encoding import (
    APRIORI_RULE,
    NUM_SEVERITIES,
    SEVERITY_TABLE,
    SeverityTable,
    noise_level,
    noisy_spikes,
    normalize_images,
    poisson_spikes,
)
from leaklib.robustness import ITERATIONS, UPPER, bisect_level, calibrate_table, evaluate, mean_accuracy

CHANCE = 0.1
CLASSES = 10


class _Stub(torch.nn.Module):
    """Predicts class 0 (the label) iff |first-step input of pixel (0, 0, 1)| < 1, else class 1."""

    num_classes = CLASSES

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:  # [T, B, C, H, W]
        self.calls += 1
        ok = spikes[0, :, 0, 0, 1].abs() < 1
        out = torch.zeros(spikes.shape[1], CLASSES)
        out[:, 0] = ok.float()
        out[:, 1] = (~ok).float()
        return out


class _Raises(torch.nn.Module):
    num_classes = CLASSES

    def forward(self, spikes):
        raise AssertionError("a LIF network was evaluated by the calibration")


def _stub_data(n: int = 4000):
    image = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)  # normalised: [-1, 0, 1]; pixel 1 never spikes
    assert torch.equal(normalize_images(image)[0, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))
    return image.repeat(n, 1, 1, 1), torch.zeros(n, dtype=torch.long)


def _exact_accuracy(scenario: int, noise: str, level: float) -> float:
    if noise == "impulse":
        return 1.0 - level
    if scenario == 2:
        return float(special.erf(1.0 / (level * math.sqrt(2.0)))) if level > 0 else 1.0
    spike = integrate.quad(lambda z: min(level * abs(z), 1.0) * stats.norm.pdf(z), -np.inf, np.inf)[0]
    return 1.0 - spike


# ---------------------------------------------------------------------------------------------- bisection


def test_bisect_level_finds_the_crossing_of_a_known_function():
    probes = []

    def accuracy(level):
        probes.append(level)
        return 1.0 - level / 2  # crosses 0.55 at 0.9

    found = bisect_level(accuracy, 0.55, upper=8.0, iterations=7)
    assert 0.9 <= found["level"] <= 0.9 + 8.0 / 2 ** 7 and found["reached"]
    assert found["accuracy"] == 1.0 - found["level"] / 2 <= 0.55
    assert len(probes) == 7 and all(0 < p < 8 for p in probes)  # every probe inside the interval
    assert [p for p, _ in found["trace"]] == probes


def test_bisect_level_reports_a_bound_that_is_not_reached_and_rejects_bad_settings():
    found = bisect_level(lambda level: 0.9, 0.55, upper=1.0, iterations=4)
    assert found["level"] == 1.0 and not found["reached"] and found["trace"][-1] == [1.0, 0.9]
    assert len(found["trace"]) == 5  # four halvings, then the bound itself
    step = bisect_level(lambda level: 0.0 if level >= 1.0 else 1.0, 0.5, upper=1.0, iterations=3)
    assert step["level"] == 1.0 and step["reached"]  # a crossing at the bound itself
    with pytest.raises(ValueError, match="upper"):
        bisect_level(lambda level: 0.0, 0.5, upper=0.0)
    with pytest.raises(ValueError, match="iterations"):
        bisect_level(lambda level: 0.0, 0.5, upper=1.0, iterations=0)


# ---------------------------------------------------------------------------------------------- calibration


def test_stub_accuracy_is_the_known_function_of_the_level():
    images, labels = _stub_data(4000)
    cases = [(1, "impulse", 0.3), (2, "impulse", 0.7), (2, "gaussian", 1.5), (1, "gaussian", 0.8)]
    for scenario, noise, level in cases:
        [acc] = mean_accuracy([_Stub()], images, labels, scenario, noise, level, num_steps=2, batch_size=1000,
                              seed=1, device="cpu")
        exact = _exact_accuracy(scenario, noise, level)
        assert abs(acc - exact) <= 5 * math.sqrt(exact * (1 - exact) / len(labels)) + 1e-9, (scenario, noise, acc)


def test_calibration_puts_severity_8_where_the_stub_falls_halfway_to_chance():
    images, labels = _stub_data(4000)
    stubs = [_Stub(), _Stub()]
    table = calibrate_table([(math.inf, s) for s in stubs], images, labels, num_steps=2, num_classes=CLASSES,
                            batch_size=1000, seed=3, device="cpu", progress=False)
    target = (1.0 + CHANCE) / 2  # clean accuracy 1
    for scenario in (1, 2):
        for noise in ("gaussian", "impulse"):
            key = f"{scenario}/{noise}"
            top = table.level(scenario, noise, 8)
            exact = optimize.brentq(lambda v: _exact_accuracy(scenario, noise, v) - target, 1e-6, UPPER[noise])
            slope = abs(_exact_accuracy(scenario, noise, exact * 1.01) - _exact_accuracy(scenario, noise, exact)) \
                / (0.01 * exact)
            margin = UPPER[noise] / 2 ** ITERATIONS + 5 * math.sqrt(target * (1 - target) / len(labels)) / slope
            assert abs(top - exact) <= margin, (key, top, exact, margin)
            assert [table.level(scenario, noise, s) for s in range(9)] == pytest.approx(
                [top * s / 8 for s in range(9)])  # equally spaced from clean to severity 8
            info = table.info[key]
            assert info["clean"] == 1.0 and info["target"] == pytest.approx(target) and info["reached"]
            assert info["at_severity_8"] <= target and info["n_networks"] == 2 and info["n_images"] == 4000
            assert table.rule(scenario, noise).startswith("calibrated")
            # the stated loss: at least a third of the clean accuracy at severity 8
            assert info["clean"] - info["at_severity_8"] >= info["clean"] / 3


def test_calibration_falls_back_to_the_a_priori_table_and_says_why():
    images, labels = _stub_data(200)
    none = calibrate_table([(30.0, _Raises())], images, labels, num_steps=2, num_classes=CLASSES, device="cpu",
                           progress=False)
    assert none.levels == SeverityTable.apriori().levels and "no IF network" in none.rule(1, "gaussian")
    wrong = torch.ones_like(labels)  # the stub always says 0 (clean), so accuracy 0: below 3 x chance
    low = calibrate_table([(math.inf, _Stub())], images, wrong, num_steps=2, num_classes=CLASSES, device="cpu",
                          progress=False)
    assert low.levels == SeverityTable.apriori().levels
    assert all(r.startswith(APRIORI_RULE) and "calibration impossible" in r for r in low.rules.values())
    # at exactly 3 x chance the rule still calibrates
    third = torch.where(torch.arange(len(labels)) % 10 < 3, 0, 1)
    ok = calibrate_table([(math.inf, _Stub())], images, third, num_steps=2, num_classes=CLASSES, device="cpu",
                         progress=False)
    assert ok.info["1/impulse"]["clean"] == pytest.approx(0.3) and ok.rule(1, "impulse").startswith("calibrated")


def test_calibration_never_calls_a_lif_network():
    images, labels = _stub_data(500)
    options = dict(num_steps=2, num_classes=CLASSES, batch_size=500, seed=4, device="cpu", progress=False)
    stub = _Stub()
    mixed = calibrate_table([(30.0, _Raises()), (math.inf, stub), (100.0, _Raises())], images, labels, **options)
    alone = calibrate_table([(math.inf, _Stub())], images, labels, **options)
    assert mixed.levels == alone.levels and stub.calls > 0


def test_calibration_bound_not_reached_is_stated():
    images, labels = _stub_data(500)
    table = calibrate_table([(math.inf, _Stub())], images, labels, num_steps=2, num_classes=CLASSES,
                            upper={"gaussian": 0.2, "impulse": 1.0}, iterations=3, device="cpu", progress=False)
    assert table.level(2, "gaussian", 8) == 0.2 and not table.info["2/gaussian"]["reached"]
    assert "bound reached" in table.rule(2, "gaussian") and table.info["2/impulse"]["reached"]


# ---------------------------------------------------------------------------------------------- the table


def test_apriori_table_is_the_design_notes_and_the_default_of_noisy_spikes():
    table = SeverityTable.apriori()
    for scenario in (1, 2):
        for noise in ("gaussian", "impulse"):
            assert [table.level(scenario, noise, s) for s in range(9)] == [noise_level(noise, s) for s in range(9)]
            assert list(table.levels[f"{scenario}/{noise}"]) == list(SEVERITY_TABLE[noise])
    x = torch.linspace(-1, 1, 12).view(1, 1, 3, 4)
    gen = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    default = noisy_spikes(x, 1, "gaussian", 6, gen(), 20)
    assert torch.equal(default, noisy_spikes(x, 1, "gaussian", 6, gen(), 20, table=table))
    assert torch.equal(default, noisy_spikes(x, 1, "gaussian", generator=gen(), num_steps=20, level=0.6))


def test_noisy_spikes_reads_the_level_through_the_given_table():
    step = {"gaussian": 0.25, "impulse": 0.1}
    levels = {f"{sc}/{n}": tuple(step[n] * s for s in range(1, 9)) for sc in (1, 2) for n in ("gaussian", "impulse")}
    table = SeverityTable(levels, {k: "test" for k in levels})
    x = torch.linspace(-1, 1, 12).view(1, 1, 3, 4)
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    for scenario, noise in [(1, "impulse"), (2, "gaussian")]:
        via_table = noisy_spikes(x, scenario, noise, 3, gen(), 10, table=table)
        assert torch.equal(via_table, noisy_spikes(x, scenario, noise, generator=gen(), num_steps=10,
                                                   level=3 * step[noise]))
        assert not torch.equal(via_table, noisy_spikes(x, scenario, noise, 3, gen(), 10))  # a priori: 0.3 / 0.15
    assert torch.equal(noisy_spikes(x, 2, "impulse", 0, gen(), 10, table=table), poisson_spikes(x, gen(), 10))
    with pytest.raises(ValueError, match="either a severity"):
        noisy_spikes(x, 1, "gaussian", 2, level=0.2)
    with pytest.raises(ValueError, match="either a severity"):
        noisy_spikes(x, 1, "gaussian")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        noisy_spikes(x, 1, "impulse", level=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        noisy_spikes(x, 2, "gaussian", level=-0.1)


def test_severity_table_validates_and_round_trips_through_json():
    good = SeverityTable.apriori("why")
    again = SeverityTable.from_dict(json.loads(json.dumps(good.to_dict())))
    assert again == good and again.rule(2, "impulse") == APRIORI_RULE + "; why"
    frame = good.frame()
    assert len(frame) == 4 * 9 and frame[frame.severity == 0]["level"].eq(0).all()
    levels = dict(good.levels)
    with pytest.raises(ValueError, match="non-decreasing"):
        SeverityTable({**levels, "1/gaussian": (0.2, 0.1) + levels["1/gaussian"][2:]}, good.rules)
    with pytest.raises(ValueError, match="non-decreasing"):
        SeverityTable({**levels, "1/gaussian": levels["1/gaussian"][:7]}, good.rules)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SeverityTable({**levels, "2/impulse": tuple(0.2 * s for s in range(1, 9))}, good.rules)
    with pytest.raises(ValueError, match="exactly"):
        SeverityTable({k: v for k, v in levels.items() if k != "2/impulse"}, good.rules)
    with pytest.raises(ValueError, match="severity"):
        good.level(1, "gaussian", 9)


def test_evaluate_reports_the_tables_levels_and_matches_mean_accuracy():
    images, labels = _stub_data(300)
    levels = {f"{sc}/{n}": tuple(0.1 * s for s in range(1, 9)) for sc in (1, 2) for n in ("gaussian", "impulse")}
    table = SeverityTable(levels, {k: "test" for k in levels})
    out = evaluate(_Stub(), images, labels, num_steps=2, table=table, batch_size=100, seed=5, device="cpu",
                   progress=False)
    assert out["level"].tolist() == [0.1 * s for _ in range(4) for s in range(9)]
    row = out[(out.scenario == 2) & (out.noise == "impulse") & (out.severity == 7)]
    [expected] = mean_accuracy([_Stub()], images, labels, 2, "impulse", 0.7, num_steps=2, batch_size=100, seed=5,
                               device="cpu")
    assert row["accuracy"].item() == expected


# ---------------------------------------------------------------------------------------------- the sweep


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    from leaklib.profiles import get_profile
    from leaklib.sweep import ensure_sweep

    results = tmp_path_factory.mktemp("robust")
    profile = replace(get_profile("smoke"), epochs=1, taus=(30.0, math.inf), seeds=(1, 2), train_subset=60,
                      test_subset=20, analysis_images=12)
    configs = ensure_sweep(profile, results_dir=results, device="cpu", progress=False, log=lambda s: None)
    return profile, configs, results


def test_severity_table_of_a_sweep_loads_only_if_networks(tiny_sweep, monkeypatch, tmp_path):
    import shutil

    import leaklib.robustness as robustness
    from leaklib.sweep import severity_table

    profile, configs, results = tiny_sweep
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    for config in configs:
        if not math.isinf(config.tau_m):
            (config.folder(copy) / "checkpoint.pt").write_bytes(b"not a checkpoint")  # loading it would fail
    seen = []
    original = robustness.calibrate_table

    def spy(networks, *args, **kwargs):
        networks = list(networks)
        seen.extend(tau for tau, _ in networks)
        return original(networks, *args, **{**kwargs, "chance_multiple": 0.0})  # calibrate even near chance

    monkeypatch.setattr(robustness, "calibrate_table", spy)
    table = severity_table(profile, "digits", copy, "cpu", progress=False)
    assert seen == [math.inf, math.inf] and all(r.startswith("calibrated") for r in table.rules.values())
    path = configs[0].folder(copy).parents[1] / "analysis" / "severity_table.json"
    stored = json.loads(path.read_text())
    assert set(stored["settings"]["if_runs"]) == {"1", "2"} and SeverityTable.from_dict(stored["value"]) == table
    # the sweep sees the images and random numbers of the calibration: IF's severity 8 is the calibrated accuracy
    from leaklib.sweep import robustness_table

    if_configs = [c for c in configs if math.isinf(c.tau_m)]
    robust = robustness_table(if_configs, copy, "cpu", progress=False, tables={"digits": table})
    at_8 = robust[robust.severity == 8].groupby(["scenario", "noise"])["accuracy"].mean()
    for (scenario, noise), value in at_8.items():
        assert value == pytest.approx(table.info[f"{scenario}/{noise}"]["at_severity_8"], abs=1e-12)
    # a LIF run retrained (here: its metrics changed) leaves the table's cache key alone
    lif = next(c for c in configs if not math.isinf(c.tau_m)).folder(copy) / "metrics.json"
    lif.write_text(json.dumps({**json.loads(lif.read_text()), "test_acc": 0.0}))
    assert severity_table(profile, "digits", copy, "cpu", progress=False) == table and len(seen) == 2


def test_a_sweeps_table_follows_the_three_times_chance_rule(tiny_sweep):
    from leaklib.sweep import ANALYSIS_SEED, robustness_images, severity_table
    from leaklib.train import load_model

    profile, configs, results = tiny_sweep
    table = severity_table(profile, "digits", results, "cpu", progress=False)
    test = robustness_images(configs[0])
    models = [load_model(c, results, "cpu") for c in configs if math.isinf(c.tau_m)]
    clean = np.mean(mean_accuracy(models, test.images, test.labels, 1, "gaussian", 0.0, num_steps=profile.num_steps,
                                  batch_size=profile.eval_batch_size, seed=ANALYSIS_SEED, device="cpu"))
    if clean < 3 * CHANCE:  # smoke networks after one epoch are usually here
        assert table.levels == SeverityTable.apriori().levels
        assert all("calibration impossible" in r and f"{100 * clean:.1f}%" in r for r in table.rules.values())
    else:
        assert all(r.startswith("calibrated") for r in table.rules.values())
        assert all(i["clean"] == pytest.approx(clean) for i in table.info.values())


def test_cache_keys_hold_the_table_and_diverged_runs_are_skipped(tiny_sweep, tmp_path):
    import shutil

    from leaklib.sweep import analysis_path, clean_table, robustness_table

    profile, configs, results = tiny_sweep
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    keys = [f"{sc}/{n}" for sc in (1, 2) for n in ("gaussian", "impulse")]
    a = SeverityTable({k: tuple(0.1 * s for s in range(1, 9)) for k in keys}, {k: "a" for k in keys})
    b = SeverityTable({k: tuple(0.05 * s for s in range(1, 9)) for k in keys}, {k: "b" for k in keys})
    first = robustness_table(configs, copy, "cpu", progress=False, tables={"digits": a})
    assert first[first.severity == 8]["level"].eq(0.8).all()
    second = robustness_table(configs, copy, "cpu", progress=False, tables={"digits": b})
    assert second[second.severity == 8]["level"].eq(0.4).all()  # recomputed, not the cached rows of table a
    stored = json.loads(analysis_path(configs[0], copy, "robustness").read_text())
    assert stored["settings"]["table"]["levels"]["1/gaussian"][-1] == 0.4
    clean_a = clean_table(configs, copy, "cpu", progress=False, tables={"digits": a})
    clean_b = clean_table(configs, copy, "cpu", progress=False, tables={"digits": b})
    assert clean_a["noisy_level"].eq(0.5).all() and clean_b["noisy_level"].eq(0.25).all()
    for row in clean_b.itertuples():  # severity 0 is the clean pass (same images, robustness_images=None)
        zero = second[(second.tau_m == row.tau_m) & (second.seed == row.seed) & (second.severity == 0)]
        assert set(zero.accuracy) == {row.accuracy}
        noisy = second[(second.tau_m == row.tau_m) & (second.seed == row.seed) & (second.scenario == 1)
                       & (second.noise == "gaussian") & (second.severity == 5)]
        assert noisy.accuracy.item() == row.noisy_accuracy
    # a diverged run has no network to test: skipped and named
    bad = configs[0].folder(copy) / "metrics.json"
    bad.write_text(json.dumps({**json.loads(bad.read_text()), "status": "diverged"}))
    third = robustness_table(configs, copy, "cpu", progress=False, tables={"digits": b})
    assert third.attrs["skipped"] == [configs[0].label()]
    assert len(third) == (len(configs) - 1) * 4 * 9


def test_robustness_images_are_a_stratified_subset(tiny_sweep):
    from leaklib.sweep import analysis_images, robustness_images

    profile, configs, results = tiny_sweep
    assert torch.equal(robustness_images(configs[0]).images, analysis_images(configs[0]).images)
    small = replace(configs[0], profile=replace(profile, robustness_images=10))
    subset = robustness_images(small)
    assert len(subset.labels) == 10 and len(set(subset.labels.tolist())) == 10  # one image of each digit


# ---------------------------------------------------------------------------------------------- Fig. 3


def test_fig3_spans_every_severity_and_labels_the_levels():
    from leaklib.figures import fig3_robustness
    from leaklib.plotting import plt

    levels = {f"{sc}/{n}": tuple((0.5 if n == "gaussian" else 0.1) * s for s in range(1, 9))
              for sc in (1, 2) for n in ("gaussian", "impulse")}
    table = SeverityTable(levels, {k: "t" for k in levels})
    rows = [{"tau_m": tau, "seed": seed, "scenario": sc, "noise": n, "severity": s, "level": table.level(sc, n, s),
             "accuracy": 0.9 - 0.05 * s} for tau in (math.inf, 30.0) for seed in (1, 2) for sc in (1, 2)
            for n in ("gaussian", "impulse") for s in range(NUM_SEVERITIES + 1)]
    frame = pd.DataFrame(rows)
    fig = fig3_robustness(frame)
    try:
        main = [ax for ax in fig.axes if ax.get_title()]
        assert len(main) == 4
        for ax in main:
            low, high = ax.get_xlim()
            assert low < 0 and high > 8 and list(ax.get_xticks()) == list(range(9))
            [top] = ax.child_axes
            labels = [t.get_text() for t in top.get_xticklabels()]
            step = 0.5 if "Gaussian" in ax.get_title() else 0.1
            assert labels == ["0"] + [f"{step * s:.2g}" for s in range(1, 9)]
        with pytest.raises(ValueError, match="several levels"):
            fig3_robustness(frame.assign(level=frame["level"] + 0.01 * frame["seed"]))
    finally:
        plt.close("all")

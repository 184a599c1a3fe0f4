"""Claims ledger and Table 1 (leaklib.claims), the equal-train-SSE reading (Sec. 4.4) and the added figures.

Tables are built by hand so that every verdict and number can be checked without training.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from leaklib import analysis  # test_sse_at_train_sse is called through the module: pytest would collect it
from leaklib.claims import (
    ClaimPart,
    accuracy_drop,
    claim_baseline_accuracy,
    claim_critical_frequency,
    claim_enwsi,
    claim_equal_train_sse,
    claim_final_sse,
    claim_robustness,
    claim_spike_rate,
    claim_synaptic_ops,
    claim_tau30_over_100,
    claims_ledger,
    combine_verdicts,
    critical_frequency_means,
    equal_train_sse,
    final_accuracy,
    ledger_summary,
    markdown_table,
    per_layer_table,
    per_seed_values,
    table1,
    table1_display,
    write_ledger,
    write_table1,
)
from leaklib.figures import fig6_spike_rates, fig_table1
from leaklib.paper import TABLE1_ROWS
from leaklib.plotting import plt, tau_color

TAUS = (30.0, 100.0, math.inf)
SEEDS = (1, 2, 3)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------------------------------- interpolation

def _run(train, test):
    return pd.DataFrame({"epoch": range(1, len(train) + 1), "train_sse": train, "test_sse": test})


def test_test_sse_at_train_sse_is_log_linear_between_epochs():
    run = _run([1.0, 0.01], [1.0, 0.1])  # log test = 0.5 log train on this segment
    got = analysis.test_sse_at_train_sse(run, [0.1, 1.0, 0.01])
    np.testing.assert_allclose(got, [10 ** -0.5, 1.0, 0.1])


def test_test_sse_at_train_sse_takes_the_last_crossing_and_nan_outside():
    # train goes 1 -> 0.1 -> 1 -> 0.1: 0.316 is crossed three times; the last segment (epochs 3-4)
    # has test SSE 4 -> 0.4, so the answer there is sqrt(4 * 0.4)
    run = _run([1.0, 0.1, 1.0, 0.1], [2.0, 0.2, 4.0, 0.4])
    got = analysis.test_sse_at_train_sse(run, [math.sqrt(0.1), 2.0, 0.05])
    np.testing.assert_allclose(got[0], math.sqrt(4.0 * 0.4))
    assert math.isnan(got[1]) and math.isnan(got[2])


def test_test_sse_at_train_sse_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        analysis.test_sse_at_train_sse(_run([1.0, 0.0], [1.0, 1.0]), [0.5])
    with pytest.raises(ValueError, match="duplicate"):
        analysis.test_sse_at_train_sse(pd.DataFrame({"epoch": [1, 1], "train_sse": [1, 2], "test_sse": [1, 2]}), [1])
    with pytest.raises(KeyError, match="test_sse"):
        analysis.test_sse_at_train_sse(pd.DataFrame({"epoch": [1], "train_sse": [1.0]}), [1])


def test_common_train_sse_range_is_the_intersection():
    runs = pd.concat([_run([1.0, 0.2], [1, 1]).assign(seed=1), _run([0.8, 0.1], [1, 1]).assign(seed=2)])
    assert analysis.common_train_sse_range(runs) == (0.2, 0.8)
    apart = pd.concat([_run([1.0, 0.5], [1, 1]).assign(seed=1), _run([0.4, 0.1], [1, 1]).assign(seed=2)])
    with pytest.raises(ValueError, match="do not overlap"):
        analysis.common_train_sse_range(apart)


# ---------------------------------------------------------------------------------------------- synthetic sweep

def _history(test_factor: dict[float, float], epochs: int = 4) -> pd.DataFrame:
    """Every run: train SSE halves per epoch from 1; test SSE = factor(tau) x train SSE (+ a seed wobble)."""
    rows = []
    for tau in TAUS:
        for seed in SEEDS:
            for epoch in range(1, epochs + 1):
                train = 0.5 ** (epoch - 1) * (1 + 0.001 * seed)
                rows.append({"dataset": "digits", "tau_m": tau, "seed": seed, "epoch": epoch,
                             "train_sse": train, "test_sse": test_factor[tau] * train * (1 + 0.001 * seed),
                             "train_acc": 0.5, "test_acc": 0.90 + 0.001 * seed + (0.01 if tau == 30 else 0.0)})
    return pd.DataFrame(rows)


def _clean(rate: dict[float, float]) -> pd.DataFrame:
    rows = []
    for tau in TAUS:
        for seed in SEEDS:
            r = rate[tau] + 0.01 * seed
            rows.append({"dataset": "digits", "tau_m": tau, "seed": 2020, "spike_rate": r,
                         "synaptic_ops": 1000 * r, "enwsi": [10 * r, 2 * r],
                         "critical_frequency": [0.1 * r, math.nan, 0.1 * r],
                         "critical_frequency_noisy": [0.2 * r, 0.2 * r]})
    return pd.DataFrame(rows)


def _robustness(drop: dict[float, float]) -> pd.DataFrame:
    """Clean accuracy 0.9; under noise 0.9 - drop(tau) * severity / 4.5 (mean over 1..8 = drop), seed wobble."""
    rows = []
    for tau in TAUS:
        for seed in SEEDS:
            for scenario in (1, 2):
                for noise in ("gaussian", "impulse"):
                    for severity in range(9):
                        acc = 0.9 - (drop[tau] + 0.001 * seed) * severity / 4.5
                        rows.append({"dataset": "digits", "tau_m": tau, "seed": seed, "scenario": scenario,
                                     "noise": noise, "severity": severity, "level": 0.0, "accuracy": acc, "n": 100})
    return pd.DataFrame(rows)


def test_accuracy_drop_is_clean_minus_mean_noisy_in_points():
    table = accuracy_drop(_robustness({30.0: 0.1, 100.0: 0.2, math.inf: 0.3}), scenarios=[1])
    row = table[(table.tau_m == 100.0) & (table.seed == 2)].iloc[0]
    assert row["clean"] == pytest.approx(90.0)
    assert row["drop"] == pytest.approx(100 * 0.202)
    assert len(table) == 9


def test_final_accuracy_takes_the_last_epoch_in_percent():
    table = final_accuracy(_history({30.0: 1, 100.0: 1, math.inf: 1}))
    assert set(table.epoch) == {4}
    assert table[(table.tau_m == 30.0) & (table.seed == 1)].accuracy.item() == pytest.approx(91.1)


def test_per_seed_values_orders_if_first_and_filters_taus():
    table = pd.DataFrame({"dataset": ["a"] * 3 + ["b"], "tau_m": [30.0, math.inf, 30.0, 30.0], "v": [1, 2, 3, 9]})
    assert per_seed_values(table, "v", "a") == {math.inf: [2.0], 30.0: [1.0, 3.0]}
    assert per_seed_values(table, "v", "a", taus=[30]) == {30.0: [1.0, 3.0]}
    with pytest.raises(KeyError):
        per_seed_values(table, "w")


def test_equal_train_sse_recovers_the_factor_on_the_common_interval():
    per_run, curves = equal_train_sse(_history({30.0: 1.0, 100.0: 1.5, math.inf: 2.0}), points=5)
    run = per_run[(per_run.tau_m == math.inf) & (per_run.seed == 1)].iloc[0]
    # test = 2 x 1.001 x train at every grid point -> geometric mean over the grid's train SSE
    grid = np.geomspace(run["low"], run["high"], 5)
    assert run["test_sse_at_equal_train"] == pytest.approx(2.0 * 1.001 * np.exp(np.log(grid).mean()))
    assert run["low"] == pytest.approx(0.125 * 1.003) and run["high"] == pytest.approx(1.001)
    assert len(curves) == 9 * 5


def test_claims_on_a_sweep_built_to_agree_with_the_paper():
    history = _history({30.0: 1.0, 100.0: 1.5, math.inf: 2.0})
    clean = _clean({30.0: 3.0, 100.0: 2.0, math.inf: 1.0})
    robustness = _robustness({30.0: 0.1, 100.0: 0.2, math.inf: 0.3})
    assert claim_equal_train_sse(history, "digits").verdict == "reproduced"
    assert claim_final_sse(history, "digits", "test").verdict == "reproduced"
    # train SSE is the same for every tau up to the seed wobble: spreads overlap
    assert claim_final_sse(history, "digits", "train").verdict == "inconclusive"
    assert claim_spike_rate(clean, "digits").verdict == "reproduced"
    assert claim_synaptic_ops(clean, "digits").verdict == "reproduced"
    assert claim_enwsi(clean, "digits").verdict == "reproduced"
    assert len(claim_enwsi(clean, "digits").parts) == 2
    # critical frequency grows with the rate here: the opposite of the claim
    result = claim_critical_frequency(clean, "digits")
    assert result.verdict == "not reproduced" and [p.label for p in result.parts] == ["clean", "noisy"]
    assert claim_robustness(robustness, "digits", 1).verdict == "reproduced"
    assert claim_robustness(robustness, "digits", 2).verdict == "reproduced"
    assert claim_tau30_over_100(robustness, "digits").verdict == "reproduced"
    assert list(claim_tau30_over_100(robustness, "digits").parts[0].values_by_tau) == [100.0, 30.0]


def test_baseline_accuracy_uses_the_tolerance():
    history = _history({30.0: 1, 100.0: 1, math.inf: 1})  # tau 30 is 1 point above the others
    assert claim_baseline_accuracy(history, "digits", tolerance=1.5).verdict == "reproduced"
    assert claim_baseline_accuracy(history, "digits", tolerance=0.5).verdict == "not reproduced"


def test_critical_frequency_means_leave_nan_out():
    means = critical_frequency_means(_clean({30.0: 3.0, 100.0: 2.0, math.inf: 1.0}))
    assert means.critical_frequency.iloc[0] == pytest.approx(0.301)
    assert "seed" not in means.columns


def test_combine_verdicts_any_not_reproduced_decides():
    part = lambda v: ClaimPart(v, {}, "lif_above_if", v, "why")  # noqa: E731
    assert combine_verdicts([part("reproduced"), part("reproduced")])[0] == "reproduced"
    assert combine_verdicts([part("reproduced"), part("inconclusive")])[0] == "inconclusive"
    assert combine_verdicts([part("inconclusive"), part("not reproduced")])[0] == "not reproduced"
    assert combine_verdicts([])[0] == "inconclusive"


def test_ledger_order_summary_and_files(tmp_path):
    history = _history({30.0: 1.0, 100.0: 1.5, math.inf: 2.0})
    clean = _clean({30.0: 3.0, 100.0: 2.0, math.inf: 1.0})
    robustness = _robustness({30.0: 0.1, 100.0: 0.2, math.inf: 0.3})
    results = claims_ledger(history, robustness, clean, accuracy_tolerance=2.0)
    assert [r.id for r in results] == [str(i) for i in range(1, 12)]
    summary = ledger_summary(results)
    assert summary == {"digits": {"reproduced": 9, "not reproduced": 1, "inconclusive": 1}}
    assert len(claims_ledger(history, None, clean)) == 8  # robustness claims skipped
    md, js = write_ledger(results, tmp_path, "unit")
    data = json.loads(js.read_text())
    assert data["summary"] == summary and data["profile"] == "unit"
    assert data["claims"][5]["parts"][0]["mean_by_tau"]["inf"] == pytest.approx(1.02)
    assert md.read_text().count("\n| ") == 1 + 11  # header + one line per claim


def test_markdown_table_escapes_pipes():
    text = markdown_table(pd.DataFrame({"a": ["x|y"], "b": [1]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


# ---------------------------------------------------------------------------------------------- Table 1

def test_table1_rows_means_and_paper_columns(tmp_path):
    history = _history({30.0: 1.0, 100.0: 1.5, math.inf: 2.0})
    clean = _clean({30.0: 3.0, 100.0: 2.0, math.inf: 1.0})
    tidy = table1(history, clean, sse_window=0.5)  # last 2 of 4 epochs
    assert list(dict.fromkeys(tidy.row)) == list(TABLE1_ROWS)
    spikes_if = tidy[(tidy.row == "spikes") & (tidy.tau_m == math.inf)].iloc[0]
    assert spikes_if["mean"] == pytest.approx(1.02) and spikes_if["std"] == pytest.approx(0.01)
    assert spikes_if["n"] == 3 and math.isnan(spikes_if["paper"])
    train = tidy[(tidy.row == "train_sse") & (tidy.tau_m == 30.0)].iloc[0]
    assert train["mean"] == pytest.approx(np.mean([(0.25 + 0.125) / 2 * (1 + 0.001 * s) for s in SEEDS]))
    shown = table1_display(tidy)
    assert list(shown.index) == list(TABLE1_ROWS.values())
    groups = list(dict.fromkeys(shown.columns.get_level_values(0)))
    assert groups == ["digits: this run", "CIFAR-10: paper (reference)", "SVHN: paper (reference)"]
    assert shown[("CIFAR-10: paper (reference)", "30")]["Accuracy (%)"] == "89.65"
    assert shown[("digits: this run", "inf")]["Spikes (%)"] == "1.02 ± 0.01"
    csv, md = write_table1(tidy, tmp_path)
    assert len(pd.read_csv(csv)) == 15 and "SSE_Test" in md.read_text()


def test_table1_from_one_table_and_chosen_rows():
    history = _history({30.0: 1.0, 100.0: 1.5, math.inf: 2.0})
    tidy = table1(history, None)
    assert list(dict.fromkeys(tidy.row)) == ["accuracy", "test_sse", "train_sse"]
    shown = table1_display(tidy, rows=["test_sse", "train_sse"])
    assert list(shown.index) == ["SSE_Test", "SSE_Train"]
    assert shown[("SVHN: paper (reference)", "inf")]["SSE_Train"] == "1.6"
    with pytest.raises(ValueError):
        table1(None, None)


def test_per_layer_table_unrolls_layers():
    layers = per_layer_table(_clean({30.0: 3.0, 100.0: 2.0, math.inf: 1.0}).assign(
        spike_rate_per_layer=[[1.0, 2.0]] * 9))
    assert len(layers) == 18 and set(layers.layer) == {1, 2} and layers.run.nunique() == 9
    first = layers.iloc[1]
    assert (first.layer, first.spike_rate, first.enwsi) == (2, 2.0, pytest.approx(2 * 3.01))


def test_table1_display_puts_the_paper_beside_a_measured_paper_dataset():
    tidy = pd.DataFrame([{"dataset": "svhn", "tau_m": 30.0, "row": "accuracy", "mean": 95.0, "std": 0.5, "n": 3,
                          "paper": 96.12}])
    groups = list(dict.fromkeys(table1_display(tidy).columns.get_level_values(0)))
    assert groups == ["SVHN: this run", "SVHN: paper", "CIFAR-10: paper (reference)"]


# ---------------------------------------------------------------------------------------------- figures

def test_fig6_spike_rates_grouped_bars_in_tau_colours():
    rows = [{"tau_m": t, "seed": s, "layer": layer, "spike_rate": 10.0 * layer + s}
            for t in TAUS for s in SEEDS for layer in (1, 2)]
    fig = fig6_spike_rates(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert len(ax.patches) == 3 * 2
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights[0] == pytest.approx(12.0) and heights[-1] == pytest.approx(22.0)
    assert {p.get_facecolor() for p in ax.patches} == {plt.matplotlib.colors.to_rgba(tau_color(t)) for t in TAUS}
    with pytest.raises(ValueError, match="spike_rate"):
        fig6_spike_rates(pd.DataFrame({"tau_m": [1.0], "layer": [1]}))


def test_fig_table1_draws_every_cell():
    shown = pd.DataFrame({("g", "30"): ["1", "2"], ("g", "inf"): ["3", "4"], ("h", "30"): ["5", "6"]},
                         index=["r1", "r2"])
    shown.columns = pd.MultiIndex.from_tuples(shown.columns)
    fig = fig_table1(shown, title="Table 1")
    texts = {t.get_text() for t in fig.axes[0].tables[0].get_celld().values() for t in [t.get_text()]}
    assert {"g", "h", "30", "inf", "1", "6", "r1", "r2"} <= texts
    cells = fig.axes[0].tables[0].get_celld()
    assert (cells[0, 0].visible_edges, cells[0, 1].visible_edges, cells[0, 2].visible_edges) == ("TBL", "TBR", "TBLR")
    with pytest.raises(ValueError):
        fig_table1(pd.DataFrame())

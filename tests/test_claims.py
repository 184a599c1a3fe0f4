"""Claims ledger and Table 1 (leaklib.claims), the equal-train-SSE reading (Sec. 4.4) and the added figures.

Tables are built by hand so that every verdict and number can be checked without training.
"""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pandas as pd
import pytest

from leaklib import analysis  # test_sse_at_train_sse is called through the module: pytest would collect it
from leaklib.claims import (
    ClaimPart,
    ClaimResult,
    accuracy_drop,
    claim_baseline_accuracy,
    claim_critical_frequency,
    claim_divergence,
    claim_enwsi,
    claim_equal_train_sse,
    claim_final_sse,
    claim_noise_raises_critical_frequency,
    claim_robustness,
    claim_spike_rate,
    claim_synaptic_ops,
    claim_tau30_over_100,
    claim_values,
    claims_ledger,
    combine_verdicts,
    compare_ledgers,
    critical_frequency_means,
    equal_train_sse,
    final_accuracy,
    ledger_summary,
    markdown_table,
    measures_by_run,
    per_layer_table,
    table1,
    table1_display,
    write_ledger,
    write_table1,
)
from leaklib.figures import fig6_spike_rates, fig_table1
from leaklib.paper import TABLE1_ROWS
from leaklib.plotting import plt, tau_color
from leaklib.stats import Decision

TAUS = (30.0, 100.0, math.inf)
SEEDS = (1, 2, 3, 4, 5)


def _noise(tau: float, seed: int, what: str) -> float:
    """A fixed, small per-run wobble in [-1, 1] (so paired differences have a spread), independent of the code under test."""
    rng = np.random.default_rng(zlib.crc32(f"{tau}/{seed}/{what}".encode()))
    return float(rng.uniform(-1, 1))


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
    """Every run: train SSE halves per epoch from 1; test SSE = factor(tau) x train SSE x (1 + a small run wobble,
    so that paired differences have a spread); the train SSE has a run wobble whose paired differences between
    tau_m have mean exactly 0 (so no train-SSE effect of tau_m)."""
    rows = []
    for tau in TAUS:
        for seed in SEEDS:
            wobble = 1 + 0.001 * seed + 0.0005 * _SSE_PATTERN[tau][seed - 1]
            for epoch in range(1, epochs + 1):
                train = 0.5 ** (epoch - 1) * wobble
                rows.append({"dataset": "digits", "tau_m": tau, "seed": seed, "epoch": epoch,
                             "train_sse": train, "train_sse_eval": train,
                             "test_sse": test_factor[tau] * train * (1 + 0.002 * _noise(tau, seed, "sse")),
                             "train_acc": 0.5, "test_acc": 0.90 + 0.001 * seed + (0.01 if tau == 30 else 0.0)
                             + 0.0002 * _noise(tau, seed, "acc")})
    return pd.DataFrame(rows)


_SSE_PATTERN = {math.inf: [0, 0, 0, 0, 0], 100.0: [1, -1, 1, -1, 0], 30.0: [-1, 2, 1, -2, 0]}


def _clean(rate: dict[float, float]) -> pd.DataFrame:
    rows = []
    for tau in TAUS:
        for seed in SEEDS:
            r = rate[tau] + 0.01 * seed + 0.002 * _noise(tau, seed, "rate")
            rows.append({"dataset": "digits", "tau_m": tau, "seed": seed, "analysis_seed": 2020, "spike_rate": r,
                         "synaptic_ops": 1000 * r, "enwsi": [10 * r, 2 * r],
                         "critical_frequency": [0.1 * r, math.nan, 0.1 * r],
                         "critical_frequency_noisy": [0.2 * r, 0.2 * r]})
    return pd.DataFrame(rows)


def _robustness(drop: dict[float, float]) -> pd.DataFrame:
    """Clean accuracy 0.9; under noise 0.9 - drop(tau) * severity / 4.5 (mean over 1..8 = drop), seed wobble."""
    rows = []
    for tau in TAUS:
        for seed in SEEDS:
            wobble = 0.001 * seed + 0.0005 * _noise(tau, seed, "drop")
            for scenario in (1, 2):
                for noise in ("gaussian", "impulse"):
                    for severity in range(9):
                        acc = 0.9 - (drop[tau] + wobble) * severity / 4.5
                        rows.append({"dataset": "digits", "tau_m": tau, "seed": seed, "scenario": scenario,
                                     "noise": noise, "severity": severity, "level": 0.0, "accuracy": acc, "n": 100})
    return pd.DataFrame(rows)


def _runs(diverged: dict[float, list[int]] | None = None, taus=TAUS) -> pd.DataFrame:
    diverged = diverged or {}
    return pd.DataFrame([{"dataset": "digits", "tau_m": t, "seed": s, "test_acc": 0.9,
                          "status": "diverged" if s in diverged.get(t, []) else "finished",
                          "diverged_epoch": 2 if s in diverged.get(t, []) else math.nan}
                         for t in taus for s in SEEDS])


def test_accuracy_drop_is_clean_minus_mean_noisy_in_points():
    table = accuracy_drop(_robustness({30.0: 0.1, 100.0: 0.2, math.inf: 0.3}), scenarios=[1])
    row = table[(table.tau_m == 100.0) & (table.seed == 2)].iloc[0]
    assert row["clean"] == pytest.approx(90.0)
    assert row["drop"] == pytest.approx(100 * (0.202 + 0.0005 * _noise(100.0, 2, "drop")))
    assert len(table) == 15


def test_final_accuracy_takes_the_last_epoch_in_percent():
    table = final_accuracy(_history({30.0: 1, 100.0: 1, math.inf: 1}))
    assert set(table.epoch) == {4}
    assert table[(table.tau_m == 30.0) & (table.seed == 1)].accuracy.item() == pytest.approx(
        91.1 + 0.02 * _noise(30.0, 1, "acc"))


def test_claim_values_are_seed_keyed_in_leak_order_and_cut_to_the_papers_taus():
    table = pd.DataFrame({"dataset": ["a"] * 4 + ["b"], "tau_m": [30.0, math.inf, 30.0, 10.0, 30.0],
                          "seed": [1, 1, 2, 1, 1], "v": [1, 2, 3, 7, 9]})
    assert claim_values(table, "v", "a") == {math.inf: {1: 2.0}, 30.0: {1: 1.0, 2: 3.0}}
    assert list(claim_values(table, "v", "a", taus=None)) == [math.inf, 30.0, 10.0]
    assert claim_values(table, "v", "a", taus=[30]) == {30.0: {1: 1.0, 2: 3.0}}
    with pytest.raises(KeyError):
        claim_values(table, "w")
    with pytest.raises(ValueError, match="several rows"):
        claim_values(pd.concat([table, table]), "v", "a")


def test_equal_train_sse_recovers_the_factor_on_the_common_interval():
    per_run, curves = equal_train_sse(_history({30.0: 1.0, 100.0: 1.5, math.inf: 2.0}), points=5)
    run = per_run[(per_run.tau_m == math.inf) & (per_run.seed == 1)].iloc[0]
    # test = 2 x train (x the run's wobble) at every grid point -> geometric mean over the grid's train SSE
    grid = np.geomspace(run["low"], run["high"], 5)
    factor = 2.0 * (1 + 0.002 * _noise(math.inf, 1, "sse"))
    assert run["test_sse_at_equal_train"] == pytest.approx(factor * np.exp(np.log(grid).mean()))
    wobbles = [1 + 0.001 * s + 0.0005 * _SSE_PATTERN[t][s - 1] for t in TAUS for s in SEEDS]
    assert run["low"] == pytest.approx(0.125 * max(wobbles)) and run["high"] == pytest.approx(min(wobbles))
    assert len(curves) == 15 * 5 and run["train_sse_column"] == "train_sse_eval"


def test_claims_on_a_sweep_built_to_agree_with_the_paper():
    history = _history({30.0: 1.0, 100.0: 1.5, math.inf: 2.0})
    clean = _clean({30.0: 3.0, 100.0: 2.0, math.inf: 1.0})
    robustness = _robustness({30.0: 0.1, 100.0: 0.2, math.inf: 0.3})
    assert claim_equal_train_sse(history, "digits").verdict == "reproduced"
    assert claim_final_sse(history, "digits", "test").verdict == "reproduced"
    # train SSE is the same for every tau up to the run wobble: the paired intervals contain 0
    assert claim_final_sse(history, "digits", "train").verdict == "inconclusive"
    assert "eval mode" in claim_final_sse(history, "digits", "train").measure
    assert claim_spike_rate(clean, "digits").verdict == "reproduced"
    assert claim_synaptic_ops(clean, "digits").verdict == "reproduced"
    assert claim_enwsi(clean, "digits").verdict == "reproduced"
    assert len(claim_enwsi(clean, "digits").parts) == 2
    # critical frequency grows with the rate here: the opposite of the claim
    result = claim_critical_frequency(clean, "digits")
    assert result.verdict == "not reproduced (opposite)" and [p.label for p in result.parts] == ["clean", "noisy"]
    # noisy = 2 x clean here: noise raises it for every tau_m
    assert claim_noise_raises_critical_frequency(clean, "digits").verdict == "reproduced"
    assert claim_robustness(robustness, "digits", 1).verdict == "reproduced"
    assert claim_robustness(robustness, "digits", 2).verdict == "reproduced"
    assert claim_tau30_over_100(robustness, "digits").verdict == "reproduced"
    assert list(claim_tau30_over_100(robustness, "digits").parts[0].values) == [100.0, 30.0]
    # every claim shows the interval of each compared pair
    part = claim_spike_rate(clean, "digits").parts[0]
    assert [c.interval.mean for c in part.decision.comparisons] == pytest.approx([1.0, 1.0], abs=0.01)
    text = part.intervals()
    assert text.startswith("τm=100 − IF: +") and "; τm=30 − τm=100: +" in text and text.count("n=5") == 2


def test_baseline_accuracy_is_an_equivalence_within_the_tolerance():
    history = _history({30.0: 1, 100.0: 1, math.inf: 1})  # tau 30 is 1 point above the others
    assert claim_baseline_accuracy(history, "digits", tolerance=1.5).verdict == "reproduced"
    assert claim_baseline_accuracy(history, "digits", tolerance=0.5).verdict == "not reproduced"
    # the default tolerance: 2 binomial SE of the IF accuracy (90.3 %) on 360 images, 3.1 points
    derived = claim_baseline_accuracy(history, "digits", n_test=360)
    assert derived.verdict == "reproduced" and "±3.12 points" in derived.measure
    # the measure and the reason state the same margin, and the intervals say they are the TOST's 90 % ones
    assert "TOST margin ±3.12" in derived.reason
    assert derived.intervals().count("(90%, n=") == 3 and "(n=" not in derived.intervals()
    assert claim_baseline_accuracy(history, "digits").verdict == "cannot decide"


def test_enwsi_claim_also_needs_the_largest_leak_highest():
    """Sec. 4.5 / Fig. 6: LIF above IF in every layer *and* tau_m = 30 (the largest leak) the highest."""
    both = claim_enwsi(_clean({30.0: 3.0, 100.0: 2.0, math.inf: 1.0}), "digits")
    assert both.verdict == "reproduced"
    assert [c.label for c in both.parts[0].decision.comparisons] == ["tau_m=100 - IF", "tau_m=30 - IF",
                                                                     "tau_m=30 - tau_m=100"]
    # both LIF models above IF, but tau_m = 100 above tau_m = 30: the second half of the claim fails
    swapped = claim_enwsi(_clean({30.0: 2.0, 100.0: 3.0, math.inf: 1.0}), "digits")
    assert swapped.verdict == "not reproduced (opposite)"
    assert "tau_m=30 - tau_m=100" in swapped.reason and "tau_m=100 - IF" not in swapped.reason


def _fig4(shift: dict[str, float], widen: dict[str, float], n: int = 40) -> pd.DataFrame:
    """fig4_verdicts of per-image summaries: each reading's noisy mean moved by ``shift``, band by ``widen``."""
    from leaklib.spectra import fig4_verdicts

    rng = np.random.default_rng(3)
    rows = []
    for reading in shift:
        mean, spread = rng.uniform(0.4, 0.6, n), rng.uniform(0.2, 0.3, n)
        for condition, dm, ds in (("clean", 0.0, 0.0), ("s1", shift[reading], widen[reading]),
                                  ("s2", shift[reading], widen[reading])):
            rows.append(pd.DataFrame({"reading": reading, "condition": condition, "image": np.arange(n),
                                      "mean": mean + dm + 1e-4 * rng.normal(size=n),
                                      "spread": spread + ds + 1e-4 * rng.normal(size=n)}))
    return fig4_verdicts(pd.concat(rows, ignore_index=True).assign(dataset="digits"))


def test_input_spectrum_claim_names_the_readings_that_reproduce_it():
    """Claim 14 (Fig. 4): reproduced when some reading holds in every noisy condition, and the reason says which."""
    from leaklib.claims import claim_input_spectrum

    table = _fig4({"pixel": 0.0, "population": 0.1}, {"pixel": 0.05, "population": 0.05})
    result = claim_input_spectrum(table, "digits")
    assert result.verdict == "reproduced" and result.id == "14"
    assert "reading(s) pixel in every noisy condition" in result.reason and "population: not reproduced" in result.reason
    assert result.evidence().count("pixel, s") == 2 and "(95%, n=40 images" in result.intervals()
    # no reading holds: the best reading's worst verdict; narrower everywhere: opposite
    assert claim_input_spectrum(_fig4({"pixel": 0.1}, {"pixel": 0.05}), "digits").verdict == "not reproduced"
    assert claim_input_spectrum(_fig4({"pixel": 0.0}, {"pixel": -0.05}), "digits").verdict == \
        "not reproduced (opposite)"
    assert claim_input_spectrum(table, "svhn").verdict == "cannot decide"
    # the ledger without spectra: a 'cannot decide' row 14, never an exception
    ledger = claims_ledger(_history({30.0: 1, 100.0: 1, math.inf: 1}), None, None)
    assert ledger[-1].id == "14" and ledger[-1].verdict == "cannot decide"


def test_robustness_claims_refuse_a_table_without_every_severity():
    """The measure is the mean drop over severities 1-8: a sweep measured at only some of them is 'cannot decide'
    (it was averaged over what was there, while the measure said 1-8)."""
    robustness = _robustness({30.0: 1.0, 100.0: 2.0, math.inf: 3.0})
    assert claim_robustness(robustness, "digits", 1).verdict == "reproduced"
    with pytest.raises(ValueError, match=r"lacks severities \[3, 4, 5, 6, 7, 8\]"):
        accuracy_drop(robustness[robustness["severity"] <= 2])
    ledger = claims_ledger(_history({30.0: 1, 100.0: 1, math.inf: 1}), robustness[robustness["severity"] <= 2], None)
    assert [r.verdict for r in ledger[1:4]] == ["cannot decide"] * 3 and "lacks severities" in ledger[1].reason
    assert claims_ledger(pd.DataFrame(), None, None) == []  # nothing at all: no dataset, no row, no exception
    per_run = measures_by_run(_history({30.0: 1, 100.0: 1, math.inf: 1}), robustness[robustness["severity"] <= 2], None)
    assert not per_run["measure"].str.startswith("drop").any()  # left out of the leak-axis figure, not a crash


def test_critical_frequency_means_leave_nan_out():
    means = critical_frequency_means(_clean({30.0: 3.0, 100.0: 2.0, math.inf: 1.0}))
    assert means.critical_frequency.iloc[0] == pytest.approx(0.1 * (3.0 + 0.01 + 0.002 * _noise(30.0, 1, "rate")))
    assert list(means.seed) == [s for _ in TAUS for s in SEEDS]


def test_combine_verdicts_opposite_then_cannot_decide_then_inconclusive():
    def part(v):
        return ClaimPart(v, {}, "lif_above_if", Decision("lif_above_if", v, "why", (), 0.95, "holm"))

    assert combine_verdicts([part("reproduced"), part("reproduced")])[0] == "reproduced"
    assert combine_verdicts([part("reproduced"), part("inconclusive")])[0] == "inconclusive"
    assert combine_verdicts([part("inconclusive"), part("cannot decide")])[0] == "cannot decide"
    assert combine_verdicts([part("cannot decide"), part("not reproduced (opposite)")])[0] == \
        "not reproduced (opposite)"
    assert combine_verdicts([], "no data") == ("cannot decide", "no data")



def test_compare_ledgers_says_no_change_means_something_only_when_claims_were_decided():
    def result(claim_id, dataset, verdict):
        part = ClaimPart(verdict, {}, "lif_above_if", Decision("lif_above_if", verdict, "why", (), 0.95, "holm"))
        return ClaimResult(claim_id, "4.2", "claim", "paper", "measure", dataset, [part])

    undecided = [result("1", "digits", "cannot decide"), result("2", "digits", "inconclusive")]
    text = compare_ledgers(undecided, undecided)
    assert text.startswith("No verdict changes") and "cannot tell" in text and "do not depend" not in text
    decided = [result("1", "digits", "reproduced"), result("2", "digits", "inconclusive"),
               result("3", "digits", "not reproduced (opposite)")]
    text = compare_ledgers(decided, decided)
    assert "the 2 claim(s) decided" in text and "do not depend" in text
    flipped = [result("1", "digits", "inconclusive")] + decided[1:]
    text = compare_ledgers(decided, flipped)
    assert text.startswith("**1 verdict(s) change") and "claims 1 (digits)" in text
    # a claim decided under one gradient and out of reach under the other is listed apart, not counted as changed
    unreachable = [result("1", "digits", "cannot decide")] + decided[1:]
    text = compare_ledgers(decided, unreachable)
    assert text.startswith("No verdict changes") and "the 1 claim(s) decided" in text
    assert text.endswith("Not compared (cannot be decided under one of the two): claims 1 (digits).")
    with pytest.raises(ValueError, match="different claims"):
        compare_ledgers(decided, decided[:2])

def test_ledger_order_summary_and_files(tmp_path):
    history = _history({30.0: 1.0, 100.0: 1.5, math.inf: 2.0})
    clean = _clean({30.0: 3.0, 100.0: 2.0, math.inf: 1.0})
    robustness = _robustness({30.0: 0.1, 100.0: 0.2, math.inf: 0.3})
    results = claims_ledger(history, robustness, clean, accuracy_tolerance=2.0, runs=_runs())
    assert [r.id for r in results] == [str(i) for i in range(1, 15)]
    summary = ledger_summary(results)
    # reproduced: 1-7, 9, 10, 12; opposite: 8; inconclusive: 11; cannot decide: 13 (no tau_m < 30 in the sweep)
    # and 14 (no input spectra given)
    assert summary == {"digits": {"reproduced": 10, "not reproduced (opposite)": 1, "not reproduced": 0,
                                  "inconclusive": 1, "cannot decide": 2}}
    without = claims_ledger(history, None, clean, runs=_runs())
    assert [r.verdict for r in without if r.id in ("2", "3", "4")] == ["cannot decide"] * 3
    md, js = write_ledger(results, tmp_path, "unit")
    data = json.loads(js.read_text())
    assert data["summary"] == summary and data["profile"] == "unit"
    assert data["claims"][5]["parts"][0]["mean_by_tau"]["inf"] == pytest.approx(
        np.mean([1.0 + 0.01 * s + 0.002 * _noise(math.inf, s, "rate") for s in SEEDS]))
    assert data["claims"][5]["parts"][0]["decision"]["comparisons"][0]["interval"]["n"] == 5
    assert md.read_text().count("\n| ") == 1 + 14  # header + one line per claim


def test_a_diverged_tau_and_disjoint_ranges_give_cannot_decide_rows_not_errors():
    history = _history({30.0: 1.0, 100.0: 1.5, math.inf: 2.0})
    # tau_m = 30's runs train on a train SSE range far below the others: the ranges do not overlap
    low = history["tau_m"] == 30.0
    history.loc[low, ["train_sse", "train_sse_eval"]] *= 1e-3
    clean = _clean({30.0: 3.0, 100.0: 2.0, math.inf: 1.0})
    runs = _runs({100.0: [2]})  # one run of tau_m = 100 diverged
    results = {r.id: r for r in claims_ledger(history, None, clean, runs=runs, accuracy_tolerance=2.0)}
    assert results["5"].verdict == "cannot decide" and "do not overlap" in results["5"].reason
    assert results["6"].verdict == "cannot decide" and "diverged" in results["6"].reason
    # a single seed: no interval
    one = claims_ledger(history[history.seed == 1], None, clean[clean.seed == 1], accuracy_tolerance=2.0)
    assert {r.verdict for r in one if r.id in ("6", "7", "10")} == {"cannot decide"}


@pytest.mark.parametrize("diverged, verdict", [
    ({10.0: list(SEEDS), 20.0: list(SEEDS)}, "reproduced"),
    ({10.0: list(SEEDS)}, "not reproduced"),          # every tau_m = 20 run converged
    ({10.0: list(SEEDS), 20.0: [1, 2]}, "inconclusive"),
    ({10.0: list(SEEDS), 20.0: list(SEEDS), 30.0: [3]}, "inconclusive"),  # a run at 30 diverged too
])
def test_divergence_claim_counts_runs_below_30(diverged, verdict):
    runs = _runs(diverged, taus=(10.0, 20.0, 30.0, 100.0, math.inf))
    result = claim_divergence(runs, "digits")
    assert result.verdict == verdict
    assert "τm=10 " in result.reason or verdict == "cannot decide"


def test_divergence_claim_cannot_decide_without_small_tau():
    assert claim_divergence(_runs(), "digits").verdict == "cannot decide"
    assert claim_divergence(None, "digits").verdict == "cannot decide"
    assert isinstance(claim_divergence(_runs(), "digits"), ClaimResult)


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
    rates = [1.0 + 0.01 * s + 0.002 * _noise(math.inf, s, "rate") for s in SEEDS]
    assert spikes_if["mean"] == pytest.approx(np.mean(rates)) and spikes_if["std"] == pytest.approx(np.std(rates, ddof=1))
    assert spikes_if["n"] == 5 and math.isnan(spikes_if["paper"])
    train = tidy[(tidy.row == "train_sse") & (tidy.tau_m == 30.0)].iloc[0]
    assert train["mean"] == pytest.approx(np.mean([(0.25 + 0.125) / 2 * (1 + 0.001 * s + 0.0005 * _SSE_PATTERN[30.0][s - 1])
                                                   for s in SEEDS]))
    # diverged runs are left out of Table 1
    fewer = table1(history, clean, sse_window=0.5, runs=_runs({30.0: [1, 2]}))
    assert fewer[(fewer.row == "spikes") & (fewer.tau_m == 30.0)].iloc[0]["n"] == 3
    shown = table1_display(tidy)
    assert list(shown.index) == list(TABLE1_ROWS.values())
    groups = list(dict.fromkeys(shown.columns.get_level_values(0)))
    assert groups == ["digits: this run", "CIFAR-10: paper (reference)", "SVHN: paper (reference)"]
    assert shown[("CIFAR-10: paper (reference)", "30")]["Accuracy (%)"] == "89.65"
    assert shown[("digits: this run", "inf")]["Spikes (%)"] == f"{np.mean(rates):.2f} ± {np.std(rates, ddof=1):.2f}"
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
        spike_rate_per_layer=[[1.0, 2.0]] * 15))
    assert len(layers) == 30 and set(layers.layer) == {1, 2} and layers.run.nunique() == 15
    first = layers.iloc[1]
    assert (first.layer, first.spike_rate, first.enwsi) == (2, 2.0, pytest.approx(2 * (3.01 + 0.002 * _noise(30.0, 1, "rate"))))


def test_table1_display_puts_the_paper_beside_a_measured_paper_dataset():
    tidy = pd.DataFrame([{"dataset": "svhn", "tau_m": 30.0, "row": "accuracy", "mean": 95.0, "std": 0.5, "n": 3,
                          "paper": 96.12}])
    groups = list(dict.fromkeys(table1_display(tidy).columns.get_level_values(0)))
    assert groups == ["SVHN: this run", "SVHN: paper", "CIFAR-10: paper (reference)"]


# ---------------------------------------------------------------------------------------------- figures

def test_fig6_spike_rates_grouped_bars_in_tau_colours():
    rows = [{"tau_m": t, "seed": s, "layer": layer, "spike_rate": 10.0 * layer + s}
            for t in TAUS for s in (1, 2, 3) for layer in (1, 2)]
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

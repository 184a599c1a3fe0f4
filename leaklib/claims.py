"""Table 1 and the claims of Sec. 4, each decided from the sweep's cached tables by one function.

Every chapter that states a verdict calls the function here for it, so the chapters and the
ledger (chapter 07) cannot disagree. Inputs are the tidy tables of :mod:`leaklib.sweep`:
``history`` (:func:`~leaklib.sweep.history_table`), ``robustness``
(:func:`~leaklib.sweep.robustness_table`), ``clean`` (:func:`~leaklib.sweep.clean_table`) and
``runs`` (:func:`~leaklib.sweep.metrics_table`: each run's status, ``finished`` or ``diverged``).

Verdicts come from :mod:`leaklib.stats`: per-seed differences between tau_m values (runs with the
same seed share weights, batch order and input spikes), a 95 % t interval per pair, and a verdict
per claim: reproduced, not reproduced (opposite), not reproduced (an "about the same" claim whose
values differ beyond the tolerance), inconclusive, or cannot decide (with the reason: too few seeds,
a diverged run, data that do not allow the measure). The claims compare the paper's tau_m (IF,
100, 30); other tau_m of a sweep enter the divergence claim and the leak-axis figures.

Per-run measures (one value per seed):

* baseline accuracy: clean test accuracy (%) of the last epoch (Table 1 row 1);
* robustness: *accuracy drop*, the run's clean accuracy minus its accuracy under noise, in
  percentage points, averaged over severities 1-8 and both noise types of the scenario(s); a
  smaller drop is a more robust model ("retain the baseline accuracy to a greater extent");
* generalization at equal training SSE: the geometric mean of the run's test SSE read off its
  trajectory against its *eval-mode* train SSE (measured after each epoch like the test SSE, not
  the running mean during the epoch) at ``points`` log-spaced values spanning the interval every
  run of the dataset covers;
* final SSE: :func:`leaklib.generalization.sse_table` (mean over the last ``sse_window`` of the
  epochs; the train SSE in eval mode);
* spikes (%), synaptic operations, ENWSI per hidden layer: :func:`leaklib.analysis.measure_clean`;
* critical frequency: the mean over test images (NaNs left out) of the target neuron's critical
  frequency, clean and noisy (scenario 1, Gaussian, severity 5).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .generalization import common_train_sse_range, sse_table, test_sse_at_train_sse
from .paper import PAPER_CRITICAL_FREQUENCY, PAPER_TABLE1, TABLE1_ROWS
from .profiles import format_tau

__all__ = [
    "ClaimPart",
    "ClaimResult",
    "DATASET_NAMES",
    "PAPER_TAUS",
    "VERDICTS",
    "final_accuracy",
    "accuracy_drop",
    "equal_train_sse",
    "critical_frequency_means",
    "claim_values",
    "diverged_runs",
    "combine_verdicts",
    "claim_baseline_accuracy",
    "claim_robustness",
    "claim_tau30_over_100",
    "claim_equal_train_sse",
    "claim_final_sse",
    "claim_spike_rate",
    "claim_synaptic_ops",
    "claim_critical_frequency",
    "claim_noise_raises_critical_frequency",
    "claim_enwsi",
    "claim_divergence",
    "claim_input_spectrum",
    "claims_ledger",
    "ledger_frame",
    "ledger_summary",
    "compare_ledgers",
    "DECIDED",
    "markdown_table",
    "write_ledger",
    "per_layer_table",
    "MEASURES",
    "measures_by_run",
    "divergence_table",
    "table1",
    "table1_display",
    "write_table1",
]

DATASET_NAMES: dict[str, str] = {"cifar10": "CIFAR-10", "svhn": "SVHN", "digits": "digits"}

#: The membrane time constants the paper compares (IF first, then more leak).
PAPER_TAUS: tuple[float, ...] = (math.inf, 100.0, 30.0)

#: Every verdict of the ledger, in the order the summaries list them.
VERDICTS: tuple[str, ...] = (stats.REPRODUCED, stats.OPPOSITE, stats.NOT_REPRODUCED, stats.INCONCLUSIVE,
                             stats.CANNOT_DECIDE)

#: Severities that count as "noisy" for the robustness measure (the paper's eight levels).
NOISY_SEVERITIES: tuple[int, ...] = tuple(range(1, 9))

#: Sec. 4.2: training "diverges when the chosen membrane time constant is too small (tau_m < 30)".
DIVERGENCE_BELOW = 30.0

_SEVERITY = {stats.OPPOSITE: 0, stats.NOT_REPRODUCED: 0, stats.CANNOT_DECIDE: 1, stats.INCONCLUSIVE: 2,
             stats.REPRODUCED: 3}


# ----------------------------------------------------------------------------------------------
# results


def _tau_name(tau: float) -> str:
    return "IF" if math.isinf(tau) else f"τm={tau:g}"


@dataclass
class ClaimPart:
    """One comparison of a claim: per-seed values by tau_m, the expected direction and its :class:`stats.Decision`."""

    label: str
    values: dict[float, dict[Hashable, float]]
    expect: str
    decision: stats.Decision
    tolerance: float | None = None
    evidence_text: str | None = None   # for a claim whose evidence is not per tau_m and seed (Fig. 4)
    intervals_text: str | None = None

    @property
    def verdict(self) -> str:
        return self.decision.verdict

    @property
    def reason(self) -> str:
        return self.decision.reason

    def means(self) -> dict[float, float]:
        out = {}
        for tau, per_seed in self.values.items():
            v = np.asarray([x for x in per_seed.values() if x is not None], dtype=float)
            out[tau] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
        return out

    def stds(self) -> dict[float, float]:
        out = {}
        for tau, per_seed in self.values.items():
            v = np.asarray([x for x in per_seed.values() if x is not None], dtype=float)
            out[tau] = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else math.nan
        return out

    def intervals(self, digits: int = 3) -> str:
        """The interval of every compared pair: 'τm=30 − IF: −0.012 [−0.020, −0.004] (n=5, d=-1.2); ...'.

        The level is the rule's: 95 % for a directional claim (not repeated), otherwise stated in the
        text ('(90%, n=5, ...)' for an "about the same" claim, whose TOST uses 90 % intervals).
        """
        if self.intervals_text is not None:
            return self.intervals_text
        texts = []
        for c in self.decision.comparisons:
            name = (_tau_name(c.a) if c.a == c.b else f"{_tau_name(c.b)} − {_tau_name(c.a)}")
            iv = c.interval
            level = "" if math.isclose(iv.level, 0.95) else f"{100 * iv.level:g}%, "
            if iv.defined:
                texts.append(f"{name}: {iv.mean:+.{digits}g} [{iv.low:+.{digits}g}, {iv.high:+.{digits}g}] "
                             f"({level}n={iv.n}, d={iv.effect_size:.2g})")
            else:
                texts.append(f"{name}: –")
        return "; ".join(texts)


@dataclass
class ClaimResult:
    """A claim of Sec. 4 on one dataset: the paper's words and evidence, our measure, and the verdict."""

    id: str
    section: str
    claim: str
    paper: str
    measure: str
    dataset: str
    parts: list[ClaimPart]
    note: str = ""  # why the claim could not be measured at all (then ``parts`` is empty)
    verdict: str = field(init=False)
    reason: str = field(init=False)

    def __post_init__(self) -> None:
        self.verdict, self.reason = combine_verdicts(self.parts, self.note)

    def evidence(self, digits: int = 3) -> str:
        """Means ± std over seeds per tau_m (IF first), per part: 'IF 1.23±0.04, τm=100 ..., ...'."""
        if not self.parts:
            return "–"
        texts = []
        for part in self.parts:
            if part.evidence_text is not None:
                texts.append((f"{part.label}: " if part.label else "") + part.evidence_text)
                continue
            means, stds = part.means(), part.stds()
            cells = []
            for tau in stats.leak_order(part.values):
                spread = "" if math.isnan(stds[tau]) else f"±{stds[tau]:.2g}"
                cells.append(f"{_tau_name(tau)} {means[tau]:.{digits}g}{spread}")
            texts.append((f"{part.label}: " if part.label else "") + ", ".join(cells))
        return "; ".join(texts)

    def intervals(self) -> str:
        """Every part's pairwise 95 % intervals (see :meth:`ClaimPart.intervals`)."""
        if not self.parts:
            return "–"
        return "; ".join((f"{p.label}: " if p.label and len(self.parts) > 1 else "") + p.intervals()
                         for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "section": self.section, "claim": self.claim, "paper": self.paper,
            "measure": self.measure, "dataset": self.dataset, "verdict": self.verdict, "reason": self.reason,
            "evidence": self.evidence(), "intervals": self.intervals(),
            "parts": [{"label": p.label, "expect": p.expect, "tolerance": p.tolerance, "verdict": p.verdict,
                       "reason": p.reason, "decision": p.decision.to_dict(),
                       "values_by_tau": {format_tau(t): {str(s): v for s, v in per_seed.items()}
                                         for t, per_seed in p.values.items()},
                       "mean_by_tau": {format_tau(t): m for t, m in p.means().items()},
                       "std_by_tau": {format_tau(t): s for t, s in p.stds().items()}}
                      for p in self.parts],
        }


def combine_verdicts(parts: Sequence[ClaimPart], note: str = "") -> tuple[str, str]:
    """A claim made of several comparisons: any 'not reproduced' part decides, then 'cannot decide',
    then 'inconclusive'; all 'reproduced' -> reproduced. No part at all -> cannot decide (``note`` says why)."""
    if not parts:
        return stats.CANNOT_DECIDE, note or "nothing measured"
    if len(parts) == 1:
        return parts[0].verdict, parts[0].reason
    worst = min(_SEVERITY[p.verdict] for p in parts)
    hit = [p for p in parts if _SEVERITY[p.verdict] == worst]
    outcome = hit[0].verdict
    if worst == _SEVERITY[stats.REPRODUCED]:
        return outcome, f"all {len(parts)} parts reproduced: " + "; ".join(f"{p.label}: {p.reason}" for p in parts)
    others = f" ({len(parts) - len(hit)} of {len(parts)} parts otherwise)" if len(hit) < len(parts) else ""
    return outcome, "; ".join(f"{p.label}: {p.reason}" for p in hit) + others


def _part(label: str, values: Mapping[float, Mapping[Hashable, float]], expect: str,
          diverged: Mapping[float, Iterable[Hashable]] | None = None, tolerance: float | None = None,
          pairs: Sequence[tuple[float, float]] | None = None) -> ClaimPart:
    options: dict[str, Any] = {"diverged": diverged}
    if pairs is not None:
        options["pairs"] = pairs
    decision = stats.decide(values, expect, tolerance, **options)
    return ClaimPart(label, {float(t): dict(v) for t, v in values.items()}, expect, decision, tolerance)


def _cannot(id_: str, section: str, claim: str, paper: str, measure: str, dataset: str, why: str) -> ClaimResult:
    return ClaimResult(id_, section, claim, paper, measure, dataset, [], note=why)


# ----------------------------------------------------------------------------------------------
# per-run measures


def _keys(table: pd.DataFrame) -> list[str]:
    return [c for c in ("dataset", "tau_m", "seed") if c in table.columns]


def claim_values(table: pd.DataFrame, column: str, dataset: str | None = None,
                 taus: Iterable[float] | None = PAPER_TAUS) -> dict[float, dict[Hashable, float]]:
    """``{tau_m: {seed: value}}`` of ``column`` for one dataset, tau_m in leak order, cut to ``taus`` (None: all)."""
    if column not in table.columns:
        raise KeyError(f"column {column!r} not in table (has {', '.join(map(str, table.columns))})")
    where = {} if dataset is None or "dataset" not in table.columns else {"dataset": dataset}
    if table.empty:
        return {}
    values = stats.seed_values(table, column, **where)
    wanted = None if taus is None else {float(t) for t in taus}
    return {tau: v for tau, v in values.items() if wanted is None or tau in wanted}


def diverged_runs(runs: pd.DataFrame | None, dataset: str) -> dict[float, list[Hashable]]:
    """``{tau_m: [seeds]}`` of the runs of ``dataset`` whose training diverged (``runs``: the metrics table)."""
    if runs is None or runs.empty or "status" not in runs.columns:
        return {}
    part = runs[(runs["dataset"] == dataset) & (runs["status"] == "diverged")]
    out: dict[float, list[Hashable]] = {}
    for tau, seed in zip(part["tau_m"], part["seed"]):
        out.setdefault(float(tau), []).append(int(seed))
    return out


def _finished(table: pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    """The rows of ``table`` whose run finished (diverged runs left out)."""
    if runs is None or runs.empty or "status" not in runs.columns or table.empty:
        return table
    bad = {(d, float(t), int(s)) for d, t, s, st in zip(runs["dataset"], runs["tau_m"], runs["seed"], runs["status"])
           if st == "diverged"}
    if not bad:
        return table
    keep = [(d, float(t), int(s)) not in bad for d, t, s in zip(table["dataset"], table["tau_m"], table["seed"])]
    return table[keep]


def final_accuracy(history: pd.DataFrame) -> pd.DataFrame:
    """Per run: clean test accuracy (%) of the last epoch (Table 1 row 1). Columns: keys, epoch, accuracy."""
    keys = _keys(history)
    last = history.sort_values("epoch").groupby(keys, sort=False).tail(1)
    return last.assign(accuracy=100.0 * last["test_acc"])[keys + ["epoch", "accuracy"]].reset_index(drop=True)


def accuracy_drop(robustness: pd.DataFrame, scenarios: Iterable[int] | None = None,
                  noises: Iterable[str] | None = None,
                  severities: Iterable[int] = NOISY_SEVERITIES) -> pd.DataFrame:
    """Per run: clean accuracy, mean noisy accuracy and their difference ``drop`` (percentage points).

    The mean runs over the given scenarios, noise types and severities (default: all scenarios and
    noises in the table, severities 1-8); clean accuracy is severity 0. Smaller drop = more robust.
    """
    keys = _keys(robustness)
    table = robustness
    if scenarios is not None:
        table = table[table["scenario"].isin(list(scenarios))]
    if noises is not None:
        table = table[table["noise"].isin(list(noises))]
    clean = robustness[robustness["severity"] == 0].groupby(keys, sort=False)["accuracy"].mean()
    wanted = sorted({int(s) for s in severities})
    noisy_rows = table[table["severity"].isin(wanted)]
    if noisy_rows.empty:
        raise ValueError("no noisy rows for these scenarios, noises and severities")
    # the measure is the mean over *these* severities: a condition measured at only some of them is refused
    for key, group in noisy_rows.groupby(keys + ["scenario", "noise"], sort=False):
        missing = sorted(set(wanted) - set(int(s) for s in group["severity"]))
        if missing:
            raise ValueError(f"the robustness table lacks severities {missing} for {dict(zip(keys + ['scenario', 'noise'], key))}")
    noisy = noisy_rows.groupby(keys, sort=False)["accuracy"].mean()
    out = pd.DataFrame({"clean": 100.0 * clean, "noisy": 100.0 * noisy}).dropna().reset_index()
    return out.assign(drop=out["clean"] - out["noisy"])


def _train_sse_column(history: pd.DataFrame) -> str:
    """The eval-mode train SSE where the history has it (every run trained since it was added), else the running mean."""
    return "train_sse_eval" if "train_sse_eval" in history.columns and history["train_sse_eval"].notna().all() \
        else "train_sse"


def equal_train_sse(history: pd.DataFrame, points: int = 25) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test SSE at equal train SSE (Sec. 4.4), per dataset on the train-SSE interval all its runs cover.

    The train SSE is the eval-mode one (measured after each epoch like the test SSE) where the
    history has it. Returns ``(per_run, curves)``: per_run has the keys and
    ``test_sse_at_equal_train`` (geometric mean over the grid), ``low``/``high`` (the interval);
    curves has one row per run and grid point (keys, train_sse, test_sse). A dataset whose runs
    share no interval raises ValueError.
    """
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    column = _train_sse_column(history)
    history = history.assign(train_sse=history[column])
    keys = _keys(history)
    run_keys = [k for k in keys if k != "dataset"]
    rows, curves = [], []
    for dataset, runs in (history.groupby("dataset", sort=False) if "dataset" in keys else [(None, history)]):
        low, high = common_train_sse_range(runs, by=run_keys)
        grid = np.geomspace(low, high, points)
        for key, run in runs.groupby(run_keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            labels = ({"dataset": dataset} if dataset is not None else {}) | dict(zip(run_keys, key))
            values = test_sse_at_train_sse(run, grid)
            rows.append({**labels, "test_sse_at_equal_train": float(np.exp(np.mean(np.log(values)))),
                         "low": low, "high": high, "points": points, "train_sse_column": column})
            curves.extend({**labels, "train_sse": float(g), "test_sse": float(v)} for g, v in zip(grid, values))
    return pd.DataFrame(rows), pd.DataFrame(curves)


def critical_frequency_means(clean: pd.DataFrame) -> pd.DataFrame:
    """Per run: mean over test images (NaNs left out) of the target neuron's critical frequency, clean and noisy."""
    out = clean[_keys(clean)].copy()
    for column in ("critical_frequency", "critical_frequency_noisy"):
        out[column] = [float(np.nanmean(np.asarray(v, dtype=float))) if np.isfinite(np.asarray(v, dtype=float)).any()
                       else math.nan for v in clean[column]]
    return out.reset_index(drop=True)


def per_layer_table(clean: pd.DataFrame) -> pd.DataFrame:
    """One row per run and hidden layer: dataset, tau_m, run (row of ``clean``), layer (1-based), spike_rate, enwsi.

    The input of :func:`leaklib.figures.fig6_enwsi` and :func:`leaklib.figures.fig6_spike_rates`.
    """
    rows = []
    for run, r in enumerate(clean.itertuples(index=False)):
        for layer, (rate, norm) in enumerate(zip(r.spike_rate_per_layer, r.enwsi), start=1):
            rows.append({"dataset": r.dataset, "tau_m": float(r.tau_m), "run": run, "layer": layer,
                         "spike_rate": float(rate), "enwsi": float(norm)})
    return pd.DataFrame(rows, columns=["dataset", "tau_m", "run", "layer", "spike_rate", "enwsi"])


#: The per-run measures of the leak-axis figure, in the ledger's order, with their labels.
MEASURES: dict[str, str] = {
    "accuracy": "clean test accuracy (%)",
    "drop_scenario_1": "accuracy drop, scenario 1 (points)",
    "drop_scenario_2": "accuracy drop, scenario 2 (points)",
    "test_sse_at_equal_train": "test SSE at equal train SSE",
    "spike_rate": "spikes (%)",
    "synaptic_ops": "synaptic operations per image",
    "critical_frequency": "critical frequency, clean",
    "critical_frequency_noisy": "critical frequency, noisy",
    "enwsi_mean": "ENWSI, mean over layers",
    "test_sse": "final test SSE",
    "train_sse": "final train SSE (eval mode)",
}


def measures_by_run(history: pd.DataFrame, robustness: pd.DataFrame | None, clean: pd.DataFrame | None,
                    runs: pd.DataFrame | None = None, sse_window: float = 20 / 150, points: int = 25) -> pd.DataFrame:
    """Every per-run measure of the claims for every trained tau_m (the paper's and any other), in long form.

    Columns: dataset, tau_m, seed, status (finished | diverged), measure (a key of :data:`MEASURES`),
    value. Diverged runs get one row with measure "accuracy" and NaN value (the figure marks them).
    A measure that the data do not allow (e.g. train-SSE ranges that do not overlap) is left out.
    """
    finished = _finished(history, runs)
    per_run: list[pd.DataFrame] = [final_accuracy(finished).rename(columns={"accuracy": "value"}).assign(
        measure="accuracy")]
    sse = sse_table(finished, sse_window) if not finished.empty else pd.DataFrame()
    if not sse.empty:
        train = "train_sse_eval" if "train_sse_eval" in sse.columns and sse["train_sse_eval"].notna().all() \
            else "train_sse"
        per_run += [sse.rename(columns={"test_sse": "value"}).assign(measure="test_sse"),
                    sse.drop(columns=["train_sse"] if train != "train_sse" else []).rename(
                        columns={train: "value"}).assign(measure="train_sse")]
        try:
            equal, _ = equal_train_sse(finished, points)
            per_run.append(equal.rename(columns={"test_sse_at_equal_train": "value"}).assign(
                measure="test_sse_at_equal_train"))
        except ValueError:
            pass
    if robustness is not None and not robustness.empty:
        for scenario in sorted(set(robustness["scenario"])):
            try:
                drop = accuracy_drop(robustness, scenarios=[scenario])
            except ValueError:  # e.g. severities missing: the measure is left out, as documented
                continue
            per_run.append(drop.rename(columns={"drop": "value"}).assign(measure=f"drop_scenario_{scenario}"))
    if clean is not None and not clean.empty:
        means = critical_frequency_means(clean)
        per_run += [clean.rename(columns={"spike_rate": "value"}).assign(measure="spike_rate"),
                    clean.rename(columns={"synaptic_ops": "value"}).assign(measure="synaptic_ops"),
                    means.rename(columns={"critical_frequency": "value"}).assign(measure="critical_frequency"),
                    means.rename(columns={"critical_frequency_noisy": "value"}).assign(
                        measure="critical_frequency_noisy"),
                    clean.assign(value=[float(np.mean(v)) for v in clean["enwsi"]], measure="enwsi_mean")]
    columns = ["dataset", "tau_m", "seed", "measure", "value"]
    out = pd.concat([p[columns] for p in per_run], ignore_index=True)
    out["status"] = "finished"
    if runs is not None and not runs.empty and "status" in runs.columns:
        bad = runs[runs["status"] == "diverged"][["dataset", "tau_m", "seed"]]
        out = pd.concat([out, bad.assign(measure="accuracy", value=math.nan, status="diverged")], ignore_index=True)
    out["tau_m"] = out["tau_m"].astype(float)
    order = {m: i for i, m in enumerate(MEASURES)}
    return out.sort_values(["dataset", "measure", "tau_m", "seed"], key=lambda s: s.map(order) if s.name == "measure"
                           else (-s if s.name == "tau_m" else s), kind="stable").reset_index(drop=True)[
        columns[:3] + ["status", "measure", "value"]]


# ----------------------------------------------------------------------------------------------
# the claims (Sec. 4), one function each


def _paper_row(row: str, fmt: str = "{:g}") -> str:
    parts = []
    for dataset, by_tau in PAPER_TABLE1.items():
        values = " / ".join(fmt.format(by_tau[t][row]) for t in PAPER_TAUS)
        parts.append(f"{DATASET_NAMES.get(dataset, dataset)} {values}")
    return "Table 1 (IF / 100 / 30): " + "; ".join(parts)


def claim_baseline_accuracy(history: pd.DataFrame, dataset: str, tolerance: float | None = None,
                            n_test: int | None = None, runs: pd.DataFrame | None = None) -> ClaimResult:
    """(1) Baseline (clean) accuracy is about the same for every tau_m: every paired difference within ``tolerance``.

    ``tolerance`` (points) defaults to :func:`leaklib.stats.accuracy_tolerance` of the test set
    (``n_test`` images) at the IF networks' mean accuracy.
    """
    args = ("1", "4.2, Table 1", "Baseline accuracy is almost the same under different leaks.", _paper_row("accuracy"))
    values = claim_values(final_accuracy(history), "accuracy", dataset)
    if tolerance is None:
        finite = [v for per_seed in values.values() for v in per_seed.values() if math.isfinite(v)]
        if n_test is None or not finite:
            return _cannot(*args, "clean test accuracy (%) of the last epoch", dataset,
                           "the test-set size is unknown, so no tolerance can be derived")
        reference = values.get(math.inf) or {}
        level = [v for v in reference.values() if math.isfinite(v)] or finite
        tolerance = stats.accuracy_tolerance(n_test, float(np.mean(level)))
    measure = (f"clean test accuracy (%) of the last epoch; 'about the same' = every paired difference's 90% "
               f"interval within ±{tolerance:.3g} points" + (f" (2 binomial SE on {n_test} test images)" if n_test else ""))
    return ClaimResult(*args, measure, dataset,
                       [_part("", values, "similar", diverged_runs(runs, dataset), tolerance)])


def claim_robustness(robustness: pd.DataFrame, dataset: str, scenario: int,
                     runs: pd.DataFrame | None = None) -> ClaimResult:
    """(2, 3) In noise scenario ``scenario``, both LIF models lose less accuracy under noise than IF."""
    drop = accuracy_drop(robustness, scenarios=[scenario])
    return ClaimResult(str(1 + int(scenario)), "4.2, Fig. 3",
                       f"Leak improves noise robustness (scenario {scenario}): LIF models (tau_m = 30, 100) keep "
                       "more of their baseline accuracy than IF.",
                       f"Fig. 3 ({'a-d' if scenario == 1 else 'e-h'}): IF degrades severely at high severity",
                       f"accuracy drop (clean minus noisy, points), mean over severities 1-8, Gaussian and impulse "
                       f"noise, scenario {scenario}; lower = more robust", dataset,
                       [_part("", claim_values(drop, "drop", dataset), "lif_below_if", diverged_runs(runs, dataset))])


def claim_tau30_over_100(robustness: pd.DataFrame, dataset: str, runs: pd.DataFrame | None = None) -> ClaimResult:
    """(4) tau_m = 30 loses less accuracy under noise than tau_m = 100 (both scenarios pooled)."""
    drop = accuracy_drop(robustness)
    values = claim_values(drop, "drop", dataset, taus=(100.0, 30.0))
    return ClaimResult("4", "4.2, Fig. 3",
                       "The LIF model with tau_m = 100 degrades more under noise than the one with tau_m = 30.",
                       "Fig. 3: blue (30) above red (100) in every panel",
                       "accuracy drop (points), mean over severities 1-8, both noises, both scenarios; "
                       "tau_m = 100 vs 30", dataset,
                       [_part("", values, "decreasing_with_leak", diverged_runs(runs, dataset))])


def claim_equal_train_sse(history: pd.DataFrame, dataset: str, points: int = 25,
                          runs: pd.DataFrame | None = None) -> ClaimResult:
    """(5) At the same training SSE, LIF models have a lower test SSE than IF (Fig. 5d-e)."""
    args = ("5", "4.4, Fig. 5d-e", "At the same training SSE, LIF models yield lower testing SSE than IF models.",
            "Fig. 5d-e: the LIF curves lie below the IF curve")
    part = _finished(history[history["dataset"] == dataset], runs)
    part = part[part["tau_m"].astype(float).isin(PAPER_TAUS)]
    if part.empty:
        return _cannot(*args, "test SSE at equal train SSE", dataset, "no finished run")
    try:
        per_run, _ = equal_train_sse(part, points)
    except ValueError as exc:
        return _cannot(*args, "test SSE at equal train SSE", dataset, f"cannot read the runs at equal train SSE: {exc}")
    low, high = float(per_run["low"].iloc[0]), float(per_run["high"].iloc[0])
    kind = "eval-mode " if per_run["train_sse_column"].iloc[0] == "train_sse_eval" else "running-mean "
    return ClaimResult(*args,
                       f"geometric mean of the test SSE at {points} log-spaced {kind}train-SSE values in "
                       f"[{low:.3g}, {high:.3g}] (the interval every run covers)", dataset,
                       [_part("", claim_values(per_run, "test_sse_at_equal_train", dataset), "lif_below_if",
                              diverged_runs(runs, dataset))])


def claim_final_sse(history: pd.DataFrame, dataset: str, which: str, fraction: float = 20 / 150,
                    runs: pd.DataFrame | None = None) -> ClaimResult:
    """(10, 11) LIF models reach a lower final test (``which='test'``) or train SSE than IF (Table 1 rows 2-3)."""
    if which not in ("test", "train"):
        raise ValueError(f"which must be 'test' or 'train', got {which!r}")
    args = ("10" if which == "test" else "11", "4.4, Table 1", f"LIF models reach a lower final {which}ing SSE than IF models.",
            _paper_row(f"{which}_sse"))
    part = history[history["dataset"] == dataset]
    if part.empty:
        return _cannot(*args, f"{which} SSE", dataset, "no history")
    table = sse_table(part, fraction)
    column = f"{which}_sse"
    kind = ""
    if which == "train" and "train_sse_eval" in table.columns and table["train_sse_eval"].notna().all():
        column, kind = "train_sse_eval", " (eval mode, after each epoch)"
    window = int(table["window"].iloc[0])
    epochs = int(table["epochs"].max())
    return ClaimResult(*args, f"{which} SSE{kind}, mean over the last {window} of {epochs} epochs", dataset,
                       [_part("", claim_values(table, column, dataset), "lif_below_if", diverged_runs(runs, dataset))])


def claim_spike_rate(clean: pd.DataFrame, dataset: str, runs: pd.DataFrame | None = None) -> ClaimResult:
    """(6) Spiking activity increases with leak (Table 1 row 4)."""
    return ClaimResult("6", "4.5, Table 1", "The overall spiking activity increases with a higher leak.",
                       _paper_row("spikes"), "hidden-layer spikes (%) on the clean test set", dataset,
                       [_part("", claim_values(clean, "spike_rate", dataset), "increasing_with_leak",
                              diverged_runs(runs, dataset))])


def claim_synaptic_ops(clean: pd.DataFrame, dataset: str, runs: pd.DataFrame | None = None) -> ClaimResult:
    """(7) Synaptic operations increase with leak (Table 1 row 5)."""
    return ClaimResult("7", "4.5, Table 1", "A higher leak results in more synaptic operations.",
                       _paper_row("synaptic_ops", "{:.3g}"), "synaptic operations per clean test image", dataset,
                       [_part("", claim_values(clean, "synaptic_ops", dataset), "increasing_with_leak",
                              diverged_runs(runs, dataset))])


def _paper_critical_frequency() -> str:
    return "; ".join(f"{c}: " + " / ".join(f"{PAPER_CRITICAL_FREQUENCY[c][t]:g}" for t in PAPER_TAUS)
                     for c in ("clean", "noisy"))


def claim_critical_frequency(clean: pd.DataFrame, dataset: str, runs: pd.DataFrame | None = None) -> ClaimResult:
    """(8) The target neuron's mean critical frequency decreases with leak, clean and noisy inputs (Fig. 5a-c)."""
    means = critical_frequency_means(clean)
    diverged = diverged_runs(runs, dataset)
    parts = [_part("clean", claim_values(means, "critical_frequency", dataset), "decreasing_with_leak", diverged),
             _part("noisy", claim_values(means, "critical_frequency_noisy", dataset), "decreasing_with_leak", diverged)]
    return ClaimResult("8", "4.3, Fig. 5a-c",
                       "With more leak the target output neuron's critical frequency (70% of the power) is lower.",
                       f"mean critical frequency (IF / 100 / 30), {_paper_critical_frequency()}",
                       "mean over test images of the target neuron's critical frequency; clean and noisy "
                       "(scenario 1, Gaussian, severity 5)", dataset, parts)


def claim_noise_raises_critical_frequency(clean: pd.DataFrame, dataset: str,
                                          runs: pd.DataFrame | None = None) -> ClaimResult:
    """(12) Noisy inputs raise the target neuron's critical frequency for every tau_m (Sec. 4.3)."""
    means = critical_frequency_means(clean)
    before = claim_values(means, "critical_frequency", dataset)
    after = claim_values(means, "critical_frequency_noisy", dataset)
    decision = stats.decide_condition(before, after, "higher", condition="noisy − clean",
                                      diverged=diverged_runs(runs, dataset))
    values = {tau: {s: after[tau][s] - before[tau].get(s, math.nan) for s in after[tau]} for tau in after}
    part = ClaimPart("", values, "noisy above clean", decision)
    return ClaimResult("12", "4.3, Fig. 5a-c",
                       "Frequency components of the target neuron's response become higher with noisy inputs.",
                       f"mean critical frequency (IF / 100 / 30), {_paper_critical_frequency()}",
                       "per run: mean critical frequency on noisy (scenario 1, Gaussian, severity 5) minus clean "
                       "inputs; evidence shows that difference", dataset, [part])


def claim_enwsi(clean: pd.DataFrame, dataset: str, runs: pd.DataFrame | None = None) -> ClaimResult:
    """(9) Every hidden layer of the LIF models receives a larger ENWSI than IF's, and tau_m = 30 (the
    largest leak) the largest of all (Fig. 6): per layer the pairs IF-100, IF-30 and 100-30."""
    part = clean[clean["dataset"] == dataset]
    layers = max((len(v) for v in part["enwsi"]), default=0)
    parts = []
    for layer in range(layers):
        table = part.assign(value=[v[layer] if layer < len(v) else math.nan for v in part["enwsi"]])
        values = claim_values(table, "value", dataset)
        pairs = stats.comparison_pairs(values, "vs_if") + [(a, b) for a, b in [(100.0, 30.0)]
                                                             if a in values and b in values]
        parts.append(_part(f"layer {layer + 1}", values, "lif_above_if", diverged_runs(runs, dataset),
                           pairs=pairs or None))
    args = ("9", "4.5, Fig. 6", "LIF neurons receive a higher ENWSI than IF neurons across the layers; the model "
            "with the largest leak (tau_m = 30) receives the highest.",
            "Fig. 6: blue and red bars above green in every layer, blue highest",
            "ENWSI per hidden layer (clean test set); pairs IF-100, IF-30 and 100-30 in every layer", dataset)
    return ClaimResult(*args, parts) if parts else _cannot(*args, "no measured network")


def claim_input_spectrum(spectra: pd.DataFrame, dataset: str) -> ClaimResult:
    """(14) Noisy input spike trains keep roughly the same mean spectrum but spread over a wider band (Fig. 4).

    ``spectra``: :func:`leaklib.spectra.fig4_verdicts` rows (e.g. :meth:`leaklib.sweep.Sweep.input_spectra`),
    paired by image, one per reading and noisy condition. The text does not say which signal Fig. 4
    transforms, so every reading of :data:`leaklib.spectra.READINGS` is tested: a reading holds when it
    is reproduced in every noisy condition (both scenarios). Reproduced when some reading holds (the
    reason names it and the readings under which the sentence fails); otherwise the best of the
    readings' worst verdicts: inconclusive, cannot decide, or not reproduced (opposite only when every
    reading is opposite somewhere).
    """
    from .spectra import READINGS

    args = ("14", "4.3, Fig. 4", "With noisy inputs the mean spectrum of the input spike trains remains roughly the "
            "same, but it spreads over a wider band (more components at higher frequencies).",
            "Fig. 4, in words; no numbers reported")
    measure = ("per image, power-weighted mean frequency ('mean') and its sd ('band') of the input spikes' spectrum "
               "under each reading of the text, clean vs Gaussian noise (scenarios 1 and 2); 'the same' = 90% "
               "interval of the paired change inside a tenth of the clean band, 'wider' = 95% interval above 0")
    part = spectra[spectra["dataset"] == dataset] if "dataset" in spectra.columns else spectra
    if part.empty:
        return _cannot(*args, measure, dataset, "no input spectra measured")
    order = [r for r in READINGS if r in set(part["reading"])] + sorted(set(part["reading"]) - set(READINGS))
    worst: dict[str, str] = {}
    for reading in order:
        verdicts = list(part.loc[part["reading"] == reading, "verdict"])
        worst[reading] = min(verdicts, key=lambda v: (_SEVERITY[v], v != stats.OPPOSITE))
    held = [r for r in order if worst[r] == stats.REPRODUCED]
    best = max(worst.values(), key=lambda v: (_SEVERITY[v], v != stats.OPPOSITE))
    failed = "; ".join(f"{r}: {worst[r]}" for r in order if r not in held)
    if held:
        verdict = stats.REPRODUCED
        why = (f"reproduced under the reading(s) {', '.join(held)} in every noisy condition"
               + (f"; not under the others ({failed})" if failed else ""))
    else:
        verdict = best
        why = f"no reading reproduces the sentence in every noisy condition ({failed})"
    records = part.to_dict("records")
    details = "; ".join(f"{row['reading']}, {row['condition']}: {row['reason']} -> {row['verdict']}" for row in records)
    evidence = "; ".join(f"{row['reading']}, {row['condition']}: mean {row['clean mean']:.3g}→{row['noisy mean']:.3g}, "
                         f"band {row['clean spread']:.3g}→{row['noisy spread']:.3g}" for row in records)
    intervals = "; ".join(
        f"{row['reading']}, {row['condition']}: mean change {row['mean change']:+.3g} [{row['mean change low']:+.3g}, "
        f"{row['mean change high']:+.3g}], band change {row['spread change']:+.3g} [{row['spread change low']:+.3g}, "
        f"{row['spread change high']:+.3g}] (95%, n={int(row['images'])} images, tolerance ±{row['tolerance']:.3g})"
        for row in records)
    decision = stats.Decision("same mean, wider band", verdict, f"{why}. Per reading and condition: {details}",
                              (), 0.95, "none")
    return ClaimResult(*args, measure, dataset, [ClaimPart("", {}, "same mean, wider band", decision,
                                                           evidence_text=evidence, intervals_text=intervals)])


def divergence_table(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per tau_m of ``dataset``: runs, diverged runs, the epochs at which they diverged, mean final accuracy of the others."""
    part = runs[runs["dataset"] == dataset]
    rows = []
    for tau in stats.leak_order(part["tau_m"]):
        group = part[part["tau_m"].astype(float) == tau]
        bad = group[group["status"] == "diverged"]
        good = group[group["status"] != "diverged"]
        rows.append({"tau_m": tau, "runs": len(group), "diverged": len(bad),
                     "diverged_epochs": [int(e) for e in bad.get("diverged_epoch", pd.Series(dtype=float)).dropna()],
                     "accuracy_of_the_others": float(100 * good["test_acc"].mean()) if len(good) else math.nan})
    return pd.DataFrame(rows, columns=["tau_m", "runs", "diverged", "diverged_epochs", "accuracy_of_the_others"])


def claim_divergence(runs: pd.DataFrame | None, dataset: str, below: float = DIVERGENCE_BELOW) -> ClaimResult:
    """(13) Training diverges when tau_m is too small (below 30) and not at 30 and above (Sec. 4.2).

    A run diverges when its loss stops being finite or no spike reaches one of its hidden layers for a
    whole epoch (``status: diverged`` in metrics.json). Rule, on the counts (no interval: each run
    either diverged or not): every run below ``below`` diverged and none at or above it ->
    reproduced; every run of some tau_m below ``below`` converged -> not reproduced; else (mixed
    outcomes) inconclusive. No run below ``below`` in the sweep -> cannot decide.
    """
    args = ("13", "4.2", f"Training loss diverges when tau_m is too small (tau_m < {below:g}).",
            "Sec. 4.2, in words; no numbers reported")
    measure = "runs whose loss became non-finite or in which a hidden layer fell silent for an epoch, per tau_m"
    if runs is None or runs.empty or "status" not in runs.columns:
        return _cannot(*args, measure, dataset, "no run statuses")
    table = divergence_table(runs, dataset)
    if table.empty:
        return _cannot(*args, measure, dataset, "no runs of this dataset")
    small = table[table["tau_m"] < below]
    large = table[table["tau_m"] >= below]
    counts = {float(r.tau_m): {i: (1.0 if i < r.diverged else 0.0) for i in range(int(r.runs))}
              for r in table.itertuples()}
    summary = ", ".join(f"{_tau_name(r.tau_m)} {r.diverged}/{r.runs}" for r in table.itertuples())
    if small.empty:
        verdict, why = stats.CANNOT_DECIDE, f"no run with tau_m < {below:g} in this sweep (diverged: {summary})"
    elif (small["diverged"] == small["runs"]).all() and (large["diverged"] == 0).all():
        verdict, why = stats.REPRODUCED, f"every run below {below:g} diverged, none at or above (diverged: {summary})"
    elif (small["diverged"] == 0).any():
        verdict, why = stats.NOT_REPRODUCED, (f"every run of some tau_m below {below:g} converged "
                                              f"(diverged: {summary})")
    else:
        verdict, why = stats.INCONCLUSIVE, f"mixed outcomes (diverged: {summary})"
    decision = stats.Decision("diverges below", verdict, why, (), 1.0, "none")
    return ClaimResult(*args, measure + " (fraction of seeds diverged)", dataset,
                       [ClaimPart("", counts, "diverges below", decision)])


def claims_ledger(history: pd.DataFrame, robustness: pd.DataFrame | None, clean: pd.DataFrame | None,
                  datasets: Iterable[str] | None = None, sse_window: float = 20 / 150,
                  accuracy_tolerance: float | None = None, points: int = 25, runs: pd.DataFrame | None = None,
                  n_test: Mapping[str, int] | None = None, spectra: pd.DataFrame | None = None) -> list[ClaimResult]:
    """Every claim of Sec. 4 on every dataset, in the ledger's order (1-14); tables given as None give
    'cannot decide' rows. A claim whose data do not allow its measure is 'cannot decide' with the
    reason; none raises. ``n_test``: test-set size per dataset (for claim 1's tolerance); ``spectra``:
    Fig. 4's verdicts (:meth:`leaklib.sweep.Sweep.input_spectra`) for claim 14."""
    datasets = list(datasets) if datasets is not None else list(dict.fromkeys(history["dataset"])) \
        if "dataset" in history.columns else []
    tables = {"history": history, "robustness": robustness, "clean": clean, "runs": runs, "spectra": spectra}
    steps: list[tuple[str, str, str, Callable[[str], ClaimResult]]] = [
        ("1", "history", "baseline accuracy", lambda d: claim_baseline_accuracy(
            history, d, accuracy_tolerance, (n_test or {}).get(d), runs)),
        ("2", "robustness", "robustness, scenario 1", lambda d: claim_robustness(robustness, d, 1, runs)),
        ("3", "robustness", "robustness, scenario 2", lambda d: claim_robustness(robustness, d, 2, runs)),
        ("4", "robustness", "tau_m = 30 vs 100", lambda d: claim_tau30_over_100(robustness, d, runs)),
        ("5", "history", "equal train SSE", lambda d: claim_equal_train_sse(history, d, points, runs)),
        ("6", "clean", "spike rate", lambda d: claim_spike_rate(clean, d, runs)),
        ("7", "clean", "synaptic operations", lambda d: claim_synaptic_ops(clean, d, runs)),
        ("8", "clean", "critical frequency", lambda d: claim_critical_frequency(clean, d, runs)),
        ("9", "clean", "ENWSI", lambda d: claim_enwsi(clean, d, runs)),
        ("10", "history", "final test SSE", lambda d: claim_final_sse(history, d, "test", sse_window, runs)),
        ("11", "history", "final train SSE", lambda d: claim_final_sse(history, d, "train", sse_window, runs)),
        ("12", "clean", "noise raises the critical frequency",
         lambda d: claim_noise_raises_critical_frequency(clean, d, runs)),
        ("13", "runs", "divergence at small tau_m", lambda d: claim_divergence(runs, d)),
        ("14", "spectra", "input spectra: same mean, wider band", lambda d: claim_input_spectrum(spectra, d)),
    ]
    results = []
    for dataset in datasets:
        for id_, need, name, step in steps:
            table = tables[need]
            if table is None or (isinstance(table, pd.DataFrame) and
                                 ("dataset" not in table.columns or not (table["dataset"] == dataset).any())):
                results.append(_cannot(id_, "", name, "", "", dataset, f"no {need} table for this dataset"))
                continue
            try:
                results.append(step(dataset))
            except (ValueError, KeyError) as exc:  # data that do not allow the measure: a row, not a crash
                results.append(_cannot(id_, "", name, "", "", dataset, f"{type(exc).__name__}: {exc}"))
    return results


def ledger_frame(results: Sequence[ClaimResult]) -> pd.DataFrame:
    """The ledger as a table: id, dataset, section, claim, paper, measure, evidence (mean±std per tau_m),
    intervals (the interval of every paired difference: 95 %, or the level stated), verdict, reason."""
    return pd.DataFrame([{"id": r.id, "dataset": r.dataset, "section": r.section, "claim": r.claim,
                          "paper": r.paper, "measure": r.measure, "evidence": r.evidence(),
                          "intervals": r.intervals(), "verdict": r.verdict, "reason": r.reason} for r in results])


def ledger_summary(results: Sequence[ClaimResult]) -> dict[str, dict[str, int]]:
    """Counts of each verdict per dataset: ``{dataset: {"reproduced": n, ...}}`` (every verdict listed)."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        out.setdefault(r.dataset, {v: 0 for v in VERDICTS})[r.verdict] += 1
    return out


#: Verdicts that decide a claim one way or the other (the rest: inconclusive, cannot decide).
DECIDED: tuple[str, ...] = (stats.REPRODUCED, stats.OPPOSITE, stats.NOT_REPRODUCED)


def compare_ledgers(first: Sequence[ClaimResult], second: Sequence[ClaimResult],
                    names: tuple[str, str] = ("[21]", "exact")) -> str:
    """One sentence on two ledgers of the same claims (say, under two gradients): what changes, and on what basis.

    Rows are paired by claim id and dataset. "No verdict changes" is only said to mean something
    when some claim was decided (reproduced, or not) under both; if none was, the sentence says that
    this run cannot tell.
    """
    a = {(r.id, r.dataset): r for r in first}
    b = {(r.id, r.dataset): r for r in second}
    if set(a) != set(b):
        raise ValueError(f"the ledgers hold different claims: {sorted(set(a) ^ set(b))}")
    # a claim that cannot be decided under one of the two (say, claim 13 where only one sweep trains tau_m < 30)
    # is listed apart: its verdict did not change with the gradient, it was never reached
    apart = [key for key in a if stats.CANNOT_DECIDE in (a[key].verdict, b[key].verdict)
             and a[key].verdict != b[key].verdict]
    note = ""
    if apart:
        ids = ", ".join(f"{i} ({DATASET_NAMES.get(d, d)})" for i, d in apart)
        note = f" Not compared (cannot be decided under one of the two): claims {ids}."
    changed = [key for key in a if a[key].verdict != b[key].verdict and key not in apart]
    if changed:
        ids = ", ".join(f"{i} ({DATASET_NAMES.get(d, d)})" for i, d in changed)
        return (f"**{len(changed)} verdict(s) change with the gradient** alone (claims {ids}): for these, what this "
                f"book reports depends on training with {names[0]} rather than {names[1]}, and the paper's wording (an "
                f"effect of leak) covers the combination of leak and that gradient." + note)
    decided = [key for key in a if a[key].verdict in DECIDED and b[key].verdict in DECIDED]
    if not decided:
        return ("No verdict changes with the gradient, but no claim was decided under both (every row "
                f"{stats.INCONCLUSIVE} or {stats.CANNOT_DECIDE} under one of them): this run cannot tell whether "
                "the claims depend on the gradient." + note)
    return (f"No verdict changes with the gradient: the {len(decided)} claim(s) decided on this profile come out the "
            f"same under {names[0]} and {names[1]}, so here they do not depend on which of the two trained the "
            f"networks." + note)


def markdown_table(frame: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (cells as text, '|' escaped, newlines as spaces)."""
    table = frame.reset_index() if index else frame

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    columns = [" / ".join(str(x) for x in c if str(x)) if isinstance(c, tuple) else str(c) for c in table.columns]
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_ledger(results: Sequence[ClaimResult], directory: str | os.PathLike[str],
                 profile: str | None = None) -> list[Path]:
    """Write ``claims.md`` (markdown table + summary) and ``claims.json`` into ``directory``; return the paths."""
    from .runs import atomic_write_text

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    summary = ledger_summary(results)
    frame = ledger_frame(results)[["id", "dataset", "claim", "measure", "evidence", "intervals", "verdict", "reason"]]
    head = f"# Claims ledger{f' (profile {profile})' if profile else ''}\n\n"
    counts = "\n".join(f"- {DATASET_NAMES.get(d, d)}: " + ", ".join(f"{n} {v}" for v, n in c.items() if n)
                       for d, c in summary.items())
    md = atomic_write_text(out / "claims.md", head + counts + "\n\n" + markdown_table(frame))
    from .runs import git_commit

    js = atomic_write_text(out / "claims.json", json.dumps(
        {"profile": profile, "commit": git_commit(short=True), "summary": summary,
         "claims": [r.to_dict() for r in results]},
        indent=2, allow_nan=True, default=_json_default) + "\n")
    return [md, js]


# ----------------------------------------------------------------------------------------------
# Table 1


def table1(history: pd.DataFrame | None, clean: pd.DataFrame | None, sse_window: float = 20 / 150,
           runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 1 as a tidy table: dataset, tau_m, row (a key of ``TABLE1_ROWS``), mean, std, n over seeds, paper.

    Rows: accuracy (last epoch, %), test_sse and train_sse (:func:`leaklib.generalization.sse_table`;
    the train SSE in eval mode where the history has it) from ``history``; spikes (%) and
    synaptic_ops per image (clean test set) from ``clean``. A table given as None leaves its rows
    out; diverged runs (``runs``) are left out. ``paper`` is the paper's value for that dataset (NaN
    where the paper has none, e.g. digits).
    """
    per_run: dict[str, pd.DataFrame] = {}
    if history is not None:
        history = _finished(history, runs)
        sse = sse_table(history, sse_window)
        train_column = "train_sse_eval" if "train_sse_eval" in sse.columns and sse["train_sse_eval"].notna().all() \
            else "train_sse"
        per_run["accuracy"] = final_accuracy(history).rename(columns={"accuracy": "value"})
        per_run["test_sse"] = sse.rename(columns={"test_sse": "value"})
        per_run["train_sse"] = sse.rename(columns={train_column: "value"})
    if clean is not None:
        clean = _finished(clean, runs)
        per_run["spikes"] = clean.rename(columns={"spike_rate": "value"})
        per_run["synaptic_ops"] = clean.rename(columns={"synaptic_ops": "value"})
    if not per_run:
        raise ValueError("table1 needs history or clean (or both)")
    rows = []
    for row, table in per_run.items():
        for (dataset, tau), group in table.groupby(["dataset", "tau_m"], sort=False):
            values = group["value"].to_numpy(dtype=float)
            rows.append({"dataset": dataset, "tau_m": float(tau), "row": row, "mean": float(values.mean()),
                         "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan, "n": len(values),
                         "paper": PAPER_TABLE1.get(dataset, {}).get(float(tau), {}).get(row, math.nan)})
    out = pd.DataFrame(rows)
    order = {r: i for i, r in enumerate(TABLE1_ROWS)}
    return out.sort_values(["row", "dataset", "tau_m"], key=lambda s: s.map(order) if s.name == "row" else s,
                           kind="stable").reset_index(drop=True)


def _fmt(row: str, value: float) -> str:
    if math.isnan(value):
        return "–"
    if row == "synaptic_ops":
        return f"{value:.3g}".replace("e+0", "e").replace("e+", "e")
    if row in ("accuracy", "spikes"):
        return f"{value:.2f}"
    return f"{value:.3g}"


def table1_display(tidy: pd.DataFrame, paper: Mapping[str, Mapping[float, Mapping[str, float]]] = PAPER_TABLE1,
                   taus: Sequence[float] = (30.0, 100.0, math.inf), rows: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 1 in the paper's shape: rows 'Accuracy (%)' ... '#Synaptic Ops'; columns (dataset and source, tau_m).

    For each measured dataset a column group '<name>: this run' (mean ± std over seeds), followed by
    '<name>: paper' where the paper has the dataset; paper datasets this run lacks come last as
    '<name>: paper (reference)'. Cells are text. ``rows``: keys of ``TABLE1_ROWS`` to show (default: those
    in ``tidy``, in the paper's order).
    """
    shown = [r for r in TABLE1_ROWS if (r in set(tidy["row"]) if rows is None else r in rows)]
    groups: list[tuple[str, dict[float, dict[str, str]]]] = []
    measured = list(dict.fromkeys(tidy["dataset"]))
    for dataset in measured:
        part = tidy[tidy["dataset"] == dataset]
        cells: dict[float, dict[str, str]] = {}
        for r in part.itertuples(index=False):
            text = _fmt(r.row, r.mean) + ("" if math.isnan(r.std) else f" ± {_fmt(r.row, r.std)}")
            cells.setdefault(float(r.tau_m), {})[r.row] = text
        groups.append((f"{DATASET_NAMES.get(dataset, dataset)}: this run", cells))
        if dataset in paper:
            groups.append((f"{DATASET_NAMES.get(dataset, dataset)}: paper",
                           {t: {k: _fmt(k, v) for k, v in paper[dataset][t].items()} for t in paper[dataset]}))
    for dataset in paper:
        if dataset not in measured:
            groups.append((f"{DATASET_NAMES.get(dataset, dataset)}: paper (reference)",
                           {t: {k: _fmt(k, v) for k, v in paper[dataset][t].items()} for t in paper[dataset]}))
    columns, data = [], {}
    for name, cells in groups:
        for tau in taus:
            key = (name, format_tau(tau))
            columns.append(key)
            data[key] = [cells.get(float(tau), {}).get(row, "–") for row in shown]
    frame = pd.DataFrame(data, index=[TABLE1_ROWS[r] for r in shown], columns=pd.MultiIndex.from_tuples(columns))
    frame.index.name = "τm"
    return frame


def write_table1(tidy: pd.DataFrame, directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``table1.csv`` (tidy numbers) and ``table1.md`` (the paper-shaped display) into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "table1.csv"
    tidy.assign(tau_m=tidy["tau_m"].map(format_tau)).to_csv(csv, index=False)
    md = out / "table1.md"
    md.write_text("# Table 1\n\n" + markdown_table(table1_display(tidy), index=True))
    return [csv, md]

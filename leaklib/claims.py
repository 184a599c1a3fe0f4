"""Table 1 and the claims of Sec. 4, each decided from the sweep's cached tables by one function.

Every chapter that states a verdict calls the function here for it, so the chapters and the
ledger (chapter 07) cannot disagree. Inputs are the tidy tables of :mod:`leaklib.sweep`:
``history`` (:func:`~leaklib.sweep.history_table`), ``robustness``
(:func:`~leaklib.sweep.robustness_table`) and ``clean`` (:func:`~leaklib.sweep.clean_table`).

Per-run measures (one value per seed; :func:`leaklib.analysis.verdict` compares them across tau_m):

* baseline accuracy: clean test accuracy (%) of the last epoch (Table 1 row 1, as the training chapter);
* robustness: *accuracy drop*, the run's clean accuracy minus its accuracy under noise, in
  percentage points, averaged over severities 1-8 and both noise types of the scenario(s); a
  smaller drop is a more robust model ("retain the baseline accuracy to a greater extent");
* generalization at equal training SSE: the geometric mean of the run's test SSE read off its
  trajectory (:func:`leaklib.analysis.test_sse_at_train_sse`) at ``points`` log-spaced train-SSE
  values spanning the interval every run of the dataset covers
  (:func:`leaklib.analysis.common_train_sse_range`);
* final SSE: :func:`leaklib.analysis.sse_table` (mean over the last ``sse_window`` of the epochs);
* spikes (%), synaptic operations, ENWSI per hidden layer: :func:`leaklib.analysis.measure_clean`;
* critical frequency: the mean over test images (NaNs left out) of the target neuron's critical
  frequency, clean and noisy (scenario 1, Gaussian, severity 5).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analysis import VERDICTS, values_by_tau, verdict
from .generalization import common_train_sse_range, sse_table, test_sse_at_train_sse
from .paper import PAPER_CRITICAL_FREQUENCY, PAPER_TABLE1, TABLE1_ROWS
from .profiles import format_tau

__all__ = [
    "ClaimPart",
    "ClaimResult",
    "DATASET_NAMES",
    "ACCURACY_TOLERANCE",
    "final_accuracy",
    "accuracy_drop",
    "equal_train_sse",
    "critical_frequency_means",
    "per_seed_values",
    "combine_verdicts",
    "claim_baseline_accuracy",
    "claim_robustness",
    "claim_tau30_over_100",
    "claim_equal_train_sse",
    "claim_final_sse",
    "claim_spike_rate",
    "claim_synaptic_ops",
    "claim_critical_frequency",
    "claim_enwsi",
    "claims_ledger",
    "ledger_frame",
    "ledger_summary",
    "markdown_table",
    "write_ledger",
    "per_layer_table",
    "table1",
    "table1_display",
    "write_table1",
]

DATASET_NAMES: dict[str, str] = {"cifar10": "CIFAR-10", "svhn": "SVHN", "digits": "digits"}

#: Claim 1's tolerance: the three tau_m are "about the same" when their mean accuracies lie within
#: this many percentage points (the paper's spread: 0.65 on CIFAR-10, 0.20 on SVHN).
ACCURACY_TOLERANCE = 1.0

#: Severities that count as "noisy" for the robustness measure (the paper's eight levels).
NOISY_SEVERITIES: tuple[int, ...] = tuple(range(1, 9))


# ----------------------------------------------------------------------------------------------
# results


@dataclass
class ClaimPart:
    """One comparison across tau_m: per-seed values, the expected direction and its verdict."""

    label: str
    values_by_tau: dict[float, list[float]]
    expect: str
    verdict: str
    reason: str
    tolerance: float | None = None

    def means(self) -> dict[float, float]:
        return {t: float(np.nanmean(v)) if len(v) and np.isfinite(v).any() else math.nan
                for t, v in self.values_by_tau.items()}

    def stds(self) -> dict[float, float]:
        return {t: float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else math.nan
                for t, v in self.values_by_tau.items()}


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
    verdict: str = field(init=False)
    reason: str = field(init=False)

    def __post_init__(self) -> None:
        self.verdict, self.reason = combine_verdicts(self.parts)

    def evidence(self, digits: int = 3) -> str:
        """Means ± std over seeds per tau_m (IF first), per part: 'IF 1.23±0.04, tau_m=100 ..., ...'."""
        texts = []
        for part in self.parts:
            means, stds = part.means(), part.stds()
            cells = []
            for tau in sorted(part.values_by_tau, reverse=True):
                name = "IF" if math.isinf(tau) else f"τm={tau:g}"
                spread = "" if math.isnan(stds[tau]) else f"±{stds[tau]:.2g}"
                cells.append(f"{name} {means[tau]:.{digits}g}{spread}")
            texts.append((f"{part.label}: " if part.label else "") + ", ".join(cells))
        return "; ".join(texts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "section": self.section, "claim": self.claim, "paper": self.paper,
            "measure": self.measure, "dataset": self.dataset, "verdict": self.verdict, "reason": self.reason,
            "evidence": self.evidence(),
            "parts": [{"label": p.label, "expect": p.expect, "tolerance": p.tolerance, "verdict": p.verdict,
                       "reason": p.reason,
                       "values_by_tau": {format_tau(t): [float(x) for x in v] for t, v in p.values_by_tau.items()},
                       "mean_by_tau": {format_tau(t): m for t, m in p.means().items()},
                       "std_by_tau": {format_tau(t): s for t, s in p.stds().items()}}
                      for p in self.parts],
        }


def combine_verdicts(parts: Sequence[ClaimPart]) -> tuple[str, str]:
    """A claim made of several comparisons: any 'not reproduced' part decides; all 'reproduced' -> reproduced."""
    if not parts:
        return "inconclusive", "nothing measured"
    if len(parts) == 1:
        return parts[0].verdict, parts[0].reason
    for outcome in ("not reproduced", "inconclusive"):
        hit = [p for p in parts if p.verdict == outcome]
        if hit:
            others = f" ({len(parts) - len(hit)} of {len(parts)} parts otherwise)" if len(hit) < len(parts) else ""
            return outcome, "; ".join(f"{p.label}: {p.reason}" for p in hit) + others
    return "reproduced", f"all {len(parts)} parts reproduced: " + "; ".join(f"{p.label}: {p.reason}" for p in parts)


def _part(label: str, values: Mapping[float, list[float]], expect: str, tolerance: float | None = None) -> ClaimPart:
    outcome, reason = verdict(values, expect, tolerance)  # type: ignore[arg-type]
    assert outcome in VERDICTS
    return ClaimPart(label, {float(t): list(v) for t, v in values.items()}, expect, outcome, reason, tolerance)


# ----------------------------------------------------------------------------------------------
# per-run measures


def per_seed_values(table: pd.DataFrame, column: str, dataset: str | None = None,
                    taus: Iterable[float] | None = None) -> dict[float, list[float]]:
    """``{tau_m: [value per run]}`` of ``column`` for one dataset, tau_m in leak order (IF first).

    The rows are selected by :func:`leaklib.analysis.values_by_tau`; a dataset absent from the
    table gives an empty dict.
    """
    if column not in table.columns:
        raise KeyError(f"column {column!r} not in table (has {', '.join(map(str, table.columns))})")
    where = {} if dataset is None or "dataset" not in table.columns else {"dataset": dataset}
    if table.empty or (where and not (table["dataset"] == dataset).any()):
        return {}
    values = values_by_tau(table, column, **where)
    wanted = None if taus is None else {float(t) for t in taus}
    return {tau: values[tau] for tau in sorted(values, reverse=True) if wanted is None or tau in wanted}


def _keys(table: pd.DataFrame) -> list[str]:
    return [c for c in ("dataset", "tau_m", "seed") if c in table.columns]


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
    noisy_rows = table[table["severity"].isin(list(severities))]
    if noisy_rows.empty:
        raise ValueError("no noisy rows for these scenarios, noises and severities")
    noisy = noisy_rows.groupby(keys, sort=False)["accuracy"].mean()
    out = pd.DataFrame({"clean": 100.0 * clean, "noisy": 100.0 * noisy}).dropna().reset_index()
    return out.assign(drop=out["clean"] - out["noisy"])


def equal_train_sse(history: pd.DataFrame, points: int = 25) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test SSE at equal train SSE (Sec. 4.4), per dataset on the train-SSE interval all its runs cover.

    Returns ``(per_run, curves)``: per_run has the keys and ``test_sse_at_equal_train`` (geometric mean
    over the grid), ``low``/``high`` (the interval); curves has one row per run and grid point
    (keys, train_sse, test_sse). A dataset whose runs share no interval raises ValueError.
    """
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
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
                         "low": low, "high": high, "points": points})
            curves.extend({**labels, "train_sse": float(g), "test_sse": float(v)} for g, v in zip(grid, values))
    return pd.DataFrame(rows), pd.DataFrame(curves)


def critical_frequency_means(clean: pd.DataFrame) -> pd.DataFrame:
    """Per run: mean over test images (NaNs left out) of the target neuron's critical frequency, clean and noisy."""
    keys = [k for k in _keys(clean) if k != "seed"]  # one row per run, in clean's order; seeds are not needed here
    out = clean[keys].copy()
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


# ----------------------------------------------------------------------------------------------
# the claims (Sec. 4), one function each


def _paper_row(row: str, fmt: str = "{:g}") -> str:
    parts = []
    for dataset, by_tau in PAPER_TABLE1.items():
        values = " / ".join(fmt.format(by_tau[t][row]) for t in (math.inf, 100.0, 30.0))
        parts.append(f"{DATASET_NAMES.get(dataset, dataset)} {values}")
    return "Table 1 (IF / 100 / 30): " + "; ".join(parts)


def claim_baseline_accuracy(history: pd.DataFrame, dataset: str,
                            tolerance: float = ACCURACY_TOLERANCE) -> ClaimResult:
    """(1) Baseline (clean) accuracy is about the same for every tau_m: all means within ``tolerance`` points."""
    values = per_seed_values(final_accuracy(history), "accuracy", dataset)
    return ClaimResult("1", "4.2, Table 1", "Baseline accuracy is almost the same under different leaks.",
                       _paper_row("accuracy"),
                       f"clean test accuracy (%) of the last epoch; 'similar' = means within {tolerance:g} points",
                       dataset, [_part("", values, "similar", tolerance)])


def claim_robustness(robustness: pd.DataFrame, dataset: str, scenario: int) -> ClaimResult:
    """(2, 3) In noise scenario ``scenario``, both LIF models lose less accuracy under noise than IF."""
    drop = accuracy_drop(robustness, scenarios=[scenario])
    values = per_seed_values(drop, "drop", dataset)
    return ClaimResult(str(1 + int(scenario)), "4.2, Fig. 3",
                       f"Leak improves noise robustness (scenario {scenario}): LIF models (tau_m = 30, 100) keep "
                       "more of their baseline accuracy than IF.",
                       f"Fig. 3 ({'a-d' if scenario == 1 else 'e-h'}): IF degrades severely at high severity",
                       f"accuracy drop (clean minus noisy, points), mean over severities 1-8, Gaussian and impulse "
                       f"noise, scenario {scenario}; lower = more robust", dataset,
                       [_part("", values, "lif_below_if")])


def claim_tau30_over_100(robustness: pd.DataFrame, dataset: str) -> ClaimResult:
    """(4) tau_m = 30 loses less accuracy under noise than tau_m = 100 (both scenarios pooled)."""
    drop = accuracy_drop(robustness)
    values = per_seed_values(drop, "drop", dataset, taus=(100.0, 30.0))
    return ClaimResult("4", "4.2, Fig. 3",
                       "The LIF model with tau_m = 100 degrades more under noise than the one with tau_m = 30.",
                       "Fig. 3: blue (30) above red (100) in every panel",
                       "accuracy drop (points), mean over severities 1-8, both noises, both scenarios; "
                       "tau_m = 100 vs 30", dataset, [_part("", values, "decreasing_with_leak")])


def claim_equal_train_sse(history: pd.DataFrame, dataset: str, points: int = 25) -> ClaimResult:
    """(5) At the same training SSE, LIF models have a lower test SSE than IF (Fig. 5d-e)."""
    per_run, _ = equal_train_sse(history[history["dataset"] == dataset], points)
    values = per_seed_values(per_run, "test_sse_at_equal_train", dataset)
    low, high = float(per_run["low"].iloc[0]), float(per_run["high"].iloc[0])
    return ClaimResult("5", "4.4, Fig. 5d-e",
                       "At the same training SSE, LIF models yield lower testing SSE than IF models.",
                       "Fig. 5d-e: the LIF curves lie below the IF curve",
                       f"geometric mean of the test SSE at {points} log-spaced train-SSE values in "
                       f"[{low:.3g}, {high:.3g}] (the interval every run covers)", dataset,
                       [_part("", values, "lif_below_if")])


def claim_final_sse(history: pd.DataFrame, dataset: str, which: str, fraction: float = 20 / 150) -> ClaimResult:
    """(10, 11) LIF models reach a lower final test (``which='test'``) or train SSE than IF (Table 1 rows 2-3)."""
    if which not in ("test", "train"):
        raise ValueError(f"which must be 'test' or 'train', got {which!r}")
    table = sse_table(history[history["dataset"] == dataset], fraction)
    values = per_seed_values(table, f"{which}_sse", dataset)
    window = int(table["window"].iloc[0]) if len(table) else 0
    epochs = int(table["epochs"].iloc[0]) if len(table) else 0
    return ClaimResult("10" if which == "test" else "11", "4.4, Table 1",
                       f"LIF models reach a lower final {which}ing SSE than IF models.",
                       _paper_row(f"{which}_sse"),
                       f"{which} SSE, mean over the last {window} of {epochs} epochs", dataset,
                       [_part("", values, "lif_below_if")])


def claim_spike_rate(clean: pd.DataFrame, dataset: str) -> ClaimResult:
    """(6) Spiking activity increases with leak (Table 1 row 4)."""
    values = per_seed_values(clean, "spike_rate", dataset)
    return ClaimResult("6", "4.5, Table 1", "The overall spiking activity increases with a higher leak.",
                       _paper_row("spikes"), "hidden-layer spikes (%) on the clean test set", dataset,
                       [_part("", values, "increasing_with_leak")])


def claim_synaptic_ops(clean: pd.DataFrame, dataset: str) -> ClaimResult:
    """(7) Synaptic operations increase with leak (Table 1 row 5)."""
    values = per_seed_values(clean, "synaptic_ops", dataset)
    return ClaimResult("7", "4.5, Table 1", "A higher leak results in more synaptic operations.",
                       _paper_row("synaptic_ops", "{:.3g}"), "synaptic operations per clean test image", dataset,
                       [_part("", values, "increasing_with_leak")])


def claim_critical_frequency(clean: pd.DataFrame, dataset: str) -> ClaimResult:
    """(8) The target neuron's mean critical frequency decreases with leak, clean and noisy inputs (Fig. 5a-c)."""
    means = critical_frequency_means(clean)
    paper = "; ".join(f"{c}: " + " / ".join(f"{PAPER_CRITICAL_FREQUENCY[c][t]:g}" for t in (math.inf, 100.0, 30.0))
                      for c in ("clean", "noisy"))
    parts = [_part("clean", per_seed_values(means, "critical_frequency", dataset), "decreasing_with_leak"),
             _part("noisy", per_seed_values(means, "critical_frequency_noisy", dataset), "decreasing_with_leak")]
    return ClaimResult("8", "4.3, Fig. 5a-c",
                       "With more leak the target output neuron's critical frequency (70% of the power) is lower.",
                       f"mean critical frequency (IF / 100 / 30), {paper}",
                       "mean over test images of the target neuron's critical frequency; clean and noisy "
                       "(scenario 1, Gaussian, severity 5)", dataset, parts)


def claim_enwsi(clean: pd.DataFrame, dataset: str) -> ClaimResult:
    """(9) Every hidden layer of the LIF models receives a larger ENWSI than IF's (Fig. 6)."""
    part = clean[clean["dataset"] == dataset]
    layers = max((len(v) for v in part["enwsi"]), default=0)
    parts = []
    for layer in range(layers):
        table = part.assign(value=[v[layer] if layer < len(v) else math.nan for v in part["enwsi"]])
        parts.append(_part(f"layer {layer + 1}", per_seed_values(table, "value", dataset), "lif_above_if"))
    return ClaimResult("9", "4.5, Fig. 6", "LIF neurons receive a higher ENWSI than IF neurons across the layers.",
                       "Fig. 6: blue and red bars above green in every layer", "ENWSI per hidden layer (clean test set)",
                       dataset, parts)


def claims_ledger(history: pd.DataFrame, robustness: pd.DataFrame | None, clean: pd.DataFrame | None,
                  datasets: Iterable[str] | None = None, sse_window: float = 20 / 150,
                  accuracy_tolerance: float = ACCURACY_TOLERANCE, points: int = 25) -> list[ClaimResult]:
    """Every claim of Sec. 4 on every dataset, in the ledger's order (1-11); tables given as None are skipped."""
    datasets = list(datasets) if datasets is not None else list(dict.fromkeys(history["dataset"]))
    steps: list[tuple[str, Callable[[str], ClaimResult]]] = [
        ("history", lambda d: claim_baseline_accuracy(history, d, accuracy_tolerance)),
        ("robustness", lambda d: claim_robustness(robustness, d, 1)),
        ("robustness", lambda d: claim_robustness(robustness, d, 2)),
        ("robustness", lambda d: claim_tau30_over_100(robustness, d)),
        ("history", lambda d: claim_equal_train_sse(history, d, points)),
        ("clean", lambda d: claim_spike_rate(clean, d)),
        ("clean", lambda d: claim_synaptic_ops(clean, d)),
        ("clean", lambda d: claim_critical_frequency(clean, d)),
        ("clean", lambda d: claim_enwsi(clean, d)),
        ("history", lambda d: claim_final_sse(history, d, "test", sse_window)),
        ("history", lambda d: claim_final_sse(history, d, "train", sse_window)),
    ]
    tables = {"history": history, "robustness": robustness, "clean": clean}
    return [step(d) for d in datasets for need, step in steps if tables[need] is not None]


def ledger_frame(results: Sequence[ClaimResult]) -> pd.DataFrame:
    """The ledger as a table: id, dataset, section, claim, measure, evidence (mean±std per tau_m), verdict, reason."""
    return pd.DataFrame([{"id": r.id, "dataset": r.dataset, "section": r.section, "claim": r.claim,
                          "paper": r.paper, "measure": r.measure, "evidence": r.evidence(),
                          "verdict": r.verdict, "reason": r.reason} for r in results])


def ledger_summary(results: Sequence[ClaimResult]) -> dict[str, dict[str, int]]:
    """Counts of each verdict per dataset: ``{dataset: {"reproduced": n, ...}}``."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        out.setdefault(r.dataset, {v: 0 for v in VERDICTS})[r.verdict] += 1
    return out


def markdown_table(frame: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (cells as text, '|' escaped, newlines as spaces)."""
    table = frame.reset_index() if index else frame

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    columns = [" / ".join(str(x) for x in c if str(x)) if isinstance(c, tuple) else str(c) for c in table.columns]
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_ledger(results: Sequence[ClaimResult], directory: str | os.PathLike[str],
                 profile: str | None = None) -> list[Path]:
    """Write ``claims.md`` (markdown table + summary) and ``claims.json`` into ``directory``; return the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    summary = ledger_summary(results)
    frame = ledger_frame(results)[["id", "dataset", "claim", "measure", "evidence", "verdict", "reason"]]
    head = f"# Claims ledger{f' (profile {profile})' if profile else ''}\n\n"
    counts = "\n".join(f"- {DATASET_NAMES.get(d, d)}: " + ", ".join(f"{n} {v}" for v, n in c.items())
                       for d, c in summary.items())
    md = out / "claims.md"
    md.write_text(head + counts + "\n\n" + markdown_table(frame))
    js = out / "claims.json"
    js.write_text(json.dumps({"profile": profile, "summary": summary, "claims": [r.to_dict() for r in results]},
                             indent=2, allow_nan=True) + "\n")
    return [md, js]


# ----------------------------------------------------------------------------------------------
# Table 1


def table1(history: pd.DataFrame | None, clean: pd.DataFrame | None, sse_window: float = 20 / 150) -> pd.DataFrame:
    """Table 1 as a tidy table: dataset, tau_m, row (a key of ``TABLE1_ROWS``), mean, std, n over seeds, paper.

    Rows: accuracy (last epoch, %), test_sse and train_sse (:func:`leaklib.analysis.sse_table`) from
    ``history``; spikes (%) and synaptic_ops per image (clean test set) from ``clean``. A table given
    as None leaves its rows out. ``paper`` is the paper's value for that dataset (NaN where the paper
    has none, e.g. digits).
    """
    per_run: dict[str, pd.DataFrame] = {}
    if history is not None:
        sse = sse_table(history, sse_window)
        per_run["accuracy"] = final_accuracy(history).rename(columns={"accuracy": "value"})
        per_run["test_sse"] = sse.rename(columns={"test_sse": "value"})
        per_run["train_sse"] = sse.rename(columns={"train_sse": "value"})
    if clean is not None:
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

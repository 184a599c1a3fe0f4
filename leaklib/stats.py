"""Verdicts for the claims of Sec. 4 from per-seed measurements paired by seed.

Design. A sweep trains one network per membrane time constant tau_m (inf = IF, 100, 30, ...) and
seed; runs with the same seed share initial weights, batch order and input spikes across tau_m, so
a measurement is *paired* by seed. Leak grows as tau_m decreases (inf -> 100 -> 30 -> ...). For two
tau_m values ``a`` (less leak) and ``b`` (more leak) the evidence is the per-seed difference
``value[b] - value[a]`` over the seeds that have a finite value at both.

Rule for a directional claim ("LIF below IF", "increases with leak"). The claim is a set of pairs:
IF against each finite tau_m (``lif_*_if``) or neighbours in leak order (``*_with_leak``). For
each pair take the Student-t interval of the mean paired difference at ``level`` (95 %):

* the interval excludes 0 in the claimed direction -> the pair is "reproduced";
* it excludes 0 in the other direction -> "not reproduced (opposite)";
* otherwise "inconclusive"; fewer than two paired seeds, or a diverged run -> "cannot decide".

A claim combines its pairs: any pair opposite -> "not reproduced (opposite)"; else any pair that
cannot be decided -> "cannot decide"; else all pairs reproduced -> "reproduced"; else
"inconclusive". A diverged run makes its tau_m's pairs undecidable rather than being left out:
divergence may itself depend on the leak, so dropping it would bias the comparison.

A two-sided 95 % interval excludes 0 on a given side with probability 2.5 % when the true mean
difference is 0, so each pair errs in each direction at most 2.5 % of the time. Differences that
are all equal (possible for discrete measures such as accuracy on a small test set) have no spread
and an infinite t; they are judged by the exact sign-flip test instead, p = 2^-n, so two or five
identical differences decide nothing at 2.5 % and six do.

Multiplicity. A claim of k pairs is "reproduced" only when *all* k pairs are: that is an
intersection-union test, whose false-positive rate is at most the per-pair 2.5 % whatever k is
(Berger 1982); no correction is needed, and one would only cost power. A claim is "not reproduced
(opposite)" when *any* pair is: a union, whose family-wise error grows with k (up to
1 - 0.975^k, about k x 2.5 %, e.g. 4.9 % for k = 2 independent pairs). So the one-sided p-values
against the claim are adjusted over the claim's pairs (Holm by default, Bonferroni or none on
request) before a pair is called opposite, which holds that family-wise error at 2.5 %. (Simulated
with 5 seeds and four tau_m, k = 3, no effect: opposite 6.4-7.3 % unadjusted, 2.2-2.6 % with Holm;
reproduced below 0.1 %.)
``adjust_reproduced=True`` adjusts the claimed direction too (per-pair "reproduced" labels then
also hold a 2.5 % family-wise error; the claim's verdict becomes more conservative).

Rule for an "about the same" claim (equivalence, e.g. baseline accuracy, Sec. 4.2 / Table 1): the
two one-sided tests (TOST) with margin ``tolerance``. For every pair of tau_m, the interval at
``level`` (90 %, i.e. TOST at 5 %) lies within (-tolerance, +tolerance) -> "reproduced"; an
interval wholly outside it -> "not reproduced" (Holm-adjusted over pairs, as above); otherwise
"inconclusive". :func:`accuracy_tolerance` derives the margin for accuracies from the test set's
sampling error.

Inputs are seed-keyed: ``{tau_m: {seed: value}}`` (:func:`seed_values` builds it from a table).
Position-aligned lists ``{tau_m: [v, ...]}`` are refused: the order of a table's rows does not
identify the seed, and a silent misalignment would destroy the pairing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as _st

__all__ = [
    "REPRODUCED",
    "OPPOSITE",
    "NOT_REPRODUCED",
    "INCONCLUSIVE",
    "CANNOT_DECIDE",
    "VERDICTS",
    "EXPECTATIONS",
    "Interval",
    "Comparison",
    "Decision",
    "tau_label",
    "leak_order",
    "seed_values",
    "paired_differences",
    "interval",
    "adjust_p",
    "comparison_pairs",
    "directional_codes",
    "equivalence_codes",
    "decide_direction",
    "decide_equivalence",
    "decide",
    "decide_condition",
    "accuracy_tolerance",
]

REPRODUCED = "reproduced"
OPPOSITE = "not reproduced (opposite)"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
CANNOT_DECIDE = "cannot decide"

#: Every verdict this module gives; OPPOSITE for directional claims, NOT_REPRODUCED for equivalence.
VERDICTS: tuple[str, ...] = (REPRODUCED, OPPOSITE, NOT_REPRODUCED, INCONCLUSIVE, CANNOT_DECIDE)

#: Claims :func:`decide` understands (the names of :func:`leaklib.analysis.verdict`).
EXPECTATIONS: tuple[str, ...] = (
    "increasing_with_leak",  # every step to more leak (neighbours inf -> 100 -> 30 ...) raises the value
    "decreasing_with_leak",  # every step to more leak lowers the value
    "lif_above_if",          # every finite tau_m above IF (tau_m = inf)
    "lif_below_if",          # every finite tau_m below IF
    "similar",               # every pair of tau_m equivalent within a tolerance
)

# verdict codes of the vectorised kernels
_CANNOT, _OPP, _INCONCL, _REPRO = -2, -1, 0, 1
_CODE_DIRECTION = {_CANNOT: CANNOT_DECIDE, _OPP: OPPOSITE, _INCONCL: INCONCLUSIVE, _REPRO: REPRODUCED}
_CODE_EQUIVALENCE = {_CANNOT: CANNOT_DECIDE, _OPP: NOT_REPRODUCED, _INCONCL: INCONCLUSIVE, _REPRO: REPRODUCED}

Adjust = Literal["holm", "bonferroni", "none"]
SeedValues = Mapping[Any, Mapping[Hashable, float]]


# ----------------------------------------------------------------------------------------------
# small helpers


def tau_label(tau_m: float) -> str:
    """'IF' for tau_m = inf, else 'tau_m=30'."""
    return "IF" if math.isinf(tau_m) else f"tau_m={tau_m:g}"


def _tau_key(tau_m: float) -> str:
    return "inf" if math.isinf(tau_m) else f"{tau_m:g}"


def leak_order(taus: Iterable[Any]) -> list[float]:
    """tau_m values in order of increasing leak: inf (IF) first, then decreasing tau_m."""
    return sorted({float(t) for t in taus}, reverse=True)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


_ADJUST_NAME = {"holm": "Holm", "bonferroni": "Bonferroni", "none": "unadjusted"}


def _level_text(level: float) -> str:
    return f"{100 * level:g}%"


def _json(x: Any) -> Any:
    """JSON-safe scalar: non-finite floats become None."""
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def _by_tau(values_by_tau: SeedValues) -> dict[float, Mapping[Hashable, float]]:
    out: dict[float, Mapping[Hashable, float]] = {}
    for tau, per_seed in values_by_tau.items():
        if not isinstance(per_seed, Mapping):
            raise TypeError(
                f"values for {tau_label(float(tau))} must be a mapping {{seed: value}}, got "
                f"{type(per_seed).__name__}; position-aligned lists are refused because row order does not "
                "identify the seed (build the mapping with seed_values(table, column))")
        out[float(tau)] = per_seed
    return out


def _diverged_map(diverged: Mapping[Any, Iterable[Hashable]] | Iterable[tuple[Any, Hashable]] | None
                  ) -> dict[float, set[Hashable]]:
    """``{tau_m: {seeds}}`` from either ``{tau_m: seeds}`` or ``[(tau_m, seed), ...]``."""
    out: dict[float, set[Hashable]] = {}
    if diverged is None:
        return out
    items = diverged.items() if isinstance(diverged, Mapping) else ((t, [s]) for t, s in diverged)
    for tau, seeds in items:
        out.setdefault(float(tau), set()).update(seeds)
    return out


def _seed_sort_key(seed: Hashable) -> tuple[int, Any]:
    return (0, seed) if isinstance(seed, (int, np.integer, float)) else (1, str(seed))


# ----------------------------------------------------------------------------------------------
# per-seed values and paired differences


def seed_values(table: pd.DataFrame, column: str, **where: Any) -> dict[float, dict[Hashable, float]]:
    """``{tau_m: {seed: value}}`` of ``column`` over the rows whose columns equal ``where``, tau_m in leak order.

    The table needs ``tau_m`` and ``seed`` columns; two rows for one (tau_m, seed) raise ValueError.
    """
    missing = [c for c in ("tau_m", "seed", column) if c not in table.columns]
    if missing:
        raise KeyError(f"table lacks {', '.join(missing)}")
    rows = table
    for name, wanted in where.items():
        if name not in table.columns:
            raise KeyError(f"no column {name!r} to filter on")
        rows = rows[rows[name] == wanted]
    dup = rows.duplicated(["tau_m", "seed"])
    if dup.any():
        first = rows[dup].iloc[0]
        raise ValueError(f"several rows for {tau_label(float(first['tau_m']))}, seed {first['seed']}")
    out: dict[float, dict[Hashable, float]] = {}
    for tau in leak_order(rows["tau_m"]):
        part = rows[rows["tau_m"].astype(float) == tau]
        out[tau] = {(int(s) if isinstance(s, (int, np.integer)) else s): float(v)
                    for s, v in sorted(zip(part["seed"], part[column]), key=lambda sv: _seed_sort_key(sv[0]))}
    return out


def _pair(values_by_tau: SeedValues, a: float, b: float) -> tuple[list[Hashable], np.ndarray, list[Hashable]]:
    """(paired seeds, differences value[b] - value[a] in seed order, seeds dropped for a non-finite value)."""
    by_tau = _by_tau(values_by_tau)
    a, b = float(a), float(b)
    for tau in (a, b):
        if tau not in by_tau:
            raise KeyError(f"no values for {tau_label(tau)} (have {', '.join(tau_label(t) for t in by_tau)})")
    va, vb = by_tau[a], by_tau[b]
    common = sorted(set(va) & set(vb), key=_seed_sort_key)
    seeds, diffs, dropped = [], [], []
    for s in common:
        x, y = va[s], vb[s]
        x = math.nan if x is None else float(x)
        y = math.nan if y is None else float(y)
        if math.isfinite(x) and math.isfinite(y) and math.isfinite(y - x):  # (y - x overflows near 1.8e308)
            seeds.append(s)
            diffs.append(y - x)
        else:
            dropped.append(s)
    return seeds, np.asarray(diffs, dtype=float), dropped


def paired_differences(values_by_tau: SeedValues, a: float, b: float) -> np.ndarray:
    """Per-seed differences ``value[b] - value[a]`` (seed order) over the seeds with finite values at both tau_m.

    ``values_by_tau`` is seed-keyed, ``{tau_m: {seed: value}}``; tau_m keys may be numbers or strings
    ('inf', '30'). Seeds present at only one tau_m, and seeds with a NaN/inf/None value at either,
    are left out. Lists aligned by position are refused (TypeError): see the module docstring.
    """
    return _pair(values_by_tau, a, b)[1]


# ----------------------------------------------------------------------------------------------
# intervals


@dataclass(frozen=True)
class Interval:
    """An interval for the mean paired difference over seeds, with its effect size (Cohen's d_z = mean / sd)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    effect_size: float
    method: str
    level: float
    reason: str = ""

    @property
    def defined(self) -> bool:
        """True when the bounds are numbers (at least two finite differences)."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def excludes(self, value: float = 0.0) -> int:
        """+1 if the whole interval lies above ``value``, -1 if below, 0 if it contains it or is undefined."""
        if not self.defined:
            return 0
        return 1 if self.low > value else -1 if self.high < value else 0

    def text(self) -> str:
        """'mean 3 [1.04, 4.96] (95% t, n=5, sd 1.58, d_z 1.9)'."""
        if not self.defined:
            return self.reason or f"n={self.n}: no interval"
        return (f"mean {_fmt(self.mean)} [{_fmt(self.low)}, {_fmt(self.high)}] ({_level_text(self.level)} "
                f"{self.method}, n={self.n}, sd {_fmt(self.sd)}, d_z {_fmt(self.effect_size)})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite numbers as None)."""
        return {k: _json(getattr(self, k)) for k in
                ("mean", "low", "high", "n", "sd", "effect_size", "method", "level", "reason")}


def _t_summary(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample sd (ddof=1), n and standard error over the last axis, NaNs left out (vectorised)."""
    d = np.asarray(d, dtype=float)
    finite = np.isfinite(d)
    n = finite.sum(axis=-1)
    x = np.where(finite, d, 0.0)
    # computed on d / max|d| and scaled back, so that huge values (e.g. 1e300) neither overflow nor lose the sd
    scale = np.abs(x).max(axis=-1) if x.shape[-1] else np.zeros(x.shape[:-1])
    scale = np.where(scale > 0, scale, 1.0)
    x = x / scale[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x.sum(axis=-1) / n
        dev = np.where(finite, x - mean[..., None], 0.0)
        var = (dev * dev).sum(axis=-1) / (n - 1)
        var = np.where(n >= 2, var, np.nan)
        sd = np.sqrt(var)
        se = sd / np.sqrt(n)
    return mean * scale, sd * scale, n, se * scale


def _effect_size(mean: float, sd: float) -> float:
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return math.nan
    if sd > 0:
        return mean / sd
    return math.nan if mean == 0 else math.copysign(math.inf, mean)


def _p_above(mean: np.ndarray, se: np.ndarray, n: np.ndarray, threshold: float | np.ndarray = 0.0) -> np.ndarray:
    """One-sided t-test p-value against H0 'mean difference <= threshold' (small p: the mean lies above)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (mean - threshold) / se
        p = _st.t.sf(t, n - 1)
    # every difference equal (e.g. two seeds that both gain exactly one test image): the t interval is a point
    # and t is infinite, which would call n = 2 decisive. The exact sign-flip test instead: all n equal signs
    # are one of 2**n assignments, p = 2**-n (below 2.5 % from n = 6 on, below 5 % from n = 5)
    exact = se == 0
    with np.errstate(over="ignore"):
        flip = np.power(0.5, np.asarray(n, dtype=float))
    p = np.where(exact, np.where(mean > threshold, flip, 1.0), p)
    return np.where(n >= 2, p, np.nan)


def _p_below(mean: np.ndarray, se: np.ndarray, n: np.ndarray, threshold: float | np.ndarray = 0.0) -> np.ndarray:
    """One-sided t-test p-value against H0 'mean difference >= threshold' (small p: the mean lies below)."""
    return _p_above(-np.asarray(mean), se, n, -np.asarray(threshold))


def _bootstrap_bounds(d: np.ndarray, level: float, resamples: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap bounds of the mean over the last axis of a (trials, n) array with no NaNs."""
    d = np.atleast_2d(np.asarray(d, dtype=float))
    trials, n = d.shape
    idx = rng.integers(0, n, size=(trials, resamples, n))
    means = np.take_along_axis(d[:, None, :], idx, axis=-1).mean(axis=-1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=-1)
    return low, high


def interval(differences: Sequence[float] | np.ndarray, level: float = 0.95,
             method: Literal["t", "bootstrap"] = "t", resamples: int = 10_000, seed: int = 0) -> Interval:
    """Interval of the mean paired difference over seeds at ``level`` (Student t, or percentile bootstrap).

    ``method="t"``: mean ± t_{(1+level)/2, n-1} · sd / sqrt(n), sd with ddof=1 -- the default and the
    rule's interval. ``method="bootstrap"``: percentile bootstrap of the mean with ``resamples``
    resamples from ``numpy.random.default_rng(seed)`` (for comparison only: with 5 seeds it is
    too narrow, its coverage well below ``level``). Non-finite differences are left out; with
    fewer than two left the bounds are NaN and ``reason`` says why.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    d = np.asarray(differences, dtype=float).ravel()
    dropped = int((~np.isfinite(d)).sum())
    d = d[np.isfinite(d)]
    name = "t" if method == "t" else "percentile bootstrap"
    mean_a, sd_a, n_a, se_a = _t_summary(d)
    mean, sd, n, se = float(mean_a), float(sd_a), int(n_a), float(se_a)
    note = f" ({dropped} non-finite left out)" if dropped else ""
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, math.nan, math.nan, name, level,
                        f"n={n} paired seed(s){note}; an interval needs at least 2")
    if method == "t":
        half = float(_st.t.ppf((1 + level) / 2, n - 1)) * se
        low, high = mean - half, mean + half
    else:
        lo, hi = _bootstrap_bounds(d, level, resamples, np.random.default_rng(seed))
        low, high = float(lo[0]), float(hi[0])
    out = Interval(mean, low, high, n, sd, _effect_size(mean, sd), name, level)
    return replace(out, reason=out.text() + note)


# ----------------------------------------------------------------------------------------------
# multiplicity


def adjust_p(p: np.ndarray, method: Adjust = "holm") -> np.ndarray:
    """Family-wise adjusted p-values over the last axis (Holm step-down, Bonferroni, or none); NaNs are not counted.

    A pair is significant at family-wise level alpha when its adjusted p-value is below alpha.
    """
    p = np.asarray(p, dtype=float)
    if method == "none":
        return p.copy()
    m = np.isfinite(p).sum(axis=-1, keepdims=True)
    if method == "bonferroni":
        return np.where(np.isfinite(p), np.minimum(1.0, m * p), np.nan)
    if method != "holm":
        raise ValueError(f"adjust must be 'holm', 'bonferroni' or 'none', got {method!r}")
    filled = np.where(np.isfinite(p), p, np.inf)
    order = np.argsort(filled, axis=-1, kind="stable")
    ranked = np.take_along_axis(filled, order, axis=-1)
    factor = m - np.arange(p.shape[-1])  # m, m-1, ..., 1 over the finite entries
    with np.errstate(invalid="ignore"):
        stepped = np.where(np.isfinite(ranked), np.minimum(1.0, factor * ranked), np.nan)
    stepped = np.fmax.accumulate(np.where(np.isnan(stepped), -np.inf, stepped), axis=-1)
    out = np.empty_like(stepped)
    np.put_along_axis(out, order, stepped, axis=-1)
    return np.where(np.isfinite(p), out, np.nan)


# ----------------------------------------------------------------------------------------------
# pairs of a claim


def comparison_pairs(taus: Iterable[Any], kind: Literal["vs_if", "neighbours", "all"]) -> list[tuple[float, float]]:
    """Pairs (a, b) with a the less leaky tau_m: IF vs each finite tau_m, neighbours in leak order, or all pairs."""
    order = leak_order(taus)
    if kind == "vs_if":
        if not order or not math.isinf(order[0]):
            return []
        return [(order[0], t) for t in order[1:]]
    if kind == "neighbours":
        return list(zip(order[:-1], order[1:]))
    if kind == "all":
        return [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]
    raise ValueError(f"kind must be 'vs_if', 'neighbours' or 'all', got {kind!r}")


# ----------------------------------------------------------------------------------------------
# vectorised kernels (one claim, or many simulated claims at once)


def _combine_codes(codes: np.ndarray) -> np.ndarray:
    """A claim from its pairs' codes (last axis): any opposite; else any cannot decide; else all reproduced."""
    codes = np.asarray(codes)
    if codes.shape[-1] == 0:
        return np.full(codes.shape[:-1], _CANNOT)
    out = np.where((codes == _REPRO).all(axis=-1), _REPRO, _INCONCL)
    out = np.where((codes == _CANNOT).any(axis=-1), _CANNOT, out)
    return np.where((codes == _OPP).any(axis=-1), _OPP, out)


def directional_codes(differences: np.ndarray, sign: int, level: float = 0.95, adjust: Adjust = "holm",
                      adjust_reproduced: bool = False, min_seeds: int = 2) -> dict[str, np.ndarray]:
    """The directional rule on an array of paired differences shaped (..., k pairs, n seeds), NaN = missing.

    ``sign`` +1: the claim says ``value[b] > value[a]`` for every pair; -1: below. Returns arrays
    ``pair`` (..., k) and ``claim`` (...) of codes (1 reproduced, -1 opposite, 0 inconclusive,
    -2 cannot decide), and the one-sided p-values (..., k) ``p_claimed`` / ``p_against`` with their
    adjusted forms ``p_claimed_adjusted`` (= ``p_claimed`` unless ``adjust_reproduced``) and
    ``p_against_adjusted``.
    This is the kernel of :func:`decide_direction`, exposed so Monte Carlo checks run the same code.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    alpha = (1 - level) / 2
    mean, _, n, se = _t_summary(differences)
    testable = n >= max(2, min_seeds)
    up, down = _p_above(mean, se, n), _p_below(mean, se, n)
    p_claimed = np.where(testable, up if sign > 0 else down, np.nan)
    p_against = np.where(testable, down if sign > 0 else up, np.nan)
    p_against_adj = adjust_p(p_against, adjust)
    p_claimed_used = adjust_p(p_claimed, adjust) if adjust_reproduced else p_claimed
    pair = np.where(p_claimed_used < alpha, _REPRO, _INCONCL)
    pair = np.where(p_against_adj < alpha, _OPP, pair)
    pair = np.where(testable, pair, _CANNOT)
    return {"pair": pair, "claim": _combine_codes(pair), "p_claimed": p_claimed,
            "p_claimed_adjusted": p_claimed_used, "p_against": p_against, "p_against_adjusted": p_against_adj}


def equivalence_codes(differences: np.ndarray, tolerance: float, level: float = 0.90, adjust: Adjust = "holm",
                      min_seeds: int = 2) -> dict[str, np.ndarray]:
    """The equivalence (TOST) rule on paired differences shaped (..., k pairs, n seeds), NaN = missing.

    A pair is equivalent (code 1) when both one-sided tests reject 'difference <= -tolerance' and
    'difference >= +tolerance' at (1 - level) / 2, i.e. the interval at ``level`` lies inside
    (-tolerance, +tolerance); different (code -1) when the interval lies wholly outside, tested as
    'abs(difference) <= tolerance' rejected after ``adjust`` over the pairs. Returns ``pair``,
    ``claim``, ``p_claimed`` (TOST p, never adjusted: intersection-union; also as
    ``p_claimed_adjusted``), ``p_against`` and ``p_against_adjusted``.
    """
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    alpha = (1 - level) / 2
    mean, _, n, se = _t_summary(differences)
    testable = n >= max(2, min_seeds)
    p_tost = np.fmax(_p_above(mean, se, n, -tolerance), _p_below(mean, se, n, tolerance))
    p_diff = np.fmin(_p_above(mean, se, n, tolerance), _p_below(mean, se, n, -tolerance))
    p_tost = np.where(testable, p_tost, np.nan)
    p_diff = np.where(testable, p_diff, np.nan)
    p_diff_adj = adjust_p(p_diff, adjust)
    pair = np.where(p_tost < alpha, _REPRO, _INCONCL)
    pair = np.where(p_diff_adj < alpha, _OPP, pair)
    pair = np.where(testable, pair, _CANNOT)
    return {"pair": pair, "claim": _combine_codes(pair), "p_claimed": p_tost, "p_claimed_adjusted": p_tost,
            "p_against": p_diff, "p_against_adjusted": p_diff_adj}


# ----------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class Comparison:
    """One pair of a claim: tau_m ``a`` (less leak) against ``b`` (more leak), difference value[b] - value[a]."""

    a: float
    b: float
    claimed: str  # "higher", "lower" (value[b] vs value[a]) or "equivalent"
    interval: Interval
    seeds: tuple[Hashable, ...]
    dropped: tuple[Hashable, ...]
    p_claimed: float
    p_claimed_adjusted: float
    p_against: float
    p_against_adjusted: float
    verdict: str
    reason: str

    @property
    def label(self) -> str:
        """'tau_m=100 - IF'."""
        return f"{tau_label(self.b)} - {tau_label(self.a)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tau_m as 'inf' / '30', non-finite numbers as None)."""
        return {"a": _tau_key(self.a), "b": _tau_key(self.b), "label": self.label, "claimed": self.claimed,
                "interval": self.interval.to_dict(), "seeds": [_json(s) for s in self.seeds],
                "dropped": [_json(s) for s in self.dropped], "p_claimed": _json(self.p_claimed),
                "p_claimed_adjusted": _json(self.p_claimed_adjusted),
                "p_against": _json(self.p_against), "p_against_adjusted": _json(self.p_against_adjusted),
                "verdict": self.verdict, "reason": self.reason}


@dataclass(frozen=True)
class Decision:
    """A claim of Sec. 4 decided from its pairwise comparisons: verdict, reason and the evidence per pair."""

    expect: str
    verdict: str
    reason: str
    comparisons: tuple[Comparison, ...]
    level: float
    adjust: str
    tolerance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite numbers as None)."""
        return {"expect": self.expect, "verdict": self.verdict, "reason": self.reason, "level": self.level,
                "adjust": self.adjust, "tolerance": _json(self.tolerance),
                "comparisons": [c.to_dict() for c in self.comparisons]}

    def as_tuple(self) -> tuple[str, str]:
        """``(verdict, reason)``, the shape of :func:`leaklib.analysis.verdict`."""
        return self.verdict, self.reason


def _cannot(expect: str, reason: str, level: float, adjust: str, tolerance: float | None = None) -> Decision:
    return Decision(expect, CANNOT_DECIDE, reason, (), level, adjust, tolerance)


def _prepare(values_by_tau: SeedValues, pairs: Sequence[tuple[float, float]],
             diverged: Mapping[Any, Iterable[Hashable]] | Iterable[tuple[Any, Hashable]] | None,
             nan_policy: str) -> tuple[np.ndarray, list[tuple[list[Hashable], list[Hashable], str | None]]]:
    """NaN-padded (k, n) differences and, per pair, (seeds, dropped, reason it cannot be decided or None)."""
    if nan_policy not in ("drop", "cannot decide"):
        raise ValueError(f"nan_policy must be 'drop' or 'cannot decide', got {nan_policy!r}")
    broken = _diverged_map(diverged)
    rows, info = [], []
    for a, b in pairs:
        seeds, diffs, dropped = _pair(values_by_tau, a, b)
        why = None
        gone = [f"{tau_label(t)} seed(s) {', '.join(map(str, sorted(broken[t], key=_seed_sort_key)))}"
                for t in (a, b) if broken.get(t)]
        if gone:
            why = f"runs diverged ({'; '.join(gone)}); leaving them out would bias the comparison"
        elif dropped and nan_policy == "cannot decide":
            why = f"non-finite values for seed(s) {', '.join(map(str, dropped))}"
        elif len(seeds) < 2:
            extra = f" ({len(dropped)} left out for a non-finite value)" if dropped else ""
            why = f"{len(seeds)} paired seed(s){extra}; an interval needs at least 2"
        rows.append(diffs if why is None else np.full(0, np.nan))
        info.append((seeds, dropped, why))
    width = max([len(r) for r in rows] + [1])
    d = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        d[i, :len(r)] = r
    return d, info


def _pair_reason(verdict: str, iv: Interval, claimed: str, adjusted: bool, adjust: str, k: int,
                 p_adjusted: tuple[float, float], alpha: float, tolerance: float | None) -> str:
    """The pair's sentence; ``p_adjusted`` = (claimed, against) adjusted one-sided p-values."""
    body = iv.text()
    after = f" ({_ADJUST_NAME[adjust]}-adjusted p {_fmt(p_adjusted[1])} over {k} pairs)" if adjusted else ""
    if verdict == CANNOT_DECIDE:
        return body
    if claimed == "equivalent":
        tol = f"±{_fmt(tolerance if tolerance is not None else math.nan)}"
        if verdict == REPRODUCED:
            return f"{body} inside {tol}"
        if verdict == NOT_REPRODUCED:
            return f"{body} wholly outside {tol}{after}"
        if iv.defined and iv.sd == 0:
            return (f"{body}: all {iv.n} differences are equal, so the interval has no width; the exact sign-flip "
                    f"test gives p = 2^-{iv.n} = {_fmt(0.5 ** iv.n)}, not below {_fmt(alpha)}")
        return f"{body} not inside {tol}"
    if verdict == REPRODUCED:
        return f"{body}: {claimed} as claimed"
    if verdict == OPPOSITE:
        return f"{body}: the opposite of the claim{after}"
    if iv.defined and iv.sd == 0 and verdict == INCONCLUSIVE:
        return (f"{body}: all {iv.n} differences are equal, so the t interval has no width; the exact sign-flip "
                f"test gives p = 2^-{iv.n} = {_fmt(0.5 ** iv.n)}, not below {_fmt(alpha)}")
    side = iv.excludes(0.0)
    if side != 0:  # 0 excluded at the per-pair level, but not after the adjustment over the pairs
        with_claim = side == (1 if claimed == "higher" else -1)
        way, p = ("in the claimed direction", p_adjusted[0]) if with_claim else ("against the claim", p_adjusted[1])
        return (f"{body}: {way}, but not beyond chance over {k} pairs "
                f"({_ADJUST_NAME[adjust]}-adjusted p {_fmt(p)} >= {_fmt(alpha)})")
    return f"{body}: contains 0"


def _decide(values_by_tau: SeedValues, expect: str, pairs: Sequence[tuple[float, float]], claimed: str,
            level: float, adjust: Adjust, diverged: Any, min_seeds: int, nan_policy: str,
            tolerance: float | None, adjust_reproduced: bool) -> Decision:
    d, info = _prepare(values_by_tau, pairs, diverged, nan_policy)
    if claimed == "equivalent":
        assert tolerance is not None
        out = equivalence_codes(d, tolerance, level, adjust, min_seeds)
        names = _CODE_EQUIVALENCE
    else:
        out = directional_codes(d, 1 if claimed == "higher" else -1, level, adjust, adjust_reproduced, min_seeds)
        names = _CODE_DIRECTION
    for i, (_, _, why) in enumerate(info):  # min_seeds above 2
        if why is None and out["pair"][i] == _CANNOT:
            info[i] = (info[i][0], info[i][1], f"{len(info[i][0])} paired seed(s); this claim needs {min_seeds}")
    k_tested = int(np.isfinite(out["p_against"]).sum())
    adjusted = adjust != "none" and k_tested > 1
    alpha = (1 - level) / 2
    comparisons = []
    for i, ((a, b), (seeds, dropped, why)) in enumerate(zip(pairs, info)):
        iv = interval(d[i], level) if why is None else Interval(
            math.nan, math.nan, math.nan, len(seeds), math.nan, math.nan, "t", level, why)
        verdict = names[int(out["pair"][i])]
        note = f" ({len(dropped)} seed(s) left out for a non-finite value)" if dropped and why is None else ""
        p = {key: float(out[key][i]) for key in ("p_claimed", "p_claimed_adjusted", "p_against", "p_against_adjusted")}
        reason = _pair_reason(verdict, iv, claimed, adjusted, adjust, k_tested,
                              (p["p_claimed_adjusted"], p["p_against_adjusted"]), alpha, tolerance) + note
        comparisons.append(Comparison(a, b, claimed, iv, tuple(seeds), tuple(dropped), p["p_claimed"],
                                      p["p_claimed_adjusted"], p["p_against"], p["p_against_adjusted"], verdict,
                                      f"{tau_label(b)} - {tau_label(a)}: {reason}"))
    verdict = names[int(out["claim"])]
    reason = _claim_reason(verdict, comparisons, claimed, level, adjust if adjusted else "none", k_tested,
                           adjust_reproduced, tolerance)
    return Decision(expect, verdict, reason, tuple(comparisons), level, adjust, tolerance)


def _claim_reason(verdict: str, comparisons: Sequence[Comparison], claimed: str, level: float, adjust: str,
                  k_tested: int, adjust_reproduced: bool, tolerance: float | None) -> str:
    k = len(comparisons)
    rule = (f"{_level_text(level)} t intervals of the paired differences, TOST margin ±{_fmt(tolerance or math.nan)}"
            if claimed == "equivalent" else f"{_level_text(level)} t intervals of the paired differences")
    if adjust != "none":
        sides = "both directions" if adjust_reproduced and claimed != "equivalent" else "against the claim"
        rule += f"; {_ADJUST_NAME[adjust]}-adjusted over {k_tested} pairs {sides}"
    decisive = {OPPOSITE: [c for c in comparisons if c.verdict == OPPOSITE],
                NOT_REPRODUCED: [c for c in comparisons if c.verdict == NOT_REPRODUCED],
                CANNOT_DECIDE: [c for c in comparisons if c.verdict == CANNOT_DECIDE],
                INCONCLUSIVE: [c for c in comparisons if c.verdict != REPRODUCED],
                REPRODUCED: list(comparisons)}[verdict]
    head = {REPRODUCED: f"all {k} pair(s) {'equivalent' if claimed == 'equivalent' else claimed + ' as claimed'}",
            OPPOSITE: f"{len(decisive)} of {k} pair(s) opposite to the claim",
            NOT_REPRODUCED: f"{len(decisive)} of {k} pair(s) differ by more than the margin",
            CANNOT_DECIDE: f"{len(decisive)} of {k} pair(s) cannot be decided",
            INCONCLUSIVE: f"{len(decisive)} of {k} pair(s) unresolved"}[verdict]
    return f"{head} ({rule}): " + "; ".join(c.reason for c in decisive)


# ----------------------------------------------------------------------------------------------
# public deciders


def _taus_or_reason(values_by_tau: SeedValues) -> tuple[list[float], str | None]:
    taus = leak_order(_by_tau(values_by_tau))
    if len(taus) < 2:
        return taus, f"only {len(taus)} tau_m value(s); a comparison needs at least two"
    return taus, None


def decide_direction(values_by_tau: SeedValues,
                     expect: Literal["increasing_with_leak", "decreasing_with_leak", "lif_above_if", "lif_below_if"],
                     *, pairs: Sequence[tuple[float, float]] | None = None, level: float = 0.95,
                     adjust: Adjust = "holm", adjust_reproduced: bool = False,
                     diverged: Mapping[Any, Iterable[Hashable]] | Iterable[tuple[Any, Hashable]] | None = None,
                     min_seeds: int = 2, nan_policy: Literal["drop", "cannot decide"] = "drop") -> Decision:
    """Decide a directional claim of Sec. 4 (e.g. Table 1 'spikes increase with leak') from seed-paired values.

    ``expect``: ``*_with_leak`` compares neighbours in leak order, ``lif_*_if`` IF against each
    finite tau_m (``pairs`` overrides either, as (a, b) with the claim about value[b] - value[a]).
    ``diverged``: runs that diverged, ``{tau_m: seeds}`` or ``[(tau_m, seed), ...]``; a pair
    touching one cannot be decided. ``nan_policy='drop'`` leaves seeds with a non-finite value out
    of that pair (the reason says so); ``'cannot decide'`` refuses the pair instead. See the
    module docstring for the rule and its error rates.
    """
    kinds = {"increasing_with_leak": ("neighbours", "higher"), "decreasing_with_leak": ("neighbours", "lower"),
             "lif_above_if": ("vs_if", "higher"), "lif_below_if": ("vs_if", "lower")}
    if expect not in kinds:
        raise ValueError(f"expect must be one of {', '.join(kinds)}, got {expect!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    taus, why = _taus_or_reason(values_by_tau)
    if why and pairs is None:
        return _cannot(expect, why, level, adjust)
    kind, claimed = kinds[expect]
    chosen = [(float(a), float(b)) for a, b in pairs] if pairs is not None else comparison_pairs(taus, kind)
    if not chosen:
        return _cannot(expect, "no IF (tau_m = inf) values to compare against" if kind == "vs_if"
                       else "no pairs to compare", level, adjust)
    return _decide(values_by_tau, expect, chosen, claimed, level, adjust, diverged, min_seeds, nan_policy,
                   None, adjust_reproduced)


def decide_equivalence(values_by_tau: SeedValues, tolerance: float, *,
                       pairs: Literal["all", "vs_if", "neighbours"] | Sequence[tuple[float, float]] = "all",
                       level: float = 0.90, adjust: Adjust = "holm",
                       diverged: Mapping[Any, Iterable[Hashable]] | Iterable[tuple[Any, Hashable]] | None = None,
                       min_seeds: int = 2, nan_policy: Literal["drop", "cannot decide"] = "drop") -> Decision:
    """Decide an 'about the same' claim (Sec. 4.2, Table 1 row 1: baseline accuracy) by TOST with margin ``tolerance``.

    Every pair of tau_m (``pairs``: 'all', 'vs_if', 'neighbours' or explicit (a, b)) must have its
    ``level`` interval (default 90 %, TOST at 5 %) inside ±tolerance for "reproduced"; an interval
    wholly outside (Holm-adjusted over pairs) gives "not reproduced"; otherwise "inconclusive".
    ``tolerance`` is in the measure's units (percentage points for accuracies in %: see
    :func:`accuracy_tolerance`); the other options are those of :func:`decide_direction`.
    """
    if not (tolerance is not None and tolerance > 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    taus, why = _taus_or_reason(values_by_tau)
    if isinstance(pairs, str):
        if why:
            return _cannot("similar", why, level, adjust, tolerance)
        chosen = comparison_pairs(taus, pairs)  # type: ignore[arg-type]
    else:
        chosen = [(float(a), float(b)) for a, b in pairs]
    if not chosen:
        return _cannot("similar", "no pairs to compare", level, adjust, tolerance)
    return _decide(values_by_tau, "similar", chosen, "equivalent", level, adjust, diverged, min_seeds, nan_policy,
                   float(tolerance), False)


def decide(values_by_tau: SeedValues, expect: str, tolerance: float | None = None, **options: Any) -> Decision:
    """Decide a claim named as in :data:`EXPECTATIONS` ('similar' needs ``tolerance``); options go to the decider."""
    if expect == "similar":
        if tolerance is None:
            raise ValueError("expect='similar' needs a tolerance > 0")
        return decide_equivalence(values_by_tau, tolerance, **options)
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {', '.join(EXPECTATIONS)}, got {expect!r}")
    return decide_direction(values_by_tau, expect, **options)  # type: ignore[arg-type]


def decide_condition(before: SeedValues, after: SeedValues, claimed: Literal["higher", "lower"], *,
                     level: float = 0.95, adjust: Adjust = "holm", min_seeds: int = 2,
                     condition: str = "after - before",
                     diverged: Mapping[Any, Iterable[Hashable]] | Iterable[tuple[Any, Hashable]] | None = None
                     ) -> Decision:
    """Decide 'a change of condition raises (lowers) the value for every tau_m' from the same runs measured twice.

    ``before`` and ``after`` are seed-keyed ``{tau_m: {seed: value}}`` of the same networks under two
    conditions (Sec. 4.3: the target neuron's critical frequency on clean and on noisy inputs). Per
    tau_m the evidence is the per-seed difference ``after - before``; the directional rule of
    :func:`decide_direction` applies with one "pair" per tau_m (Holm over the tau_m against the claim).
    ``condition`` names the difference in the reasons. ``diverged`` (as for :func:`decide_direction`):
    a tau_m with a diverged run cannot be decided, as everywhere else in this module.
    """
    if claimed not in ("higher", "lower"):
        raise ValueError(f"claimed must be 'higher' or 'lower', got {claimed!r}")
    b, a = _by_tau(before), _by_tau(after)
    broken = _diverged_map(diverged)
    taus = leak_order((set(a) & set(b)) | {t for t, seeds in broken.items() if seeds})
    if not taus:
        return _cannot(f"{condition} {claimed}", "no tau_m measured under both conditions", level, adjust)
    rows, info = [], []
    for tau in taus:
        seeds = sorted(set(a.get(tau, {})) & set(b.get(tau, {})), key=_seed_sort_key)
        pairs = [(s, float(a[tau][s]) - float(b[tau][s])) for s in seeds
                 if a[tau][s] is not None and b[tau][s] is not None]
        kept = [(s, d) for s, d in pairs if math.isfinite(d)]
        dropped = [s for s, d in pairs if not math.isfinite(d)]
        why = None
        if broken.get(tau):
            gone = ", ".join(map(str, sorted(broken[tau], key=_seed_sort_key)))
            why = f"runs diverged ({tau_label(tau)} seed(s) {gone}); leaving them out would bias the comparison"
            kept = []
        rows.append(np.asarray([d for _, d in kept], dtype=float))
        info.append(([s for s, _ in kept], dropped, why))
    width = max([len(r) for r in rows] + [1])
    d = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        d[i, :len(r)] = r
    out = directional_codes(d, 1 if claimed == "higher" else -1, level, adjust, False, min_seeds)
    k_tested = int(np.isfinite(out["p_against"]).sum())
    adjusted = adjust != "none" and k_tested > 1
    comparisons = []
    for i, (tau, (seeds, dropped, why)) in enumerate(zip(taus, info)):
        iv = interval(d[i], level) if why is None else Interval(
            math.nan, math.nan, math.nan, 0, math.nan, math.nan, "t", level, why)
        verdict = _CODE_DIRECTION[int(out["pair"][i])]
        p = {key: float(out[key][i]) for key in ("p_claimed", "p_claimed_adjusted", "p_against", "p_against_adjusted")}
        reason = _pair_reason(verdict, iv, claimed, adjusted, adjust, k_tested,
                              (p["p_claimed_adjusted"], p["p_against_adjusted"]), (1 - level) / 2, None)
        comparisons.append(Comparison(tau, tau, claimed, iv, tuple(seeds), tuple(dropped), p["p_claimed"],
                                      p["p_claimed_adjusted"], p["p_against"], p["p_against_adjusted"], verdict,
                                      f"{tau_label(tau)} {condition}: {reason}"))
    verdict = _CODE_DIRECTION[int(out["claim"])]
    reason = _claim_reason(verdict, comparisons, claimed, level, adjust if adjusted else "none", k_tested, False, None)
    return Decision(f"{condition} {claimed}", verdict, reason, tuple(comparisons), level, adjust)


# ----------------------------------------------------------------------------------------------
# tolerance for accuracies


def accuracy_tolerance(n_test_images: int, accuracy_percent: float, factor: float = 2.0) -> float:
    """Equivalence margin (percentage points) for an accuracy measured on ``n_test_images`` (Table 1 row 1).

    Rule: the larger of ``factor`` binomial standard errors of one accuracy measurement,
    100 · factor · sqrt(p (1 - p) / n) with p = accuracy_percent / 100, and the resolution of the
    test set, 100 / n (one image). Two tau_m whose accuracies differ by less than this are "about
    the same": a difference below the 95 % sampling margin (``factor=2``, about 1.96) of a single
    accuracy on this test set is not one the test set can vouch for. E.g. 360 images at 95 %: one
    image is 0.28 points, one standard error 1.15 points, margin 2.3 points. For scale, the paper's
    own spreads (Table 1): 0.20 points on SVHN (26032 images at ~96 %, margin 0.24) lies inside;
    0.65 on CIFAR-10 (10000 images at ~90 %, margin 0.60) just outside.
    """
    if not n_test_images >= 1:
        raise ValueError(f"n_test_images must be >= 1, got {n_test_images}")
    if not 0 <= accuracy_percent <= 100:
        raise ValueError(f"accuracy_percent must lie in [0, 100], got {accuracy_percent}")
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    p = accuracy_percent / 100
    return max(100 * factor * math.sqrt(p * (1 - p) / n_test_images), 100 / n_test_images)

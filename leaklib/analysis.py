"""One pass over the test set for Table 1 (:func:`measure_clean`), and the names of the analysis modules.

The measurements of Sec. 4 live in one module per section: :mod:`leaklib.robustness` (Sec. 4.2),
:mod:`leaklib.spectra` (Sec. 4.3), :mod:`leaklib.generalization` (Sec. 4.4), :mod:`leaklib.sparsity`
(Sec. 4.5) and :mod:`leaklib.stats` (verdicts). This module measures a network once on the clean
test set for all of them, and re-exports their functions under their old names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .encoding import SeverityTable, image_batches, noisy_spikes, poisson_spikes
from .generalization import common_train_sse_range, sse_table, test_sse_at_train_sse
from .models import SNN
from .robustness import _device, evaluate, robustness_summary
from .sparsity import enwsi, spike_rates, synaptic_ops
from .spectra import (critical_frequency, critical_frequency_frame, input_spectra, spectrum_frame, spectrum_moments,
                      spike_train_spectrum, target_neuron_critical_frequency)
from .train import sse_loss

__all__ = [
    "spike_rates",
    "synaptic_ops",
    "enwsi",
    "spike_train_spectrum",
    "spectrum_moments",
    "spectrum_frame",
    "critical_frequency",
    "target_neuron_critical_frequency",
    "evaluate",
    "measure_clean",
    "sse_table",
    "verdict",
    "EXPECTATIONS",
    "VERDICTS",
    "robustness_summary",
    "values_by_tau",
    "input_spectra",
    "critical_frequency_frame",
    "test_sse_at_train_sse",
    "common_train_sse_range",
    "paired_verdict",
]

VERDICTS: tuple[str, ...] = ("reproduced", "not reproduced", "inconclusive")

#: Claims :func:`verdict` can test; "leak" grows as tau_m goes inf -> 100 -> 30.
EXPECTATIONS: tuple[str, ...] = (
    "increasing_with_leak",   # every step to more leak raises the value
    "decreasing_with_leak",   # every step to more leak lowers the value
    "lif_above_if",           # every finite tau_m above IF (tau_m = inf)
    "lif_below_if",           # every finite tau_m below IF
    "similar",                # all means within ``tolerance`` of each other
)


@torch.no_grad()
def measure_clean(model: SNN, images: torch.Tensor, labels: torch.Tensor, *, num_steps: int,
                  batch_size: int = 256, seed: int = 0, device: str | torch.device | None = None,
                  noisy: tuple[int, str, int] = (1, "gaussian", 5), table: SeverityTable | None = None,
                  fraction: float = 0.7, progress: bool = True) -> dict[str, Any]:
    """Table 1's per-model numbers and Fig. 5a-c/6 data in one pass over the test set (Sec. 4.2-4.5).

    Returns a JSON-ready dict: accuracy, sse (``sum_c (u_L[T]/T - onehot)^2``, mean over images),
    spike_rate and spike_rate_per_layer (%), synaptic_ops (mean per image), enwsi (per hidden layer),
    critical_frequency (per image, NaN where the target current is constant), and for the noisy input
    ``noisy = (scenario, noise, severity)`` (the paper's severity five; its level from ``table``,
    default the a-priori table) critical_frequency_noisy and noisy_accuracy; plus n, num_steps,
    seed, fraction, noisy and noisy_level. The noisy pass has its own generator from ``seed``, so
    noisy_accuracy equals :func:`evaluate`'s for that condition and table.
    """
    dev = _device(model, device)
    scenario, noise, severity = noisy
    level = (table or SeverityTable.apriori()).level(scenario, noise, severity)
    clean_gen = torch.Generator(device=dev).manual_seed(seed)
    noisy_gen = torch.Generator(device=dev).manual_seed(seed)
    was_training = model.training
    model.eval()
    n, correct, correct_noisy, sse, ops = 0, 0, 0, 0.0, 0.0
    layer_spikes = torch.zeros(len(model.neurons), dtype=torch.float64)
    layer_norms = torch.zeros(len(model.neurons), dtype=torch.float64)
    cf_clean: list[torch.Tensor] = []
    cf_noisy: list[torch.Tensor] = []
    try:
        for x, y in tqdm(image_batches(images, labels, batch_size, dev), total=math.ceil(len(labels) / batch_size),
                         desc="clean measurements", leave=False, disable=not progress):
            prediction, record = model(poisson_spikes(x, clean_gen, num_steps), record=True)
            sse += sse_loss(prediction, y, model.num_classes).sum(dtype=torch.float64).item()
            correct += int((prediction.argmax(1) == y).sum().item())
            layer_spikes += torch.stack([c.sum(dtype=torch.float64) for c in record.spike_counts]).cpu()
            layer_norms += torch.stack([c.sum(dtype=torch.float64) for c in record.current_norms]).cpu()
            ops += synaptic_ops(record, model).sum().item()
            cf_clean.append(target_neuron_critical_frequency(record, y, fraction).cpu())
            prediction, record = model(noisy_spikes(x, scenario, noise, generator=noisy_gen, num_steps=num_steps,
                                                           level=level), record=True)
            correct_noisy += int((prediction.argmax(1) == y).sum().item())
            cf_noisy.append(target_neuron_critical_frequency(record, y, fraction).cpu())
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("no images to measure")
    sizes = torch.tensor([math.prod(s) for s in model.hidden_shapes], dtype=torch.float64)
    per_layer = (100.0 * layer_spikes / (sizes * num_steps * n)).tolist()
    return {
        "accuracy": correct / n, "sse": sse / n,
        "spike_rate": 100.0 * layer_spikes.sum().item() / (sizes.sum().item() * num_steps * n),
        "spike_rate_per_layer": per_layer, "synaptic_ops": ops / n,
        "enwsi": (layer_norms / (num_steps * n)).tolist(),
        "critical_frequency": torch.cat(cf_clean).tolist(),
        "critical_frequency_noisy": torch.cat(cf_noisy).tolist(), "noisy_accuracy": correct_noisy / n,
        "noisy": {"scenario": int(scenario), "noise": noise, "severity": int(severity)}, "noisy_level": level,
        "n": n, "num_steps": int(num_steps), "seed": int(seed), "fraction": float(fraction),
    }


# ----------------------------------------------------------------------------------------------
# the overlap rule of the first ledger (superseded by leaklib.stats)


def _tau_name(tau: float) -> str:
    return "IF" if math.isinf(tau) else f"tau_m={tau:g}"


def verdict(values_by_tau: Mapping[float, Sequence[float]],
            expect: Literal["increasing_with_leak", "decreasing_with_leak", "lif_above_if", "lif_below_if", "similar"],
            tolerance: float | None = None) -> tuple[str, str]:
    """Decide a claim of Sec. 4 from per-seed values: ``("reproduced" | "not reproduced" | "inconclusive", reason)``.

    Rule. Leak grows as tau_m decreases (inf -> 100 -> 30). Per tau_m take mean m and sample std s
    (ddof=1) over seeds (NaNs dropped); fewer than two seeds for any tau_m -> inconclusive. The
    compared pairs are neighbours in leak order (``*_with_leak``) or IF against each finite tau_m
    (``lif_*_if``). A pair is *separated* when the spreads [m - s, m + s] do not overlap. Any
    separated pair in the wrong direction -> not reproduced; else all pairs separated in the claimed
    direction -> reproduced; else inconclusive. ``similar`` (needs ``tolerance``): all means within
    ``tolerance`` of each other -> reproduced; a separated pair further apart than ``tolerance`` ->
    not reproduced; else inconclusive.
    """
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {', '.join(EXPECTATIONS)}, got {expect!r}")
    if expect == "similar" and (tolerance is None or not tolerance >= 0):
        raise ValueError("expect='similar' needs a tolerance >= 0")
    by_tau = {float(t): v for t, v in values_by_tau.items()}  # also accepts "inf", "30"
    taus = sorted(by_tau, reverse=True)  # inf first: increasing leak
    if len(taus) < 2:
        return "inconclusive", f"only {len(taus)} tau_m value(s); a trend needs at least two"
    stats: dict[float, tuple[float, float, int]] = {}
    for tau in taus:
        values = np.asarray([v for v in by_tau[tau] if v is not None], dtype=float)
        values = values[np.isfinite(values)]
        if len(values) < 2:
            return "inconclusive", f"{_tau_name(tau)} has {len(values)} finite seed value(s); a spread needs two"
        stats[tau] = (float(values.mean()), float(values.std(ddof=1)), len(values))
    summary = ", ".join(f"{_tau_name(t)} {m:.4g}±{s:.2g} (n={k})" for t, (m, s, k) in stats.items())

    def separated(a: float, b: float) -> bool:
        (ma, sa, _), (mb, sb, _) = stats[a], stats[b]
        return ma + sa < mb - sb or mb + sb < ma - sa

    if expect == "similar":
        means = [m for m, _, _ in stats.values()]
        spread = max(means) - min(means)
        if spread <= tolerance:
            return "reproduced", f"means within {spread:.3g} <= tolerance {tolerance:g}: {summary}"
        apart = [(a, b) for i, a in enumerate(taus) for b in taus[i + 1:]
                 if separated(a, b) and abs(stats[a][0] - stats[b][0]) > tolerance]
        if apart:
            a, b = apart[0]
            return "not reproduced", (f"{_tau_name(a)} and {_tau_name(b)} differ by more than {tolerance:g} "
                                      f"beyond the seed spread: {summary}")
        return "inconclusive", f"means differ by {spread:.3g} > {tolerance:g} but within the seed spread: {summary}"

    if expect.endswith("_with_leak"):
        pairs = list(zip(taus[:-1], taus[1:]))
        sign = 1.0 if expect == "increasing_with_leak" else -1.0
    else:
        if not math.isinf(taus[0]) or len(taus) < 2:
            return "inconclusive", "no IF (tau_m = inf) values to compare against"
        pairs = [(taus[0], t) for t in taus[1:]]
        sign = 1.0 if expect == "lif_above_if" else -1.0
    wrong, unresolved = [], []
    for less, more in pairs:
        diff = sign * (stats[more][0] - stats[less][0])
        if not separated(less, more):
            unresolved.append(f"{_tau_name(less)} vs {_tau_name(more)}")
        elif diff < 0:
            wrong.append(f"{_tau_name(less)} vs {_tau_name(more)}")
    if wrong:
        return "not reproduced", f"opposite direction beyond the seed spread ({'; '.join(wrong)}): {summary}"
    if unresolved:
        return "inconclusive", f"seed spreads overlap ({'; '.join(unresolved)}): {summary}"
    return "reproduced", f"every pair separated in the claimed direction: {summary}"



def values_by_tau(table: pd.DataFrame, value: str, **where: Any) -> dict[float, list[float]]:
    """``{tau_m: [value per row]}`` over the rows whose columns equal ``where`` (the input of :func:`verdict`)."""
    if value not in table.columns or "tau_m" not in table.columns:
        raise KeyError(f"table needs columns tau_m and {value!r}")
    mask = pd.Series(True, index=table.index)
    for column, wanted in where.items():
        if column not in table.columns:
            raise KeyError(f"no column {column!r} to filter on")
        mask &= table[column] == wanted
    rows = table[mask]
    if rows.empty:
        raise ValueError(f"no rows match {where}")
    return {float(tau): [float(v) for v in part[value]] for tau, part in rows.groupby("tau_m", sort=False)}





def paired_verdict(before: Mapping[float, Sequence[float]], after: Mapping[float, Sequence[float]],
                   expect: Literal["increase", "decrease"]) -> tuple[str, str]:
    """Decide "a condition change raises/lowers the value for every tau_m" from paired per-seed values.

    Rule (the paired analogue of :func:`verdict`): per tau_m the differences ``after - before`` of
    the same runs (seeds in the same order; pairs with a NaN dropped) have mean m and sample std s.
    A tau_m is *separated* when |m| > s. Fewer than two pairs for any tau_m -> inconclusive; any
    separated tau_m in the wrong direction -> not reproduced; all separated in the expected
    direction -> reproduced; else inconclusive.
    """
    if expect not in ("increase", "decrease"):
        raise ValueError(f"expect must be 'increase' or 'decrease', got {expect!r}")
    b = {float(t): v for t, v in before.items()}
    a = {float(t): v for t, v in after.items()}
    if set(a) != set(b) or not a:
        raise ValueError(f"before and after must have the same tau_m values, got {sorted(b)} and {sorted(a)}")
    sign = 1.0 if expect == "increase" else -1.0
    stats, wrong, unresolved = [], [], []
    for tau in sorted(a, reverse=True):
        if len(a[tau]) != len(b[tau]):
            raise ValueError(f"{_tau_name(tau)}: {len(b[tau])} values before but {len(a[tau])} after")
        diff = np.asarray(a[tau], dtype=float) - np.asarray(b[tau], dtype=float)
        diff = diff[np.isfinite(diff)]
        if len(diff) < 2:
            return "inconclusive", f"{_tau_name(tau)} has {len(diff)} finite pair(s); a spread needs two"
        m, s = float(diff.mean()), float(diff.std(ddof=1))
        stats.append(f"{_tau_name(tau)} {m:+.3g}±{s:.2g} (n={len(diff)})")
        if abs(m) <= s:
            unresolved.append(_tau_name(tau))
        elif sign * m < 0:
            wrong.append(_tau_name(tau))
    summary = "change after - before: " + ", ".join(stats)
    if wrong:
        return "not reproduced", f"opposite direction beyond the seed spread ({', '.join(wrong)}); {summary}"
    if unresolved:
        return "inconclusive", f"change within the seed spread ({', '.join(unresolved)}); {summary}"
    return "reproduced", f"every tau_m changes in the claimed direction beyond the seed spread; {summary}"

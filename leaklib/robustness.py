"""Noise robustness (Sec. 3, 4.2, Fig. 3): accuracy under the noisy spike-inputs of Algorithm 1.

Every condition encodes with its own generator started from ``seed`` (common random numbers across
severities), so a condition's result does not depend on which other conditions were run.

Severity levels (:func:`calibrate_table`). The paper does not give its noise levels. Per dataset,
scenario and noise type, severity 8 is the smallest level (bisection on ``[0, UPPER[noise]]``) at
which the mean accuracy of the IF networks (tau_m = inf, every finished seed) falls to halfway
between their clean accuracy and chance; severities 1..8 are equally spaced up to it. Only IF
networks are evaluated, so the rule cannot favour either side of the LIF-vs-IF comparison. Halfway
to chance loses ``(clean - chance) / 2``, at least a third of the clean accuracy whenever
clean >= 3 x chance; below that (or without a finished IF network) the table falls back to the
a-priori :data:`leaklib.encoding.SEVERITY_TABLE` and its rule says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from .encoding import NOISE_TYPES, NUM_SEVERITIES, SCENARIOS, SeverityTable, check_level, image_batches, noisy_spikes
from .models import SNN

__all__ = ["evaluate", "robustness_summary", "mean_accuracy", "bisect_level", "calibrate_table",
           "CALIBRATION", "UPPER", "ITERATIONS", "CHANCE_MULTIPLE"]

#: Upper bound of the bisection per noise type: Gaussian sigma_s in [0, 8], impulse p_s in [0, 1].
UPPER: dict[str, float] = {"gaussian": 8.0, "impulse": 1.0}
#: Bisection steps: severity 8's level is found to within UPPER / 2**ITERATIONS (1/16 and 1/128).
ITERATIONS = 7
#: Calibrate only when the IF networks' clean accuracy is at least this multiple of chance.
CHANCE_MULTIPLE = 3.0
#: The calibration settings, as they enter cache keys.
CALIBRATION: dict[str, Any] = {"target": "halfway from the IF networks' clean accuracy to chance (1/classes)",
                               "upper": UPPER, "iterations": ITERATIONS, "chance_multiple": CHANCE_MULTIPLE}

_RUN_KEYS = ("dataset", "tau_m", "seed")


def _device(model: SNN, device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device



@torch.no_grad()
def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, scenario: int, noise: str,
              level: float, num_steps: int, batch_size: int, seed: int, dev: torch.device,
              step: Callable[[], None] | None = None) -> float:
    """Accuracy of one network under one noise level; the encoding generator starts from ``seed``."""
    generator = torch.Generator(device=dev).manual_seed(seed)
    correct = 0
    for x, y in image_batches(images, labels, batch_size, dev):
        prediction = model(noisy_spikes(x, scenario, noise, generator=generator, num_steps=num_steps, level=level))
        correct += int((prediction.argmax(1) == y).sum().item())
        if step is not None:
            step()
    return correct / len(labels)


@torch.no_grad()
def evaluate(model: SNN, images: torch.Tensor, labels: torch.Tensor, *, num_steps: int,
             scenarios: Sequence[int] = (1, 2), noises: Sequence[str] = ("gaussian", "impulse"),
             severities: Iterable[int] = range(0, 9), table: SeverityTable | None = None, batch_size: int = 256,
             seed: int = 0, device: str | torch.device | None = None, progress: bool = True) -> pd.DataFrame:
    """Accuracy under noisy spike-inputs (Sec. 4.2, Fig. 3): one row per scenario x noise x severity.

    Columns: scenario, noise, severity, level (sigma_s or p_s, from ``table``; default the a-priori
    table), accuracy (fraction), n. Images are raw [0, 1]; severity 0 is computed once and repeated
    for every scenario and noise. Each condition encodes with its own generator started from
    ``seed`` (deterministic, common random numbers).
    """
    dev = _device(model, device)
    table = table or SeverityTable.apriori()
    severities = sorted({int(s) for s in severities})
    for scenario in scenarios:
        for noise in noises:
            for s in severities:
                table.level(scenario, noise, s)  # validates all three
    if not scenarios or not noises or not severities:
        raise ValueError("scenarios, noises and severities must not be empty")
    conditions: list[tuple[int, str, int]] = [(scenarios[0], noises[0], 0)] if 0 in severities else []
    conditions += [(sc, noise, s) for sc in scenarios for noise in noises for s in severities if s > 0]
    batches = math.ceil(len(labels) / batch_size) if batch_size > 0 else 0
    was_training = model.training
    model.eval()
    accuracy: dict[tuple[int, str, int], float] = {}
    try:
        with tqdm(total=len(conditions) * batches, desc="noise robustness", leave=False,
                  disable=not progress) as bar:
            for scenario, noise, severity in conditions:
                accuracy[(scenario, noise, severity)] = _accuracy(
                    model, images, labels, scenario, noise, table.level(scenario, noise, severity), num_steps,
                    batch_size, seed, dev, lambda: bar.update(1))
    finally:
        model.train(was_training)
    rows = []
    for scenario in scenarios:
        for noise in noises:
            for severity in severities:
                key = conditions[0] if severity == 0 else (scenario, noise, severity)
                rows.append({"scenario": int(scenario), "noise": noise, "severity": severity,
                             "level": table.level(scenario, noise, severity), "accuracy": accuracy[key],
                             "n": len(labels)})
    return pd.DataFrame(rows, columns=["scenario", "noise", "severity", "level", "accuracy", "n"])


def robustness_summary(table: pd.DataFrame, noisy_severities: Iterable[int] = range(1, 9)) -> pd.DataFrame:
    """Fig. 3 condensed (Sec. 4.2): one row per run x scenario x noise.

    ``table``: :func:`evaluate` rows (e.g. :func:`leaklib.sweep.robustness_table`) with scenario,
    noise, severity, accuracy and key columns (whichever of dataset, tau_m, seed exist). Columns:
    ``clean`` (severity 0), ``mean_noisy`` (mean over ``noisy_severities``), ``worst_severity`` (the
    highest of them), ``at_worst`` (accuracy there) and ``drop = clean - at_worst``. Every group
    must hold severity 0 and every noisy severity exactly once.
    """
    noisy = sorted({int(s) for s in noisy_severities})
    if not noisy or noisy[0] < 1:
        raise ValueError(f"noisy_severities must be non-empty and >= 1, got {noisy}")
    missing = [c for c in ("scenario", "noise", "severity", "accuracy") if c not in table.columns]
    if missing:
        raise KeyError(f"robustness table lacks {', '.join(missing)}")
    keys = [c for c in _RUN_KEYS if c in table.columns] + ["scenario", "noise"]
    rows = []
    for key, group in table.groupby(keys, sort=False):
        by_severity = group.set_index("severity")["accuracy"]
        if by_severity.index.duplicated().any():
            raise ValueError(f"duplicate severities in group {key}")
        absent = [s for s in [0] + noisy if s not in by_severity.index]
        if absent:
            raise ValueError(f"group {key} lacks severities {absent}")
        clean, worst = float(by_severity[0]), float(by_severity[noisy[-1]])
        rows.append({**dict(zip(keys, key)), "clean": clean,
                     "mean_noisy": float(by_severity[noisy].mean()), "worst_severity": noisy[-1],
                     "at_worst": worst, "drop": clean - worst})
    return pd.DataFrame(rows, columns=keys + ["clean", "mean_noisy", "worst_severity", "at_worst", "drop"])


# ----------------------------------------------------------------------------------------------
# severity levels calibrated on the IF networks


def mean_accuracy(models: Sequence[torch.nn.Module], images: torch.Tensor, labels: torch.Tensor, scenario: int,
                  noise: str, level: float, *, num_steps: int, batch_size: int = 256, seed: int = 0,
                  device: str | torch.device | None = None) -> list[float]:
    """Accuracy of each network under noise ``level`` (each encoding from ``seed``, as :func:`evaluate`)."""
    level = check_level(noise, level)
    out = []
    for model in models:
        dev = torch.device(device) if device is not None else _device(model, None)
        was_training = model.training
        model.eval()
        try:
            out.append(_accuracy(model, images, labels, scenario, noise, level, num_steps, batch_size, seed, dev))
        finally:
            model.train(was_training)
    return out


def bisect_level(accuracy: Callable[[float], float], target: float, upper: float,
                 iterations: int = ITERATIONS) -> dict[str, Any]:
    """Smallest level in ``(0, upper]`` at which ``accuracy(level) <= target``, by bisection.

    ``accuracy`` is taken as non-increasing with ``accuracy(0) > target``. After ``iterations`` halvings
    the answer ``level`` is the lowest probed level whose accuracy reached the target, so
    ``accuracy(level) <= target`` holds for the returned value itself; it is within ``upper / 2**iterations``
    of the crossing. If no probe reaches the target, ``upper`` is probed: ``reached`` False when even
    it stays above. Returns level, accuracy (at level), reached, and trace ([level, accuracy] per probe).
    """
    if not (upper > 0 and math.isfinite(upper)):
        raise ValueError(f"upper must be a positive finite number, got {upper!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations!r}")
    low, high, at_high = 0.0, float(upper), None
    trace: list[list[float]] = []
    for _ in range(int(iterations)):
        mid = (low + high) / 2
        value = float(accuracy(mid))
        trace.append([mid, value])
        if value <= target:
            high, at_high = mid, value
        else:
            low = mid
    if at_high is None:
        at_high = float(accuracy(high))
        trace.append([high, at_high])
    return {"level": high, "accuracy": at_high, "reached": at_high <= target, "trace": trace}


def calibrate_table(networks: Iterable[tuple[float, torch.nn.Module]], images: torch.Tensor, labels: torch.Tensor,
                    *, num_steps: int, num_classes: int, batch_size: int = 256, seed: int = 0,
                    device: str | torch.device | None = None, upper: Mapping[str, float] = UPPER,
                    iterations: int = ITERATIONS, chance_multiple: float = CHANCE_MULTIPLE,
                    scenarios: Sequence[int] = SCENARIOS, noises: Sequence[str] = NOISE_TYPES,
                    progress: bool = True) -> SeverityTable:
    """The severity table of one dataset, calibrated on its IF networks (rule: module docstring).

    ``networks``: ``(tau_m, network)`` pairs of the sweep; only those with tau_m = inf are ever
    called (the LIF networks cannot influence the table). Per scenario and noise type, severity 8
    is :func:`bisect_level`'s level for the IF networks' mean accuracy and the target halfway from
    their clean accuracy (level 0, the same images and encoding seed) to chance ``1/num_classes``;
    severity s is ``s/8`` of it. Fallback to the a-priori table (stated in every rule) when no IF
    network is given or their clean accuracy is below ``chance_multiple`` x chance. ``info`` holds
    per condition: clean, chance, target, accuracy at severity 8, reached, n_networks, n_images, trace.
    """
    models = [model for tau, model in networks if math.isinf(float(tau))]
    if not models:
        return SeverityTable.apriori("no IF network (tau_m = inf) to calibrate on")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    chance = 1.0 / num_classes
    options = dict(num_steps=num_steps, batch_size=batch_size, seed=seed, device=device)
    clean = sum(mean_accuracy(models, images, labels, 1, "gaussian", 0.0, **options)) / len(models)
    if clean < chance_multiple * chance - 1e-9:  # (tolerance: 0.3 < 3 * 0.1 in floating point)
        return SeverityTable.apriori(f"calibration impossible: the IF networks' mean clean accuracy "
                                     f"{100 * clean:.1f}% is below {chance_multiple:g} x chance "
                                     f"({100 * chance_multiple * chance:.0f}%)")
    target = (clean + chance) / 2
    levels, rules, info = {}, {}, {}
    with tqdm(total=len(scenarios) * len(noises), desc="calibrating severities", leave=False,
              disable=not progress) as bar:
        for scenario in SCENARIOS:
            for noise in NOISE_TYPES:
                key = f"{scenario}/{noise}"
                if scenario not in scenarios or noise not in noises:
                    continue

                def accuracy(level: float, scenario: int = scenario, noise: str = noise) -> float:
                    return sum(mean_accuracy(models, images, labels, scenario, noise, level, **options)) / len(models)

                found = bisect_level(accuracy, target, float(upper[noise]), iterations)
                top = found["level"]
                levels[key] = tuple(top * s / NUM_SEVERITIES for s in range(1, NUM_SEVERITIES + 1))
                symbol = "sigma_s" if noise == "gaussian" else "p_s"
                if found["reached"]:
                    rules[key] = (f"calibrated: severity 8 = smallest {symbol} in [0, {upper[noise]:g}] (bisection, "
                                  f"{iterations} steps) at which the IF networks' mean accuracy falls halfway to "
                                  f"chance; severities 1-8 equally spaced")
                else:
                    rules[key] = (f"calibrated, bound reached: the IF networks' mean accuracy stays above halfway to "
                                  f"chance up to {symbol} = {upper[noise]:g}; severity 8 = that bound, 1-8 equally "
                                  f"spaced")
                info[key] = {"clean": clean, "chance": chance, "target": target, "at_severity_8": found["accuracy"],
                             "reached": found["reached"], "n_networks": len(models), "n_images": len(labels),
                             "upper": float(upper[noise]), "iterations": int(iterations), "trace": found["trace"]}
                bar.update(1)
    if set(levels) != {f"{sc}/{n}" for sc in SCENARIOS for n in NOISE_TYPES}:  # conditions not asked for
        fallback = SeverityTable.apriori("not calibrated (condition not requested)")
        for key in fallback.levels:
            levels.setdefault(key, fallback.levels[key])
            rules.setdefault(key, fallback.rules[key])
    return SeverityTable(levels, rules, info)

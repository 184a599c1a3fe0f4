"""Noise robustness (Sec. 3, 4.2, Fig. 3): accuracy under the noisy spike-inputs of Algorithm 1.

Every condition encodes with its own generator started from ``seed`` (common random numbers across
severities), so a condition's result does not depend on which other conditions were run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from .encoding import image_batches, noise_level, noisy_spikes
from .models import SNN

__all__ = ["evaluate", "robustness_summary"]

_RUN_KEYS = ("dataset", "tau_m", "seed")


def _device(model: SNN, device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device



@torch.no_grad()
def evaluate(model: SNN, images: torch.Tensor, labels: torch.Tensor, *, num_steps: int,
             scenarios: Sequence[int] = (1, 2), noises: Sequence[str] = ("gaussian", "impulse"),
             severities: Iterable[int] = range(0, 9), batch_size: int = 256, seed: int = 0,
             device: str | torch.device | None = None, progress: bool = True) -> pd.DataFrame:
    """Accuracy under noisy spike-inputs (Sec. 4.2, Fig. 3): one row per scenario x noise x severity.

    Columns: scenario, noise, severity, level (sigma_s or p_s), accuracy (fraction), n. Images are raw
    [0, 1]; severity 0 is computed once and repeated for every scenario and noise. Each condition
    encodes with its own generator started from ``seed`` (deterministic, common random numbers).
    """
    dev = _device(model, device)
    severities = sorted({int(s) for s in severities})
    for noise in noises:
        for s in severities:
            noise_level(noise, s)  # validates both
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
                generator = torch.Generator(device=dev).manual_seed(seed)
                correct = 0
                for x, y in image_batches(images, labels, batch_size, dev):
                    prediction = model(noisy_spikes(x, scenario, noise, severity, generator, num_steps))
                    correct += int((prediction.argmax(1) == y).sum().item())
                    bar.update(1)
                accuracy[(scenario, noise, severity)] = correct / len(labels)
    finally:
        model.train(was_training)
    rows = []
    for scenario in scenarios:
        for noise in noises:
            for severity in severities:
                key = conditions[0] if severity == 0 else (scenario, noise, severity)
                rows.append({"scenario": int(scenario), "noise": noise, "severity": severity,
                             "level": noise_level(noise, severity), "accuracy": accuracy[key], "n": len(labels)})
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

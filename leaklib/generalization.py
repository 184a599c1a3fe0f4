"""Generalization (Sec. 4.4, Table 1 rows 2-3, Fig. 5d-e): SSE windows and test SSE at equal train SSE."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["sse_table", "test_sse_at_train_sse", "common_train_sse_range"]


_HISTORY_VALUES = ("train_sse", "test_sse", "train_acc", "test_acc")
#: Measured in eval mode after each epoch on a fixed train subset (histories written since it was added).
_OPTIONAL_VALUES = ("train_sse_eval", "train_acc_eval")


def sse_table(histories: pd.DataFrame | Iterable[Mapping[str, Any]], fraction: float = 20 / 150,
              by: Sequence[str] | None = None) -> pd.DataFrame:
    """Train/test SSE and accuracy averaged over the last ``fraction`` of epochs (Sec. 4.4, Table 1 rows 2-3).

    ``histories``: per-epoch records (e.g. :func:`leaklib.sweep.history_table`) with epoch, train_sse,
    test_sse, train_acc, test_acc and key columns ``by`` (default: whichever of dataset, tau_m, seed
    exist). The window is ``max(1, round(fraction * epochs))`` epochs (20 of 150), as ``metrics.json``.
    Returns one row per key with the four means (six where the history has the eval-mode
    ``train_sse_eval``/``train_acc_eval``), ``epochs`` and ``window``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    table = histories if isinstance(histories, pd.DataFrame) else pd.DataFrame(list(histories))
    missing = [c for c in ("epoch",) + _HISTORY_VALUES if c not in table.columns]
    if missing:
        raise KeyError(f"history records lack {', '.join(missing)}")
    keys = list(by) if by is not None else [c for c in ("dataset", "tau_m", "seed") if c in table.columns]
    values = _HISTORY_VALUES + tuple(c for c in _OPTIONAL_VALUES if c in table.columns)
    rows = []
    groups = table.groupby(keys, sort=False) if keys else [((), table)]
    for key, group in groups:
        group = group.sort_values("epoch")
        if group["epoch"].duplicated().any():
            raise ValueError(f"duplicate epochs in the history of {key}; pass the key columns as `by`")
        window = max(1, round(fraction * len(group)))
        last = group.tail(window)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), **{c: float(last[c].mean()) for c in values},
                     "epochs": len(group), "window": window})
    return pd.DataFrame(rows, columns=keys + list(values) + ["epochs", "window"])



def test_sse_at_train_sse(history: pd.DataFrame | Iterable[Mapping[str, Any]],
                          train_sse_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """One run's test SSE at given train-SSE values, read off its trajectory (Sec. 4.4, Fig. 5d-e).

    ``history``: that run's per-epoch records (epoch, train_sse, test_sse). Consecutive epochs are
    joined by straight lines in (log train SSE, log test SSE), as Fig. 5d-e draws them; a value is
    the test SSE where that line crosses it. Training is not always monotone: where the trajectory
    crosses a value several times the *last* crossing counts (the state reached latest in training,
    "as training progresses towards the end"). Values outside the trajectory give NaN.
    """
    table = history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))
    missing = [c for c in ("epoch", "train_sse", "test_sse") if c not in table.columns]
    if missing:
        raise KeyError(f"history records lack {', '.join(missing)}")
    table = table.sort_values("epoch")
    if table["epoch"].duplicated().any():
        raise ValueError("duplicate epochs: pass one run's history")
    train = table["train_sse"].to_numpy(dtype=float)
    test = table["test_sse"].to_numpy(dtype=float)
    if (train <= 0).any() or (test <= 0).any() or not (np.isfinite(train).all() and np.isfinite(test).all()):
        raise ValueError("train and test SSE must be finite and positive (log axes)")
    x, y = np.log(train), np.log(test)
    targets = np.log(np.asarray(train_sse_values, dtype=float).reshape(-1))
    result = np.full(targets.shape, math.nan)
    for k, target in enumerate(targets):
        if len(x) == 1:
            if target == x[0]:
                result[k] = test[0]
            continue
        for i in range(len(x) - 2, -1, -1):  # last segment first
            lo, hi = min(x[i], x[i + 1]), max(x[i], x[i + 1])
            if lo <= target <= hi:
                w = 0.0 if hi == lo else (target - x[i]) / (x[i + 1] - x[i])
                result[k] = math.exp(y[i] + w * (y[i + 1] - y[i]))
                break
    return result


def common_train_sse_range(histories: pd.DataFrame, by: Sequence[str] | None = None) -> tuple[float, float]:
    """The train-SSE interval every run's trajectory covers: (largest per-run minimum, smallest per-run maximum).

    ``histories``: per-epoch records of several runs (e.g. :func:`leaklib.sweep.history_table`), keyed
    by ``by`` (default: whichever of dataset, tau_m, seed exist). Raises if the runs share no interval.
    """
    if "train_sse" not in histories.columns:
        raise KeyError("history records lack train_sse")
    keys = list(by) if by is not None else [c for c in ("dataset", "tau_m", "seed") if c in histories.columns]
    grouped = histories.groupby(keys, sort=False)["train_sse"] if keys else None
    low = float(grouped.min().max()) if keys else float(histories["train_sse"].min())
    high = float(grouped.max().min()) if keys else float(histories["train_sse"].max())
    if not low <= high:
        raise ValueError(f"the runs' train-SSE ranges do not overlap (largest minimum {low:.4g} > "
                         f"smallest maximum {high:.4g})")
    return low, high

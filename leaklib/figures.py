"""One function per paper figure of Sec. 4 (Fig. 3-6), drawn from tidy tables; each returns a Figure.

Colours and labels come from :mod:`leaklib.plotting` (IF green, tau_m = 100 red, tau_m = 30 blue);
the chapters save the figures with :func:`leaklib.plotting.save_figure`. Tables may hold several
seeds: lines show the mean over seeds and error bars the sample standard deviation (none for one
seed). Accuracies are fractions in [0, 1] in the tables and percent on the axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .plotting import plt, tau_color, tau_label

__all__ = ["fig3_robustness", "fig4_spectrum", "fig5_critical_frequency", "fig5_sse", "fig6_enwsi",
           "fig_learning_curves"]

_DATASET_NAMES = {"cifar10": "CIFAR-10", "svhn": "SVHN", "digits": "digits"}
_NOISE_NAMES = {"gaussian": "Gaussian", "impulse": "impulse"}
_PANEL = "abcdefghijklmnopqrstuvwxyz"


def _require(table: pd.DataFrame, columns: Sequence[str], figure: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{figure} needs a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{figure}: table lacks column(s) {', '.join(missing)} "
                         f"(has {', '.join(map(str, table.columns))})")
    if table.empty:
        raise ValueError(f"{figure}: table is empty")


def _datasets(table: pd.DataFrame) -> list:
    return list(dict.fromkeys(table["dataset"])) if "dataset" in table.columns else [None]


def _subset(table: pd.DataFrame, dataset) -> pd.DataFrame:
    return table if dataset is None else table[table["dataset"] == dataset]


def _taus(table: pd.DataFrame) -> list[float]:
    return sorted({float(t) for t in table["tau_m"]}, reverse=True)  # IF first, then more leak


def _name(dataset) -> str:
    return "" if dataset is None else _DATASET_NAMES.get(dataset, str(dataset))


def _mean_std(table: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean and sample std over seeds (rows sharing ``by``), NaN std for a single row."""
    return table.groupby(by, sort=True)[value].agg(["mean", "std"]).reset_index()


def _level_text(level: float) -> str:
    return "0" if level == 0 else f"{level:.2g}"


def fig3_robustness(table: pd.DataFrame) -> Figure:
    """Fig. 3: accuracy vs noise severity; rows = scenario, columns = dataset x noise; one line per tau_m.

    Columns: tau_m, scenario, noise, severity, accuracy (fraction); optional dataset, seed, level.
    The x axis shows every severity of the table; with a ``level`` column each panel also labels its
    noise levels (sigma_s or p_s) on a top axis, and a panel whose severity has several levels raises.
    """
    _require(table, ["tau_m", "scenario", "noise", "severity", "accuracy"], "fig3_robustness")
    if ((table["accuracy"] < 0) | (table["accuracy"] > 1)).any():
        raise ValueError("fig3_robustness: accuracy must be a fraction in [0, 1]")
    datasets, scenarios = _datasets(table), sorted(set(table["scenario"]))
    noises = list(dict.fromkeys(table["noise"]))
    columns = [(d, n) for d in datasets for n in noises]
    severities = sorted({int(s) for s in table["severity"]})
    has_levels = "level" in table.columns
    fig, axes = plt.subplots(len(scenarios), len(columns),
                             figsize=(3.2 * len(columns), (3.2 if has_levels else 2.8) * len(scenarios)),
                             squeeze=False, sharey=True)
    for i, scenario in enumerate(scenarios):
        for j, (dataset, noise) in enumerate(columns):
            ax = axes[i, j]
            part = _subset(table, dataset)
            part = part[(part["scenario"] == scenario) & (part["noise"] == noise)]
            for tau in _taus(part):
                stats = _mean_std(part[part["tau_m"] == tau], ["severity"], "accuracy")
                ax.errorbar(stats["severity"], 100 * stats["mean"], yerr=100 * stats["std"].fillna(0.0),
                            color=tau_color(tau), label=tau_label(tau), marker="o", markersize=3, capsize=2)
            letter = _PANEL[(i * len(columns) + j) % len(_PANEL)]
            title = ", ".join(x for x in (_name(dataset), _NOISE_NAMES.get(noise, noise)) if x)
            ax.set_title(f"({letter}) {title}, scenario {scenario}", fontsize=9)
            ax.set_xticks(severities)
            ax.set_xlim(severities[0] - 0.4, severities[-1] + 0.4)
            ax.set_xlabel("noise severity")
            if has_levels and not part.empty:
                levels = part.groupby("severity")["level"].agg(lambda v: sorted(set(np.round(v.astype(float), 12))))
                mixed = [int(s) for s, v in levels.items() if len(v) > 1]
                if mixed:
                    raise ValueError(f"fig3_robustness: panel {title}, scenario {scenario} has several levels at "
                                     f"severity {mixed[0]}; draw one severity table per figure")
                top = ax.secondary_xaxis("top")
                top.set_xticks([int(s) for s in levels.index], [_level_text(v[0]) for v in levels], fontsize=6)
                symbol = r"$\sigma_s$" if noise == "gaussian" else r"$p_s$" if noise == "impulse" else "level"
                ax.annotate(symbol, xy=(0, 1), xycoords="axes fraction", xytext=(-3, 2), textcoords="offset points",
                            ha="right", va="bottom", fontsize=7)
            if j == 0:
                ax.set_ylabel("accuracy (%)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def fig4_spectrum(table: pd.DataFrame) -> Figure:
    """Fig. 4: input spike-train spectra per condition as a distribution over normalised frequency, with fits.

    Columns: condition (e.g. clean, noisy), frequency, power; optional dataset, image (per-image
    spectra, e.g. :func:`leaklib.analysis.spectrum_frame`). Each image's spectrum (DC excluded) is
    scaled to unit area; bars show the mean over images, the curve its Gaussian-kernel smoothing
    (reflected at 0 and 1), the legend its power-weighted mean frequency and spread.
    """
    _require(table, ["condition", "frequency", "power"], "fig4_spectrum")
    datasets = _datasets(table)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.2), squeeze=False)
    conditions = list(dict.fromkeys(table["condition"]))
    colors = dict(zip(conditions, ["0.3", "tab:orange", "tab:purple", "tab:brown", "tab:olive"] * 3))
    for ax, dataset in zip(axes[0], datasets):
        part = _subset(table, dataset)
        part = part[part["frequency"] > 0]
        for condition in conditions:
            rows = part[part["condition"] == condition]
            if rows.empty:
                continue
            index = [c for c in ("seed", "image") if c in rows.columns] or None
            if index is None:
                rows, index = rows.assign(image=0), ["image"]
            per_image = rows.pivot_table(index=index, columns="frequency", values="power", aggfunc="mean")
            freqs = per_image.columns.to_numpy(dtype=float)
            step = float(np.min(np.diff(freqs))) if len(freqs) > 1 else 1.0
            lower, upper = freqs - step / 2, np.minimum(freqs + step / 2, 1.0)  # the Nyquist bin is half as wide
            power = per_image.to_numpy(dtype=float)
            total = power.sum(1, keepdims=True)
            mass = np.nanmean(np.where(total > 0, power / np.where(total > 0, total, 1.0), np.nan), axis=0)
            mean = float(np.sum(mass * freqs))
            std = float(np.sqrt(max(np.sum(mass * (freqs - mean) ** 2), 0.0)))
            color = colors[condition]
            ax.bar(lower, mass / (upper - lower), width=upper - lower, align="edge", alpha=0.35, color=color,
                   label=f"{condition} (mean {mean:.3f}, sd {std:.3f})")
            ax.plot(*_smooth_density((lower + upper) / 2, mass, lower[0], upper[-1], 2 * step), color=color)
        ax.set_xlabel("normalised frequency (1 = Nyquist)")
        ax.set_ylabel("power density")
        ax.set_xlim(0, 1)
        ax.set_title(_name(dataset) or "input spike trains", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)  # flat spectra: keep bars visible
    fig.tight_layout()
    return fig


__all__ += ["fig4_readings"]

_READING_TITLES = {"pixel": "each pixel's train over time", "flattened": "whole input, flattened (step-major)",
                   "spatial": "spatial 2-D spectrum per step (rings)", "population": "spike count per step",
                   "values": "values of the spectrum (Re, Im of the flattened DFT)"}
_READING_UNITS = {"values": ("mean of the values", "spread (sd) of the values", "value (Re, Im of X_k / sqrt N)"),
                  "spatial": ("mean radial frequency", "spread of radial frequency (sd)",
                              "radial frequency (1 = Nyquist per axis)")}
_CONDITION_COLOURS = ["0.25", "tab:orange", "tab:purple", "tab:brown", "tab:olive"]


def _normal_curve(ax, values: np.ndarray, edges: np.ndarray, color, linestyle: str) -> None:
    """A normal distribution fitted to ``values`` (mean, sd), scaled to the counts of a histogram on ``edges``."""
    if len(values) < 2 or not np.std(values) > 0:
        return
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    grid = np.linspace(edges[0], edges[-1], 200)
    width = float(np.mean(np.diff(edges)))
    density = np.exp(-0.5 * ((grid - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    ax.plot(grid, density * len(values) * width, color=color, linestyle=linestyle, linewidth=1.2)


def fig4_readings(summary: pd.DataFrame, distributions: pd.DataFrame | None = None) -> Figure:
    """Fig. 4 under each reading of the text: one row per reading, clean against noisy conditions.

    ``summary``: reading, condition, image, mean, spread (:attr:`leaklib.spectra.SpectrumReadings.summary`,
    one dataset). Columns of panels: (optional) the distribution each condition's images share
    (``distributions``: reading, condition, low, high, mass -- drawn as a density over its bins);
    then histograms over images of the per-image mean and of the spread, each with a fitted normal
    curve (the paper's "distribution curves") and its mean and sd in the legend.
    """
    _require(summary, ["reading", "condition", "image", "mean", "spread"], "fig4_readings")
    if "dataset" in summary.columns and summary["dataset"].nunique() > 1:
        raise ValueError("fig4_readings draws one dataset; pass one dataset's rows")
    if distributions is not None:
        _require(distributions, ["reading", "condition", "low", "high", "mass"], "fig4_readings")
    readings = list(dict.fromkeys(summary["reading"]))
    conditions = list(dict.fromkeys(summary["condition"]))
    colours = dict(zip(conditions, _CONDITION_COLOURS * 3))
    styles = dict(zip(conditions, ["-", "--", ":", "-."] * 3))
    first = 0 if distributions is None else 1
    columns = first + 2
    fig, axes = plt.subplots(len(readings), columns, figsize=(3.6 * columns, 2.5 * len(readings) + 0.6),
                             squeeze=False)
    for i, reading in enumerate(readings):
        part = summary[summary["reading"] == reading]
        mean_label, spread_label, value_label = _READING_UNITS.get(
            reading, ("mean frequency (1 = Nyquist)", "spread of frequency (sd)", "normalised frequency (1 = Nyquist)"))
        if distributions is not None:
            ax = axes[i, 0]
            dist = distributions[distributions["reading"] == reading]
            for condition in conditions:
                rows = dist[dist["condition"] == condition]
                if rows.empty:
                    continue
                edges = np.append(rows["low"].to_numpy(float), rows["high"].to_numpy(float)[-1])
                density = rows["mass"].to_numpy(float) / (rows["high"].to_numpy(float) - rows["low"].to_numpy(float))
                ax.stairs(density, edges, color=colours[condition], linestyle=styles[condition],
                          fill=condition == conditions[0], alpha=0.35 if condition == conditions[0] else 1.0,
                          label=condition)
            ax.set_xlabel(value_label, fontsize=8)
            ax.set_ylabel("density" if reading == "values" else "power density (unit area)", fontsize=8)
            ax.set_title(f"({_PANEL[(i * columns) % len(_PANEL)]}) {_READING_TITLES.get(reading, reading)}",
                         fontsize=9)
            ax.legend(fontsize=6)
        for j, (column, label) in enumerate((("mean", mean_label), ("spread", spread_label))):
            ax = axes[i, first + j]
            finite = part[column].to_numpy(float)
            finite = finite[np.isfinite(finite)]
            if finite.size == 0:
                ax.set_visible(False)
                continue
            low, high = float(finite.min()), float(finite.max())
            pad = (high - low) * 0.05 or max(abs(high) * 0.05, 1e-3)
            edges = np.linspace(low - pad, high + pad, 31)
            for condition in conditions:
                values = part.loc[part["condition"] == condition, column].to_numpy(float)
                values = values[np.isfinite(values)]
                if values.size == 0:
                    continue
                sd = float(np.std(values, ddof=1)) if values.size > 1 else math.nan
                ax.hist(values, bins=edges, color=colours[condition], alpha=0.35, histtype="stepfilled",
                        label=f"{condition}: {values.mean():.3f} ± {sd:.3f}")
                _normal_curve(ax, values, edges, colours[condition], styles[condition])
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("images", fontsize=8)
            title = f"({_PANEL[(i * columns + first + j) % len(_PANEL)]}) per-image {column}"
            if distributions is None and j == 0:
                title += f": {_READING_TITLES.get(reading, reading)}"
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _smooth_density(centres: np.ndarray, mass: np.ndarray, low: float, high: float,
                    bandwidth: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-kernel density of point masses at ``centres``, reflected at ``low`` and ``high`` (Fig. 4 curve)."""
    grid = np.linspace(low, high, 201)
    mass = np.nan_to_num(mass)
    points = np.concatenate([centres, 2 * low - centres, 2 * high - centres])
    weights = np.concatenate([mass, mass, mass])
    kernel = np.exp(-0.5 * ((grid[:, None] - points[None, :]) / bandwidth) ** 2) / (bandwidth * math.sqrt(2 * math.pi))
    return grid, kernel @ weights


def _frequency_bins(values: np.ndarray) -> np.ndarray | int:
    """Bin edges centred on the discrete grid of critical frequencies (multiples of 2/T), else 25 bins."""
    grid = np.unique(values)
    steps = np.diff(grid)
    if len(grid) < 2 or steps.min() <= 0:
        return 25
    step = steps.min()
    count = int(round((grid[-1] - grid[0]) / step)) + 1
    if count > 200 or not np.allclose((grid - grid[0]) / step, np.round((grid - grid[0]) / step), atol=1e-6):
        return 25
    return grid[0] - step / 2 + step * np.arange(count + 1)


def fig5_critical_frequency(table: pd.DataFrame) -> Figure:
    """Fig. 5a-c: histograms of the target neuron's critical frequency per tau_m, clean vs noisy, means marked.

    Columns: tau_m, condition (e.g. clean, noisy), critical_frequency (one row per image and seed);
    optional dataset (one row of panels each). NaN values (constant currents) are left out and counted.
    """
    _require(table, ["tau_m", "condition", "critical_frequency"], "fig5_critical_frequency")
    datasets, taus = _datasets(table), _taus(table)
    conditions = list(dict.fromkeys(table["condition"]))
    styles = dict(zip(conditions, ["-", "--", ":", "-."] * 3))
    fig, axes = plt.subplots(len(datasets), len(taus), figsize=(3.3 * len(taus), 2.9 * len(datasets)),
                             squeeze=False, sharex=True)
    finite_all = table["critical_frequency"].to_numpy(dtype=float)
    bins = _frequency_bins(finite_all[np.isfinite(finite_all)])
    for i, dataset in enumerate(datasets):
        for j, tau in enumerate(taus):
            ax = axes[i, j]
            part = _subset(table, dataset)
            part = part[part["tau_m"] == tau]
            for k, condition in enumerate(conditions):
                values = part.loc[part["condition"] == condition, "critical_frequency"].to_numpy(dtype=float)
                finite = values[np.isfinite(values)]
                dropped = len(values) - len(finite)
                note = f", {dropped} NaN left out" if dropped else ""
                mean = float(finite.mean()) if len(finite) else math.nan
                ax.hist(finite, bins=bins, alpha=0.45 if k else 0.6, color=tau_color(tau) if k == 0 else "0.5",
                        label=f"{condition}: mean {mean:.3f}{note}")
                ax.axvline(mean, color=tau_color(tau) if k == 0 else "0.3", linestyle=styles[condition])
            letter = _PANEL[(i * len(taus) + j) % len(_PANEL)]
            title = f"({letter}) {tau_label(tau)}"
            ax.set_title(title + (f", {_name(dataset)}" if dataset is not None else ""), fontsize=9)
            ax.set_xlabel("critical frequency (1 = Nyquist)")
            if j == 0:
                ax.set_ylabel("images")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig5_sse(table: pd.DataFrame) -> Figure:
    """Fig. 5d-e: test SSE against train SSE over training (log axes), one line per tau_m, per dataset.

    Columns: tau_m, epoch, train_sse, test_sse; optional dataset, seed (averaged per epoch). The last
    epoch is marked.
    """
    _require(table, ["tau_m", "epoch", "train_sse", "test_sse"], "fig5_sse")
    datasets = _datasets(table)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.4), squeeze=False)
    for j, (ax, dataset) in enumerate(zip(axes[0], datasets)):
        part = _subset(table, dataset)
        for tau in _taus(part):
            curve = part[part["tau_m"] == tau].groupby("epoch", sort=True)[["train_sse", "test_sse"]].mean()
            ax.plot(curve["train_sse"], curve["test_sse"], color=tau_color(tau), label=tau_label(tau),
                    marker="o", markersize=4, markevery=[len(curve) - 1])
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # labels at 1-2-5 steps: readable on narrow and wide log ranges
            axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("train SSE")
        ax.set_ylabel("test SSE")
        ax.set_title(f"({_PANEL[3 + j] if j < 23 else '?'}) {_name(dataset)}".rstrip(), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _layer_bars(table: pd.DataFrame, value: str, ylabel: str, figure: str) -> Figure:
    """Grouped bars of ``value`` per hidden layer and tau_m, one panel per dataset, std over seeds as error bars."""
    _require(table, ["tau_m", "layer", value], figure)
    datasets = _datasets(table)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.2), squeeze=False)
    for j, (ax, dataset) in enumerate(zip(axes[0], datasets)):
        part = _subset(table, dataset)
        taus = _taus(part)
        layers = sorted(set(part["layer"]))
        width = 0.8 / len(taus)
        for k, tau in enumerate(taus):
            stats = _mean_std(part[part["tau_m"] == tau], ["layer"], value).set_index("layer").reindex(layers)
            x = np.arange(len(layers)) + (k - (len(taus) - 1) / 2) * width
            ax.bar(x, stats["mean"], width=width, yerr=stats["std"].fillna(0.0), color=tau_color(tau),
                   label=tau_label(tau), capsize=2)
        ax.set_xticks(np.arange(len(layers)), [str(layer) for layer in layers])
        ax.set_xlabel("hidden layer")
        ax.set_ylabel(ylabel)
        ax.set_title(f"({_PANEL[j % len(_PANEL)]}) {_name(dataset)}".rstrip(), fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig6_enwsi(table: pd.DataFrame) -> Figure:
    """Fig. 6: ENWSI per hidden layer, grouped bars per tau_m, one panel per dataset.

    Columns: tau_m, layer (1-based hidden-layer index), enwsi; optional dataset, seed (error bars).
    """
    return _layer_bars(table, "enwsi", "ENWSI", "fig6_enwsi")


def fig_learning_curves(table: pd.DataFrame) -> Figure:
    """Training (Sec. 4.1): test accuracy and train/test SSE per epoch, mean over seeds with a +-std band."""
    _require(table, ["dataset", "tau_m", "seed", "epoch", "test_acc", "train_sse", "test_sse"], "fig_learning_curves")
    datasets = _datasets(table)
    fig, axes = plt.subplots(len(datasets), 3, figsize=(12, 3.4 * len(datasets)), squeeze=False)
    panels = [("test_acc", "clean test accuracy (%)", 100.0), ("train_sse", "train SSE", 1.0),
              ("test_sse", "test SSE", 1.0)]
    for row, dataset in zip(axes, datasets):
        sub = _subset(table, dataset)
        for ax, (column, label, scale) in zip(row, panels):
            for tau in _taus(sub):
                stats = _mean_std(sub[sub["tau_m"] == tau], ["epoch"], column)
                mean, std = scale * stats["mean"].to_numpy(), scale * stats["std"].fillna(0).to_numpy()
                ax.plot(stats["epoch"], mean, color=tau_color(tau), label=tau_label(tau))
                ax.fill_between(stats["epoch"], mean - std, mean + std, color=tau_color(tau), alpha=0.2, lw=0)
                if column == "train_sse" and "train_sse_eval" in sub.columns:  # the eval-mode value, dashed
                    evals = _mean_std(sub[sub["tau_m"] == tau], ["epoch"], "train_sse_eval")
                    ax.plot(evals["epoch"], evals["mean"], color=tau_color(tau), ls="--", lw=1)
            if column == "train_sse" and "train_sse_eval" in sub.columns:
                label = "train SSE (solid: running mean; dashed: eval mode after the epoch)"
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.set_title(f"{_name(dataset)} {label}".strip())
            if column != "test_acc":
                ax.set_yscale("log")
        row[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Algorithm 1 illustrated (Sec. 3): spike-input maps of one image under each noise condition

__all__ += ["fig_spike_input_maps"]


def fig_spike_input_maps(maps, columns: int | None = None) -> Figure:
    """One image's spike-inputs summed over time, one panel per condition (Sec. 3, Algorithm 1).

    ``maps``: ``{title: 2-D array [H, W]}`` (e.g. ``noisy_spikes(...).sum(0)`` of a grey image). All
    panels share one symmetric diverging colour scale (signed spikes) and one colour bar.
    """
    if not maps:
        raise ValueError("fig_spike_input_maps needs at least one map")
    arrays = {str(k): np.asarray(v, dtype=float) for k, v in maps.items()}
    bad = [k for k, a in arrays.items() if a.ndim != 2]
    if bad:
        raise ValueError(f"fig_spike_input_maps: maps must be 2-D [H, W]; not: {', '.join(bad)}")
    columns = min(len(arrays), columns or len(arrays))
    rows = math.ceil(len(arrays) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns + 0.6, 2.2 * rows), squeeze=False)
    limit = max(float(np.nanmax(np.abs(a))) for a in arrays.values()) or 1.0
    image = None
    for ax, (title, array) in zip(axes.flat, arrays.items()):
        image = ax.imshow(array, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(arrays):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="spike-input summed over T")
    return fig


__all__ += ["fig6_spike_rates", "fig_table1"]


def fig6_spike_rates(table: pd.DataFrame) -> Figure:
    """Spikes (%) per hidden layer (Sec. 4.5, Table 1 row 4 by layer): grouped bars per tau_m, one panel per dataset.

    Columns: tau_m, layer (1-based hidden-layer index), spike_rate (%); optional dataset, seed (error bars:
    sample std over seeds).
    """
    return _layer_bars(table, "spike_rate", "spikes (% of neurons x steps)", "fig6_spike_rates")


def fig_table1(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Table 1 as an image: a matplotlib table of a text DataFrame (e.g. :func:`leaklib.claims.table1_display`).

    Two-level columns (group, tau_m) become two header rows; the group name is written above its
    first column only. Cells are drawn as given.
    """
    if not isinstance(table, pd.DataFrame) or table.empty:
        raise ValueError("fig_table1 needs a non-empty DataFrame")
    columns = list(table.columns)
    spans: list[tuple[int, int]] = []  # column ranges sharing a group name (first header row)
    if isinstance(table.columns, pd.MultiIndex):
        groups = [str(c[0]) for c in columns]
        for i, g in enumerate(groups):
            if i == 0 or g != groups[i - 1]:
                spans.append((i, i))
            else:
                spans[-1] = (spans[-1][0], i)
        top = [""] * len(columns)
        for first, last in spans:
            top[(first + last) // 2] = groups[first]  # centred over its group
        header = [top, [str(c[-1]) for c in columns]]
    else:
        header = [[str(c) for c in columns]]
    body = [[str(v) for v in row] for row in table.itertuples(index=False)]
    labels = [""] * len(header) + [str(i) for i in table.index]
    width = max(6.0, 1.25 * len(columns) + 1.6)
    fig, ax = plt.subplots(figsize=(width, 0.32 * (len(body) + len(header)) + (0.6 if title else 0.2)))
    ax.axis("off")
    drawn = ax.table(cellText=header + body, rowLabels=labels, loc="center", cellLoc="center")
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(7)
    drawn.scale(1.0, 1.3)
    for (row, col), cell in drawn.get_celld().items():
        if row < len(header):
            cell.set_text_props(weight="bold")
            cell.set_facecolor("0.92")
        if row == 0 and spans and col >= 0:  # draw each group as one merged cell
            first, last = next(span for span in spans if span[0] <= col <= span[1])
            cell.visible_edges = "T" + "B" + ("L" if col == first else "") + ("R" if col == last else "")
            cell.set_facecolor("none")  # an open cell outline cannot be filled cleanly; neighbours must not hide text
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# leak as an axis: every measure of the claims against tau_m over every trained value

__all__ += ["fig_measures_vs_tau"]


def fig_measures_vs_tau(table: pd.DataFrame, labels: dict[str, str] | None = None, columns: int = 4) -> Figure:
    """Each per-run measure against tau_m (log axis, IF at the right as 'inf'), seeds as dots, mean as a line.

    ``table``: :func:`leaklib.claims.measures_by_run` (dataset, tau_m, seed, status, measure, value).
    Diverged runs are drawn as crosses on the axis of the first panel with their count. One row of
    panels per dataset and measure group; ``labels`` names the measures (default: the measure keys).
    """
    _require(table, ["dataset", "tau_m", "seed", "status", "measure", "value"], "fig_measures_vs_tau")
    labels = labels or {}
    measures = list(dict.fromkeys(table["measure"]))
    datasets = _datasets(table)
    finite = sorted({float(t) for t in table["tau_m"] if math.isfinite(float(t))})
    if not finite:
        finite = [1.0]
    lo, hi = min(finite), max(finite)
    if_x = hi * 3.0  # IF sits one decade-ish right of the largest finite tau_m, on its own tick

    def x_of(tau: float) -> float:
        return if_x if math.isinf(tau) else tau

    rows = math.ceil(len(measures) / columns) * len(datasets)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for d_index, dataset in enumerate(datasets):
        sub = _subset(table, dataset)
        for m_index, measure in enumerate(measures):
            ax = axes.flat[d_index * math.ceil(len(measures) / columns) * columns + m_index]
            ax.set_visible(True)
            part = sub[(sub["measure"] == measure) & (sub["status"] != "diverged")].dropna(subset=["value"])
            for tau, group in part.groupby("tau_m"):
                ax.scatter(np.full(len(group), x_of(float(tau))), group["value"], s=12, color=tau_color(float(tau)),
                           alpha=0.7, zorder=3)
            means = part.groupby("tau_m")["value"].mean()
            if len(means):
                xs = [x_of(float(t)) for t in means.index]
                order = np.argsort(xs)
                ax.plot(np.asarray(xs)[order], means.to_numpy()[order], color="0.3", lw=1, zorder=2)
            if m_index == 0:
                bad = sub[sub["status"] == "diverged"].groupby("tau_m")["seed"].nunique()
                for tau, count in bad.items():
                    ax.annotate(f"{count}×diverged", (x_of(float(tau)), 0), xycoords=("data", "axes fraction"),
                                xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7, color="crimson")
                    ax.scatter([x_of(float(tau))], [0], marker="x", color="crimson", transform=ax.get_xaxis_transform(),
                               clip_on=False, zorder=4)
            ax.set_xscale("log")
            ticks = finite + [if_x]
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:g}" for t in finite] + ["inf"], fontsize=7)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlim(lo / 1.6, if_x * 1.6)
            ax.set_title(f"{_name(dataset)} {labels.get(measure, measure)}".strip(), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_xlabel(r"$\tau_m$ (more leak to the left)", fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# the backward pass of one neuron (Sec. 2.3, Eq. 5): [21]'s detached leak against the exact gradient

__all__ += ["fig_bptt_gradient"]


def fig_bptt_gradient(currents: Sequence[float], tau_m: float) -> Figure:
    """One LIF neuron driven by ``currents``: its membrane and spikes, and dL/dI[t] for L = the last spike.

    The gradient is computed by :func:`leaklib.neurons.lif_multistep` (autograd) under the exact
    gradient and under [21]'s detached leak with its correction, so the figure shows what each
    backward pass sends back through time.
    """
    import torch

    from .neurons import decay_factor, leak_correction, lif_multistep, lif_trace

    current = torch.tensor(list(currents), dtype=torch.float64).view(-1, 1)
    if current.numel() < 2:
        raise ValueError("fig_bptt_gradient needs at least two time steps")
    membrane, spikes = lif_trace(current, tau_m)
    fired = torch.nonzero(spikes.flatten()).flatten()
    if fired.numel() == 0:
        raise ValueError("the neuron never fires with these currents: nothing to differentiate")
    last = int(fired[-1])
    grads = {}
    for name, mode, correction in (("exact gradient", "exact", "none"),
                                   ("[21]: detached leak + correction", "detached", "lee2020")):
        x = current.clone().requires_grad_()
        lif_multistep(x, tau_m, leak_grad=mode, correction=correction)[last, 0].backward()
        grads[name] = x.grad.flatten().numpy()
    beta = decay_factor(tau_m)
    trace = float(sum(beta ** (len(current) - 1 - int(t)) for t in fired))
    corr = float(leak_correction(torch.tensor([trace]), torch.tensor([float(fired.numel())]), beta))
    steps = np.arange(len(current))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4.2), sharex=True)
    top.plot(steps, membrane.flatten().numpy(), color=tau_color(tau_m), lw=1)
    top.axhline(1.0, color="0.5", ls=":", lw=1)
    top.vlines(fired.numpy(), 1.0, 1.3, color="k", lw=1)
    top.set_ylabel("membrane u[t]")
    top.set_title(rf"one LIF neuron, $\tau_m={tau_m:g}$: spikes (ticks) and the gradient of its last spike", fontsize=9)
    for (name, g), style in zip(grads.items(), ("-", "--")):
        bottom.step(steps, g, where="mid", ls=style, label=name)
    bottom.set_xlabel("time step t")
    bottom.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    bottom.set_ylabel(r"$\partial O[t_{last}] / \partial I[t]$")
    bottom.legend(fontsize=8, title=f"correction factor {corr:.4f}", title_fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Fig. 1(c): the equivalent RC circuit of the LIF neuron (Sec. 2.1, Eq. 1)

__all__ += ["fig1_rc_circuit"]


def _zigzag(ax, x: float, y0: float, y1: float, teeth: int = 6, width: float = 0.12, **style) -> None:
    ys = np.linspace(y0, y1, 2 * teeth + 1)
    xs = x + width * np.array([0.0] + [(-1) ** k for k in range(2 * teeth - 1)] + [0.0])
    ax.plot(xs, ys, **style)


def _rc_panel(ax, leaky: bool, title: str) -> None:
    k = dict(color="k", lw=1.5)
    top, bottom = 2.0, 0.0
    ax.plot([0.5, 4.2], [top, top], **k)        # upper rail: the membrane node U
    ax.plot([0.5, 3.1], [bottom, bottom], **k)  # lower rail: the resting potential
    # current source I(t): a circle with an upward arrow
    ax.plot([0.5, 0.5], [bottom, 0.65], **k)
    ax.plot([0.5, 0.5], [1.35, top], **k)
    ax.add_patch(plt.Circle((0.5, 1.0), 0.35, fill=False, **k))
    ax.annotate("", xy=(0.5, 1.25), xytext=(0.5, 0.75), arrowprops=dict(arrowstyle="->", lw=1.5))
    ax.text(0.0, 1.0, "$I(t)$", ha="right", va="center", fontsize=11)
    # capacitor C
    ax.plot([1.8, 1.8], [top, 1.1], **k)
    ax.plot([1.8, 1.8], [0.9, bottom], **k)
    ax.plot([1.5, 2.1], [1.1, 1.1], **k)
    ax.plot([1.5, 2.1], [0.9, 0.9], **k)
    ax.text(2.2, 1.0, "$C$", va="center", fontsize=11)
    # resistor R (the leak), or an open circuit for IF
    ax.plot([3.1, 3.1], [top, 1.55], **k)
    ax.plot([3.1, 3.1], [0.45, bottom], **k)
    if leaky:
        _zigzag(ax, 3.1, 1.55, 0.45, **k)
        ax.text(3.3, 1.0, "$R$", va="center", fontsize=11)
    else:
        ax.plot([3.1, 3.35], [1.55, 1.25], **k)  # an open switch: no leak path
        ax.text(3.4, 1.0, r"$R\to\infty$" + "\n(open)", va="center", fontsize=9)
    # threshold: the node voltage is compared with V_th; a spike resets U to U_rest
    ax.plot([4.2, 4.6], [top, top], **k)
    ax.add_patch(plt.Polygon([[4.6, 2.35], [4.6, 1.65], [5.2, 2.0]], closed=True, fill=False, **k))
    ax.text(4.85, 2.0, r"$>V_{th}$", ha="center", va="center", fontsize=7)
    ax.annotate("", xy=(5.6, 2.0), xytext=(5.2, 2.0), arrowprops=dict(arrowstyle="->", lw=1.2))
    ax.text(5.65, 2.0, "spike,\nreset $U$", va="center", fontsize=8)
    ax.text(2.35, top + 0.15, "$U$", ha="center", fontsize=11)
    ax.text(2.35, bottom - 0.3, "$U_{rest}$", ha="center", fontsize=10)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-0.6, 6.6)
    ax.set_ylim(-0.7, 2.7)
    ax.set_aspect("equal")
    ax.axis("off")


def fig1_rc_circuit() -> Figure:
    """Fig. 1(c): the LIF neuron as a parallel RC circuit (tau_m = RC), and the IF neuron (R open, tau_m = inf)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.9))
    _rc_panel(axes[0], True, r"LIF: $\tau_m\,dU/dt = -(U - U_{rest}) + RI$, $\tau_m = RC$")
    _rc_panel(axes[1], False, r"IF: no leak path, $C\,dU/dt = I$ ($\tau_m = \infty$)")
    fig.tight_layout()
    return fig

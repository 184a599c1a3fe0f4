"""Spectra (Sec. 4.3, Fig. 4, Fig. 5a-c): input spike-train spectra and the target neuron's critical frequency.

Single-sided power spectrum of a signal of length T with its mean removed, scaled so that the
powers sum to the signal's variance; frequency normalised so that 1 = Nyquist (half the step
rate). The critical frequency is the lowest frequency bin at which the cumulative power (DC
excluded) reaches ``fraction`` of the total; a constant signal has no power and gets NaN.

Fig. 4 under the readings its text allows (:data:`READINGS`): the paper shows "the single-sided
spectra of input-spike trains (averaged over test samples)" as a "histogram of the spectrum of
spike trains per image" and says the noisy spectrum keeps "roughly the same" mean but "spreads
over a wider band". Which signal is transformed is not said, so each reading gives every image a
spectrum and a per-image summary -- the power-weighted mean frequency ("mean") and its standard
deviation ("band") -- and :func:`same_mean_wider_band` tests the paper's sentence on the paired
per-image changes clean -> noisy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import stats
from .encoding import SeverityTable, image_batches, noisy_spikes
from .models import Record

__all__ = ["spike_train_spectrum", "spectrum_moments", "spectrum_frame", "critical_frequency",
           "target_neuron_critical_frequency", "input_spectra", "critical_frequency_frame",
           "READINGS", "UPPER_BAND", "flatten_spike_input", "flattened_spectrum", "radial_spectrum", "spatial_spectrum",
           "population_spectrum", "spectrum_values", "reading_summaries", "SpectrumReadings",
           "input_spectrum_readings", "same_mean_wider_band", "fig4_verdicts", "FIG4_SEVERITY", "FIG4_TOLERANCE",
           "fig4_conditions"]

_RUN_KEYS = ("dataset", "tau_m", "seed")


def _power(signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised frequencies ``[F]`` and single-sided power ``[F, ...]`` of ``[T, ...]`` (mean removed, float64)."""
    num_steps = signal.shape[0]
    if num_steps < 2:
        raise ValueError(f"a spectrum needs at least 2 time steps, got T={num_steps}")
    x = signal.double()
    x = x - x.mean(0, keepdim=True)
    power = torch.fft.rfft(x, dim=0).abs().square() / num_steps**2
    last = power.shape[0] - 1 if num_steps % 2 == 0 else power.shape[0]  # the Nyquist bin is not doubled
    power[1:last] *= 2.0
    freqs = torch.fft.rfftfreq(num_steps, dtype=torch.float64, device=signal.device) * 2.0
    return freqs, power


def spike_train_spectrum(spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input spike-train spectra (Sec. 4.3, Fig. 4): ``(freqs [F], power [B, F])``, per image the mean over its trains.

    ``spikes`` is ``[T, B, ...]`` (e.g. ``[T, B, C, H, W]``); every pixel's train has its mean removed.
    Average over images (the paper's "averaged over test samples") with ``power.mean(0)``.
    """
    if spikes.dim() < 2:
        raise ValueError(f"spikes must be [T, B, ...], got shape {tuple(spikes.shape)}")
    trains = spikes.reshape(spikes.shape[0], spikes.shape[1], -1)
    freqs, power = _power(trains)
    return freqs, power.mean(2).T.contiguous()


def spectrum_moments(freqs: torch.Tensor, power: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Power-weighted mean and standard deviation of the frequency (Fig. 4's band centre and spread), per row.

    ``power`` is ``[..., F]``; rows without power give NaN.
    """
    p = power.double()
    total = p.sum(-1)
    f = freqs.double().to(p.device)
    mean = (p * f).sum(-1) / total
    var = (p * (f - mean.unsqueeze(-1)) ** 2).sum(-1) / total
    nan = torch.full_like(mean, math.nan)
    return torch.where(total > 0, mean, nan), torch.where(total > 0, var.clamp_min(0).sqrt(), nan)


def spectrum_frame(freqs: torch.Tensor, power: torch.Tensor, **labels: Any) -> pd.DataFrame:
    """Tidy table of per-image spectra for :func:`leaklib.figures.fig4_spectrum`: image, frequency, power, labels."""
    if power.dim() != 2 or power.shape[1] != freqs.numel():
        raise ValueError(f"power must be [B, {freqs.numel()}], got {tuple(power.shape)}")
    num_images, num_freqs = power.shape
    frame = pd.DataFrame({
        "image": np.repeat(np.arange(num_images), num_freqs),
        "frequency": np.tile(freqs.detach().cpu().numpy(), num_images),
        "power": power.detach().cpu().double().numpy().reshape(-1),
    })
    for key, value in labels.items():
        frame[key] = value
    return frame


def critical_frequency(signal: torch.Tensor, fraction: float = 0.7) -> torch.Tensor:
    """Critical frequency (Sec. 4.3, Fig. 5a-c) of each signal ``[T, ...]`` -> ``[...]``; NaN for a constant signal.

    The lowest normalised frequency (1 = Nyquist) at which the cumulative single-sided power, DC
    excluded, reaches ``fraction`` of the total (mean removed first).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if signal.dim() < 1:
        raise ValueError("signal must be [T, ...]")
    freqs, power = _power(signal)
    power, freqs = power[1:], freqs[1:]
    cumulative = power.cumsum(0)
    total = cumulative[-1]
    reached = cumulative >= fraction * total * (1.0 - 1e-12)  # tolerate rounding at an exact bin boundary
    index = reached.to(torch.uint8).argmax(0)
    result = freqs[index]
    constant = (signal == signal[:1]).flatten(1).all(0).reshape(result.shape) if signal.dim() > 1 else \
        (signal == signal[0]).all()
    return torch.where(constant, torch.full_like(result, math.nan), result)


def target_neuron_critical_frequency(record: Record, labels: torch.Tensor, fraction: float = 0.7) -> torch.Tensor:
    """Critical frequency ``[B]`` of each image's target output current ``W_L O_{L-1}[t]`` (Sec. 4.3, Fig. 5a-c)."""
    if record.output_currents is None:
        raise ValueError("record has no output currents")
    currents = record.output_currents
    labels = labels.to(currents.device).long()
    if labels.shape != (currents.shape[1],):
        raise ValueError(f"labels must be [{currents.shape[1]}], got {tuple(labels.shape)}")
    target = currents.gather(2, labels.view(1, -1, 1).expand(currents.shape[0], -1, 1)).squeeze(2)  # [T, B]
    return critical_frequency(target, fraction)




@torch.no_grad()
def input_spectra(images: torch.Tensor, *, num_steps: int, conditions: Mapping[str, tuple[int, str, int]],
                  seed: int = 0, batch_size: int = 256,
                  device: str | torch.device | None = None) -> pd.DataFrame:
    """Fig. 4's data (Sec. 4.3): per-image spectra of the input spike trains under each condition.

    ``images`` raw [0, 1] ``[N, C, H, W]``, normalised and coded as in :func:`evaluate`;
    ``conditions`` maps a name to ``(scenario, noise, severity)`` (severity 0 = clean coding). Each
    condition starts its own generator from ``seed``. Returns :func:`spectrum_frame` rows (image,
    frequency, power) with a ``condition`` column, conditions in the given order.
    """
    if not conditions:
        raise ValueError("conditions must not be empty")
    dev = torch.device(device) if device is not None else images.device
    labels = torch.zeros(len(images), dtype=torch.long)
    frames = []
    for name, (scenario, noise, severity) in conditions.items():
        generator = torch.Generator(device=dev).manual_seed(seed)
        powers, freqs = [], None
        for x, _ in image_batches(images, labels, batch_size, dev):
            freqs, power = spike_train_spectrum(noisy_spikes(x, scenario, noise, severity, generator, num_steps))
            powers.append(power.cpu())
        assert freqs is not None
        frames.append(spectrum_frame(freqs.cpu(), torch.cat(powers), condition=name))
    return pd.concat(frames, ignore_index=True)


def critical_frequency_frame(table: pd.DataFrame,
                             columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Fig. 5a-c's data in long form (Sec. 4.3): one row per run x condition x image, NaN kept.

    ``table``: :func:`leaklib.sweep.clean_table` rows, whose per-image lists live in the columns
    ``columns`` maps to condition names (default: critical_frequency -> clean,
    critical_frequency_noisy -> noisy). Columns: the run keys present, condition, image, critical_frequency.
    """
    columns = dict(columns or {"critical_frequency": "clean", "critical_frequency_noisy": "noisy"})
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise KeyError(f"table lacks {', '.join(missing)}")
    keys = [c for c in _RUN_KEYS if c in table.columns]
    rows = []
    for _, run in table.iterrows():
        for column, condition in columns.items():
            for image, value in enumerate(run[column]):
                rows.append({**{k: run[k] for k in keys}, "condition": condition, "image": image,
                             "critical_frequency": float(value)})
    return pd.DataFrame(rows, columns=keys + ["condition", "image", "critical_frequency"])


# ----------------------------------------------------------------------------------------------
# Fig. 4 under the readings the text allows

#: The signals whose spectrum Fig. 4 could show, each image's spike input ``[T, C, H, W]`` read as:
READINGS: dict[str, str] = {
    "pixel": "each pixel's train over the T steps; the image's spectrum is the mean over its pixels",
    "flattened": "the whole spike input as one sequence of T*C*H*W values: step 1's pixels in raster order "
                 "(channel, row, column), then step 2's, and so on",
    "spatial": "the 2-D spatial spectrum of each step's spike map, summed over rings of equal radial "
               "frequency, averaged over steps and channels",
    "population": "the image's spike count per step (the sum of |spikes| over its pixels), a signal of T steps",
    "values": "the values of the spectrum itself: real and imaginary parts of the Fourier coefficients of "
              "the flattened sequence (DC and Nyquist left out), as a distribution of values, not of frequency",
}

#: Fig. 4's noisy inputs: Gaussian noise at this severity (the severity of Fig. 5's noisy inputs; Fig. 4 names none).
FIG4_SEVERITY = 5

#: "Roughly the same" in Fig. 4's test: this fraction of the clean spread (:func:`same_mean_wider_band`).
FIG4_TOLERANCE = 0.1


def fig4_conditions(severity: int = FIG4_SEVERITY) -> dict[str, tuple[int, str, int]]:
    """Fig. 4's conditions, ``{name: (scenario, noise, severity)}``: clean, and Gaussian noise at ``severity``
    in scenario 1 (before coding) and scenario 2 (added to the spikes)."""
    return {"clean": (1, "gaussian", 0), f"scenario 1, Gaussian {severity}": (1, "gaussian", severity),
            f"scenario 2, Gaussian {severity}": (2, "gaussian", severity)}


#: "Higher frequency bands": the per-image summary ``upper`` is the share of power above this frequency.
UPPER_BAND = 0.5

#: Readings whose per-image summary is a power-weighted frequency (the others: ``values``).
FREQUENCY_READINGS: tuple[str, ...] = ("pixel", "flattened", "spatial", "population")


def _check_spikes(spikes: torch.Tensor, dims: int | None = None) -> None:
    if spikes.dim() < 3 or (dims is not None and spikes.dim() != dims):
        need = f"{dims} dimensions" if dims is not None else "[T, B, ...pixels]"
        raise ValueError(f"spikes must have {need}, got shape {tuple(spikes.shape)}")


def flatten_spike_input(spikes: torch.Tensor) -> torch.Tensor:
    """Each image's whole spike input as one sequence ``[T*P, B]`` of ``spikes`` ``[T, B, *pixels]`` (P pixels).

    Step-major: element ``t*P + p`` is pixel ``p`` (raster order over ``*pixels``, e.g. channel, row,
    column) at step ``t``: the order in which the network receives the input (all pixels of a step
    at once, step after step), and the memory order of an image's ``[T, C, H, W]`` spike tensor.
    """
    _check_spikes(spikes)
    num_steps, batch = spikes.shape[:2]
    return spikes.reshape(num_steps, batch, -1).transpose(1, 2).reshape(-1, batch)


def flattened_spectrum(spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reading ``flattened``: ``(freqs [F], power [B, F])`` of :func:`flatten_spike_input`, F = T*P/2 + 1.

    1 = Nyquist of the flattened sequence (one value per sample); the image's pixel pattern repeats
    every P samples, so its mean over steps puts power at multiples of 2/P.
    """
    freqs, power = _power(flatten_spike_input(spikes))
    return freqs, power.T.contiguous()


def radial_spectrum(power: torch.Tensor, reduce: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """Rings of a 2-D spectrum ``power [..., H, W]`` (``fft2`` layout, not shifted): ``(radii [R], [..., R])``.

    Frequencies are normalised per axis (1 = Nyquist); a bin at (f_y, f_x) belongs to the ring
    ``round(sqrt(f_y^2 + f_x^2) / d)`` with d = 2 / max(H, W), the finer axis' grid step; ``radii`` are
    ``d * ring``. ``reduce="sum"`` adds the power of a ring's bins (the total is kept: Parseval),
    ``"mean"`` averages them (the radially averaged spectrum; NaN for a ring without bins).
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    if power.dim() < 2:
        raise ValueError(f"power must be [..., H, W], got shape {tuple(power.shape)}")
    height, width = power.shape[-2:]
    fy = torch.fft.fftfreq(height, dtype=torch.float64, device=power.device) * 2.0
    fx = torch.fft.fftfreq(width, dtype=torch.float64, device=power.device) * 2.0
    step = 2.0 / max(height, width)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    ring = torch.round(radius / step).long().reshape(-1)
    rings = int(ring.max()) + 1
    flat = power.double().reshape(*power.shape[:-2], -1)
    out = torch.zeros(*flat.shape[:-1], rings, dtype=torch.float64, device=power.device)
    out.index_add_(out.dim() - 1, ring, flat)
    if reduce == "mean":
        count = torch.bincount(ring, minlength=rings).double()
        out = torch.where(count > 0, out / count.clamp_min(1), torch.full_like(out, math.nan))
    return torch.arange(rings, dtype=torch.float64, device=power.device) * step, out


def spatial_spectrum(spikes: torch.Tensor, reduce: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """Reading ``spatial``: ``(radii [R], power [B, R])`` of spike maps ``[T, B, C, H, W]``.

    Per step and channel: the spatial mean removed, ``|fft2|^2 / (H W)^2`` (which sums to the map's
    spatial variance), rings by :func:`radial_spectrum`; then the mean over steps and channels.
    """
    _check_spikes(spikes, 5)
    x = spikes.double()
    x = x - x.mean((-2, -1), keepdim=True)
    height, width = x.shape[-2:]
    power = torch.fft.fft2(x).abs().square() / (height * width) ** 2
    radii, rings = radial_spectrum(power, reduce)
    return radii, rings.mean((0, 2))


def population_spectrum(spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reading ``population``: ``(freqs [F], power [B, F])`` of each image's spike count per step, sum |spikes|."""
    _check_spikes(spikes)
    count = spikes.abs().reshape(spikes.shape[0], spikes.shape[1], -1).sum(2)
    freqs, power = _power(count)
    return freqs, power.T.contiguous()


def spectrum_values(spikes: torch.Tensor) -> torch.Tensor:
    """Reading ``values``: ``[B, M]`` real and imaginary parts of ``X_k / sqrt(N)``, 0 < k < N/2 (flattened input).

    ``X`` is the DFT of :func:`flatten_spike_input` (length N, mean removed); for white noise of
    variance v every value has mean 0 and variance v/2 (for odd N their squares sum to N v / 2).
    """
    x = flatten_spike_input(spikes).double()
    num = x.shape[0]
    x = x - x.mean(0, keepdim=True)
    coefficients = torch.fft.rfft(x, dim=0)[1:(num + 1) // 2] / math.sqrt(num)  # 0 < k < N/2
    return torch.cat([coefficients.real, coefficients.imag], 0).T.contiguous()


def _unit_mass(power: torch.Tensor) -> torch.Tensor:
    """Each row scaled to sum 1 (NaN rows without power)."""
    total = power.sum(-1, keepdim=True)
    return torch.where(total > 0, power / total.clamp_min(1e-300), torch.full_like(power, math.nan))


def reading_summaries(spikes: torch.Tensor, readings: Sequence[str] = tuple(READINGS)) -> dict[str, dict[str, Any]]:
    """Per reading, each image's summary and spectrum: ``{reading: {"mean", "spread", "total", "upper" [B], ...}}``.

    Frequency readings: ``"freqs" [F]`` and ``"power" [B, F]`` too; ``mean`` and ``spread`` are the
    power-weighted mean frequency and its standard deviation (:func:`spectrum_moments`), ``total``
    the summed power (the signal's variance), ``upper`` the fraction of it above normalised
    frequency :data:`UPPER_BAND` (0.5; radial for ``spatial``).
    Reading ``values``: the mean and standard deviation (ddof=0) of :func:`spectrum_values`, ``total``
    their mean square, ``upper`` NaN, and ``"values" [B, M]`` themselves.
    ``spikes`` is ``[T, B, C, H, W]``.
    """
    unknown = [r for r in readings if r not in READINGS]
    if unknown:
        raise ValueError(f"unknown reading(s) {', '.join(map(repr, unknown))}; readings are {', '.join(READINGS)}")
    _check_spikes(spikes, 5)
    spectra = {"pixel": spike_train_spectrum, "flattened": flattened_spectrum, "spatial": spatial_spectrum,
               "population": population_spectrum}
    out: dict[str, dict[str, Any]] = {}
    for reading in readings:
        if reading == "values":
            values = spectrum_values(spikes)
            mean = values.mean(1)
            out[reading] = {"mean": mean, "spread": (values - mean[:, None]).square().mean(1).sqrt(),
                            "total": values.square().mean(1), "upper": torch.full_like(mean, math.nan),
                            "values": values}
            continue
        freqs, power = spectra[reading](spikes)
        power = power.double()
        mean, spread = spectrum_moments(freqs, power)
        total = power.sum(1)
        upper = torch.where(total > 0, power[:, freqs.to(power.device) > UPPER_BAND].sum(1) / total.clamp_min(1e-300),
                            torch.full_like(total, math.nan))
        out[reading] = {"mean": mean, "spread": spread, "total": total, "upper": upper, "freqs": freqs, "power": power}
    return out


@dataclass
class SpectrumReadings:
    """Fig. 4's data under every reading: per-image summaries and the distributions the figure draws.

    ``summary``: reading, condition, image, mean, spread, total, upper (:func:`reading_summaries`).
    ``distributions``: reading, condition, low, high, mass -- for a frequency reading the mean over
    images of each image's spectrum scaled to unit sum, gathered in bins [low, high) of normalised
    frequency; for ``values`` the fraction of all values in each bin (``outside``: per condition, the
    fraction beyond the bins).
    """

    summary: pd.DataFrame
    distributions: pd.DataFrame
    outside: dict[str, float]


def _condition_spikes(x: torch.Tensor, condition: tuple, generator: torch.Generator, num_steps: int,
                      table: SeverityTable | None = None) -> torch.Tensor:
    """The spike input of one condition ``(scenario, noise, severity)`` at ``table``'s level: the one call into the encoding."""
    return noisy_spikes(x, *condition, generator, num_steps, table=table)


def _bin_edges(reading: str, freqs: torch.Tensor, bins: int) -> np.ndarray:
    """Histogram edges of a reading's spectrum: its own grid if at most ``bins`` bins lie above DC, else equal bins."""
    f = freqs.detach().cpu().double().numpy()
    step = float(np.min(np.diff(f)))
    # 1 = Nyquist: the last bin of an even length is half as wide; rings end half a step beyond the last
    top = float(f[-1]) + step / 2 if reading == "spatial" else 1.0
    if len(f) - 1 <= bins:
        return np.concatenate([[f[1] - step / 2], (f[1:-1] + f[2:]) / 2, [min(f[-1] + step / 2, top)]])
    return np.linspace(f[1] - step / 2, top, bins + 1)


@torch.no_grad()
def input_spectrum_readings(images: torch.Tensor, *, num_steps: int, conditions: Mapping[str, tuple],
                            readings: Sequence[str] = tuple(READINGS), seed: int = 0, batch_size: int = 64,
                            device: str | torch.device | None = None, bins: int = 100,
                            value_range: float = 3.0, table: SeverityTable | None = None) -> SpectrumReadings:
    """Fig. 4 under every reading (Sec. 4.3): per-image spectral summaries for each condition.

    ``images`` raw [0, 1] ``[N, C, H, W]``, normalised and coded as in :func:`leaklib.robustness.evaluate`;
    ``conditions`` maps a name to ``(scenario, noise, severity)`` (severity 0 = clean coding), at the
    levels of ``table`` (default: the a-priori :data:`leaklib.encoding.SEVERITY_TABLE`). Every
    batch of every condition draws from a generator seeded by ``seed`` and the batch's first image,
    so the conditions are paired by image (and share their draws as far as the encoding draws
    them in the same order). ``bins`` and ``value_range`` shape the drawn distributions only.
    """
    if not conditions:
        raise ValueError("conditions must not be empty")
    if num_steps < 2:
        raise ValueError(f"a spectrum needs at least 2 time steps, got {num_steps}")
    dev = torch.device(device) if device is not None else images.device
    labels = torch.zeros(len(images), dtype=torch.long)
    value_edges = np.linspace(-value_range, value_range, 2 * bins + 1)
    rows, dists, outside = [], [], {}
    for name, condition in conditions.items():
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, float] = {}
        edges: dict[str, np.ndarray] = {}
        beyond = 0.0
        for batch, (x, _) in enumerate(image_batches(images, labels, batch_size, dev)):
            start = batch * batch_size
            generator = torch.Generator(device=dev).manual_seed((seed * 1_000_003 + start) % 2**63)
            spikes = _condition_spikes(x, condition, generator, num_steps, table)
            for reading, result in reading_summaries(spikes, readings).items():
                n = len(result["mean"])
                rows.append(pd.DataFrame({"reading": reading, "condition": name, "image": np.arange(start, start + n),
                                          **{k: result[k].detach().cpu().double().numpy()
                                             for k in ("mean", "spread", "total", "upper")}}))
                if reading == "values":
                    v = result["values"].detach().cpu().numpy()
                    hist, _ = np.histogram(v, bins=len(value_edges) - 1, range=(-value_range, value_range))
                    sums[reading] = sums.get(reading, 0) + hist
                    counts[reading] = counts.get(reading, 0) + v.size
                    beyond += float(v.size - hist.sum())
                    edges[reading] = value_edges
                    continue
                if reading not in edges:
                    edges[reading] = _bin_edges(reading, result["freqs"], bins)
                mass = _unit_mass(result["power"]).cpu().numpy()
                keep = np.isfinite(mass).all(1)
                f = result["freqs"].detach().cpu().numpy()
                index = np.clip(np.searchsorted(edges[reading], f, side="right") - 1, 0, len(edges[reading]) - 2)
                index = np.where(f == 0, -1, index)  # DC carries no power after the mean is removed
                binned = np.zeros((int(keep.sum()), len(edges[reading]) - 1))
                used = index >= 0
                present, starts = np.unique(index[used], return_index=True)  # frequencies ascend: bins are runs
                if keep.any() and present.size:
                    binned[:, present] = np.add.reduceat(mass[keep][:, used], starts, axis=1)
                sums[reading] = sums.get(reading, 0) + binned.sum(0)
                counts[reading] = counts.get(reading, 0) + float(keep.sum())
        for reading, total in sums.items():
            e = edges[reading]
            dists.append(pd.DataFrame({"reading": reading, "condition": name, "low": e[:-1], "high": e[1:],
                                       "mass": total / max(counts[reading], 1.0)}))
        if "values" in sums:
            outside[name] = beyond / max(counts["values"], 1.0)
    summary = pd.concat(rows, ignore_index=True).sort_values(["reading", "condition", "image"], kind="stable",
                                                            key=_order_key(readings, conditions))
    distributions = pd.concat(dists, ignore_index=True).sort_values(["reading", "condition"], kind="stable",
                                                                    key=_order_key(readings, conditions))
    return SpectrumReadings(summary.reset_index(drop=True), distributions.reset_index(drop=True), outside)


def _order_key(readings: Sequence[str], conditions: Mapping[str, tuple]):
    order = {"reading": {r: i for i, r in enumerate(readings)}, "condition": {c: i for i, c in enumerate(conditions)}}
    return lambda s: s.map(order[s.name]) if s.name in order else s


def same_mean_wider_band(clean_mean: Sequence[float], clean_spread: Sequence[float], noisy_mean: Sequence[float],
                         noisy_spread: Sequence[float], relative_tolerance: float = 0.1) -> dict[str, Any]:
    """Fig. 4's sentence tested on per-image summaries paired by image: "roughly the same" mean, "a wider band".

    Differences noisy - clean per image; tolerance = ``relative_tolerance`` x the mean clean spread.
    Mean: the TOST of :func:`leaklib.stats.equivalence_codes` (90 % interval inside +-tolerance ->
    reproduced; wholly outside -> not reproduced; else inconclusive). Band: a spread change within
    +-tolerance by the same test -> not reproduced (unchanged); else the 95 % interval of
    :func:`leaklib.stats.directional_codes` above 0 -> reproduced (wider), below -> not reproduced
    (opposite), else inconclusive. The verdict: opposite, then not reproduced, then cannot decide,
    then inconclusive, else reproduced. Fewer than two finite pairs -> cannot decide.
    ``band_beyond_shift``: whether the spread's 95 % interval lies above the largest mean change its
    interval allows, i.e. whether *some* tolerance would make the sentence true.
    """
    arrays = [np.asarray(a, dtype=float).ravel() for a in (clean_mean, clean_spread, noisy_mean, noisy_spread)]
    if len({a.size for a in arrays}) != 1:
        raise ValueError("the four per-image arrays must have the same length")
    if not relative_tolerance > 0:
        raise ValueError(f"relative_tolerance must be > 0, got {relative_tolerance}")
    c_mean, c_spread, n_mean, n_spread = arrays
    d_mean, d_spread = n_mean - c_mean, n_spread - c_spread
    finite_spread = c_spread[np.isfinite(c_spread)]
    tolerance = relative_tolerance * float(finite_spread.mean()) if finite_spread.size else math.nan
    out: dict[str, Any] = {"tolerance": tolerance, "mean_interval": stats.interval(d_mean),
                           "spread_interval": stats.interval(d_spread),
                           "clean_mean": float(np.nanmean(c_mean)) if np.isfinite(c_mean).any() else math.nan,
                           "noisy_mean": float(np.nanmean(n_mean)) if np.isfinite(n_mean).any() else math.nan,
                           "clean_spread": float(np.nanmean(c_spread)) if finite_spread.size else math.nan,
                           "noisy_spread": float(np.nanmean(n_spread)) if np.isfinite(n_spread).any() else math.nan}
    mi, si = out["mean_interval"], out["spread_interval"]
    # free of the tolerance: is there any margin under which the mean is "the same" and the band "wider"?
    out["band_beyond_shift"] = bool(mi.defined and si.defined and si.low > max(abs(mi.low), abs(mi.high)))
    if not (math.isfinite(tolerance) and tolerance > 0) or min(mi.n, si.n) < 2:
        reason = "fewer than two images with finite summaries, or no clean spread to scale the tolerance"
        return {**out, "mean_verdict": stats.CANNOT_DECIDE, "band_verdict": stats.CANNOT_DECIDE,
                "verdict": stats.CANNOT_DECIDE, "reason": reason}
    same_mean = int(stats.equivalence_codes(d_mean[None], tolerance)["pair"][0])
    same_band = int(stats.equivalence_codes(d_spread[None], tolerance)["pair"][0])
    wider = int(stats.directional_codes(d_spread[None], +1)["pair"][0])
    mean_verdict = {1: stats.REPRODUCED, -1: stats.NOT_REPRODUCED}.get(same_mean, stats.INCONCLUSIVE)
    if same_band == 1:
        band_verdict = stats.NOT_REPRODUCED
    else:
        band_verdict = {1: stats.REPRODUCED, -1: stats.OPPOSITE}.get(wider, stats.INCONCLUSIVE)
    priority = (stats.OPPOSITE, stats.NOT_REPRODUCED, stats.CANNOT_DECIDE, stats.INCONCLUSIVE, stats.REPRODUCED)
    verdict = next(v for v in priority if v in (mean_verdict, band_verdict))
    words = {stats.REPRODUCED: ("the same", "wider"), stats.NOT_REPRODUCED: ("different", "unchanged"),
             stats.OPPOSITE: ("", "narrower"), stats.INCONCLUSIVE: ("undecided", "undecided")}
    reason = (f"mean {words[mean_verdict][0]} (change {mi.text()}), band "
              f"{words[band_verdict][1]} (change {si.text()}); tolerance +-{tolerance:.3g}")
    return {**out, "mean_verdict": mean_verdict, "band_verdict": band_verdict, "verdict": verdict, "reason": reason}


def fig4_verdicts(summary: pd.DataFrame, reference: str = "clean", relative_tolerance: float = 0.1) -> pd.DataFrame:
    """:func:`same_mean_wider_band` for every reading and every condition against ``reference``, paired by image.

    ``summary`` is :attr:`SpectrumReadings.summary` (optionally with a ``dataset`` column). One row
    per (dataset,) reading and condition: images, clean/noisy mean and spread (means over images),
    the paired changes with their 95 % intervals, tolerance, band beyond shift, mean_verdict,
    band_verdict, verdict, reason.
    """
    need = ["reading", "condition", "image", "mean", "spread"]
    missing = [c for c in need if c not in summary.columns]
    if missing:
        raise KeyError(f"summary lacks {', '.join(missing)}")
    if reference not in set(summary["condition"]):
        raise ValueError(f"no {reference!r} condition in the summary")
    groups = ["dataset"] if "dataset" in summary.columns else []
    rows = []
    for key, part in summary.groupby(groups + ["reading"], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        base = part[part["condition"] == reference].set_index("image")
        for condition in dict.fromkeys(part["condition"]):
            if condition == reference:
                continue
            other = part[part["condition"] == condition].set_index("image")
            common = base.index.intersection(other.index)
            a, b = base.loc[common], other.loc[common]
            result = same_mean_wider_band(a["mean"], a["spread"], b["mean"], b["spread"], relative_tolerance)
            mi, si = result["mean_interval"], result["spread_interval"]
            rows.append({**dict(zip(groups + ["reading"], key)), "condition": condition, "images": len(common),
                         "clean mean": result["clean_mean"], "noisy mean": result["noisy_mean"],
                         "mean change": mi.mean, "mean change low": mi.low, "mean change high": mi.high,
                         "clean spread": result["clean_spread"], "noisy spread": result["noisy_spread"],
                         "spread change": si.mean, "spread change low": si.low, "spread change high": si.high,
                         "tolerance": result["tolerance"], "band beyond shift": result["band_beyond_shift"],
                         "mean_verdict": result["mean_verdict"], "band_verdict": result["band_verdict"],
                         "verdict": result["verdict"], "reason": result["reason"]})
    return pd.DataFrame(rows)

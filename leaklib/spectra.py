"""Spectra (Sec. 4.3, Fig. 4, Fig. 5a-c): input spike-train spectra and the target neuron's critical frequency.

Single-sided power spectrum of a signal of length T with its mean removed, scaled so that the
powers sum to the signal's variance; frequency normalised so that 1 = Nyquist (half the step
rate). The critical frequency is the lowest frequency bin at which the cumulative power (DC
excluded) reaches ``fraction`` of the total; a constant signal has no power and gets NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from .encoding import image_batches, noisy_spikes
from .models import Record

__all__ = ["spike_train_spectrum", "spectrum_moments", "spectrum_frame", "critical_frequency",
           "target_neuron_critical_frequency", "input_spectra", "critical_frequency_frame"]

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

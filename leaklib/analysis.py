"""The measurements of Sec. 4.2-4.5: robustness, spectra, generalization, sparsity, and a claims ledger.

Conventions (design note, "Measurements"; the paper leaves the normalisations open):

* Accuracies are fractions in [0, 1] (as in ``history.jsonl``); figures show percent.
* Spikes (%) = hidden-layer spikes / (hidden neurons x T) x 100, mean over images (Table 1 row 4).
* Synaptic operations per image: each input spike of a block (``|spike|``, input-layer spikes
  included) times the synapses it drives, summed over steps and blocks (Table 1 row 5).
* ENWSI: L2 norm of ``W_l O_{l-1}[t]`` per hidden layer, mean over steps and images (Fig. 6).
* Spectra: single-sided power spectrum of a signal of length T with its mean removed, scaled so
  that the powers sum to the signal's variance; frequency normalised so that 1 = Nyquist (half the
  step rate). The critical frequency (Sec. 4.3, Fig. 5a-c) is the lowest frequency bin at which the
  cumulative power (DC excluded) reaches ``fraction`` of the total; a constant signal has no power
  and gets NaN.
* Randomness: every encoding pass starts its own generator from ``seed``, so a condition's
  result does not depend on which other conditions were run (common random numbers across
  severities), and severity 0 of :func:`evaluate` equals the clean pass of :func:`measure_clean`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .encoding import noise_level, noisy_spikes, normalize_images, poisson_spikes
from .models import SNN, Record
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


# ----------------------------------------------------------------------------------------------
# sparsity (Sec. 4.5, Table 1 rows 4-5, Fig. 6)


def _check_record(record: Record, model: SNN | None) -> None:
    if model is not None and [tuple(c.shape[1:]) for c in record.spike_counts] != list(model.hidden_shapes):
        raise ValueError("record does not come from this model: hidden-layer shapes differ")


def spike_rates(record: Record, model: SNN | None = None) -> dict[str, Any]:
    """Spikes (%) of the hidden layers (Sec. 4.5, Table 1 row 4): ``{"overall": float, "per_layer": [float]}``."""
    _check_record(record, model)
    if not record.spike_counts:
        raise ValueError("record has no hidden layers")
    totals = [c.flatten(1).sum(1, dtype=torch.float64).mean().item() for c in record.spike_counts]  # per image
    sizes = [c[0].numel() for c in record.spike_counts]
    per_layer = [100.0 * s / (n * record.num_steps) for s, n in zip(totals, sizes)]
    overall = 100.0 * sum(totals) / (sum(sizes) * record.num_steps)
    return {"overall": overall, "per_layer": per_layer}


@torch.no_grad()
def synaptic_ops(record: Record, model: SNN) -> torch.Tensor:
    """Synaptic operations per image ``[B]`` (Sec. 4.5, Table 1 row 5): input spikes x synapses driven, all blocks.

    With spiking pooling every spike into a 2x2 window drives one pooling synapse, and every pooling
    neuron's spike the synapses of the convolution or FC layer above; with average pooling each
    input spike drives the synapses of its pooled position.
    """
    if len(record.input_counts) != len(model.blocks) or len(record.pool_counts) != len(model.blocks):
        raise ValueError(f"record has {len(record.input_counts)} block inputs, model {len(model.blocks)} blocks")
    total = None
    for block, counts, pooled in zip(model.blocks, record.input_counts, record.pool_counts):
        if pooled is not None:  # linear in the counts: summing over T first is exact
            ops = counts.flatten(1).sum(1, dtype=torch.float64) + block.synapse_map(pooled).flatten(1).sum(
                1, dtype=torch.float64)
        else:
            ops = block.synapse_map(counts).flatten(1).sum(1, dtype=torch.float64)
        total = ops if total is None else total + ops
    assert total is not None
    return total


def enwsi(record: Record) -> list[float]:
    """ENWSI per hidden layer (Sec. 4.5, Fig. 6): ``||W_l O_{l-1}[t]||_2``, mean over steps and images."""
    return [norms.double().mean().item() for norms in record.current_norms]


# ----------------------------------------------------------------------------------------------
# spectra (Sec. 4.3, Fig. 4, Fig. 5a-c)


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


# ----------------------------------------------------------------------------------------------
# robustness (Sec. 4.2, Fig. 3) and the clean measurements of Table 1


def _device(model: SNN, device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
             device: torch.device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if images.dim() != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"images must be [N, C, H, W] and labels [N], got {tuple(images.shape)}, "
                         f"{tuple(labels.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(labels), batch_size):
        yield (normalize_images(images[start:start + batch_size].to(device)),
               labels[start:start + batch_size].to(device))


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
                for x, y in _batches(images, labels, batch_size, dev):
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


@torch.no_grad()
def measure_clean(model: SNN, images: torch.Tensor, labels: torch.Tensor, *, num_steps: int,
                  batch_size: int = 256, seed: int = 0, device: str | torch.device | None = None,
                  noisy: tuple[int, str, int] = (1, "gaussian", 5), fraction: float = 0.7,
                  progress: bool = True) -> dict[str, Any]:
    """Table 1's per-model numbers and Fig. 5a-c/6 data in one pass over the test set (Sec. 4.2-4.5).

    Returns a JSON-ready dict: accuracy, sse (``sum_c (u_L[T]/T - onehot)^2``, mean over images),
    spike_rate and spike_rate_per_layer (%), synaptic_ops (mean per image), enwsi (per hidden layer),
    critical_frequency (per image, NaN where the target current is constant), and for the noisy input
    ``noisy = (scenario, noise, severity)`` (the paper's severity five) critical_frequency_noisy and
    noisy_accuracy; plus n, num_steps, seed, fraction, noisy. The noisy pass has its own generator
    from ``seed``, so noisy_accuracy equals :func:`evaluate`'s for that condition.
    """
    dev = _device(model, device)
    scenario, noise, severity = noisy
    noise_level(noise, severity)
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
        for x, y in tqdm(_batches(images, labels, batch_size, dev), total=math.ceil(len(labels) / batch_size),
                         desc="clean measurements", leave=False, disable=not progress):
            prediction, record = model(poisson_spikes(x, clean_gen, num_steps), record=True)
            sse += sse_loss(prediction, y, model.num_classes).sum(dtype=torch.float64).item()
            correct += int((prediction.argmax(1) == y).sum().item())
            layer_spikes += torch.stack([c.sum(dtype=torch.float64) for c in record.spike_counts]).cpu()
            layer_norms += torch.stack([c.sum(dtype=torch.float64) for c in record.current_norms]).cpu()
            ops += synaptic_ops(record, model).sum().item()
            cf_clean.append(target_neuron_critical_frequency(record, y, fraction).cpu())
            prediction, record = model(noisy_spikes(x, scenario, noise, severity, noisy_gen, num_steps), record=True)
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
        "noisy": {"scenario": int(scenario), "noise": noise, "severity": int(severity)},
        "n": n, "num_steps": int(num_steps), "seed": int(seed), "fraction": float(fraction),
    }


# ----------------------------------------------------------------------------------------------
# generalization (Sec. 4.4, Table 1 rows 2-3)

_HISTORY_VALUES = ("train_sse", "test_sse", "train_acc", "test_acc")


def sse_table(histories: pd.DataFrame | Iterable[Mapping[str, Any]], fraction: float = 20 / 150,
              by: Sequence[str] | None = None) -> pd.DataFrame:
    """Train/test SSE and accuracy averaged over the last ``fraction`` of epochs (Sec. 4.4, Table 1 rows 2-3).

    ``histories``: per-epoch records (e.g. :func:`leaklib.sweep.history_table`) with epoch, train_sse,
    test_sse, train_acc, test_acc and key columns ``by`` (default: whichever of dataset, tau_m, seed
    exist). The window is ``max(1, round(fraction * epochs))`` epochs (20 of 150), as ``metrics.json``.
    Returns one row per key with the four means, ``epochs`` and ``window``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    table = histories if isinstance(histories, pd.DataFrame) else pd.DataFrame(list(histories))
    missing = [c for c in ("epoch",) + _HISTORY_VALUES if c not in table.columns]
    if missing:
        raise KeyError(f"history records lack {', '.join(missing)}")
    keys = list(by) if by is not None else [c for c in ("dataset", "tau_m", "seed") if c in table.columns]
    rows = []
    groups = table.groupby(keys, sort=False) if keys else [((), table)]
    for key, group in groups:
        group = group.sort_values("epoch")
        if group["epoch"].duplicated().any():
            raise ValueError(f"duplicate epochs in the history of {key}; pass the key columns as `by`")
        window = max(1, round(fraction * len(group)))
        last = group.tail(window)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), **{c: float(last[c].mean()) for c in _HISTORY_VALUES},
                     "epochs": len(group), "window": window})
    return pd.DataFrame(rows, columns=keys + list(_HISTORY_VALUES) + ["epochs", "window"])


# ----------------------------------------------------------------------------------------------
# claims ledger (Sec. 4)


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


# ----------------------------------------------------------------------------------------------
# chapter tables: robustness per condition (Sec. 4.2, Fig. 3), input spectra and critical
# frequencies in long form (Sec. 4.3, Fig. 4, Fig. 5a-c)

__all__ += ["robustness_summary", "values_by_tau", "input_spectra", "critical_frequency_frame"]

_RUN_KEYS = ("dataset", "tau_m", "seed")


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
        for x, _ in _batches(images, labels, batch_size, dev):
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
# generalization at equal training SSE (Sec. 4.4, Fig. 5d-e)

__all__ += ["test_sse_at_train_sse", "common_train_sse_range"]


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


__all__ += ["paired_verdict"]


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

"""Spike-based BPTT training (Algorithm 2, Eq. 5 loss) with checkpoints, resume and reuse.

One run = one (profile, dataset, tau_m, seed). Every epoch the run writes ``history.jsonl`` and
then ``checkpoint.pt`` (model, optimiser, schedule and random-generator state), both atomically,
so ``kill -9`` at any moment loses at most the epoch in progress; the same command resumes and
ends with the same numbers as an uninterrupted run. A folder whose ``metrics.json`` carries the
same config hash is reused, not retrained.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.nn import functional as F
from tqdm import tqdm

from .data import ImageDataset, augment_batch, load_dataset, stratified_subset
from .encoding import normalize_images, poisson_spikes
from .models import SNN
from .profiles import Profile, format_tau, get_profile
from .runs import (atomic_torch_save, atomic_write_json, atomic_write_text, config_hash, environment_info,
                   jsonl_text, read_json, read_jsonl, run_dir)

__all__ = [
    "DivergenceError",
    "RunConfig",
    "resolve_device",
    "sse_loss",
    "evaluate_clean",
    "train_run",
    "train_sweep",
    "load_run",
    "load_model",
]

#: Datasets trained with random crop (padding 4) and horizontal flip, as Lee et al. 2020 on CIFAR-10.
AUGMENTED = ("cifar10",)


class DivergenceError(RuntimeError):
    """Training diverged: the loss is not finite, or no spikes reach a hidden layer."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers (hashed into config.json)."""

    profile: Profile
    dataset: str
    tau_m: float
    seed: int

    @property
    def spec(self) -> str:
        try:
            return self.profile.architectures[self.dataset]
        except KeyError:
            raise ValueError(f"profile {self.profile.name!r} has no network for dataset {self.dataset!r}") from None

    def to_dict(self) -> dict:
        p = self.profile
        return {
            "profile": p.name, "dataset": self.dataset, "tau_m": format_tau(self.tau_m), "seed": self.seed,
            "spec": self.spec, "num_steps": p.num_steps, "epochs": p.epochs, "batch_size": p.batch_size,
            "lr": p.lr, "momentum": p.momentum, "weight_decay": p.weight_decay,
            "milestones": p.milestone_epochs(), "lr_gamma": p.lr_gamma, "dropout": p.dropout, "v_th": p.v_th,
            "eps": p.eps, "init_gain": p.init_gain, "train_subset": p.train_subset, "test_subset": p.test_subset,
            "augment": self.dataset in AUGMENTED, "loss": "0.5*sum_c(u_L[T]/T - onehot)^2, batch mean (Eq. 5)",
        }

    def hash(self) -> str:
        return config_hash(self.to_dict())


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no GPU; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


def sse_loss(prediction: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample sum-squared error ``sum_c (u_L[T]/T - onehot)^2`` (Eq. 5 loss without the 1/2), ``[B]``."""
    target = F.one_hot(labels, num_classes).to(prediction.dtype)
    return ((prediction - target) ** 2).sum(dim=1)


def _load_split(config: RunConfig, split: str, data_root: str | os.PathLike[str] | None,
                download: bool) -> ImageDataset:
    data = load_dataset(config.dataset, split, root=data_root, download=download)
    size = config.profile.train_subset if split == "train" else config.profile.test_subset
    if size is not None and size < len(data):
        data = stratified_subset(data, size, seed=0)
    return data


@torch.no_grad()
def evaluate_clean(model: SNN, data: ImageDataset, num_steps: int, batch_size: int, seed: int,
                   device: torch.device) -> dict[str, float]:
    """Clean test accuracy and SSE (mean over images) with its own seeded encoding generator."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    correct, sse = 0.0, 0.0
    for start in range(0, len(data), batch_size):
        x = normalize_images(data.images[start:start + batch_size].to(device))
        y = data.labels[start:start + batch_size].to(device)
        prediction = model(poisson_spikes(x, generator, num_steps))
        correct += (prediction.argmax(1) == y).sum().item()
        sse += sse_loss(prediction, y, model.num_classes).sum().item()
    return {"accuracy": correct / len(data), "sse": sse / len(data)}


def _crash_hook(epoch: int, batch: int | None) -> None:
    """Test hook: LEAKLIB_KILL_AT='E' or 'E:B' sends SIGKILL to this process there (simulates kill -9)."""
    spec = os.environ.get("LEAKLIB_KILL_AT")
    if not spec:
        return
    kill_epoch, _, kill_batch = spec.partition(":")
    if int(kill_epoch) == epoch and (int(kill_batch) if kill_batch else None) == batch:
        os.kill(os.getpid(), signal.SIGKILL)


def train_run(config: RunConfig, results_dir: str | os.PathLike[str] = "results", device: str = "auto",
              data_root: str | os.PathLike[str] | None = None, download: bool = False,
              progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train (or resume, or reuse) one run; return its metrics (also in ``metrics.json``)."""
    folder = run_dir(results_dir, config.profile.name, config.dataset, config.tau_m, config.seed)
    digest = config.hash()
    label = f"{config.dataset} tau_m={format_tau(config.tau_m)} seed={config.seed}"
    if (folder / "metrics.json").exists():
        metrics = read_json(folder / "metrics.json")
        if metrics.get("config_hash") == digest:
            log(f"[reuse] {label}: finished run in {folder}")
            return metrics
    if (folder / "config.json").exists() and read_json(folder / "config.json").get("config_hash") != digest:
        stale = folder.with_name(f"{folder.name}.stale-{read_json(folder / 'config.json').get('config_hash')}")
        os.replace(folder, stale)
        log(f"[stale] {label}: settings changed; kept the old run in {stale}")
    folder.mkdir(parents=True, exist_ok=True)

    dev = resolve_device(device)
    profile = config.profile
    train_data = _load_split(config, "train", data_root, download)
    test_data = _load_split(config, "test", data_root, download)
    torch.manual_seed(config.seed)
    model = SNN(config.spec, config.tau_m, v_th=profile.v_th, eps=profile.eps, dropout=profile.dropout,
                init_gain=profile.init_gain).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=profile.lr, momentum=profile.momentum,
                                weight_decay=profile.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, profile.milestone_epochs(), profile.lr_gamma)
    generator = torch.Generator(device=dev).manual_seed(config.seed)
    start_epoch, seconds_before = 0, 0.0
    history = read_jsonl(folder / "history.jsonl")
    checkpoint_path = folder / "checkpoint.pt"
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=dev, weights_only=False)
        if state.get("config_hash") == digest:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"].cpu())
            start_epoch, seconds_before = state["epoch"], state.get("seconds", 0.0)
            log(f"[resume] {label}: from epoch {start_epoch} of {profile.epochs}")
    history = history[:start_epoch]
    config_record = {**config.to_dict(), "config_hash": digest, "environment": environment_info(),
                     "device": str(dev), "threads": torch.get_num_threads(),
                     "train_size": len(train_data), "test_size": len(test_data)}
    atomic_write_json(folder / "config.json", config_record)

    t_start = time.perf_counter()
    images, labels = train_data.images.to(dev), train_data.labels.to(dev)
    batches = math.ceil(len(train_data) / profile.batch_size)
    for epoch in range(start_epoch, profile.epochs):
        t_epoch = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_data), generator=generator, device=dev)
        totals = {"loss": 0.0, "sse": 0.0, "correct": 0.0, "n": 0}
        layer_spikes = torch.zeros(len(model.neurons), dtype=torch.float64)
        layer_sizes = torch.tensor([math.prod(s) for s in model.hidden_shapes], dtype=torch.float64)
        bar = tqdm(range(batches), desc=f"{label} epoch {epoch + 1}/{profile.epochs}", leave=False,
                   disable=not progress, mininterval=1.0)
        for b in bar:
            _crash_hook(epoch + 1, b)
            index = order[b * profile.batch_size:(b + 1) * profile.batch_size]
            x, y = images[index], labels[index]
            if config.dataset in AUGMENTED:
                x = augment_batch(x, generator)
            spikes = poisson_spikes(normalize_images(x), generator, profile.num_steps)
            prediction, record = model(spikes, generator=generator, record=True)
            errors = sse_loss(prediction, y, model.num_classes)
            loss = 0.5 * errors.mean()
            if not torch.isfinite(loss):
                raise DivergenceError(f"{label}: loss is {loss.item()} at epoch {epoch + 1}, batch {b + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = len(y)
            totals["loss"] += loss.item() * n
            totals["sse"] += errors.detach().sum().item()
            totals["correct"] += (prediction.argmax(1) == y).sum().item()
            totals["n"] += n
            layer_spikes += torch.stack([c.sum() for c in record.spike_counts]).double().cpu()
            rate = 100 * layer_spikes.sum().item() / (layer_sizes.sum().item() * profile.num_steps * totals["n"])
            bar.set_postfix(loss=f"{totals['loss'] / totals['n']:.3f}",
                            acc=f"{totals['correct'] / totals['n']:.3f}", spikes=f"{rate:.1f}%", refresh=False)
        bar.close()
        silent = [i + 1 for i, s in enumerate(layer_spikes.tolist()) if s == 0]
        if silent:
            raise DivergenceError(f"{label}: no spikes reached hidden layer {silent[0]} of {len(layer_spikes)} "
                                  f"during epoch {epoch + 1} (tau_m={format_tau(config.tau_m)})")
        scheduler.step()
        test = evaluate_clean(model, test_data, profile.num_steps, profile.eval_batch_size,
                              seed=10_000 * config.seed + epoch, device=dev)
        n = totals["n"]
        per_layer = (100 * layer_spikes / (layer_sizes * profile.num_steps * n)).tolist()
        history.append({
            "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": totals["loss"] / n,
            "train_sse": totals["sse"] / n, "train_acc": totals["correct"] / n,
            "test_sse": test["sse"], "test_acc": test["accuracy"],
            "train_spike_rate": sum(per_layer[i] * layer_sizes[i].item() for i in range(len(per_layer)))
            / layer_sizes.sum().item(),
            "train_spike_rate_per_layer": per_layer, "seconds": time.perf_counter() - t_epoch,
        })
        atomic_write_text(folder / "history.jsonl", jsonl_text(history))
        atomic_torch_save(checkpoint_path, {
            "config_hash": digest, "epoch": epoch + 1, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(), "seconds": seconds_before + time.perf_counter() - t_start,
        })
        log(f"{label} epoch {epoch + 1}/{profile.epochs}: train acc {history[-1]['train_acc']:.3f} "
            f"sse {history[-1]['train_sse']:.3f} | test acc {test['accuracy']:.3f} sse {test['sse']:.3f} | "
            f"spikes {history[-1]['train_spike_rate']:.2f}% | {history[-1]['seconds']:.1f}s")
        _crash_hook(epoch + 1, None)

    window = max(1, round(profile.sse_window * profile.epochs))
    last = history[-window:]
    metrics = {
        "config_hash": digest, "epochs": len(history), "test_acc": history[-1]["test_acc"],
        "test_sse": history[-1]["test_sse"], "train_sse": history[-1]["train_sse"],
        "test_sse_window": sum(h["test_sse"] for h in last) / len(last),
        "train_sse_window": sum(h["train_sse"] for h in last) / len(last), "sse_window_epochs": window,
        "train_seconds": sum(h["seconds"] for h in history),
    }
    atomic_write_json(folder / "metrics.json", metrics)
    return metrics


def train_sweep(profile: Profile | str, datasets: Sequence[str] | None = None, taus: Sequence[float] | None = None,
                seeds: Sequence[int] | None = None, **kwargs) -> list[tuple[RunConfig, dict]]:
    """Train or reuse every (dataset, tau_m, seed) run of a profile; returns configs with their metrics."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    results = []
    for dataset in datasets or prof.datasets:
        for tau_m in taus or prof.taus:
            for seed in seeds or prof.seeds:
                config = RunConfig(prof, dataset, float(tau_m), int(seed))
                results.append((config, train_run(config, **kwargs)))
    return results


def load_run(config: RunConfig, results_dir: str | os.PathLike[str] = "results") -> dict:
    """config.json, history and metrics of a finished run (FileNotFoundError if it has not finished)."""
    folder = run_dir(results_dir, config.profile.name, config.dataset, config.tau_m, config.seed)
    if not (folder / "metrics.json").exists():
        raise FileNotFoundError(f"run {folder} has not finished; train it with `leaklib train --profile "
                                f"{config.profile.name} --dataset {config.dataset} --tau {format_tau(config.tau_m)} "
                                f"--seeds {config.seed}`")
    return {"folder": folder, "config": read_json(folder / "config.json"),
            "history": read_jsonl(folder / "history.jsonl"), "metrics": read_json(folder / "metrics.json")}


def load_model(config: RunConfig, results_dir: str | os.PathLike[str] = "results",
               device: str | torch.device = "cpu") -> SNN:
    """The trained network of a finished run, in eval mode."""
    run = load_run(config, results_dir)
    dev = resolve_device(device) if isinstance(device, str) else device
    profile = config.profile
    model = SNN(config.spec, config.tau_m, v_th=profile.v_th, eps=profile.eps, dropout=profile.dropout,
                init_gain=profile.init_gain)
    state = torch.load(Path(run["folder"]) / "checkpoint.pt", map_location=dev, weights_only=False)
    model.load_state_dict(state["model"])
    return model.to(dev).eval()

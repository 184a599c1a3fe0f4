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
import re
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
from .gpu import configure_determinism
from .models import SNN
from .profiles import Profile, format_tau, get_profile
from .locks import Lock
from .runs import (RunFileError, atomic_torch_save, atomic_write_json, atomic_write_text, checked_history,
                   checkpoint_intact, config_hash, environment_info, jsonl_text, load_checkpoint, read_json,
                   remove_stale_temporaries, run_dir)

__all__ = [
    "RunConfig",
    "resolve_device",
    "sse_loss",
    "evaluate_clean",
    "train_run",
    "train_sweep",
    "build_model",
    "load_run",
    "load_model",
]

#: Datasets trained with random crop (padding 4) and horizontal flip, as Lee et al. 2020 on CIFAR-10.
AUGMENTED = ("cifar10",)


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
            **self.settings(),
        }

    def settings(self) -> dict:
        """The training settings shared by every run of a sweep variant (all but dataset, tau_m, seed)."""
        p = self.profile
        return {
            "spec": self.spec, "num_steps": p.num_steps, "epochs": p.epochs, "batch_size": p.batch_size,
            "lr": p.lr, "momentum": p.momentum, "weight_decay": p.weight_decay,
            "milestones": p.milestone_epochs(), "lr_gamma": p.lr_gamma, "dropout": p.dropout, "v_th": p.v_th,
            "leak_grad": p.leak_grad, "correction": p.correction, "pooling": p.pooling,
            "init_gain": p.init_gain, "train_subset": p.train_subset, "test_subset": p.test_subset,
            "train_eval_subset": p.train_eval_subset, "eval_batch_size": p.eval_batch_size,
            "augment": self.dataset in AUGMENTED, "loss": "0.5*sum_c(u_L[T]/T - onehot)^2, batch mean (Eq. 5)",
        }

    def hash(self) -> str:
        return config_hash(self.to_dict())

    def variant(self) -> str:
        """8 hex digits naming the sweep's settings (the profile's, whatever the dataset, tau_m and seed)."""
        p = self.profile
        shared = {k: v for k, v in self.settings().items() if k not in ("spec", "augment")}
        return config_hash({**shared, "architectures": p.architectures, "augmented": list(AUGMENTED)})[:8]

    def folder(self, results_dir: str | os.PathLike[str] = "results") -> Path:
        """``<results>/<profile>/<variant>/<dataset>/tau-<tau_m>/seed-<seed>``: runs of other settings never share it."""
        return run_dir(results_dir, self.profile.name, self.dataset, self.tau_m, self.seed, self.variant())

    def label(self) -> str:
        return f"{self.dataset} tau_m={format_tau(self.tau_m)} seed={self.seed}"


def build_model(config: RunConfig) -> SNN:
    """The untrained network of a run (its spec, tau_m and the profile's training semantics)."""
    p = config.profile
    return SNN(config.spec, config.tau_m, v_th=p.v_th, dropout=p.dropout, init_gain=p.init_gain,
               leak_grad=p.leak_grad, correction=p.correction, pooling=p.pooling)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; a device that cannot be used here is a ValueError.

    ``cuda[:N]`` must name a GPU that torch sees and can allocate on, so that a bad device is
    reported before any run folder is touched.
    """
    text = str(device).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not re.fullmatch(r"cuda(:\d+)?", text):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {text!r} requested but torch sees no GPU; use --device cpu or auto")
    dev = torch.device(text)
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"device {text!r} requested but torch sees {count} GPU(s) (cuda:0..cuda:{count - 1})")
    try:
        torch.zeros(1, device=dev)
    except Exception as exc:  # driver mismatch, busy/prohibited GPU, out of memory, ...
        first = " ".join(str(exc).split())[:160]
        raise ValueError(f"device {text!r} is not usable ({first}); use --device cpu") from None
    return dev


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


#: The run being trained in this process (for the test hook below).
_CURRENT_RUN: dict[str, str] = {}


def _train_step(model: SNN, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator, num_steps: int, augment: bool, totals: dict,
                layer_spikes: torch.Tensor) -> float | None:
    """One SGD step of :func:`train_run` on raw images ``x`` and labels ``y`` (Algorithm 2, Eq. 5 loss).

    Encodes the batch, runs forward (recording each hidden layer's spike count), backward and the
    optimiser step, and adds the batch's loss, SSE, correct answers and spike counts to ``totals``
    and ``layer_spikes``. Returns None, or the loss without stepping when it is not finite.
    """
    if augment:
        x = augment_batch(x, generator)
    spikes = poisson_spikes(normalize_images(x), generator, num_steps)
    prediction, record = model(spikes, generator=generator, record="counts")
    errors = sse_loss(prediction, y, model.num_classes)
    loss = 0.5 * errors.mean()
    if not torch.isfinite(loss):
        return loss.item()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    n = len(y)
    totals["loss"] += loss.item() * n
    totals["sse"] += errors.detach().sum().item()
    totals["correct"] += (prediction.argmax(1) == y).sum().item()
    totals["n"] += n
    layer_spikes += torch.stack(record.spike_totals).double().cpu()
    return None


def _crash_hook(epoch: int, batch: int | None) -> None:
    """Test hook: LEAKLIB_KILL_AT='E' or 'E:B' sends a signal to this process there.

    The signal is SIGKILL (simulates kill -9) unless LEAKLIB_KILL_SIGNAL names another (e.g. USR2,
    the preemption signal of Slurm and submitit). LEAKLIB_KILL_RUN restricts it to the run with that
    label ('digits tau_m=30 seed=1'); LEAKLIB_KILL_ONCE=<file> fires only if the file does not exist
    yet, and creates it (so a requeued or resumed run is not interrupted again).
    """
    spec = os.environ.get("LEAKLIB_KILL_AT")
    if not spec:
        return
    kill_epoch, _, kill_batch = spec.partition(":")
    if int(kill_epoch) != epoch or (int(kill_batch) if kill_batch else None) != batch:
        return
    run = os.environ.get("LEAKLIB_KILL_RUN")
    if run and run != _CURRENT_RUN.get("label"):
        return
    once = os.environ.get("LEAKLIB_KILL_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("LEAKLIB_KILL_SIGNAL", "KILL").upper()))


def _fail(config: RunConfig, epoch: int, reason: str) -> dict:
    return {"status": "diverged", "diverged_epoch": epoch, "reason": f"{config.label()}: {reason}"}


def train_run(config: RunConfig, results_dir: str | os.PathLike[str] = "results", device: str = "auto",
              data_root: str | os.PathLike[str] | None = None, download: bool = False,
              progress: bool = True, log: Callable[[str], None] = print, tag: str = "",
              lock_wait: float | None = 0.0) -> dict:
    """Train (or resume, or reuse) one run; return its metrics (also in ``metrics.json``).

    Divergence is data, not an error: a run whose loss stops being finite, or in which no spike
    reaches a hidden layer for a whole epoch (the paper's failure mode at small tau_m, Sec. 4.2),
    ends there with ``status: "diverged"``, the epoch and the reason in its metrics; its history
    holds the epochs before. ``tag`` (e.g. ``"run 3/9"``) prefixes the progress lines.

    One process at a time trains a run: the run folder is locked (:class:`leaklib.locks.Lock`);
    when another live process holds it this raises :class:`leaklib.locks.LockHeld` naming it
    (``lock_wait``: seconds to wait for it first, None = as long as it takes). Damaged files raise
    :class:`leaklib.runs.RunFileError` (one line: the file and what to do). Nothing is written
    before the device is validated and the data are loaded.
    """
    dev = resolve_device(device)
    folder = config.folder(results_dir)
    digest = config.hash()
    label = f"{tag + ' ' if tag else ''}{config.label()}"
    reused = _reusable(config, folder, digest, label, log)
    if reused is not None:
        return reused
    train_data = _load_split(config, "train", data_root, download)
    test_data = _load_split(config, "test", data_root, download)
    with Lock(folder, "trained", wait=lock_wait, log=log, folder=True):
        reused = _reusable(config, folder, digest, label, log)  # finished by the holder we waited for
        if reused is not None:
            return reused
        remove_stale_temporaries(folder)  # a write cut short by kill -9 (the run's files are whole: atomic)
        _CURRENT_RUN["label"] = config.label()
        try:
            return _train(config, folder, dev, digest, label, train_data, test_data, progress, log)
        finally:
            _CURRENT_RUN.pop("label", None)


def _metrics_epochs(path: Path, metrics: dict, remedy: str) -> int:
    """The epoch count of a metrics.json (an integer >= 0), else :class:`RunFileError` naming the file."""
    epochs = metrics.get("epochs", 0)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise RunFileError(f"{path} is damaged (epochs {epochs!r} is not a count of epochs); {remedy}")
    return epochs


def _check_record(folder: Path, digest: str, remedy: str) -> dict:
    """config.json of a run: readable and carrying this config hash, else :class:`RunFileError` (one line)."""
    path = folder / "config.json"
    if not path.exists():
        raise RunFileError(f"{path} is missing; {remedy}")
    record = read_json(path, remedy)
    if not isinstance(record, dict) or record.get("config_hash") != digest:
        found = record.get("config_hash") if isinstance(record, dict) else None
        raise RunFileError(f"{path} belongs to other settings (config hash {found}, expected {digest}); {remedy}")
    return record


def _reusable(config: RunConfig, folder: Path, digest: str, label: str, log: Callable[[str], None]) -> dict | None:
    """The metrics of a finished run with this config hash whose files are intact, else None (train it).

    Intact: metrics.json, config.json and the checkpoint carry or fit this config, and the history
    holds the epochs the metrics count (what :func:`load_run` and :func:`load_model` will check).
    """
    path = folder / "metrics.json"
    if not path.exists():
        return None
    rebuild = (f"delete it to rebuild it from {folder.name}'s checkpoint and history (`leaklib train` does that), "
               f"or restore it")
    metrics = read_json(path, rebuild)
    if not isinstance(metrics, dict):
        raise RunFileError(f"{path} is damaged (not a JSON object); {rebuild}")
    if metrics.get("config_hash") != digest:
        raise RunFileError(f"{path} belongs to other settings (config hash {metrics.get('config_hash')}, expected "
                           f"{digest}); move {folder} away to train this run")
    epochs = _metrics_epochs(path, metrics, rebuild)
    _check_record(folder, digest, f"restore it, or delete {folder} to retrain this run")
    checked_history(folder / "history.jsonl", epochs, f"restore it, or delete {folder} to retrain this run")
    checkpoint = folder / "checkpoint.pt"
    if epochs > 0 and not checkpoint_intact(checkpoint):
        what = "missing" if not checkpoint.exists() else "unreadable (truncated?)"
        raise RunFileError(f"{checkpoint} of this finished run is {what}; restore it, or delete {folder} "
                           f"to retrain this run")
    log(f"[reuse] {label}: {metrics.get('status', 'finished')} run in {folder}")
    return metrics


def _resume(config: RunConfig, folder: Path, digest: str, dev: torch.device, model: SNN,
            optimizer: torch.optim.Optimizer, scheduler: object, generator: torch.Generator,
            label: str, log: Callable[[str], None]) -> tuple[int, float, list[dict], list[dict]]:
    """Load and check ``checkpoint.pt``: (start epoch, seconds so far, history, RNG re-seeds).

    The checkpoint must be this config's, at an epoch within the run, and history.jsonl must hold
    that many epochs; otherwise one line names the file and what to do. A generator state from
    another device type (a CUDA checkpoint resumed on the CPU, or back) cannot be restored: the
    stream is re-seeded from (seed, epoch), said in one line and recorded in config.json.
    """
    path = folder / "checkpoint.pt"
    epochs = config.profile.epochs
    if not path.exists():
        return 0, 0.0, [], []
    remedy = "delete it to retrain this run from scratch, or restore it"
    state = load_checkpoint(path, map_location=dev, remedy=remedy)
    if state.get("config_hash") != digest:
        raise RunFileError(f"{path} belongs to other settings (config hash {state.get('config_hash')}, expected "
                           f"{digest}); {remedy}")
    epoch = state["epoch"]
    if not isinstance(epoch, int) or not 1 <= epoch <= epochs:
        raise RunFileError(f"{path} is at epoch {epoch!r} but this run has {epochs} epoch(s); {remedy}")
    history = checked_history(folder / "history.jsonl", epoch,
                              f"restore it, or delete {path.name} to retrain this run from scratch")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])  # type: ignore[attr-defined]
    except (KeyError, RuntimeError, ValueError) as exc:
        raise RunFileError(f"{path} does not fit this run's network ({' '.join(str(exc).split())[:100]}); "
                           f"{remedy}") from None
    reseeds = []
    try:
        previous = read_json(folder / "config.json").get("rng_reseeded", [])
    except (OSError, ValueError, AttributeError):
        previous = []
    try:
        generator.set_state(state["generator"].cpu())
    except (KeyError, RuntimeError, AttributeError):
        wrote = _recorded_device(folder)
        seed = 1_000_003 * (config.seed + 1) + epoch
        generator.manual_seed(seed)
        reseeds = [{"epoch": epoch, "checkpoint_device": wrote, "device": dev.type}]
        log(f"[resume] {label}: {path.name}'s random-generator state is from another device ({wrote}), "
            f"this process trains on {dev.type}: the stream restarts from seed {seed} at epoch {epoch} "
            f"(the run will not match an uninterrupted one bit for bit; recorded in config.json)")
    log(f"[resume] {label}: from epoch {epoch} of {epochs}")
    return epoch, float(state.get("seconds", 0.0)), history, list(previous) + reseeds


def _recorded_device(folder: Path) -> str:
    try:
        return str(read_json(folder / "config.json").get("device", "another device"))
    except (OSError, ValueError, AttributeError):
        return "another device"


def _train(config: RunConfig, folder: Path, dev: torch.device, digest: str, label: str, train_data: ImageDataset,
           test_data: ImageDataset, progress: bool, log: Callable[[str], None]) -> dict:
    """The training of a locked run folder (see :func:`train_run`)."""
    profile = config.profile
    train_eval = _train_eval_split(train_data, profile.train_eval_subset)
    atomic_write_json(folder.parents[2] / "settings.json", {"profile": profile.name, "variant": config.variant(),
                                                           **{k: v for k, v in config.settings().items()
                                                              if k not in ("spec", "augment")},
                                                           "architectures": profile.architectures})

    torch.manual_seed(config.seed)
    model = build_model(config).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=profile.lr, momentum=profile.momentum,
                                weight_decay=profile.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, profile.milestone_epochs(), profile.lr_gamma)
    generator = torch.Generator(device=dev).manual_seed(config.seed)
    checkpoint_path = folder / "checkpoint.pt"
    start_epoch, seconds_before, history, reseeds = _resume(config, folder, digest, dev, model, optimizer, scheduler,
                                                            generator, label, log)
    config_record = {**config.to_dict(), "config_hash": digest, "variant": config.variant(),
                     "environment": environment_info(), "device": str(dev), "threads": torch.get_num_threads(),
                     "determinism": configure_determinism(dev),
                     "train_size": len(train_data), "test_size": len(test_data), "train_eval_size": len(train_eval),
                     **({"rng_reseeded": reseeds} if reseeds else {})}
    atomic_write_json(folder / "config.json", config_record)

    t_start = time.perf_counter()
    images, labels = train_data.images.to(dev), train_data.labels.to(dev)
    batches = math.ceil(len(train_data) / profile.batch_size)
    layer_sizes = torch.tensor([math.prod(s) for s in model.hidden_shapes], dtype=torch.float64)
    failure: dict | None = None
    for epoch in range(start_epoch, profile.epochs):
        t_epoch = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_data), generator=generator, device=dev)
        totals = {"loss": 0.0, "sse": 0.0, "correct": 0.0, "n": 0}
        layer_spikes = torch.zeros(len(model.neurons), dtype=torch.float64)
        bar = tqdm(range(batches), desc=f"{label} epoch {epoch + 1}/{profile.epochs}", leave=False,
                   disable=not progress, mininterval=1.0)
        for b in bar:
            _crash_hook(epoch + 1, b)
            index = order[b * profile.batch_size:(b + 1) * profile.batch_size]
            loss = _train_step(model, optimizer, images[index], labels[index], generator, profile.num_steps,
                               config.dataset in AUGMENTED, totals, layer_spikes)
            if loss is not None:
                failure = _fail(config, epoch + 1, f"loss is {loss} at epoch {epoch + 1}, batch {b + 1}")
                break
            if progress:
                rate = 100 * layer_spikes.sum().item() / (layer_sizes.sum().item() * profile.num_steps * totals["n"])
                bar.set_postfix(loss=f"{totals['loss'] / totals['n']:.3f}",
                                acc=f"{totals['correct'] / totals['n']:.3f}", spikes=f"{rate:.1f}%", refresh=False)
        bar.close()
        silent = [i + 1 for i, s in enumerate(layer_spikes.tolist()) if s == 0]
        if failure is None and silent:
            failure = _fail(config, epoch + 1, f"no spikes reached hidden layer {silent[0]} of {len(layer_spikes)} "
                                               f"during epoch {epoch + 1} (tau_m={format_tau(config.tau_m)})")
        if failure is not None:
            log(f"[diverged] {failure['reason']}")
            break
        scheduler.step()
        t_eval = time.perf_counter()
        test = evaluate_clean(model, test_data, profile.num_steps, profile.eval_batch_size,
                              seed=10_000 * config.seed + epoch, device=dev)
        train_now = evaluate_clean(model, train_eval, profile.num_steps, profile.eval_batch_size,
                                   seed=20_000 * config.seed + epoch, device=dev)
        n = totals["n"]
        per_layer = (100 * layer_spikes / (layer_sizes * profile.num_steps * n)).tolist()
        history.append({
            "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": totals["loss"] / n,
            "train_sse": totals["sse"] / n, "train_acc": totals["correct"] / n,
            "train_sse_eval": train_now["sse"], "train_acc_eval": train_now["accuracy"],
            "test_sse": test["sse"], "test_acc": test["accuracy"],
            "train_spike_rate": sum(per_layer[i] * layer_sizes[i].item() for i in range(len(per_layer)))
            / layer_sizes.sum().item(),
            "train_spike_rate_per_layer": per_layer, "seconds": time.perf_counter() - t_epoch,
            "eval_seconds": time.perf_counter() - t_eval,
        })
        atomic_write_text(folder / "history.jsonl", jsonl_text(history))
        atomic_torch_save(checkpoint_path, {
            "config_hash": digest, "epoch": epoch + 1, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(), "seconds": seconds_before + time.perf_counter() - t_start,
        })
        h = history[-1]
        log(f"{label} epoch {epoch + 1}/{profile.epochs}: train acc {h['train_acc']:.3f} sse {h['train_sse']:.3f} "
            f"(eval {h['train_sse_eval']:.3f}) | test acc {test['accuracy']:.3f} sse {test['sse']:.3f} | "
            f"spikes {h['train_spike_rate']:.2f}% | {h['seconds']:.1f}s")
        _crash_hook(epoch + 1, None)

    metrics = _metrics(history, profile.sse_window, digest)
    metrics.update(failure or {"status": "finished"})
    atomic_write_json(folder / "metrics.json", metrics)
    return metrics


def _train_eval_split(train_data: ImageDataset, size: int | None) -> ImageDataset:
    """The fixed train images on which the eval-mode train SSE is measured after every epoch."""
    if size is None or size >= len(train_data):
        return train_data
    return stratified_subset(train_data, size, seed=1)


def _metrics(history: list[dict], sse_window: float, digest: str) -> dict:
    """metrics.json of a run: the last epoch's numbers and Table 1's SSE window (NaN where no epoch finished)."""
    nan = math.nan
    if not history:
        return {"config_hash": digest, "epochs": 0, "test_acc": nan, "test_sse": nan, "train_sse": nan,
                "train_sse_eval": nan, "test_sse_window": nan, "train_sse_window": nan,
                "train_sse_eval_window": nan, "sse_window_epochs": 0, "train_seconds": 0.0}
    window = max(1, round(sse_window * len(history)))
    last = history[-window:]

    def mean(key: str) -> float:
        return sum(h[key] for h in last) / len(last)

    return {
        "config_hash": digest, "epochs": len(history), "test_acc": history[-1]["test_acc"],
        "test_sse": history[-1]["test_sse"], "train_sse": history[-1]["train_sse"],
        "train_sse_eval": history[-1]["train_sse_eval"], "test_sse_window": mean("test_sse"),
        "train_sse_window": mean("train_sse"), "train_sse_eval_window": mean("train_sse_eval"),
        "sse_window_epochs": window, "train_seconds": sum(h["seconds"] for h in history),
    }


def train_sweep(profile: Profile | str, datasets: Sequence[str] | None = None, taus: Sequence[float] | None = None,
                seeds: Sequence[int] | None = None, **kwargs) -> list[tuple[RunConfig, dict]]:
    """Train or reuse every (dataset, tau_m, seed) run of a profile; returns configs with their metrics."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    configs = [RunConfig(prof, dataset, float(tau_m), int(seed)) for dataset in datasets or prof.datasets
               for tau_m in taus or prof.taus for seed in seeds or prof.seeds]
    return [(config, train_run(config, tag=f"[run {k}/{len(configs)}]", **kwargs))
            for k, config in enumerate(configs, start=1)]


def load_run(config: RunConfig, results_dir: str | os.PathLike[str] = "results") -> dict:
    """config.json, history and metrics of a finished run (FileNotFoundError if it has not finished).

    Every file read must carry this config's hash, and the history must hold the epochs the
    metrics count; otherwise :class:`leaklib.runs.RunFileError` (a ValueError) names the file and
    what to do.
    """
    folder = config.folder(results_dir)
    digest = config.hash()
    if not (folder / "metrics.json").exists():
        raise FileNotFoundError(f"run {folder} has not finished; train it with `leaklib train --profile "
                                f"{config.profile.name} --dataset {config.dataset} --tau {format_tau(config.tau_m)} "
                                f"--seeds {config.seed}`")
    retrain = f"delete {folder} to retrain this run, or restore it"
    metrics = read_json(folder / "metrics.json", "delete it to rebuild it with `leaklib train` (same settings), "
                                                 "or restore it")
    if not isinstance(metrics, dict):
        raise RunFileError(f"{folder / 'metrics.json'} is damaged (not a JSON object); delete it to rebuild it with "
                           f"`leaklib train` (same settings), or restore it")
    if metrics.get("config_hash") != digest:
        raise RunFileError(f"{folder / 'metrics.json'} belongs to other settings (config hash "
                           f"{metrics.get('config_hash')}, expected {digest}); retrain it")
    epochs = _metrics_epochs(folder / "metrics.json", metrics, "delete it to rebuild it with `leaklib train` "
                                                               "(same settings), or restore it")
    record = _check_record(folder, digest, retrain)
    history = checked_history(folder / "history.jsonl", epochs, retrain)
    return {"folder": folder, "config": record, "history": history, "metrics": metrics}


def load_model(config: RunConfig, results_dir: str | os.PathLike[str] = "results",
               device: str | torch.device = "cpu") -> SNN:
    """The trained network of a finished run (its last checkpoint), in eval mode.

    The checkpoint must be readable, carry this config's hash and be at the epoch the metrics
    report; otherwise one line (:class:`leaklib.runs.RunFileError`) says which file and what to do.
    The GPU numerics switches are set as for training (:func:`leaklib.gpu.configure_determinism`:
    TF32 off unless ``LEAKLIB_TF32=1``), so an analysis does not depend on whether this process
    trained something first (PyTorch's own default runs cuDNN convolutions in TF32).
    """
    run = load_run(config, results_dir)
    dev = resolve_device(device) if isinstance(device, str) else device
    configure_determinism(dev)
    folder = Path(run["folder"])
    path = folder / "checkpoint.pt"
    epochs = run["metrics"].get("epochs", 0)  # checked by load_run
    if not path.exists():
        if epochs == 0:
            raise FileNotFoundError(f"run {folder} {run['metrics'].get('status', 'ended')} before its first epoch "
                                    f"ended: it has no trained network")
        raise RunFileError(f"{path} is missing; restore it, or delete {folder} to retrain this run")
    state = load_checkpoint(path, map_location=dev, remedy=f"restore it, or delete {folder} to retrain this run")
    if state.get("config_hash") != config.hash() or state.get("epoch") != epochs:
        raise RunFileError(f"{path} does not match {folder / 'metrics.json'} (config hash {state.get('config_hash')}, "
                           f"epoch {state.get('epoch')}; expected {config.hash()}, epoch {epochs}); restore it, or "
                           f"delete {folder} to retrain this run")
    model = build_model(config)
    model.load_state_dict(state["model"])
    return model.to(dev).eval()

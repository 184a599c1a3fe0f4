"""Time one SNN training step side by side: the trainer's own step, leaklib, snnTorch, SpikingJelly, the limits.

One command::

    python benchmarks/train_step.py [--device cpu|cuda] [--threads N] [--quick] [--tau 30]

Digits net of the quick profile (``8x8x1-16C3-2P-32C3-2P-128FC-10o``) at T=100, batch 32, and
(not with ``--quick``) the paper's CIFAR-10 net (CPU: T=4, batch 8; CUDA: T=100, batch 64). All
rows start from the same weights (leaklib's ``Block`` maps: channels-last convolutions on the
CPU, FC layers) and take the same SGD step (the quick profile's lr, momentum and weight decay)
on the same loss (Eq. 5 SSE on ``u_L[T]/T``). A step is forward + loss + ``zero_grad`` +
backward + ``optimizer.step()``. What each row runs:

* ``trainer step``: ``leaklib.train._train_step``, the exact code of ``train_run``'s batch loop:
  a batch of digits images indexed from the training set, Poisson encoding of T steps, forward
  with ``record="counts"``, loss, backward, SGD step, the progress bookkeeping (digits only);
* ``leaklib``: :class:`leaklib.models.SNN` with [21]'s semantics (detached leak gradient, [21]'s
  leak correction, spiking pooling neurons), on pre-encoded spikes, no record; for the digits
  net the trainer's network (``build_model`` of the quick profile, its dropout included; ``--set
  dropout=0.2`` etc. override the profile), for the CIFAR-10 net without dropout;
* ``leaklib + record="full"``: the same with the analysis record (as the chapters' evaluations);
* ``leaklib per-step``: ``SNN(method="stepwise")``, Algorithm 2 literally (one step through all
  layers at a time, gradient hooks for the correction);
* ``snnTorch``: ``snntorch.Leaky(beta, reset_mechanism="zero", reset_delay=False)`` hidden neurons
  and ``Leaky(beta=1, threshold=0.75)`` pooling neurons after ``F.avg_pool2d``, in a Python loop
  over T as in the snnTorch tutorials; its default surrogate (arctan), exact leak gradient, no
  leak correction (snnTorch has neither [21]'s correction nor a detached leak), no dropout;
* ``SpikingJelly``: multi-step ``LIFNode(decay_input=False, v_reset=0, detach_reset=True)`` (IFNode
  for tau_m=inf) with ``tau = 1/(1-beta)`` (the same decay) and ``IFNode(v_threshold=0.75)``
  pooling neurons after ``F.avg_pool2d``; its default surrogate (sigmoid), exact leak gradient,
  no correction, no dropout; on the CPU SpikingJelly 2.x runs its torch backend;
* ``limit (network without neurons)``: the same maps over the ``[T*B]`` batch with the neurons
  removed: ``F.avg_pool2d``, convolutions, FC layers, output integrator, forward and backward;
* ``convolutions and FC alone``: each conv/FC map on an input of the shape it sees in the net
  (binary spikes, channels-last), forward and the backward the SNN needs (no input gradient for
  the first layer), SGD step: what the linear algebra alone costs, a floor for any SNN.

Times are medians over ``--steps`` rounds in which the rows run interleaved (round-robin), so
that a load that comes and goes on a shared machine slows all rows alike. On the CPU with one
thread the time is the thread's CPU time (``time.thread_time``: the time a row waits for a core
is not counted); with more threads and on CUDA, wall clock. Peak memory (not with ``--quick``):
on CUDA ``torch.cuda.max_memory_allocated`` above the pre-step level, on the CPU the peak of the
torch profiler's memory timeline over one step (tensors the step allocates; weights excluded).

The three goal ratios are printed last (digits net): trainer step / limit (goal <= 1.15),
snnTorch / leaklib (>= 4), SpikingJelly / leaklib (>= 2). Results also go to
``benchmarks/results/train_step-<device>.json`` (git-ignored); ``--readme README.md`` also writes them
into the README's speed block (``leaklib.report.update_speed``), which a test checks against its stored data.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

import leaklib
from leaklib import report
from leaklib.encoding import normalize_images, poisson_spikes
from leaklib.models import ARCHITECTURES, POOL_THRESHOLD, SNN
from leaklib.neurons import decay_factor, leaky_integrate
from leaklib.profiles import get_profile, parse_overrides
from leaklib.runs import git_commit
from leaklib.train import RunConfig, _train_step, build_model, sse_loss

HERE = Path(__file__).resolve().parent
TRAINER = "trainer step (train_run's own)"
LEAKLIB = "leaklib"
LIMIT = "limit (network without neurons)"
CONV_ONLY = "convolutions and FC alone"
SNNTORCH = "snnTorch (per-step loop)"
SPIKINGJELLY = "SpikingJelly (multi-step)"
GOALS = ((TRAINER, LIMIT, "<=", 1.15), (SNNTORCH, LEAKLIB, ">=", 4.0), (SPIKINGJELLY, LEAKLIB, ">=", 2.0))


# ---------------------------------------------------------------------------------------------
# the contenders: each maps input spikes [T, B, C, H, W] to u_L[T]/T through the SNN's own maps


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


class ANNLimit(nn.Module):
    """The SNN with its neurons removed: 2x2 average pooling, conv/FC maps, output integrator, over [T*B]."""

    def __init__(self, snn: SNN) -> None:
        super().__init__()
        self.blocks = copy.deepcopy(snn.blocks)
        self.tau_m = snn.tau_m

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        num_steps, batch = spikes.shape[:2]
        x = spikes.flatten(0, 1)
        for block in self.blocks:
            if block.pool > 1:
                x = _pool(x)
            x = block._map(x)
        return leaky_integrate(x.unflatten(0, (num_steps, batch)), self.tau_m) / num_steps


class ConvOnly:
    """Each conv/FC map of the SNN on a stored input of the shape it sees there: the linear algebra alone."""

    def __init__(self, snn: SNN, num_steps: int, batch: int, device: torch.device) -> None:
        self.blocks = copy.deepcopy(snn.blocks).to(device)
        gen = torch.Generator().manual_seed(0)
        self.inputs = []
        for index, block in enumerate(self.blocks):
            shape = (num_steps * batch,) + tuple(block.pool_shape or block.in_shape)
            x = (torch.rand(shape, generator=gen) < 0.2).float()
            if x.dim() == 4 and index > 0:
                x = x.contiguous(memory_format=torch.channels_last)
            self.inputs.append(x.to(device).requires_grad_(index > 0))
        with torch.no_grad():
            outputs = [block._map(x) for block, x in zip(self.blocks, self.inputs)]
        self.grads = [torch.randn(out.shape, generator=gen).to(device) for out in outputs]

    def parameters(self):
        return self.blocks.parameters()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        outputs = [block._map(x) for block, x in zip(self.blocks, self.inputs)]
        optimizer.zero_grad(set_to_none=True)
        for x in self.inputs:
            x.grad = None
        torch.autograd.backward(outputs, self.grads)
        optimizer.step()


class SnnTorchNet(nn.Module):
    """snnTorch: ``Leaky`` hidden and pooling neurons driven one time step at a time."""

    def __init__(self, snn: SNN) -> None:
        super().__init__()
        import snntorch

        self.blocks = copy.deepcopy(snn.blocks)
        self.beta = decay_factor(snn.tau_m)
        self.lifs = nn.ModuleList(
            snntorch.Leaky(beta=self.beta, threshold=snn.v_th, reset_mechanism="zero", reset_delay=False)
            for _ in snn.neurons)
        self.pools = nn.ModuleList(
            snntorch.Leaky(beta=1.0, threshold=POOL_THRESHOLD, reset_mechanism="zero", reset_delay=False)
            if block.pool_neuron is not None else nn.Identity() for block in snn.blocks)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        for lif in [*self.lifs, *self.pools]:
            if hasattr(lif, "reset_mem"):
                lif.reset_mem()
        u_out = None
        for t in range(spikes.shape[0]):
            x = spikes[t]
            for index, block in enumerate(self.blocks):
                if block.pool > 1:
                    x = _pool(x)
                    if block.pool_neuron is not None:
                        x, _ = self.pools[index](x)
                current = block._map(x)
                if index < len(self.lifs):
                    x, _ = self.lifs[index](current)
            u_out = current if u_out is None else self.beta * u_out + current
        return u_out / spikes.shape[0]


class SpikingJellyNet(nn.Module):
    """SpikingJelly multi-step mode: each map over [T*B], then LIFNode/IFNode with step_mode='m'."""

    def __init__(self, snn: SNN) -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron

        self.blocks = copy.deepcopy(snn.blocks)
        self.tau_m = snn.tau_m
        beta = decay_factor(snn.tau_m)
        common = dict(v_reset=0.0, detach_reset=True, step_mode="m")
        if beta == 1.0:
            make = lambda: neuron.IFNode(v_threshold=snn.v_th, **common)  # noqa: E731
        else:  # H = V - V/tau + X = (1 - 1/tau) V + X: the same per-step decay beta
            make = lambda: neuron.LIFNode(tau=float(1.0 / (1.0 - beta)), decay_input=False,  # noqa: E731
                                          v_threshold=snn.v_th, **common)
        self.nodes = nn.ModuleList(make() for _ in snn.neurons)
        self.pools = nn.ModuleList(neuron.IFNode(v_threshold=POOL_THRESHOLD, **common)
                                   if block.pool_neuron is not None else nn.Identity() for block in snn.blocks)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        num_steps, batch = spikes.shape[:2]
        x = spikes
        for index, block in enumerate(self.blocks):
            if block.pool > 1:
                x = self.pools[index](_pool(x.flatten(0, 1)).unflatten(0, (num_steps, batch)))
            x = block._map(x.flatten(0, 1)).unflatten(0, (num_steps, batch))
            if index < len(self.nodes):
                x = self.nodes[index](x)
        return leaky_integrate(x, self.tau_m) / num_steps


# ---------------------------------------------------------------------------------------------
# rows, steps, timing, memory


@dataclass
class Row:
    name: str
    step: Callable[[], None] | None = None
    steps: int | None = None                  # timed rounds of this row (None: all)
    times: list[float] = field(default_factory=list)
    peak_bytes: float | None = None
    error: str | None = None


def _optimizer(params, profile) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=profile.lr, momentum=profile.momentum, weight_decay=profile.weight_decay)


def _model_step(model: nn.Module, spikes: torch.Tensor, labels: torch.Tensor, num_classes: int, profile,
                record: str | bool = False, autocast: torch.dtype | None = None) -> Callable[[], None]:
    optimizer = _optimizer(model.parameters(), profile)
    device_type = spikes.device.type

    def step() -> None:
        amp = torch.autocast(device_type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
        with amp:
            out = model(spikes, record=record) if record else model(spikes)
        prediction = out[0] if isinstance(out, tuple) else out
        loss = 0.5 * sse_loss(prediction.float(), labels, num_classes).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _trainer_step(snn: SNN, images: torch.Tensor, labels: torch.Tensor, batch: int, num_steps: int,
                  profile) -> Callable[[], None]:
    """``_train_step`` on batches drawn as train_run draws them (a permutation of the training set per epoch)."""
    model = copy.deepcopy(snn)
    optimizer = _optimizer(model.parameters(), profile)
    generator = torch.Generator(device=images.device).manual_seed(1)
    totals = {"loss": 0.0, "sse": 0.0, "correct": 0.0, "n": 0}
    layer_spikes = torch.zeros(len(model.neurons), dtype=torch.float64)
    state = {"order": torch.randperm(len(labels), generator=generator, device=images.device), "b": 0}

    def step() -> None:
        if (state["b"] + 1) * batch > len(labels):
            state["order"], state["b"] = torch.randperm(len(labels), generator=generator, device=images.device), 0
        index = state["order"][state["b"] * batch:(state["b"] + 1) * batch]
        state["b"] += 1
        failure = _train_step(model, optimizer, images[index], labels[index], generator, num_steps, False, totals,
                              layer_spikes)
        if failure is not None:
            raise RuntimeError(f"loss is {failure}")

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], None], device: torch.device, cpu_time: bool) -> float:
    _sync(device)
    start = time.thread_time() if cpu_time else time.perf_counter()
    step()
    _sync(device)
    return (time.thread_time() if cpu_time else time.perf_counter()) - start


def _peak_bytes(step: Callable[[], None], device: torch.device) -> float:
    """Bytes allocated by one step at its peak, above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            step()
        path = os.path.join(tmp, "timeline.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as fh:
            _, sizes = json.load(fh)
    totals = [sum(s) for s in sizes]
    return float(max(totals) - totals[0]) if totals else float("nan")


def _data(dataset: str, snn: SNN, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images (raw) and labels: the digits training set when available, else random images."""
    if dataset == "digits":
        try:
            from leaklib.data import load_dataset

            data = load_dataset("digits", "train")
            return data.images.float(), data.labels.long()
        except Exception as exc:  # noqa: BLE001 -- the benchmark falls back to random images
            print(f"# digits images unavailable ({exc}); random images", file=sys.stderr)
    gen = torch.Generator().manual_seed(0)
    return (torch.rand((max(batch, 64),) + tuple(snn.input_shape), generator=gen),
            torch.randint(0, snn.num_classes, (max(batch, 64),), generator=gen))


def _spike_rates(snn: SNN, spikes: torch.Tensor) -> list[float]:
    with torch.no_grad():
        _, rec = snn(spikes, record="counts")
    sizes = [math.prod(s) for s in snn.hidden_shapes]
    return [100.0 * t.item() / (n * spikes.shape[0] * spikes.shape[1]) for t, n in zip(rec.spike_totals, sizes)]


def _check_fused_vs_stepwise(snn: SNN, spikes: torch.Tensor, labels: torch.Tensor) -> dict:
    """Same loss and gradients from the multi-step and the per-step leaklib networks (sanity check)."""
    grads = {}
    for method in ("fused", "stepwise"):
        model = copy.deepcopy(snn)
        model.method = method
        for neuron in model.modules():
            if hasattr(neuron, "method"):
                neuron.method = method
        loss = 0.5 * sse_loss(model(spikes, torch.Generator().manual_seed(3)), labels, snn.num_classes).mean()
        loss.backward()
        grads[method] = (loss.item(), [p.grad.detach().clone() for p in model.parameters()])
    diff = max((a - b).abs().max().item() for a, b in zip(grads["fused"][1], grads["stepwise"][1]))
    scale = max(b.abs().max().item() for b in grads["stepwise"][1])
    return {"loss_fused": grads["fused"][0], "loss_stepwise": grads["stepwise"][0],
            "max_abs_grad_diff": diff, "max_abs_grad": scale}


def bench_network(label: str, dataset: str, spec: str, num_steps: int, batch: int, tau_m: float,
                  device: torch.device, steps: int, warmup: int, libraries: bool, memory: bool,
                  bf16: bool, slow_steps: int, trainer: bool = True, overrides: dict | None = None) -> dict:
    profile = get_profile("quick", **(overrides or {}))
    torch.manual_seed(0)
    if dataset == "digits":  # the trainer's network: the quick profile's semantics, dropout included
        snn = build_model(RunConfig(profile, "digits", tau_m, 1)).to(device)
    else:  # [21]'s semantics, as every profile trains, no dropout
        snn = SNN(spec, tau_m).to(device)
    images, labels_all = _data(dataset, snn, batch)
    images, labels_all = images.to(device), labels_all.to(device)
    spikes = poisson_spikes(normalize_images(images[:batch]), torch.Generator(device=device).manual_seed(0),
                            num_steps)
    labels = labels_all[:batch]
    check = _check_fused_vs_stepwise(snn, spikes, labels) if num_steps * batch <= 6400 else None
    rates = _spike_rates(snn, spikes)
    rows: list[Row] = []

    def add(name: str, make: Callable[[], Callable[[], None]], steps_: int | None = None) -> None:
        try:
            rows.append(Row(name, make(), steps_))
        except ImportError as exc:
            print(f"# {name}: not installed ({exc}); `pip install -e .[bench]`", file=sys.stderr)

    if trainer:
        add(TRAINER, lambda: _trainer_step(snn, images, labels_all, batch, num_steps, profile))
    add(LEAKLIB, lambda: _model_step(copy.deepcopy(snn), spikes, labels, snn.num_classes, profile))
    add(LEAKLIB + ' + record="full"', lambda: _model_step(copy.deepcopy(snn), spikes, labels, snn.num_classes, profile,
                                                          record="full"))

    def stepwise() -> Callable[[], None]:
        model = copy.deepcopy(snn)
        for module in model.modules():
            if hasattr(module, "method"):
                module.method = "stepwise"
        return _model_step(model, spikes, labels, snn.num_classes, profile)

    add("leaklib per-step (Algorithm 2 literally)", stepwise, slow_steps)
    if libraries:
        add(SNNTORCH, lambda: _model_step(SnnTorchNet(snn).to(device).train(), spikes, labels, snn.num_classes,
                                          profile), slow_steps)
        add(SPIKINGJELLY, lambda: _model_step(SpikingJellyNet(snn).to(device).train(), spikes, labels,
                                              snn.num_classes, profile))
    add(LIMIT, lambda: _model_step(ANNLimit(snn).to(device).train(), spikes, labels, snn.num_classes, profile))

    def conv_only() -> Callable[[], None]:
        net = ConvOnly(snn, num_steps, batch, device)
        optimizer = _optimizer(net.parameters(), profile)
        return lambda: net.step(optimizer)

    add(CONV_ONLY, conv_only)
    if bf16:
        add(LEAKLIB + ", bf16 autocast", lambda: _model_step(copy.deepcopy(snn), spikes, labels, snn.num_classes,
                                                             profile, autocast=torch.bfloat16))
        add(LIMIT + ", bf16 autocast", lambda: _model_step(ANNLimit(snn).to(device).train(), spikes, labels,
                                                           snn.num_classes, profile, autocast=torch.bfloat16))
    cpu_time = device.type == "cpu" and torch.get_num_threads() == 1
    clock = "CPU time" if cpu_time else "wall clock"
    print(f"\n## {label}: `{spec}`, T={num_steps}, batch {batch}, tau_m={tau_m:g}, dropout {snn.dropout:g}, "
          f"{device}, {torch.get_num_threads()} thread(s), {clock}, load average {os.getloadavg()[0]:.1f}", flush=True)
    line = f"hidden spike rates at init: {', '.join(f'{r:.1f}%' for r in rates)}"
    if check:
        line += (f"; multi-step vs per-step: loss {check['loss_fused']:.6g} vs {check['loss_stepwise']:.6g}, "
                 f"max |grad diff| {check['max_abs_grad_diff']:.2e} (max |grad| {check['max_abs_grad']:.2e})")
    print(line, flush=True)
    for row in rows:
        try:
            for _ in range(warmup):
                row.step()  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 -- a failing contender is reported, not fatal
            row.error = f"{type(exc).__name__}: {exc}"
            print(f"# {row.name} failed: {row.error}", file=sys.stderr)
    live = [row for row in rows if row.error is None]
    for round_ in range(steps):
        for row in live:
            if row.steps is None or round_ < row.steps:
                row.times.append(_timed(row.step, device, cpu_time))  # type: ignore[arg-type]
    if memory:
        for row in live:
            try:
                row.peak_bytes = _peak_bytes(row.step, device)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001
                print(f"# memory of {row.name} not measured: {exc}", file=sys.stderr)
    limit = next((statistics.median(r.times) for r in live if r.name == LIMIT), float("nan"))
    result_rows = []
    for row in rows:
        median = statistics.median(row.times) if row.times else float("nan")
        result_rows.append({
            "name": row.name, "median_s": median, "times_s": row.times, "ratio_to_limit": median / limit,
            "peak_mib": None if row.peak_bytes is None else row.peak_bytes / 2**20, "error": row.error,
        })
    print(_table(result_rows, clock), flush=True)
    return {"label": label, "dataset": dataset, "spec": spec, "num_steps": num_steps, "batch": batch,
            "tau_m": tau_m, "dropout": snn.dropout, "device": str(device), "threads": torch.get_num_threads(),
            "clock": clock, "steps": steps, "warmup": warmup, "load_average": os.getloadavg()[0],
            "spike_rates_percent": rates, "fused_vs_stepwise": check, "rows": result_rows}


def _table(rows: list[dict], clock: str) -> str:
    lines = [f"| row | median step (ms, {clock}) | x limit | peak memory (MiB) |", "|---|---:|---:|---:|"]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['name']} | failed: {r['error'][:60]} | | |")
            continue
        mem = "" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        lines.append(f"| {r['name']} | {1e3 * r['median_s']:.1f} | {r['ratio_to_limit']:.2f} | {mem} |")
    return "\n".join(lines)


def goal_ratios(result: dict) -> list[dict]:
    """The three goal ratios of a network's rows (NaN where a row is missing or failed)."""
    by = {r["name"]: r["median_s"] for r in result["rows"] if not r["error"]}
    out = []
    for num, den, op, goal in GOALS:
        value = by.get(num, float("nan")) / by.get(den, float("nan"))
        met = value <= goal if op == "<=" else value >= goal
        out.append({"ratio": f"{num} / {den}", "value": value, "goal": f"{op} {goal:g}",
                    "met": bool(met) if not math.isnan(value) else None})
    return out


def _versions() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "leaklib": getattr(leaklib, "__version__", "?"), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count()}
    for mod in ("snntorch", "spikingjelly", "triton", "numba"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            info[mod] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/train_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--quick", action="store_true", help="digits net only, 5 rounds, no memory pass (< 1 min)")
    parser.add_argument("--nets", default=None, help="comma list of digits,cifar10 (default: both)")
    parser.add_argument("--tau", type=float, default=30.0, help="tau_m of the hidden neurons (inf: IF)")
    parser.add_argument("--batch", type=int, default=32, help="batch of the digits net")
    parser.add_argument("--num-steps", type=int, default=100, help="T of the digits net")
    parser.add_argument("--steps", type=int, default=None, help="timed rounds per row")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cifar-steps", type=int, default=None, help="T of the CIFAR-10 net (CPU default 4, CUDA 100)")
    parser.add_argument("--cifar-batch", type=int, default=None, help="batch of the CIFAR-10 net (CPU default 8, CUDA 64)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="quick-profile overrides for the digits net, e.g. dropout=0.2")
    parser.add_argument("--no-libraries", action="store_true", help="skip snnTorch and SpikingJelly")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/train_step-<device>.json)")
    parser.add_argument("--readme", default=None, metavar="README",
                        help="also write the results into this README's speed block (between its speed markers)")
    args = parser.parse_args(argv)
    if args.readme:  # fail before minutes of measuring, not after, with one line (no usage text)
        problem = report.speed_markers_problem(args.readme)
        if problem is not None:
            print(f"{parser.prog}: error: --readme {args.readme}: {problem}", file=sys.stderr)
            return 2

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.set_num_threads(args.threads)
    nets = args.nets.split(",") if args.nets else (["digits"] if args.quick else ["digits", "cifar10"])
    steps = args.steps or (5 if args.quick else (15 if not cuda else 20))
    memory = not (args.no_memory or args.quick)
    results = {"versions": _versions(), "argv": list(sys.argv[1:] if argv is None else argv), "networks": [],
               "date": _dt.date.today().isoformat(), "commit": git_commit(short=True)}
    common = dict(tau_m=args.tau, device=device, warmup=args.warmup, libraries=not args.no_libraries, memory=memory)
    for net in nets:
        if net == "digits":
            res = bench_network("digits net (quick profile)", "digits", ARCHITECTURES["digits"], args.num_steps,
                                args.batch, steps=steps, bf16=False, slow_steps=max(3, steps // 3),
                                overrides={**parse_overrides(args.overrides), "batch_size": args.batch,
                                           "num_steps": args.num_steps}, **common)
        elif net == "cifar10":
            t = args.cifar_steps or (100 if cuda else 4)
            b = args.cifar_batch or (64 if cuda else 8)
            res = bench_network("CIFAR-10 net (paper)", "cifar10", ARCHITECTURES["cifar10"], t, b,
                                steps=steps if cuda else max(3, steps // 3), bf16=cuda, slow_steps=max(3, steps // 5),
                                trainer=False, **common)
            if cuda:
                ms = {r["name"]: r for r in res["rows"] if not r["error"]}
                per_epoch = math.ceil(50_000 / b)
                res["seconds_per_epoch"] = {name: r["median_s"] * per_epoch for name, r in ms.items()}
                print(f"seconds per CIFAR-10 epoch ({per_epoch} steps of batch {b}): " + ", ".join(
                    f"{name}: {s:.0f}s" for name, s in res["seconds_per_epoch"].items()))
        else:
            parser.error(f"unknown net {net!r}; choose digits or cifar10")
        results["networks"].append(res)

    out = Path(args.output) if args.output else HERE / "results" / f"train_step-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    digits = next((r for r in results["networks"] if r["dataset"] == "digits"), None)
    if digits is not None:
        results["goals"] = goal_ratios(digits)
        by = {r["name"]: r["median_s"] for r in digits["rows"] if not r["error"]}
        print(f"\n## Goals (digits net, T={digits['num_steps']}, batch {digits['batch']}, tau_m={digits['tau_m']:g}, "
              f"{digits['clock']})")
        if TRAINER in by and CONV_ONLY in by:
            print(f"(for scale: trainer step / {CONV_ONLY} = {by[TRAINER] / by[CONV_ONLY]:.2f})")
        for goal in results["goals"]:
            verdict = {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]
            shown = report.goal_value(goal["value"], goal["goal"])
            print(f"{goal['ratio']} = {shown} (goal {goal['goal']}): {verdict}")
    out.write_text(json.dumps(results, indent=1))
    print(f"results: {out}", file=sys.stderr)
    if args.readme:
        changed = report.update_speed(args.readme, results)
        print(f"{args.readme}: speed block {'updated' if changed else 'unchanged'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time one SNN training step side by side: leaklib, snnTorch, SpikingJelly and the ANN limit.

One command (issue 6)::

    python benchmarks/train_step.py [--device cpu|cuda] [--threads N] [--quick]

Every contender trains the *same* network (the same ``Block`` modules: avg-pool + conv/linear,
with the same initial weights), on the same input spikes ``[T, B, C, H, W]``, with the same loss
(Eq. 5 SSE on ``u_L[T]/T``) and the same SGD step (momentum 0.9, weight decay 5e-4). A step is
forward + loss + ``zero_grad`` + backward + ``optimizer.step()``. Only the neurons differ:

* ``leaklib multi-step``: :class:`leaklib.models.SNN` (each block over ``[T*B]``, fused LIF scan);
* ``leaklib multi-step, closed-form BPTT``: the same with the scan's backward replaced by
  ``_lif_scan_grad_closed_form`` (vectorised over T, no loop) -- evidence for the CPU choice;
* ``leaklib multi-step + record``: the step exactly as the trainer runs it (``record=True``);
* ``leaklib per-step reference``: ``SNN(method="stepwise")``, Algorithm 2 literally;
* ``snnTorch Leaky, per-step``: ``snntorch.Leaky(beta, reset_mechanism="zero", reset_delay=False)``
  in a Python loop over T, as in the snnTorch tutorials;
* ``SpikingJelly multi-step``: ``LIFNode(step_mode="m", decay_input=False, v_reset=0,
  detach_reset=True)`` (IFNode for tau_m=inf) with ``tau = 1/(1-beta)`` (same decay); on the CPU
  SpikingJelly 2.x runs its torch backend, on CUDA the kernel it selects itself (Triton/CUDA);
* ``limit: linear maps only (ANN)``: the same blocks over ``[T*B]`` with no neurons at all,
  forward and backward -- no SNN can be faster than this with the same convolutions.

Times are medians of ``--steps`` timed steps after ``--warmup`` steps; the contenders are
interleaved round-robin so that a noisy (shared) machine slows all of them alike. Peak memory:
on CUDA ``torch.cuda.max_memory_allocated`` minus what was allocated before the step; on the
CPU the peak of the torch profiler's memory timeline over one step (bytes of tensors allocated by
the step, i.e. activations, saved tensors, gradients and temporaries; not the weights).

Results are printed as markdown tables and written to ``benchmarks/results/train_step-<device>.json``
(``results/`` folders are git-ignored).
"""

from __future__ import annotations

import argparse
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

import leaklib
import leaklib.neurons as lneurons
from leaklib.encoding import normalize_images, poisson_spikes
from leaklib.models import ARCHITECTURES, SNN
from leaklib.neurons import decay_factor, leaky_integrate
from leaklib.profiles import get_profile

HERE = Path(__file__).resolve().parent
LIMIT = "limit: linear maps only (ANN)"


# ---------------------------------------------------------------------------------------------
# the contenders: each is a model whose forward maps input spikes [T, B, C, H, W] to u_L[T]/T


class ANNLimit(nn.Module):
    """The SNN's blocks over the [T*B] batch with no neurons: the convolution-only lower bound."""

    def __init__(self, snn: SNN) -> None:
        super().__init__()
        self.blocks = copy.deepcopy(snn.blocks)
        self.tau_m = snn.tau_m

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        num_steps, batch = spikes.shape[:2]
        x = spikes.flatten(0, 1)
        for block in self.blocks:
            x = block(x)
        currents = x.unflatten(0, (num_steps, batch))
        return leaky_integrate(currents, self.tau_m) / num_steps


class SnnTorchNet(nn.Module):
    """snnTorch: ``snntorch.Leaky`` (reset to zero) driven one time step at a time."""

    def __init__(self, snn: SNN) -> None:
        super().__init__()
        import snntorch

        self.blocks = copy.deepcopy(snn.blocks)
        self.beta = decay_factor(snn.tau_m)
        self.lifs = nn.ModuleList(
            snntorch.Leaky(beta=self.beta, threshold=snn.v_th, reset_mechanism="zero", reset_delay=False)
            for _ in snn.neurons)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        for lif in self.lifs:
            lif.reset_mem()
        u_out = None
        for t in range(spikes.shape[0]):
            x = spikes[t]
            for block, lif in zip(self.blocks[:-1], self.lifs):
                x, _ = lif(block(x))
            current = self.blocks[-1](x)
            u_out = current if u_out is None else self.beta * u_out + current
        return u_out / spikes.shape[0]


class SpikingJellyNet(nn.Module):
    """SpikingJelly multi-step mode: each block over [T*B], then LIFNode/IFNode with step_mode='m'."""

    def __init__(self, snn: SNN) -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron

        self.blocks = copy.deepcopy(snn.blocks)
        self.tau_m = snn.tau_m
        beta = decay_factor(snn.tau_m)
        common = dict(v_threshold=snn.v_th, v_reset=0.0, detach_reset=True, step_mode="m")
        if beta == 1.0:
            make = lambda: neuron.IFNode(**common)  # noqa: E731
        else:  # H = V - V/tau + X = (1 - 1/tau) V + X: the same per-step decay beta
            make = lambda: neuron.LIFNode(tau=float(1.0 / (1.0 - beta)), decay_input=False, **common)  # noqa: E731
        self.nodes = nn.ModuleList(make() for _ in snn.neurons)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        num_steps, batch = spikes.shape[:2]
        x = spikes
        for block, node in zip(self.blocks[:-1], self.nodes):
            x = node(block(x.flatten(0, 1)).unflatten(0, (num_steps, batch)))
        currents = self.blocks[-1](x.flatten(0, 1)).unflatten(0, (num_steps, batch))
        return leaky_integrate(currents, self.tau_m) / num_steps


@contextlib.contextmanager
def _closed_form_backward():
    """Make LIFScan use the vectorised closed-form BPTT on every device (for the comparison row)."""
    original = lneurons._lif_scan_grad
    lneurons._lif_scan_grad = lneurons._lif_scan_grad_closed_form
    try:
        yield
    finally:
        lneurons._lif_scan_grad = original


@dataclass
class Contender:
    name: str
    model: nn.Module
    record: bool = False                                     # call model(..., record=True) as the trainer
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    autocast: torch.dtype | None = None                      # CUDA autocast dtype (bf16 rows)
    times: list[float] = field(default_factory=list)
    peak_bytes: float | None = None
    error: str | None = None


def _contenders(snn: SNN, device: torch.device, libraries: bool, closed_form: bool,
                bf16: bool) -> list[Contender]:
    """All rows for one network; every model starts from ``snn``'s weights."""
    rows = [Contender("leaklib multi-step", snn)]
    if closed_form:
        rows.append(Contender("leaklib multi-step, closed-form BPTT", copy.deepcopy(snn), context=_closed_form_backward))
    rows.append(Contender("leaklib multi-step + record (trainer)", copy.deepcopy(snn), record=True))
    stepwise = copy.deepcopy(snn)
    stepwise.method = "stepwise"
    for neuron in stepwise.neurons:
        neuron.method = "stepwise"
    rows.append(Contender("leaklib per-step reference", stepwise))
    if libraries:
        for name, factory in (("snnTorch Leaky, per-step loop", SnnTorchNet),
                              ("SpikingJelly multi-step", SpikingJellyNet)):
            try:
                rows.append(Contender(name, factory(snn)))
            except ImportError as exc:
                print(f"# {name}: not installed ({exc}); `pip install -e .[bench]`", file=sys.stderr)
    rows.append(Contender(LIMIT, ANNLimit(snn)))
    if bf16:
        rows.append(Contender("leaklib multi-step, bf16 autocast", copy.deepcopy(snn), autocast=torch.bfloat16))
        rows.append(Contender(LIMIT + ", bf16 autocast", ANNLimit(snn), autocast=torch.bfloat16))
    for row in rows:
        row.model.to(device).train()
    return rows


# ---------------------------------------------------------------------------------------------
# one training step, timing, memory


def _make_step(row: Contender, spikes: torch.Tensor, labels: torch.Tensor, num_classes: int,
               lr: float) -> Callable[[], float]:
    optimizer = torch.optim.SGD(row.model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    target = torch.nn.functional.one_hot(labels, num_classes).to(spikes.dtype)
    device_type = spikes.device.type

    def step() -> float:
        with row.context():
            amp = (torch.autocast(device_type, dtype=row.autocast) if row.autocast is not None
                   else contextlib.nullcontext())
            with amp:
                out = row.model(spikes, record=True) if row.record else row.model(spikes)
            prediction = out[0] if isinstance(out, tuple) else out
            loss = 0.5 * ((prediction.float() - target) ** 2).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], float], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


def _peak_bytes(step: Callable[[], float], device: torch.device) -> float:
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


def _inputs(dataset: str, snn: SNN, num_steps: int, batch: int, device: torch.device):
    """Input spikes [T, B, C, H, W] and labels: real digits images when available, else random images."""
    gen = torch.Generator().manual_seed(0)
    images = labels = None
    if dataset == "digits":
        try:
            from leaklib.data import load_dataset

            data = load_dataset("digits", "train")
            images, labels = data.images[:batch].float(), data.labels[:batch].long()
        except Exception as exc:  # noqa: BLE001 -- the benchmark falls back to random images
            print(f"# digits images unavailable ({exc}); random images", file=sys.stderr)
    if images is None or len(images) < batch:
        images = torch.rand((batch,) + tuple(snn.input_shape), generator=gen)
        labels = torch.randint(0, snn.num_classes, (batch,), generator=gen)
    spikes = poisson_spikes(normalize_images(images), gen, num_steps)
    return spikes.to(device), labels.to(device)


def _spike_rate(snn: SNN, spikes: torch.Tensor) -> list[float]:
    with torch.no_grad():
        _, rec = snn(spikes, record=True)
    return [100.0 * c.sum().item() / (c.numel() * spikes.shape[0]) for c in rec.spike_counts]


def _check_fused_vs_stepwise(snn: SNN, spikes: torch.Tensor, labels: torch.Tensor) -> dict:
    """Same loss and gradients from the multi-step and the per-step leaklib networks (sanity check)."""
    target = torch.nn.functional.one_hot(labels, snn.num_classes).to(spikes.dtype)
    grads = {}
    for method in ("fused", "stepwise"):
        model = copy.deepcopy(snn)
        model.method = method
        for neuron in model.neurons:
            neuron.method = method
        loss = 0.5 * ((model(spikes) - target) ** 2).sum(1).mean()
        loss.backward()
        grads[method] = (loss.item(), [p.grad.detach().clone() for p in model.parameters()])
    diff = max((a - b).abs().max().item() for a, b in zip(grads["fused"][1], grads["stepwise"][1]))
    scale = max(b.abs().max().item() for b in grads["stepwise"][1])
    return {"loss_fused": grads["fused"][0], "loss_stepwise": grads["stepwise"][0],
            "max_abs_grad_diff": diff, "max_abs_grad": scale}


def bench_network(label: str, dataset: str, spec: str, num_steps: int, batch: int, tau_m: float,
                  device: torch.device, steps: int, warmup: int, libraries: bool, memory: bool,
                  closed_form: bool, bf16: bool, lr: float, only: list[str] | None = None) -> dict:
    torch.manual_seed(0)
    snn = SNN(spec, tau_m).to(device)
    spikes, labels = _inputs(dataset, snn, num_steps, batch, device)
    check = _check_fused_vs_stepwise(snn, spikes, labels)
    rates = _spike_rate(snn, spikes)
    rows = _contenders(snn, device, libraries, closed_form, bf16)
    if only:
        rows = [r for r in rows if r.name in only]
    steps_fn = {}
    for row in rows:
        steps_fn[row.name] = _make_step(row, spikes, labels, snn.num_classes, lr)
    print(f"\n## {label}: `{spec}`, T={num_steps}, batch {batch}, tau_m={tau_m:g}, {device}, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    print(f"hidden spike rates at init: {', '.join(f'{r:.1f}%' for r in rates)}; fused vs per-step: "
          f"loss {check['loss_fused']:.6g} vs {check['loss_stepwise']:.6g}, max |grad diff| "
          f"{check['max_abs_grad_diff']:.2e} (max |grad| {check['max_abs_grad']:.2e})", flush=True)
    for row in rows:
        try:
            for _ in range(warmup):
                steps_fn[row.name]()
        except Exception as exc:  # noqa: BLE001 -- a failing contender is reported, not fatal
            row.error = f"{type(exc).__name__}: {exc}"
            print(f"# {row.name} failed: {row.error}", file=sys.stderr)
    live = [row for row in rows if row.error is None]
    for _ in range(steps):
        for row in live:
            row.times.append(_timed(steps_fn[row.name], device))
    if memory:
        for row in live:
            try:
                row.peak_bytes = _peak_bytes(steps_fn[row.name], device)
            except Exception as exc:  # noqa: BLE001
                print(f"# memory of {row.name} not measured: {exc}", file=sys.stderr)
    limit = next((r for r in live if r.name == LIMIT), None)
    limit_time = statistics.median(limit.times) if limit else float("nan")
    result_rows = []
    for row in rows:
        median = statistics.median(row.times) if row.times else float("nan")
        result_rows.append({
            "name": row.name, "median_s": median, "times_s": row.times,
            "ratio_to_limit": median / limit_time if limit else float("nan"),
            "peak_mib": None if row.peak_bytes is None else row.peak_bytes / 2**20, "error": row.error,
        })
    print(_table(result_rows), flush=True)
    return {"label": label, "dataset": dataset, "spec": spec, "num_steps": num_steps, "batch": batch,
            "tau_m": tau_m, "device": str(device), "threads": torch.get_num_threads(), "steps": steps,
            "warmup": warmup, "spike_rates_percent": rates, "fused_vs_stepwise": check, "rows": result_rows}


def _table(rows: list[dict]) -> str:
    lines = ["| contender | median step (ms) | x limit | peak memory (MiB) |", "|---|---:|---:|---:|"]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['name']} | failed: {r['error'][:60]} | | |")
            continue
        mem = "" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        lines.append(f"| {r['name']} | {1e3 * r['median_s']:.1f} | {r['ratio_to_limit']:.2f} | {mem} |")
    return "\n".join(lines)


def _summary(result: dict) -> str:
    by = {r["name"]: r["median_s"] for r in result["rows"] if not r["error"]}
    ours = by.get("leaklib multi-step")
    parts = []
    if ours is None:
        return ""
    if LIMIT in by:
        parts.append(f"leaklib / limit = {ours / by[LIMIT]:.2f} (goal <= 1.3)")
    if "snnTorch Leaky, per-step loop" in by:
        parts.append(f"snnTorch / leaklib = {by['snnTorch Leaky, per-step loop'] / ours:.2f} (goal >= 3)")
    if "SpikingJelly multi-step" in by:
        parts.append(f"SpikingJelly / leaklib = {by['SpikingJelly multi-step'] / ours:.2f} (goal >= 1)")
    if "leaklib per-step reference" in by:
        parts.append(f"per-step / multi-step = {by['leaklib per-step reference'] / ours:.2f}")
    return "; ".join(parts)


def _versions() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "leaklib": leaklib.__version__
            if hasattr(leaklib, "__version__") else "?", "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count()}
    for mod in ("snntorch", "spikingjelly", "triton"):
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
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the main tables (CPU)")
    parser.add_argument("--thread-sweep", default="1,2",
                        help="thread counts for the extra digits table of leaklib vs the limit ('' to skip)")
    parser.add_argument("--quick", action="store_true", help="fewer steps, digits net only (a smoke run)")
    parser.add_argument("--nets", default=None, help="comma list of digits,cifar10 (default: both)")
    parser.add_argument("--tau", type=float, default=30.0, help="tau_m of the hidden neurons (inf: IF)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cifar-steps", type=int, default=None, help="T of the CIFAR-10 net (CPU default 4, CUDA 100)")
    parser.add_argument("--cifar-batch", type=int, default=None, help="batch of the CIFAR-10 net (CPU default 8, CUDA 64)")
    parser.add_argument("--no-libraries", action="store_true", help="skip snnTorch and SpikingJelly")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/train_step-<device>.json)")
    args = parser.parse_args(argv)

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
    quick = get_profile("quick")
    results = {"versions": _versions(), "argv": sys.argv[1:], "networks": []}
    common = dict(tau_m=args.tau, device=device, warmup=args.warmup, libraries=not args.no_libraries,
                  memory=not args.no_memory, lr=quick.lr)
    for net in nets:
        if net == "digits":
            res = bench_network("digits net (quick profile)", "digits", quick.architectures["digits"],
                                quick.num_steps, quick.batch_size, steps=steps, closed_form=True,
                                bf16=False, **common)
        elif net == "cifar10":
            t = args.cifar_steps or (100 if cuda else 4)
            b = args.cifar_batch or (64 if cuda else 8)
            res = bench_network("CIFAR-10 net (paper)", "cifar10", ARCHITECTURES["cifar10"], t, b,
                                steps=max(3, steps // 3) if not cuda else steps, closed_form=not cuda,
                                bf16=cuda, **common)
            if cuda:
                ms = {r["name"]: r for r in res["rows"] if not r["error"]}
                per_epoch = math.ceil(50_000 / b)
                res["seconds_per_epoch"] = {name: r["median_s"] * per_epoch for name, r in ms.items()}
                print(f"seconds per CIFAR-10 epoch ({per_epoch} steps of batch {b}): " + ", ".join(
                    f"{name}: {s:.0f}s" for name, s in res["seconds_per_epoch"].items()))
        else:
            parser.error(f"unknown net {net!r}; choose digits or cifar10")
        print(_summary(res))
        results["networks"].append(res)

    sweep = [int(x) for x in args.thread_sweep.split(",") if x.strip()] if not cuda else []
    if sweep and "digits" in nets:
        results["thread_sweep"] = []
        for threads in sweep:
            torch.set_num_threads(threads)
            res = bench_network(f"threads={threads}", "digits", quick.architectures["digits"], quick.num_steps,
                                quick.batch_size, steps=steps, closed_form=False, bf16=False,
                                only=["leaklib multi-step", LIMIT], **{**common, "memory": False})
            results["thread_sweep"].append(res)
        torch.set_num_threads(args.threads)

    out = Path(args.output) if args.output else HERE / "results" / f"train_step-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

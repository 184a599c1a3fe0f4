"""A/B timing of the trainer's step (and the eval forward) between two versions of leaklib.

    python benchmarks/ab_step.py main HEAD                 # two git revisions
    python benchmarks/ab_step.py HEAD~1 WORK --eval        # WORK = the working tree

Each version is exported (``git archive``) into a temporary folder as its own package
(``leaklib_a``, ``leaklib_b``) and imported into one process, so both run interleaved, step by
step, on the same (shared) CPU: a load that comes and goes slows both alike. Each version builds
the network of the ``quick`` profile (its own ``build_model``) from the same seed and trains it on
the digits training set in random order, with the step exactly as ``train_run`` takes
it (``leaklib.train._train_step``: encoding, forward with spike counts, loss, backward, SGD step,
bookkeeping). Reported: median CPU milliseconds per step of each version (``time.thread_time``:
on a shared machine the time a step waits for a core is not counted; wall clock is printed too),
the ratio B/A and the range of the per-round ratios; first, whether both versions give the same
loss, bit-identical predictions, and the largest gradient difference from the same weights and
random numbers.

``--eval`` times the eval forward instead (``torch.no_grad``, batch ``--eval-batch``, as
``evaluate_clean``): per image.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def export(rev: str, name: str, into: Path) -> Path:
    """The package ``leaklib`` of revision ``rev`` (or the working tree for ``WORK``) as ``into/name``."""
    target = into / name
    if rev == "WORK":
        import shutil

        shutil.copytree(ROOT / "leaklib", target, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "leaklib"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target), "--strip-components=1"], input=archive, check=True)
    return target


class Version:
    """One exported leaklib: a network of the quick profile, its optimiser and a data stream."""

    def __init__(self, package: str, tau_m: float, batch: int, num_steps: int, seed: int,
                 overrides: list[str] | None = None) -> None:
        self.train = importlib.import_module(f"{package}.train")
        profiles = importlib.import_module(f"{package}.profiles")
        data = importlib.import_module(f"{package}.data")
        extra = profiles.parse_overrides(overrides) if overrides else {}
        profile = profiles.get_profile("quick", batch_size=batch, num_steps=num_steps, **extra)
        self.config = self.train.RunConfig(profile, "digits", tau_m, seed)
        self.profile = profile
        train_data = data.load_dataset("digits", "train")
        self.images, self.labels = train_data.images, train_data.labels
        self.reset(seed)

    def reset(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = self.train.build_model(self.config)
        p = self.profile
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=p.lr, momentum=p.momentum,
                                         weight_decay=p.weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(self.labels), generator=self.generator)
        self.position = 0
        self.totals = {"loss": 0.0, "sse": 0.0, "correct": 0.0, "n": 0}
        self.layer_spikes = torch.zeros(len(self.model.neurons), dtype=torch.float64)
        self.model.train()

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.profile.batch_size
        if self.position + size > len(self.order):
            self.order = torch.randperm(len(self.labels), generator=self.generator)
            self.position = 0
        index = self.order[self.position:self.position + size]
        self.position += size
        return self.images[index], self.labels[index]

    def step(self) -> None:
        x, y = self.batch()
        step = getattr(self.train, "_train_step", None) or self._inline_step  # older versions: the same code inline
        out = step(self.model, self.optimizer, x, y, self.generator, self.profile.num_steps, False, self.totals,
                   self.layer_spikes)
        if out is not None:
            raise RuntimeError(f"loss is {out}")

    def _inline_step(self, model, optimizer, x, y, generator, num_steps, augment, totals, layer_spikes):
        """The body of train_run's batch loop before it became ``_train_step`` (no augmentation)."""
        encoding = importlib.import_module(self.train.__name__.rsplit(".", 1)[0] + ".encoding")
        spikes = encoding.poisson_spikes(encoding.normalize_images(x), generator, num_steps)
        prediction, record = model(spikes, generator=generator, record="counts")
        errors = self.train.sse_loss(prediction, y, model.num_classes)
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

    def eval_forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        encoding = importlib.import_module(self.train.__name__.rsplit(".", 1)[0] + ".encoding")
        self.model.eval()
        with torch.no_grad():
            out = self.model(encoding.poisson_spikes(encoding.normalize_images(x), generator,
                                                     self.profile.num_steps))
        self.model.train()
        return out


def check_same(a: Version, b: Version, seed: int) -> str:
    """Loss, prediction and gradients of one step of both versions from the same weights and random numbers."""
    results = []
    for v in (a, b):
        v.reset(seed)
        x, y = v.batch()
        encoding = importlib.import_module(v.train.__name__.rsplit(".", 1)[0] + ".encoding")
        spikes = encoding.poisson_spikes(encoding.normalize_images(x), v.generator, v.profile.num_steps)
        prediction, _ = v.model(spikes, generator=v.generator, record="counts")
        loss = 0.5 * v.train.sse_loss(prediction, y, v.model.num_classes).mean()
        loss.backward()
        results.append((loss.item(), prediction.detach(), [p.grad.clone() for p in v.model.parameters()]))
        v.reset(seed)
    (la, pa, ga), (lb, pb, gb) = results
    diff = max((x - y).abs().max().item() for x, y in zip(ga, gb))
    scale = max(x.abs().max().item() for x in ga)
    return (f"same step: loss {la:.9g} vs {lb:.9g}; predictions {'bit-identical' if torch.equal(pa, pb) else 'DIFFER'}"
            f" (max diff {(pa - pb).abs().max().item():.2e}); max |grad diff| {diff:.2e} (max |grad| {scale:.2e})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="git revision of version A (or WORK)")
    parser.add_argument("b", help="git revision of version B (or WORK)")
    parser.add_argument("--tau", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--num-steps", type=int, default=100, help="T")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=4, help="steps of each version per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval", action="store_true", help="time the eval forward (no_grad) per image instead")
    parser.add_argument("--eval-batch", type=int, default=360)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="quick-profile overrides, e.g. pooling=average dropout=0.2")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        export(args.a, "leaklib_a", Path(tmp))
        export(args.b, "leaklib_b", Path(tmp))
        sys.path.insert(0, tmp)
        versions = [Version(p, args.tau, args.batch, args.num_steps, args.seed, args.overrides)
                    for p in ("leaklib_a", "leaklib_b")]
        print(f"# A={args.a} B={args.b}: digits net{' ' + ' '.join(args.overrides) if args.overrides else ''}, "
              f"T={args.num_steps}, batch {args.batch}, tau_m={args.tau:g}, "
              f"{args.threads} thread(s), load average {os.getloadavg()[0]:.2f}", flush=True)
        if not args.eval:
            print("# " + check_same(*versions, seed=args.seed), flush=True)
        gen = torch.Generator().manual_seed(0)
        x_eval = versions[0].images[torch.randperm(len(versions[0].labels), generator=gen)[:args.eval_batch]]

        def work(v: Version) -> None:
            if args.eval:
                v.eval_forward(x_eval, torch.Generator().manual_seed(0))
            else:
                v.step()

        for v in versions:  # warm-up (numba compile / cache load, allocator)
            for _ in range(2):
                work(v)
        times: list[list[float]] = [[], []]
        walls: list[list[float]] = [[], []]
        ratios = []
        for r in range(args.rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            round_times: list[list[float]] = [[], []]
            for i in order:
                for _ in range(1 if args.eval else args.per_round):
                    start, cpu = time.perf_counter(), time.thread_time()
                    work(versions[i])
                    round_times[i].append(time.thread_time() - cpu)
                    walls[i].append(time.perf_counter() - start)
            for i in (0, 1):
                times[i].extend(round_times[i])
            ratios.append(statistics.median(round_times[1]) / statistics.median(round_times[0]))
        scale = 1e3 / (args.eval_batch if args.eval else 1)
        unit = "ms/image" if args.eval else "ms/step"
        ma, mb = (statistics.median(t) * scale for t in times)
        ratios.sort()
        lo = ratios[max(0, math.floor(0.025 * len(ratios)))]
        hi = ratios[min(len(ratios) - 1, math.ceil(0.975 * len(ratios)) - 1)]
        print(f"A {ma:.3f} {unit}, B {mb:.3f} {unit}: B/A = {mb / ma:.3f} (per-round ratios: median "
              f"{statistics.median(ratios):.3f}, range {lo:.3f}-{hi:.3f}); saved {ma - mb:+.3f} {unit}; "
              f"load average {os.getloadavg()[0]:.2f}")
        wa, wb = (statistics.median(t) * scale for t in walls)
        print(f"wall clock: A {wa:.3f}, B {wb:.3f} {unit}: B/A = {wb / wa:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

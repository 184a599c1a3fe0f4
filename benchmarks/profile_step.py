"""Where the trainer's step spends its time: torch.profiler over steps exactly as ``train_run`` takes them.

    python benchmarks/profile_step.py [--batch 32] [--tau 30] [--num-steps 100] [--steps 10] [--eval]

Builds the network of the ``quick`` profile (``leaklib.train.build_model``), trains it on the
digits training set with ``leaklib.train._train_step`` (encoding, forward with spike counts, loss,
backward, SGD step, bookkeeping) and prints the operators by self CPU time, plus CPU and wall
milliseconds per step. ``--eval`` profiles the eval forward (``torch.no_grad``, as
``evaluate_clean``) instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from leaklib.data import load_dataset
from leaklib.encoding import normalize_images, poisson_spikes
from leaklib.profiles import get_profile
from leaklib.train import RunConfig, _train_step, build_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tau", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--num-steps", type=int, default=100, help="T")
    parser.add_argument("--steps", type=int, default=10, help="profiled steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval", action="store_true")
    parser.add_argument("--eval-batch", type=int, default=360)
    parser.add_argument("--rows", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prof_ = get_profile("quick", batch_size=args.batch, num_steps=args.num_steps)
    config = RunConfig(prof_, "digits", args.tau, 1)
    torch.manual_seed(1)
    model = build_model(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=prof_.lr, momentum=prof_.momentum,
                                weight_decay=prof_.weight_decay)
    data = load_dataset("digits", "train")
    generator = torch.Generator().manual_seed(1)
    order = torch.randperm(len(data.labels), generator=generator)
    totals = {"loss": 0.0, "sse": 0.0, "correct": 0.0, "n": 0}
    layer_spikes = torch.zeros(len(model.neurons), dtype=torch.float64)
    x_eval = normalize_images(data.images[:args.eval_batch])

    def work(i: int) -> None:
        if args.eval:
            model.eval()
            with torch.no_grad():
                model(poisson_spikes(x_eval, generator, args.num_steps))
            return
        index = order[(i * args.batch) % (len(order) - args.batch):][:args.batch]
        _train_step(model, optimizer, data.images[index], data.labels[index], generator, args.num_steps, False,
                    totals, layer_spikes)

    for i in range(3):
        work(i)
    cpu, wall = [], []
    for i in range(args.steps):
        t0, c0 = time.perf_counter(), time.thread_time()
        work(i)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(args.steps):
            work(i)
    what = f"eval forward, batch {args.eval_batch}" if args.eval else f"training step, batch {args.batch}"
    print(f"# {what}, T={args.num_steps}, tau_m={args.tau:g}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"# per step: CPU {1e3 * statistics.median(cpu):.1f} ms, wall {1e3 * statistics.median(wall):.1f} ms "
          f"(median of {args.steps}); profiled totals below are over {args.steps} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

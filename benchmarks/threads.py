"""How to use a small CPU's cores for a sweep: one run with N threads, or N runs with one thread each?

    python benchmarks/threads.py [--epochs 3] [--repeats 2] [--load]

Trains runs of the ``quick`` profile (digits net, T=100, batch 64, train + eval every epoch) with
``leaklib train`` in fresh processes, in three arrangements on the machine's cores:

* ``1 run x 1 thread``: one process, ``--threads 1``;
* ``1 run x 2 threads``: one process, ``--threads 2``;
* ``2 runs x 1 thread``: two processes at once (different seeds), ``--threads 1`` each.

For each it reports the wall time until all runs are done and the throughput, seconds of wall
time per run-epoch (lower is better), from the runs' own ``history.jsonl`` epoch times (train +
eval, without process start-up) and from the process wall time. With ``--load`` every
arrangement is also measured while one extra busy process (a single-threaded spin loop) runs,
as when anything else uses the machine. Arrangements are interleaved over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARRANGEMENTS = {"1 run x 1 thread": (1, 1), "1 run x 2 threads": (1, 2), "2 runs x 1 thread": (2, 1)}


def _run_sweep(runs: int, threads: int, epochs: int, tau: str, results: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "leaklib.cli", "train", "--profile", "quick", "--tau", tau,
                               "--seeds", str(seed), "--epochs", str(epochs), "--threads", str(threads), "--device",
                               "cpu", "--results-dir", str(results), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for seed in range(1, runs + 1)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"leaklib train failed: {err[-2000:]}")
    wall = time.perf_counter() - start
    epoch_seconds = []
    for path in results.rglob("history.jsonl"):
        for line in path.read_text().splitlines():
            h = json.loads(line)
            epoch_seconds.append(h["seconds"])
    return {"wall": wall, "epoch_seconds": epoch_seconds, "run_epochs": runs * epochs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tau", default="30")
    parser.add_argument("--load", action="store_true", help="also measure with one extra busy process")
    args = parser.parse_args(argv)
    loads = [False, True] if args.load else [False]
    measured: dict[tuple[str, bool], list[dict]] = {}
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; quick profile, T=100, batch 64, "
          f"{args.epochs} epochs per run, tau_m={args.tau}", flush=True)
    for _ in range(args.repeats):
        for load in loads:
            spinner = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load else None)
            try:
                for name, (runs, threads) in ARRANGEMENTS.items():
                    with tempfile.TemporaryDirectory() as tmp:
                        res = _run_sweep(runs, threads, args.epochs, args.tau, Path(tmp))
                    measured.setdefault((name, load), []).append(res)
                    print(f"#   {name}{' + busy process' if load else ''}: wall {res['wall']:.1f} s, epochs "
                          f"{', '.join(f'{s:.2f}' for s in res['epoch_seconds'])} s", flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    print("\n| arrangement | extra load | wall s per run-epoch (process) | epoch s, median (history) | "
          "wall s per run-epoch from history |")
    print("|---|---|---:|---:|---:|")
    for (name, load), results in measured.items():
        runs = ARRANGEMENTS[name][0]
        per_run_epoch = statistics.median(r["wall"] / r["run_epochs"] for r in results)
        epoch = statistics.median(s for r in results for s in r["epoch_seconds"])
        print(f"| {name} | {'1 busy process' if load else 'none'} | {per_run_epoch:.2f} | {epoch:.2f} | "
              f"{epoch / runs:.2f} |")
    print(f"\n# load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

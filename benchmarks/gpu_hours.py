"""GPU-hours of the paper protocol on H200-class GPUs: an estimate from counted FLOPs, not a measurement.

What is counted. ``torch.utils.flop_counter.FlopCounterMode`` counts the convolution and matrix
FLOPs (2 per multiply-add) of the real networks of the ``paper`` profile (``leaklib.train.build_model``:
spiking pooling, dropout, leak correction) in one CPU training step (forward, loss, backward) and
in one evaluation forward pass, at a small T and batch. Every convolution and linear layer runs
once over the ``[T*B]`` batch, so the count is exactly linear in T*B; the script checks that at
two sizes and scales to T=100, batch 64 (training) and per image (evaluation). The neuron scans,
pooling and dropout do no matrix work; they are memory-bound and are added as a separate term
from the bytes they move per neuron and time step (below).

What is multiplied. Per run (one dataset, tau_m, seed): 150 epochs of training over the whole
train split (CIFAR-10 50000, SVHN 73257 images, batch 64), each epoch followed by a test-set
pass and a pass over the 10000-image train-eval subset; after training, the analyses of the book:
the robustness sweep (33 conditions: clean + 2 scenarios x 2 noises x 8 severities) and the two
passes of ``measure_clean`` (clean and noisy), each over the whole test set (CIFAR-10 10000, SVHN
26032). 18 runs: 2 datasets x 3 tau_m x 3 seeds.

Assumed throughput (one H200 SXM; NVIDIA's H200 datasheet: FP32 67 TFLOPS, TF32 Tensor Core 989
TFLOPS with sparsity = ~495 dense, HBM3e 4.8 TB/s):

* TF32 off (leaklib's default, ``leaklib.gpu``): convolutions on the FP32 units at 50 % of the
  67 TFLOPS peak (cuDNN's FP32 implicit-GEMM kernels on 3x3 convolutions with 64-256 channels
  and 6400 images per call);
* TF32 on (``LEAKLIB_TF32=1``): 40 % of the ~495 TFLOPS dense TF32 peak (tensor-core
  convolutions with few channels rarely get closer);
* memory-bound elementwise work at 70 % of 4.8 TB/s: per hidden LIF neuron and time step 34 bytes
  in training (scan forward 4 read + 4 + 1 written, backward 4 + 1 read + 4 written, dropout 16)
  and 8 in evaluation; per spiking pooling neuron 18 and 8.

Runs are independent: on N GPUs they are scheduled longest first; the wall clock is the busiest
GPU's total (about ceil(18/N) waves of runs).

    python benchmarks/gpu_hours.py            # ~20 s on a CPU
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

PEAK_FP32 = 67e12
PEAK_TF32_DENSE = 989e12 / 2
HBM_BYTES_PER_S = 4.8e12
ACHIEVED = {"fp32": 0.50 * PEAK_FP32, "tf32": 0.40 * PEAK_TF32_DENSE}
ACHIEVED_BANDWIDTH = 0.70 * HBM_BYTES_PER_S
BYTES_TRAIN_LIF, BYTES_TRAIN_POOL, BYTES_EVAL = 34, 18, 8

TRAIN_IMAGES = {"cifar10": 50_000, "svhn": 73_257}
TEST_IMAGES = {"cifar10": 10_000, "svhn": 26_032}
TRAIN_EVAL_IMAGES = 10_000
ROBUSTNESS_CONDITIONS = 1 + 2 * 2 * 8
CLEAN_PASSES = 2


@dataclass
class Counts:
    dataset: str
    train_flops_per_image: float   # conv/linear FLOPs of one training image at T=100 (forward + backward)
    eval_flops_per_image: float    # one evaluation forward pass at T=100
    lif_neurons: int               # hidden LIF neurons per image
    pool_neurons: int              # spiking pooling neurons per image


def _count(model, num_steps: int, batch: int, train: bool) -> float:
    gen = torch.Generator().manual_seed(0)
    spikes = (torch.rand((num_steps, batch) + tuple(model.input_shape), generator=gen) < 0.2).float()
    model.train(train)
    with FlopCounterMode(display=False) as counter:
        if train:
            prediction, _ = model(spikes, generator=gen, record="counts")
            target = torch.nn.functional.one_hot(torch.zeros(batch, dtype=torch.long), model.num_classes).float()
            (0.5 * ((prediction - target) ** 2).sum(1).mean()).backward()
        else:
            with torch.no_grad():
                model(spikes)
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def count(dataset: str, num_steps: int = 100) -> Counts:
    from leaklib.profiles import get_profile
    from leaklib.train import RunConfig, build_model

    torch.manual_seed(0)
    model = build_model(RunConfig(get_profile("paper"), dataset, 30.0, 1))
    per = {}
    for train in (True, False):
        small, larger = _count(model, 2, 2, train), _count(model, 3, 2, train)
        if not math.isclose(larger / small, 1.5, rel_tol=1e-9):
            raise AssertionError(f"FLOPs not linear in T*B ({small} at T*B=4, {larger} at 6)")
        per[train] = small / 4 * num_steps  # per image-step, times T
    return Counts(dataset, per[True], per[False], sum(math.prod(s) for s in model.hidden_shapes),
                  sum(math.prod(s) for s in model.pool_shapes))


def run_seconds(c: Counts, precision: str, epochs: int = 150, num_steps: int = 100) -> dict:
    """Seconds of one run (training with its per-epoch evaluations, then the analyses) and its parts."""
    flops = ACHIEVED[precision]
    train_images = TRAIN_IMAGES[c.dataset] * epochs
    eval_images = (TEST_IMAGES[c.dataset] + TRAIN_EVAL_IMAGES) * epochs
    analysis_images = TEST_IMAGES[c.dataset] * (ROBUSTNESS_CONDITIONS + CLEAN_PASSES)
    train_bytes = (c.lif_neurons * BYTES_TRAIN_LIF + c.pool_neurons * BYTES_TRAIN_POOL) * num_steps
    eval_bytes = (c.lif_neurons + c.pool_neurons) * BYTES_EVAL * num_steps
    parts = {
        "train": train_images * (c.train_flops_per_image / flops + train_bytes / ACHIEVED_BANDWIDTH),
        "epoch_eval": eval_images * (c.eval_flops_per_image / flops + eval_bytes / ACHIEVED_BANDWIDTH),
        "analyses": analysis_images * (c.eval_flops_per_image / flops + eval_bytes / ACHIEVED_BANDWIDTH),
    }
    parts["total"] = sum(parts.values())
    parts["memory_bound"] = (train_images * train_bytes + (eval_images + analysis_images) * eval_bytes) / ACHIEVED_BANDWIDTH
    parts["flops"] = (train_images * c.train_flops_per_image
                      + (eval_images + analysis_images) * c.eval_flops_per_image)
    return parts


def schedule(durations: list[float], gpus: int) -> float:
    """Wall clock of independent jobs on ``gpus`` GPUs, longest first onto the least-loaded GPU."""
    loads = [0.0] * gpus
    for d in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += d
    return max(loads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8, 9, 18])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    counts = {d: count(d) for d in ("cifar10", "svhn")}
    runs_per_dataset = 3 * 3  # tau_m x seeds
    print("ESTIMATE from counted FLOPs (FlopCounterMode at T=2-3, batch 2, scaled linearly to T=100) and assumed")
    print(f"throughput: FP32 {ACHIEVED['fp32'] / 1e12:.1f} TFLOPS (50 % of 67), TF32 {ACHIEVED['tf32'] / 1e12:.0f} TFLOPS "
          f"(40 % of ~495 dense), memory-bound work at {ACHIEVED_BANDWIDTH / 1e12:.2f} TB/s. Not a measurement.\n")
    print("| network | GFLOP per training step (T=100, batch 64) | GFLOP per evaluated image | "
          "PFLOP per run | GPU-h per run, TF32 off | GPU-h per run, TF32 on |")
    print("|---|---:|---:|---:|---:|---:|")
    per_run = {}
    for d, c in counts.items():
        fp32, tf32 = run_seconds(c, "fp32"), run_seconds(c, "tf32")
        per_run[d] = {"fp32": fp32, "tf32": tf32}
        print(f"| {d} | {c.train_flops_per_image * 64 / 1e9:,.0f} | {c.eval_flops_per_image / 1e9:.1f} | "
              f"{fp32['flops'] / 1e15:,.0f} | {fp32['total'] / 3600:.1f} | {tf32['total'] / 3600:.1f} |")
    for d, p in per_run.items():
        print(f"\n{d}, one run, TF32 off: training {p['fp32']['train'] / 3600:.1f} h, per-epoch evaluations "
              f"{p['fp32']['epoch_eval'] / 3600:.1f} h, analyses {p['fp32']['analyses'] / 3600:.2f} h; memory-bound "
              f"share {100 * p['fp32']['memory_bound'] / p['fp32']['total']:.0f} % "
              f"(TF32 on: {100 * p['tf32']['memory_bound'] / p['tf32']['total']:.0f} %)")
    print("\nWhole protocol (18 runs: 2 datasets x 3 tau_m x 3 seeds):\n")
    print("| GPUs | waves ceil(18/N) | wall clock, TF32 off (h) | wall clock, TF32 on (h) | "
          "GPU-hours busy, TF32 off / on | GPU-hours held (N x wall clock), TF32 off / on |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.gpus:
        row = [str(n), str(math.ceil(18 / n))]
        walls, busy = [], []
        for precision in ("fp32", "tf32"):
            durations = [per_run[d][precision]["total"] / 3600 for d in counts for _ in range(runs_per_dataset)]
            walls.append(schedule(durations, n))
            busy.append(sum(durations))
        row += [f"{w:.0f}" for w in walls] + [f"{busy[0]:.0f} / {busy[1]:.0f}",
                                               f"{n * walls[0]:.0f} / {n * walls[1]:.0f}"]
        print("| " + " | ".join(row) + " |")
    print("\nBusy GPU-hours are the same for any N; held GPU-hours count the GPUs idle while the last runs finish "
          "(runs scheduled longest first). Data loading, Python overhead, checkpoints and the book's other "
          "chapters are not included.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of the closed-form scan backward (the PyTorch fallback on CUDA), old vs blocked.

Shape: the first hidden layer of the paper's CIFAR-10 net (64 x 32 x 32 neurons per image) at
T = 100. The old closed form (as it was before the blocked rewrite, copied below) builds int64
``[T, N]`` index tensors; the blocked one works on column blocks of ``[T, 2**22 / T]``. Each
measurement runs in a fresh process on the CPU: the peak of the torch profiler's memory timeline
(bytes of tensors allocated during the call, inputs excluded; the same method as
``train_step.py``) and the growth of the process's peak RSS. Batches that fit here are measured;
batch 64 (the paper's) is extrapolated: the old form's temporaries are all ``[T, N]`` (linear in
the batch), the blocked form's are the ``[T, N]`` result plus a constant.

    python benchmarks/closed_form_memory.py            # ~1 min on 2 cores, peaks ~1 GB
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import warnings

import torch

NEURONS_PER_IMAGE = 64 * 32 * 32  # CIFAR-10 net, first hidden layer
T = 100
MIB = 2.0 ** 20


def old_closed_form(spikes, grad_spikes, grad_beta, scale, corr=None):
    """The closed form before the blocked rewrite (int64 [T, N] steps, cummin, gather, pow)."""
    num_steps = spikes.shape[0]
    view = (num_steps,) + (1,) * (spikes.dim() - 1)
    steps = torch.arange(num_steps, device=spikes.device).view(view)
    at = torch.where(spikes, steps, torch.full_like(steps, num_steps))
    next_spike = torch.flip(torch.cummin(torch.flip(at, (0,)), dim=0).values, (0,))
    padded = torch.cat([grad_spikes, grad_spikes.new_zeros((1,) + grad_spikes.shape[1:])], dim=0)
    grad = torch.gather(padded, 0, next_spike)
    if grad_beta != 1.0:
        grad = grad * torch.pow(torch.tensor(grad_beta, dtype=grad.dtype, device=grad.device),
                                (next_spike - steps).to(grad.dtype))
    return grad * (scale if corr is None else corr * scale)


def _measure(variant: str, batch: int, grad_beta: float) -> dict:
    """One measurement (run in a fresh process)."""
    from torch.profiler import ProfilerActivity, profile

    from leaklib.neurons import _lif_scan_grad_closed_form

    torch.set_num_threads(1)
    fn = old_closed_form if variant == "old" else _lif_scan_grad_closed_form
    gen = torch.Generator().manual_seed(0)
    shape = (T, batch, 64, 32, 32)
    spikes = torch.rand(shape, generator=gen) < 0.1
    grad = torch.randn(shape, generator=gen)
    corr = torch.rand(shape[1:], generator=gen)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            result = fn(spikes, grad, grad_beta, 1.0, corr)
        path = os.path.join(tmp, "timeline.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as fh:
            _, sizes = json.load(fh)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
    totals = [sum(s) for s in sizes]
    # the result against the other implementation on a slice (both must agree)
    sl = (slice(None), slice(0, 1))
    other = (_lif_scan_grad_closed_form if variant == "old" else old_closed_form)(
        spikes[sl], grad[sl], grad_beta, 1.0, corr[:1])
    assert torch.allclose(result[sl], other, rtol=1e-5, atol=1e-6)
    return {"variant": variant, "batch": batch, "grad_beta": grad_beta, "elements": spikes.numel(),
            "result_mib": result.numel() * result.element_size() / MIB,
            "peak_mib": (max(totals) - totals[0]) / MIB if totals else math.nan,
            "rss_growth_mib": (rss_after - rss_before) / MIB}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, metavar=("VARIANT", "BATCH", "GRAD_BETA"), help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT" + json.dumps(_measure(args.one[0], int(args.one[1]), float(args.one[2]))))
        return 0
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                      env.get("PYTHONPATH")]))
    for grad_beta in (1.0, math.exp(-1 / 30)):
        for batch in args.batches:
            for variant in ("old", "blocked"):
                proc = subprocess.run([sys.executable, __file__, "--one", variant, str(batch), repr(grad_beta)],
                                      env=env, capture_output=True, text=True, timeout=1800)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return 1
                rows.append(json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][6:]))
                print(f"# {rows[-1]}", file=sys.stderr)
    print(f"CIFAR-10 net, first hidden layer ({NEURONS_PER_IMAGE} neurons per image), T = {T}, float32, CPU")
    print("| grad_beta | batch | variant | result (MiB) | peak above inputs (MiB) | peak RSS growth (MiB) |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {'1 (detached)' if r['grad_beta'] == 1.0 else 'exp(-1/30) (exact)'} | {r['batch']} | {r['variant']} "
              f"| {r['result_mib']:.0f} | {r['peak_mib']:.0f} | {r['rss_growth_mib']:.0f} |")
    print("\nExtrapolated to batch 64 (the paper's):")
    for grad_beta in (1.0, math.exp(-1 / 30)):
        big = max(args.batches)
        old = next(r for r in rows if r["variant"] == "old" and r["batch"] == big and r["grad_beta"] == grad_beta)
        new = next(r for r in rows if r["variant"] == "blocked" and r["batch"] == big and r["grad_beta"] == grad_beta)
        old64 = old["peak_mib"] * 64 / big
        result64 = new["result_mib"] * 64 / big
        new64 = result64 + (new["peak_mib"] - new["result_mib"])
        print(f"  grad_beta={grad_beta:.4f}: old {old64 / 1024:.1f} GiB, blocked {new64 / 1024:.2f} GiB "
              f"(of which the result {result64 / 1024:.2f} GiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time the IF/LIF layer scan on the CPU: the numba kernels of ``leaklib.scan_cpu`` vs torch ops.

One command::

    python benchmarks/scan_cpu.py [--steps 100] [--batch 32] [--repeats 15] [--variants] [--cpp]

Forward (Algorithm 2 over ``T`` steps, spikes + count + leaky trace) and backward (BPTT with the
Eq. 5 surrogate, exact leak gradient ``grad_beta = beta``, a per-neuron ``corr``) of every neuron
layer of the digits net ``8x8x1-16C3-2P-32C3-2P-128FC-10o`` at ``T = 100``, batch 32, tau_m = 30,
float32. Contenders:

* ``numba``: :func:`leaklib.scan_cpu.scan_forward` / :func:`leaklib.scan_cpu.scan_backward`;
  the forward column includes the bool -> float conversion of the spikes that a layer returns
  (``spikes.view(torch.uint8).to(dtype)``);
* ``torch ops``: the loops of ``leaklib.neurons.LIFScan.forward`` and ``_lif_scan_grad`` copied
  here, generalised with ``grad_beta`` and ``corr``; ``+stats`` also accumulates the count and
  trace (two more ops per step), as the numba kernel does.

Medians of ``--repeats`` interleaved repeats (contenders round-robin, so that a shared machine
slows all alike); one torch thread. Also printed: the numba compile time in a fresh process
(cold cache, warm cache, cache off), and with ``--variants`` the raw kernels (numpy arrays, no
torch wrapper) against variants: the same loops as one ``for t: for n:`` nest without the step
function, the other loop order (``for n: for t:``), a data branch instead of 0/1 arithmetic, and
the forward parallel over neuron blocks (``prange``, ``NUMBA_NUM_THREADS`` threads); with
``--cpp`` the same loops as a C++ extension (``torch.utils.cpp_extension.load_inline``,
``-O3 -march=native -ffp-contract=off``; needs g++ and ninja, builds in ~30 s).
Results also go to ``benchmarks/results/scan_cpu.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # this checkout's leaklib

from leaklib import scan_cpu  # noqa: E402
from leaklib.neurons import decay_factor  # noqa: E402

# digits net 8x8x1-16C3-2P-32C3-2P-128FC-10o: neurons per sample of every spiking layer
LAYERS = [
    ("16C3 (16x8x8)", 16 * 8 * 8),
    ("2P (16x4x4)", 16 * 4 * 4),
    ("32C3 (32x4x4)", 32 * 4 * 4),
    ("2P (32x2x2)", 32 * 2 * 2),
    ("128FC", 128),
]


# ---------------------------------------------------------------------------------------------
# torch ops contender (the loops of LIFScan.forward and _lif_scan_grad, + grad_beta, corr, stats)


def torch_forward(currents: torch.Tensor, beta: float, v_th: float, stats: bool):
    out = torch.empty(currents.shape, dtype=currents.dtype)
    v = torch.zeros_like(out[0])
    keep = torch.empty_like(v)
    beta_t = torch.tensor(beta, dtype=currents.dtype)
    count = torch.zeros_like(v) if stats else None
    trace = torch.zeros_like(v) if stats else None
    for t in range(currents.shape[0]):
        v.add_(currents[t])
        fired = torch.gt(v, v_th, out=out[t])
        torch.add(beta_t, fired, alpha=-beta, out=keep)
        v.mul_(keep)
        if stats:
            count.add_(fired)
            trace.mul_(beta_t).add_(fired)
    return out, out.bool(), count, trace


def torch_backward(spikes: torch.Tensor, grad_spikes: torch.Tensor, grad_beta: float, scale: float,
                   corr: torch.Tensor | None) -> torch.Tensor:
    as_uint8 = spikes.view(torch.uint8)
    grad = torch.empty(grad_spikes.shape, dtype=grad_spikes.dtype)
    fired = torch.empty_like(grad[0])
    keep = torch.empty_like(fired)
    gb_t = torch.tensor(grad_beta, dtype=grad.dtype)
    coef = None if corr is None else corr.to(grad.dtype) * scale
    num_steps = spikes.shape[0]
    for t in range(num_steps - 1, -1, -1):
        fired.copy_(as_uint8[t])
        g = torch.mul(grad_spikes[t], fired, out=grad[t])
        if coef is not None:
            g.mul_(coef)
        elif scale != 1.0:
            g.mul_(scale)
        if t < num_steps - 1:
            torch.add(gb_t, fired, alpha=-grad_beta, out=keep)
            g.addcmul_(keep, grad[t + 1])
    return grad


def numba_forward(currents, beta, v_th):
    spikes, count, trace = scan_cpu.scan_forward(currents, beta, v_th)
    out = spikes.view(torch.uint8).to(currents.dtype)  # the layer's output (uint8 -> float is the fast cast)
    return out, spikes, count, trace


# ---------------------------------------------------------------------------------------------
# kernel variants (loop order, data branch, threads) -- measured, not used by leaklib


def _variants():
    import numba
    from numba import prange

    opts = dict(cache=False, fastmath=False, nogil=True)

    @numba.njit(**opts)
    def fwd_nest(cur, params, spikes, count, trace):  # for t: for n: as one loop nest (no step function)
        num_steps, n_neurons = cur.shape
        beta = params[0]
        v_th = params[1]
        v = np.zeros(n_neurons, cur.dtype)
        for t in range(num_steps):
            for n in range(n_neurons):
                u = v[n] + cur[t, n]
                fired = u > v_th
                spikes[t, n] = fired
                v[n] = u * (beta - beta * fired)
                count[n] += fired
                trace[n] = trace[n] * beta + fired

    @numba.njit(**opts)
    def fwd_nt(cur, params, spikes, count, trace):  # for n: for t: (state in registers, strided over t)
        num_steps, n_neurons = cur.shape
        beta = params[0]
        v_th = params[1]
        for n in range(n_neurons):
            v = cur[0, n] * 0
            c = v
            tr = v
            for t in range(num_steps):
                u = v + cur[t, n]
                fired = u > v_th
                spikes[t, n] = fired
                v = u * (beta - beta * fired)
                c += fired
                tr = tr * beta + fired
            count[n] = c
            trace[n] = tr

    @numba.njit(**opts)
    def _fwd_step_branch(cur_t, spikes_t, v, count, trace, beta, v_th):
        for n in range(cur_t.shape[0]):
            u = v[n] + cur_t[n]
            if u > v_th:
                spikes_t[n] = 1
                v[n] = 0
                count[n] += 1
                trace[n] = trace[n] * beta + 1
            else:
                spikes_t[n] = 0
                v[n] = u * beta
                trace[n] = trace[n] * beta

    @numba.njit(**opts)
    def fwd_branch(cur, params, spikes, count, trace):  # step function with an if on the spike
        v = np.zeros(cur.shape[1], cur.dtype)
        for t in range(cur.shape[0]):
            _fwd_step_branch(cur[t], spikes[t], v, count, trace, params[0], params[1])

    @numba.njit(**opts)
    def _fwd_block(cur, params, spikes, count, trace, n0, n1):
        v = np.zeros(n1 - n0, cur.dtype)
        for t in range(cur.shape[0]):
            scan_cpu._forward_step(cur[t, n0:n1], spikes[t, n0:n1], v, count[n0:n1], trace[n0:n1],
                                   params[0], params[1])

    @numba.njit(parallel=True, fastmath=False, nogil=True)
    def fwd_par(cur, params, spikes, count, trace):  # neuron blocks over threads, leaklib's step inside
        n_neurons = cur.shape[1]
        block = 2048
        for b in prange((n_neurons + block - 1) // block):
            _fwd_block(cur, params, spikes, count, trace, b * block, min((b + 1) * block, n_neurons))

    @numba.njit(**opts)
    def bwd_nest(spikes, grad_out, coef, params, grad):  # t descending, one loop nest (no step function)
        num_steps, n_neurons = grad_out.shape
        grad_beta = params[0]
        last = num_steps - 1
        for n in range(n_neurons):
            grad[last, n] = coef[n] * grad_out[last, n] * spikes[last, n]
        for t in range(last - 1, -1, -1):
            for n in range(n_neurons):
                fired = spikes[t, n]
                grad[t, n] = coef[n] * grad_out[t, n] * fired + (grad_beta - grad_beta * fired) * grad[t + 1, n]

    @numba.njit(**opts)
    def bwd_nt(spikes, grad_out, coef, params, grad):
        num_steps, n_neurons = grad_out.shape
        grad_beta = params[0]
        last = num_steps - 1
        for n in range(n_neurons):
            acc = coef[n] * grad_out[last, n] * spikes[last, n]
            grad[last, n] = acc
            for t in range(last - 1, -1, -1):
                fired = spikes[t, n]
                acc = coef[n] * grad_out[t, n] * fired + (grad_beta - grad_beta * fired) * acc
                grad[t, n] = acc

    @numba.njit(**opts)
    def _bwd_step_branch(spikes_t, grad_out_t, coef, grad_beta, grad_next, grad_t):
        for n in range(grad_out_t.shape[0]):
            if spikes_t[n]:
                grad_t[n] = coef[n] * grad_out_t[n]
            else:
                grad_t[n] = grad_beta * grad_next[n]

    @numba.njit(**opts)
    def bwd_branch(spikes, grad_out, coef, params, grad):
        last = grad_out.shape[0] - 1
        zeros = np.zeros(grad_out.shape[1], grad_out.dtype)
        _bwd_step_branch(spikes[last], grad_out[last], coef, params[0], zeros, grad[last])
        for t in range(last - 1, -1, -1):
            _bwd_step_branch(spikes[t], grad_out[t], coef, params[0], grad[t + 1], grad[t])

    return {"fwd": {"one loop nest": fwd_nest, "for n: for t:": fwd_nt, "data branch": fwd_branch,
                    "prange blocks": fwd_par},
            "bwd": {"one loop nest": bwd_nest, "for n: for t:": bwd_nt, "data branch": bwd_branch}}


# ---------------------------------------------------------------------------------------------
# C++ contender


CPP_SOURCE = r"""
#include <torch/extension.h>

template <typename scalar_t>
static void fwd_impl(const scalar_t* __restrict__ cur, uint8_t* __restrict__ spk, scalar_t* __restrict__ count,
                     scalar_t* __restrict__ trace, scalar_t* __restrict__ v, int64_t T, int64_t N,
                     scalar_t beta, scalar_t v_th) {
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* __restrict__ c = cur + t * N;
    uint8_t* __restrict__ s = spk + t * N;
    for (int64_t n = 0; n < N; ++n) {
      scalar_t u = v[n] + c[n];
      bool fired = u > v_th;
      scalar_t o = fired ? scalar_t(1) : scalar_t(0);  // a select, not a branch
      s[n] = fired ? 1 : 0;
      v[n] = u * (beta - beta * o);
      count[n] += o;
      trace[n] = trace[n] * beta + o;
    }
  }
}

template <typename scalar_t>
static void bwd_impl(const uint8_t* __restrict__ spk, const scalar_t* __restrict__ g,
                     const scalar_t* __restrict__ coef, scalar_t* __restrict__ grad, int64_t T, int64_t N,
                     scalar_t gb) {
  int64_t last = (T - 1) * N;
  for (int64_t n = 0; n < N; ++n) grad[last + n] = coef[n] * g[last + n] * static_cast<scalar_t>(spk[last + n]);
  for (int64_t t = T - 2; t >= 0; --t) {
    const uint8_t* __restrict__ s = spk + t * N;
    const scalar_t* __restrict__ gt = g + t * N;
    scalar_t* __restrict__ out = grad + t * N;
    const scalar_t* __restrict__ nxt = grad + (t + 1) * N;
    for (int64_t n = 0; n < N; ++n) {
      scalar_t o = static_cast<scalar_t>(s[n]);
      out[n] = coef[n] * gt[n] * o + (gb - gb * o) * nxt[n];
    }
  }
}

std::vector<torch::Tensor> scan_fwd(torch::Tensor cur, double beta, double v_th) {
  int64_t T = cur.size(0), N = cur.numel() / T;
  auto spk = torch::empty({T, N}, cur.options().dtype(torch::kUInt8));
  auto count = torch::zeros({N}, cur.options());
  auto trace = torch::zeros({N}, cur.options());
  auto v = torch::zeros({N}, cur.options());
  AT_DISPATCH_FLOATING_TYPES(cur.scalar_type(), "scan_fwd", [&] {
    fwd_impl<scalar_t>(cur.data_ptr<scalar_t>(), spk.data_ptr<uint8_t>(), count.data_ptr<scalar_t>(),
                       trace.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), T, N, static_cast<scalar_t>(beta),
                       static_cast<scalar_t>(v_th));
  });
  return {spk, count, trace};
}

torch::Tensor scan_bwd(torch::Tensor spk, torch::Tensor g, torch::Tensor coef, double grad_beta) {
  int64_t T = g.size(0), N = g.numel() / T;
  auto grad = torch::empty_like(g);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "scan_bwd", [&] {
    bwd_impl<scalar_t>(spk.data_ptr<uint8_t>(), g.data_ptr<scalar_t>(), coef.data_ptr<scalar_t>(),
                       grad.data_ptr<scalar_t>(), T, N, static_cast<scalar_t>(grad_beta));
  });
  return grad;
}
"""


def build_cpp():
    from torch.utils.cpp_extension import load_inline

    build = Path(tempfile.mkdtemp(prefix="leaklib_scan_cpp_"))
    t0 = time.perf_counter()
    module = load_inline(name="leaklib_scan_cpp", cpp_sources=CPP_SOURCE, functions=["scan_fwd", "scan_bwd"],
                         extra_cflags=["-O3", "-march=native", "-ffp-contract=off"], build_directory=str(build),
                         verbose=False)
    return module, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# compile time in a fresh process

_COMPILE_PROBE = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import torch
    torch.set_num_threads(1)
    t1 = time.perf_counter()
    from leaklib import scan_cpu
    if sys.argv[1] == "off":
        import numba
        for name in ("_forward_kernel", "_backward_kernel"):
            k = getattr(scan_cpu, name)
            opts = {key: val for key, val in k.targetoptions.items() if key != "nopython"}
            setattr(scan_cpu, name, numba.njit(cache=False, **opts)(k.py_func))
    t2 = time.perf_counter()
    times = {"import torch": t1 - t0, "import scan_cpu": t2 - t1}
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(10, 64, dtype=dtype) * 2
        t = time.perf_counter()
        s, c, tr = scan_cpu.scan_forward(x, 0.9, 1.0)
        scan_cpu.scan_backward(s, torch.ones_like(x), 0.9, 1.0, None)
        times[f"first fwd+bwd {str(dtype)[6:]}"] = time.perf_counter() - t
    print(json.dumps(times))
""")


def compile_times(repeats: int) -> dict[str, dict[str, float]]:
    """Seconds per phase in a fresh process: cold cache (compile + save), warm cache (load), cache off."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    runs: dict[str, list[dict]] = {"cold cache": [], "warm cache": [], "cache off": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            env["NUMBA_CACHE_DIR"] = cache  # a private cache: the first run compiles, the second loads
            for mode, arg in (("cold cache", "on"), ("warm cache", "on"), ("cache off", "off")):
                out = subprocess.run([sys.executable, "-c", _COMPILE_PROBE, arg], env=env, capture_output=True,
                                     text=True, check=True)
                runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for mode, rs in runs.items()}


# ---------------------------------------------------------------------------------------------


def _median_ms(xs):
    return 1e3 * statistics.median(xs)


def time_layers(args, cpp=None):
    beta = decay_factor(args.tau)
    v_th, scale = 1.0, 1.0
    dtype = torch.float32
    rows = []
    for name, per_sample in LAYERS:
        n = per_sample * args.batch
        g = torch.Generator().manual_seed(n)
        currents = (torch.randn(args.steps, n, generator=g) * 0.5 + 0.3).to(dtype)
        grad_spikes = torch.randn(args.steps, n, generator=g).to(dtype)
        corr = (torch.rand(n, generator=g) + 0.5).to(dtype)

        # agreement first: same spikes, count, trace and gradients for every contender
        out_n, spk_n, cnt_n, tr_n = numba_forward(currents, beta, v_th)
        out_t, spk_t, cnt_t, tr_t = torch_forward(currents, beta, v_th, stats=True)
        assert torch.equal(out_n, out_t) and torch.equal(cnt_n, cnt_t), name
        torch.testing.assert_close(tr_n, tr_t)
        grad_n = scan_cpu.scan_backward(spk_n, grad_spikes, beta, scale, corr)
        torch.testing.assert_close(grad_n, torch_backward(spk_t, grad_spikes, beta, scale, corr))
        contenders = {
            "numba": (lambda: numba_forward(currents, beta, v_th),
                      lambda: scan_cpu.scan_backward(spk_n, grad_spikes, beta, scale, corr)),
            "torch ops": (lambda: torch_forward(currents, beta, v_th, stats=False),
                          lambda: torch_backward(spk_t, grad_spikes, beta, scale, corr)),
            "torch ops +stats": (lambda: torch_forward(currents, beta, v_th, stats=True), None),
        }
        if cpp is not None:
            coef = corr * scale
            spk_u8 = spk_n.view(torch.uint8)
            s_c, c_c, t_c = cpp.scan_fwd(currents, beta, v_th)
            assert torch.equal(s_c, spk_u8) and torch.equal(c_c, cnt_n), name
            torch.testing.assert_close(t_c, tr_n)
            torch.testing.assert_close(cpp.scan_bwd(spk_u8, grad_spikes, coef, beta), grad_n)
            contenders["C++"] = (lambda: cpp.scan_fwd(currents, beta, v_th)[0].to(dtype),
                                 lambda: cpp.scan_bwd(spk_u8, grad_spikes, coef, beta))
        times = {k: {"fwd": [], "bwd": []} for k in contenders}
        for _ in range(args.repeats):
            for key, (fwd, bwd) in contenders.items():
                t0 = time.perf_counter()
                fwd()
                times[key]["fwd"].append(time.perf_counter() - t0)
                if bwd is not None:
                    t0 = time.perf_counter()
                    bwd()
                    times[key]["bwd"].append(time.perf_counter() - t0)
        row = {"layer": name, "N": n, "spike rate": spk_n.float().mean().item()}
        for key, tt in times.items():
            row[key] = {p: _median_ms(v) for p, v in tt.items() if v}
        rows.append(row)
    return rows


def time_variants(args):
    import numba

    variants = _variants()
    threads = numba.config.NUMBA_NUM_THREADS
    beta, v_th = decay_factor(args.tau), 1.0
    rows = []
    for name, per_sample in (LAYERS[0], LAYERS[-1]):
        n = per_sample * args.batch
        g = torch.Generator().manual_seed(n)
        cur = (torch.randn(args.steps, n, generator=g) * 0.5 + 0.3).numpy()
        grad_out = torch.randn(args.steps, n, generator=g).numpy()
        params = np.array([beta, v_th], dtype=np.float32)
        coef = np.ones(n, np.float32)
        gparams = np.array([beta], dtype=np.float32)
        fwd = {"leaklib (step fn)": scan_cpu._forward_kernel, **variants["fwd"]}
        bwd = {"leaklib (step fn)": scan_cpu._backward_kernel, **variants["bwd"]}
        ref_spk = np.empty(cur.shape, np.uint8)
        scan_cpu._forward_kernel(cur, params, ref_spk, np.zeros(n, np.float32), np.zeros(n, np.float32))
        ref_grad = np.empty_like(grad_out)
        scan_cpu._backward_kernel(ref_spk, grad_out, coef, gparams, ref_grad)
        tf = {k: [] for k in fwd}
        tb = {k: [] for k in bwd}
        for rep in range(args.repeats + 1):
            for key, kern in fwd.items():
                spk = np.empty(cur.shape, np.uint8)
                cnt, tr = np.zeros(n, np.float32), np.zeros(n, np.float32)
                t0 = time.perf_counter()
                kern(cur, params, spk, cnt, tr)
                dt = time.perf_counter() - t0
                if rep == 0:  # compile run: check, don't time
                    assert (spk == ref_spk).all(), key
                else:
                    tf[key].append(dt)
            for key, kern in bwd.items():
                grad = np.empty_like(grad_out)
                t0 = time.perf_counter()
                kern(ref_spk, grad_out, coef, gparams, grad)
                dt = time.perf_counter() - t0
                if rep == 0:
                    np.testing.assert_allclose(grad, ref_grad, rtol=1e-6)
                else:
                    tb[key].append(dt)
        rows.append({"layer": name, "N": n, "threads (prange)": threads,
                     "fwd": {k: _median_ms(v) for k, v in tf.items()},
                     "bwd": {k: _median_ms(v) for k, v in tb.items()}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/scan_cpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="T (default 100)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tau", type=float, default=30.0, help="tau_m (inf: IF)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timed repeats per contender")
    parser.add_argument("--compile-repeats", type=int, default=3, help="fresh processes per compile-time mode")
    parser.add_argument("--variants", action="store_true", help="also time loop order / branch / prange variants")
    parser.add_argument("--cpp", action="store_true", help="also build and time a C++ extension (needs g++)")
    parser.add_argument("--output", default=str(HERE / "results" / "scan_cpu.json"))
    args = parser.parse_args(argv)

    if not scan_cpu.available():
        print("numba is not available (not installed, or LEAKLIB_NUMBA=0)")
        return 1
    torch.set_num_threads(1)
    results: dict = {"platform": platform.platform(), "processor": platform.processor(),
                     "torch": torch.__version__, "T": args.steps, "batch": args.batch, "tau_m": args.tau}
    import numba

    results["numba"] = numba.__version__

    cpp = None
    if args.cpp:
        try:
            cpp, build_s = build_cpp()
            results["cpp build s"] = build_s
            print(f"C++ extension built in {build_s:.1f} s")
        except Exception as exc:  # noqa: BLE001 -- no compiler / headers: report and go on
            print(f"C++ extension not built: {exc}")

    rows = time_layers(args, cpp)
    results["layers"] = rows
    keys = ["numba", "torch ops"] + (["C++"] if cpp is not None else [])
    print(f"\nT={args.steps}, batch {args.batch}, tau_m={args.tau:g}, float32, 1 thread; "
          f"median ms of {args.repeats} interleaved repeats\n")
    head = "| layer | N | rate | " + " | ".join(f"{k} fwd | {k} bwd" for k in keys)
    head += " | torch ops +stats fwd | speedup fwd | speedup bwd | speedup fwd+bwd |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    tot = {k: 0.0 for k in ("nf", "nb", "tf", "tb", "ts")}
    for r in rows:
        cells = [r["layer"], str(r["N"]), f"{r['spike rate']:.2f}"]
        for k in keys:
            cells += [f"{r[k]['fwd']:.2f}", f"{r[k]['bwd']:.2f}"]
        nf, nb, tf, tb = r["numba"]["fwd"], r["numba"]["bwd"], r["torch ops"]["fwd"], r["torch ops"]["bwd"]
        ts = r["torch ops +stats"]["fwd"]
        for key, val in zip(("nf", "nb", "tf", "tb", "ts"), (nf, nb, tf, tb, ts)):
            tot[key] += val
        cells += [f"{ts:.2f}", f"{tf / nf:.1f}x", f"{tb / nb:.1f}x", f"{(tf + tb) / (nf + nb):.1f}x"]
        print("| " + " | ".join(cells) + " |")
    print(f"\nall five layers: numba {tot['nf'] + tot['nb']:.1f} ms, torch ops {tot['tf'] + tot['tb']:.1f} ms "
          f"({(tot['tf'] + tot['tb']) / (tot['nf'] + tot['nb']):.1f}x), torch ops +stats "
          f"{tot['ts'] + tot['tb']:.1f} ms ({(tot['ts'] + tot['tb']) / (tot['nf'] + tot['nb']):.1f}x) "
          "per training step (forward + backward)")

    if args.compile_repeats > 0:
        ct = compile_times(args.compile_repeats)
        results["compile s"] = ct
        print(f"\nnumba compile time, fresh process (median of {args.compile_repeats}), seconds:\n")
        phases = list(next(iter(ct.values())))
        print("| cache | " + " | ".join(phases) + " |")
        print("|---|" + "---:|" * len(phases))
        for mode, t in ct.items():
            print(f"| {mode} | " + " | ".join(f"{t[p]:.2f}" for p in phases) + " |")

    if args.variants:
        vrows = time_variants(args)
        results["variants"] = vrows
        print(f"\nkernel variants, float32 numpy arrays (no torch wrapper), median ms "
              f"(prange: {vrows[0]['threads (prange)']} threads):\n")
        for part in ("fwd", "bwd"):
            names = list(vrows[0][part])
            print(f"| {part} | " + " | ".join(names) + " |")
            print("|---|" + "---:|" * len(names))
            for r in vrows:
                print(f"| {r['layer']} N={r['N']} | " + " | ".join(f"{r[part][k]:.3f}" for k in names) + " |")
            print()

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

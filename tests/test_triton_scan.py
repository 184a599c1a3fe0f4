"""The GPU path of the neuron scan, checked on the CPU.

* The Triton kernels (leaklib.triton_scan) against the per-step reference of Algorithm 2, for the
  old and the generalised semantics (leak gradient, leak correction with a dropout mask, pooling
  neurons). The kernels run on CPU tensors under Triton's interpreter, which must be switched on
  before ``triton`` is first imported; each check therefore runs in a fresh Python process with
  ``TRITON_INTERPRET=1``. The reference is ``lif_multistep(method="stepwise")``: ``lif_step`` T times,
  differentiated by autograd, the correction applied by hooks (no code shared with the kernels).
* The dispatch of ``lif_multistep`` on CUDA, its self-check and fallback, and the device guard:
  there is no GPU here, so those processes make CPU tensors report ``is_cuda`` (the dispatch takes
  the CUDA branch; kernels run in the interpreter) and mock ``torch.cuda.device``.
* The closed-form backward (the PyTorch fallback on CUDA) against the reverse loop, in process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent(
    r"""
    import json, math, sys
    import torch
    import triton  # must be the interpreter (TRITON_INTERPRET=1 set by the test)
    from leaklib.neurons import decay_factor, lif_multistep
    from leaklib.triton_scan import is_available, lif_scan

    cases = json.loads(sys.argv[1])
    report = []
    for case in cases:
        gen = torch.Generator().manual_seed(case["seed"])
        dtype = getattr(torch, case["dtype"])
        shape = tuple(case["shape"])
        currents = (torch.randn(shape, generator=gen, dtype=dtype) * case["sigma"] + case["mu"])
        grad_out = torch.randn(shape, generator=gen, dtype=dtype)
        tau = float(case["tau"])
        v_th, eps = case["v_th"], case["eps"]
        assert is_available(currents), "the Triton path must be usable under the interpreter"

        x_ref = currents.clone().requires_grad_(True)
        s_ref = lif_multistep(x_ref, tau, v_th, eps, method="stepwise")
        (g_ref,) = torch.autograd.grad(s_ref, x_ref, grad_out)

        x_tri = currents.clone().requires_grad_(True)
        s_tri = lif_scan(x_tri, decay_factor(tau), v_th, eps)
        (g_tri,) = torch.autograd.grad(s_tri, x_tri, grad_out)

        report.append({
            "case": case,
            "dtype_out": str(s_tri.dtype), "shape_out": list(s_tri.shape),
            "spikes_equal": bool(torch.equal(s_tri, s_ref)),
            "n_spikes": int(s_ref.sum().item()), "n": s_ref.numel(),
            "grad_max_abs_diff": float((g_tri - g_ref).abs().max().item()),
            "grad_max_abs": float(g_ref.abs().max().item()),
        })
    print("REPORT" + json.dumps(report))
    """
)


def _run(cases: list[dict]) -> list[dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "LEAKLIB_TRITON": "1"}
    proc = subprocess.run([sys.executable, "-c", CHECK, json.dumps(cases)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[-1][len("REPORT"):])


CASES = [
    # LIF and IF, float64 so that any difference in rounding order would show in the spikes
    {"tau": 5.0, "v_th": 1.0, "eps": 0.0, "shape": [12, 3, 37], "mu": 0.25, "sigma": 0.6, "dtype": "float64", "seed": 1},
    {"tau": "inf", "v_th": 1.0, "eps": 0.0, "shape": [12, 3, 37], "mu": 0.15, "sigma": 0.6, "dtype": "float64", "seed": 2},
    # float32, a threshold and surrogate scale != 1, N not a multiple of the block, N > one block
    {"tau": 30.0, "v_th": 0.7, "eps": 0.3, "shape": [9, 700], "mu": 0.2, "sigma": 0.5, "dtype": "float32", "seed": 3},
    {"tau": "inf", "v_th": 0.5, "eps": -0.2, "shape": [7, 2, 5, 3, 3], "mu": 0.1, "sigma": 0.4, "dtype": "float32", "seed": 4},
    # one time step
    {"tau": 2.0, "v_th": 1.0, "eps": 0.0, "shape": [1, 40], "mu": 0.8, "sigma": 0.5, "dtype": "float32", "seed": 5},
]


@pytest.fixture(scope="module")
def report() -> list[dict]:
    return _run(CASES)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_triton_scan_matches_stepwise_reference(report, index):
    r = report[index]
    assert r["case"] == json.loads(json.dumps(CASES[index]))
    assert r["shape_out"] == CASES[index]["shape"]
    assert r["dtype_out"] == f"torch.{CASES[index]['dtype']}"
    # the input must exercise both firing and silence, else the comparison says little
    assert 0 < r["n_spikes"] < r["n"]
    assert r["spikes_equal"]
    assert r["grad_max_abs"] > 0
    tol = 1e-12 if CASES[index]["dtype"] == "float64" else 1e-6
    assert r["grad_max_abs_diff"] <= tol * max(1.0, r["grad_max_abs"])


def test_triton_scan_rejects_bad_shapes_and_dtypes():
    code = textwrap.dedent(
        """
        import torch
        from leaklib.triton_scan import lif_scan
        for bad, exc in ((torch.zeros(0, 3), ValueError), (torch.zeros(()), ValueError),
                         (torch.zeros(3, 2, dtype=torch.int32), TypeError)):
            try:
                lif_scan(bad, 0.9)
            except exc:
                pass
            else:
                raise SystemExit(f"no {exc.__name__} for {bad.dtype} {tuple(bad.shape)}")
        print("OK")
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# generalised semantics: leak gradient, leak correction (with a dropout mask), pooling neurons

SEMANTICS_CHECK = textwrap.dedent(
    r"""
    import json, sys
    import torch
    import triton  # the interpreter (TRITON_INTERPRET=1 set by the test)
    from leaklib.neurons import decay_factor, lif_multistep
    from leaklib.triton_scan import lif_scan

    report = []
    for case in json.loads(sys.argv[1]):
        gen = torch.Generator().manual_seed(case["seed"])
        dtype = getattr(torch, case["dtype"])
        shape = tuple(case["shape"])
        currents = torch.randn(shape, generator=gen, dtype=dtype) * case["sigma"] + case["mu"]
        grad_out = torch.randn(shape, generator=gen, dtype=dtype)
        mask = None
        if case["mask"]:
            mask = (torch.rand(shape[1:], generator=gen) < 0.8).to(dtype) / 0.8
        tau = float(case["tau"])
        kw = dict(leak_grad=case["leak_grad"], correction=case["correction"], mask=mask,
                  grad_scale=case["grad_scale"])

        x_ref = currents.clone().requires_grad_(True)
        s_ref = lif_multistep(x_ref, tau, case["v_th"], method="stepwise", **kw)
        (g_ref,) = torch.autograd.grad(s_ref, x_ref, grad_out)

        beta = decay_factor(tau)
        x_tri = currents.clone().requires_grad_(True)
        s_tri = lif_scan(x_tri, beta, case["v_th"], grad_scale=case["grad_scale"],
                         grad_beta=beta if case["leak_grad"] == "exact" else 1.0,
                         correction=case["correction"] == "lee2020", mask=mask)
        (g_tri,) = torch.autograd.grad(s_tri, x_tri, grad_out)
        with torch.no_grad():  # evaluation: same spikes without the gradient's bookkeeping
            s_eval = lif_scan(currents, beta, case["v_th"], grad_beta=1.0, correction=True, mask=mask)
        report.append({
            "spikes_equal": bool(torch.equal(s_tri, s_ref)), "eval_equal": bool(torch.equal(s_eval, s_ref)),
            "n_spikes": int(s_ref.sum().item()), "n": s_ref.numel(),
            "grad_max_abs_diff": float((g_tri - g_ref).abs().max().item()),
            "grad_max_abs": float(g_ref.abs().max().item()),
        })
    print("REPORT" + json.dumps(report))
    """
)

SEMANTICS = [
    # [21]'s default: detached leak, leak correction, dropout mask
    {"tau": 5.0, "leak_grad": "detached", "correction": "lee2020", "mask": True, "grad_scale": None, "v_th": 1.0,
     "shape": [14, 3, 37], "mu": 0.3, "sigma": 0.6, "dtype": "float64", "seed": 11},
    {"tau": 30.0, "leak_grad": "detached", "correction": "lee2020", "mask": False, "grad_scale": None, "v_th": 1.0,
     "shape": [10, 600], "mu": 0.25, "sigma": 0.5, "dtype": "float32", "seed": 12},
    # exact leak gradient with the correction; detached without it
    {"tau": 2.0, "leak_grad": "exact", "correction": "lee2020", "mask": True, "grad_scale": None, "v_th": 0.8,
     "shape": [12, 2, 41], "mu": 0.3, "sigma": 0.6, "dtype": "float64", "seed": 13},
    {"tau": 100.0, "leak_grad": "detached", "correction": "none", "mask": False, "grad_scale": None, "v_th": 1.0,
     "shape": [12, 2, 41], "mu": 0.2, "sigma": 0.6, "dtype": "float64", "seed": 14},
    # the pooling neurons of [21]: IF, threshold 0.75, surrogate factor 1
    {"tau": "inf", "leak_grad": "detached", "correction": "none", "mask": False, "grad_scale": 1.0, "v_th": 0.75,
     "shape": [9, 2, 4, 3, 3], "mu": 0.2, "sigma": 0.5, "dtype": "float32", "seed": 15},
    # IF neurons with the correction (beta = 1: corr is 1 once a neuron fired)
    {"tau": "inf", "leak_grad": "exact", "correction": "lee2020", "mask": True, "grad_scale": None, "v_th": 1.0,
     "shape": [11, 3, 29], "mu": 0.15, "sigma": 0.6, "dtype": "float64", "seed": 16},
]


@pytest.fixture(scope="module")
def semantics_report() -> list[dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "LEAKLIB_TRITON": "1"}
    proc = subprocess.run([sys.executable, "-c", SEMANTICS_CHECK, json.dumps(SEMANTICS)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT")][-1][len("REPORT"):])


@pytest.mark.parametrize("index", range(len(SEMANTICS)))
def test_triton_scan_generalised_semantics_match_stepwise_reference(semantics_report, index):
    r, case = semantics_report[index], SEMANTICS[index]
    assert 0 < r["n_spikes"] < r["n"]
    assert r["spikes_equal"] and r["eval_equal"]
    assert r["grad_max_abs"] > 0
    tol = 1e-12 if case["dtype"] == "float64" else 1e-6
    assert r["grad_max_abs_diff"] <= tol * max(1.0, r["grad_max_abs"])



def test_triton_scan_computes_the_correction_on_the_masked_trace():
    """A neuron that fired once, 35 steps before the end (tau_m = 5): LF = e^-7 is under [21]'s 1e-3, times
    the dropout mask 1.25 over it; the factor is 1 + ln(beta) LF / Total, as tests/test_lee2020.py states."""
    code = textwrap.dedent(
        """
        import math
        import torch
        import triton  # the interpreter
        from leaklib.neurons import decay_factor
        from leaklib.triton_scan import lif_scan

        beta = decay_factor(5.0)
        x = torch.zeros((36, 4), dtype=torch.float64)
        x[0] = 1.5
        x.requires_grad_(True)
        mask = torch.tensor([1.25, 1.25, 0.0, 1.25], dtype=torch.float64)
        w = torch.tensor([2.0, 3.0, 5.0, 7.0], dtype=torch.float64)
        spikes = lif_scan(x, beta, 1.0, grad_beta=1.0, correction=True, mask=mask)
        (spikes[0] * mask * w).sum().backward()
        want = w * mask * (1 + math.log(beta) * beta**35)
        assert spikes[0].tolist() == [1.0] * 4 and spikes.sum().item() == 4
        assert torch.allclose(x.grad[0], want, rtol=1e-14, atol=0), (x.grad[0], want)
        assert x.grad[1:].abs().sum().item() == 0
        print("OK")
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "LEAKLIB_TRITON": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]

# ---------------------------------------------------------------------------------------------
# the CUDA dispatch of lif_multistep, the self-check with its fallback, and the device guard

_AS_CUDA = textwrap.dedent(
    r"""
    import json, sys, warnings
    import torch
    import triton  # the interpreter
    import leaklib.triton_scan as ts
    from leaklib.neurons import lif_multistep

    # no GPU here: CPU tensors claim to be CUDA tensors, so lif_multistep takes its CUDA branch
    # (the kernels run in the interpreter, the fallback is LIFScan as on CUDA: torch forward, closed form)
    torch.Tensor.is_cuda = property(lambda self: True)

    def inputs(dtype=torch.float64, seed=3):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((12, 2, 45), generator=gen, dtype=dtype) * 0.6 + 0.3
        g = torch.randn(x.shape, generator=gen, dtype=dtype)
        mask = (torch.rand(x.shape[1:], generator=gen) < 0.8).to(dtype) / 0.8
        return x, g, mask

    def run(x, g, mask, method="fused"):
        xr = x.clone().requires_grad_(True)
        s = lif_multistep(xr, 20.0, 1.0, method=method, leak_grad="detached", correction="lee2020", mask=mask)
        (grad,) = torch.autograd.grad(s, xr, g)
        return s.detach(), grad

    def compare(x, g, mask):
        s, grad = run(x, g, mask)
        s_ref, g_ref = run(x, g, mask, "stepwise")
        return {"spikes_equal": bool(torch.equal(s, s_ref)), "n_spikes": int(s_ref.sum()),
                "grad_diff": float((grad - g_ref).abs().max()), "grad_max": float(g_ref.abs().max())}

    calls = {"forward": [], "backward": []}
    real_forward, real_backward = ts._launch_forward, ts._launch_backward

    def counted_forward(*args):
        calls["forward"].append({"store_spikes": args[6], "with_trace": args[7]})
        return real_forward(*args)

    def counted_backward(*args):
        calls["backward"].append(True)
        return real_backward(*args)

    ts._launch_forward, ts._launch_backward = counted_forward, counted_backward
    """
)


def _run_script(body: str, extra_env: dict | None = None) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "LEAKLIB_TRITON": "1", **(extra_env or {})}
    proc = subprocess.run([sys.executable, "-c", _AS_CUDA + textwrap.dedent(body)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[-1][len("REPORT"):])


def test_lif_multistep_on_cuda_runs_triton_for_the_default_semantics():
    """[21]'s default (detached leak, leak correction, dropout mask) goes to Triton after one self-check."""
    r = _run_script(
        r"""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, g, mask = inputs()
            result = compare(x, g, mask)
            checks = len(calls["forward"])            # the self-check's launches and this run's
            again = compare(*inputs(seed=4))          # no second self-check for the same device and dtype
            with torch.no_grad():                     # evaluation: no uint8 spikes, no trace
                lif_multistep(x, 20.0, 1.0, leak_grad="detached", correction="lee2020", mask=mask)
        print("REPORT" + json.dumps({"result": result, "again": again, "calls": calls, "checks": checks,
                                     "warnings": [str(w.message) for w in caught], "ready": ts.ready(x),
                                     "check_runs": len(ts._CHECK_SHAPES) * len(ts._CHECK_CASES)}))
        """)
    assert r["warnings"] == [] and r["ready"]
    for result in (r["result"], r["again"]):
        assert result["spikes_equal"] and 0 < result["n_spikes"]
        assert result["grad_diff"] <= 1e-12 * max(1.0, result["grad_max"])
    forward, runs = r["calls"]["forward"], r["check_runs"]
    # the self-check: a training and an evaluation launch per case; then one launch per call
    assert runs >= 3 and r["checks"] == 2 * runs + 1 and len(forward) == 2 * runs + 3
    assert {"store_spikes": False, "with_trace": False} in forward[:2 * runs]  # the check covers evaluation
    assert forward[2 * runs] == {"store_spikes": True, "with_trace": True}
    assert forward[-1] == {"store_spikes": False, "with_trace": False}
    assert len(r["calls"]["backward"]) == runs + 2


@pytest.mark.parametrize("failure", ["raise", "wrong-spikes", "wrong-grad"])
def test_failed_self_check_warns_once_and_falls_back_to_the_reference(failure):
    """A kernel that fails to compile (raises) or computes wrong values: one warning naming the reason
    and LEAKLIB_TRITON=0; the result is the PyTorch scan's; Triton is not launched again."""
    r = _run_script(
        r"""
        failure = sys.argv[1] if len(sys.argv) > 1 else FAILURE
        if failure == "raise":
            def broken_forward(*args):
                raise RuntimeError("\nptxas fatal   : simulated compile failure\n  in line 2")
            ts._launch_forward = broken_forward
        elif failure == "wrong-spikes":
            def broken_forward(*args):
                counted_forward(*args)
                args[1][-1].fill_(1)  # the last step fires everywhere
            ts._launch_forward = broken_forward
        else:
            def broken_backward(*args):
                counted_backward(*args)
                args[2].mul_(1.001)  # gradients 0.1 % off
            ts._launch_backward = broken_backward

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, g, mask = inputs()
            result = compare(x, g, mask)
            n_forward, n_backward = len(calls["forward"]), len(calls["backward"])
            again = compare(*inputs(torch.float32, seed=5))  # another dtype: no new check, no new warning
        print("REPORT" + json.dumps({
            "result": result, "again": again, "warnings": [str(w.message) for w in caught],
            "categories": [w.category.__name__ for w in caught], "ready": ts.ready(x),
            "reason": ts.disabled_reason(), "launches_before": [n_forward, n_backward],
            "launches_after": [len(calls["forward"]), len(calls["backward"])]}))
        """.replace("FAILURE", repr(failure)))
    assert len(r["warnings"]) == 1 and r["categories"] == ["RuntimeWarning"]
    message = r["warnings"][0]
    assert "LEAKLIB_TRITON=0" in message and "self-check" in message
    expected = {"raise": "RuntimeError: ptxas fatal   : simulated compile failure in line 2",
                "wrong-spikes": "spikes differ",
                "wrong-grad": "gradients differ"}[failure]
    assert expected in message and expected in r["reason"] and "\n" not in message
    assert not r["ready"]
    assert r["launches_after"] == r["launches_before"]  # the fallback does not touch Triton again
    for result in (r["result"], r["again"]):
        assert result["spikes_equal"] and 0 < result["n_spikes"]
        assert result["grad_diff"] <= 1e-5 * max(1.0, result["grad_max"])


def test_leaklib_triton_0_skips_triton_and_its_check():
    r = _run_script(
        r"""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = compare(*inputs())
        print("REPORT" + json.dumps({"result": result, "warnings": len(caught), "calls": calls}))
        """, {"LEAKLIB_TRITON": "0"})
    assert r["warnings"] == 0 and r["calls"] == {"forward": [], "backward": []}
    assert r["result"]["spikes_equal"]


def test_kernels_launch_under_the_tensors_device():
    """Triton launches on the current CUDA device: the launches enter torch.cuda.device(tensor.device)."""
    r = _run_script(
        r"""
        import contextlib
        entered = []

        @contextlib.contextmanager
        def fake_cuda_device(device):
            entered.append(str(device))
            yield

        torch.cuda.device = fake_cuda_device  # no GPU: record what the guard is entered with

        class OnCuda1:
            device = torch.device("cuda", 1)

        with ts._device_guard(OnCuda1()):
            pass
        guard_cpu = type(ts._device_guard(torch.zeros(1))).__name__

        # the launches go through the guard with their own tensor
        seen = []
        real_guard = ts._device_guard

        def spy(tensor):
            seen.append(str(tensor.device))
            return real_guard(tensor)

        ts._device_guard = spy
        x = torch.randn(6, 40, dtype=torch.float64).requires_grad_(True)
        ts.lif_scan(x, 0.9, grad_beta=1.0, correction=True).sum().backward()
        print("REPORT" + json.dumps({"entered": entered, "guard_cpu": guard_cpu, "seen": seen}))
        """)
    assert r["entered"] == ["cuda:1"]
    assert r["guard_cpu"] == "nullcontext"
    assert r["seen"] == ["cpu", "cpu"]  # forward and backward launch, each under its tensor's device


def test_self_check_passes_in_every_dtype_and_grad_mode_under_the_interpreter():
    r = _run_script(
        r"""
        out = {str(dt): ts.self_check("cpu", dt) for dt in (torch.float32, torch.float64, torch.float16,
                                                             torch.bfloat16)}
        # the first scan of a process may come from an evaluation (no_grad, inference_mode)
        with torch.no_grad():
            out["no_grad"] = ts.self_check("cpu", torch.float32)
        with torch.inference_mode():
            out["inference_mode"] = ts.self_check("cpu", torch.float32)
            x = torch.randn(6, 2, 40) + 0.4
            out["lif_multistep"] = [ts.ready(x), bool(torch.equal(
                lif_multistep(x, 30.0, correction="lee2020"), lif_multistep(x, 30.0, method="stepwise")))]
        print("REPORT" + json.dumps(out))
        """)
    assert all(ok for ok, _ in r.values()), r


# ---------------------------------------------------------------------------------------------
# the closed-form backward (CUDA's PyTorch fallback) against the reverse loop, on the CPU

import math  # noqa: E402

import torch  # noqa: E402

from leaklib.neurons import _lif_scan_grad, _lif_scan_grad_closed_form, decay_factor  # noqa: E402


def _spikes_and_grads(shape, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    spikes = torch.rand(shape, generator=gen) < 0.25
    grad = torch.randn(shape, generator=gen, dtype=dtype)
    corr = torch.rand(shape[1:], generator=gen, dtype=dtype) * 1.5 - 0.2
    return spikes, grad, corr


@pytest.mark.parametrize("tau", [0.001, 0.5, 5.0, 30.0, math.inf])
@pytest.mark.parametrize("leak_grad", ["exact", "detached"])
@pytest.mark.parametrize("with_corr", [False, True])
def test_closed_form_equals_the_loop_for_every_tau(tau, leak_grad, with_corr):
    beta = decay_factor(tau)
    grad_beta = beta if leak_grad == "exact" else 1.0
    spikes, grad, corr = _spikes_and_grads((23, 3, 17), seed=int(tau if math.isfinite(tau) else 7))
    corr = corr if with_corr else None
    loop = _lif_scan_grad(spikes, grad, grad_beta, 1.25, corr)
    closed = _lif_scan_grad_closed_form(spikes, grad, grad_beta, 1.25, corr)
    assert torch.isfinite(closed).all()
    torch.testing.assert_close(closed, loop, rtol=1e-12, atol=1e-14)
    if tau == 0.001 and leak_grad == "exact":
        assert beta == 0.0  # beta underflows: only the steps that fired carry a gradient (0**0 = 1)
        expected = torch.where(spikes, grad * 1.25 * (1.0 if corr is None else corr), torch.zeros_like(grad))
        torch.testing.assert_close(closed, expected, rtol=1e-15, atol=0)


def test_closed_form_blocks_give_the_same_result_and_bound_the_int64_temporaries():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Sizes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.int64 = self.other = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if any(r.alias_info is not None for r in func._schema.returns):
                return out  # views and in-place results allocate nothing
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor):
                    if t.dtype == torch.int64:
                        self.int64 = max(self.int64, t.numel())
                    elif func is not torch.ops.aten.empty.memory_format:  # the result itself
                        self.other = max(self.other, t.numel())
            return out

    shape = (20, 4, 50)  # T = 20, N = 200
    spikes, grad, corr = _spikes_and_grads(shape, seed=3)
    whole = _lif_scan_grad_closed_form(spikes, grad, 0.9, 0.8, corr)
    with Sizes() as sizes:
        blocked = _lif_scan_grad_closed_form(spikes, grad, 0.9, 0.8, corr, block=20 * 7)  # 7 neurons a block
    assert torch.equal(blocked, whole)
    # temporaries: [T(+1), 7] blocks, and the per-neuron factor corr*scale [N]; never [T, N]
    assert 0 < sizes.int64 <= 21 * 7
    assert 0 < sizes.other <= max(21 * 7, grad[0].numel())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_closed_form_half_precision_is_computed_in_float32(dtype):
    spikes, grad, corr = _spikes_and_grads((30, 64), seed=5, dtype=torch.float32)
    half = _lif_scan_grad_closed_form(spikes, grad.to(dtype), 0.95, 1.0, corr)
    full = _lif_scan_grad_closed_form(spikes, grad.to(dtype).float(), 0.95, 1.0, corr)
    assert half.dtype == dtype
    assert torch.equal(half, full.to(dtype))

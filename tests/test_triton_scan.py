"""The Triton LIF scan (leaklib.triton_scan) against the per-step reference of Algorithm 2.

The kernels run on CPU tensors under Triton's interpreter, which must be switched on before
``triton`` is first imported; each check therefore runs in a fresh Python process with
``TRITON_INTERPRET=1``. The reference is ``lif_multistep(method="stepwise")``: ``lif_step`` T times,
differentiated by autograd (no code shared with the kernels).
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

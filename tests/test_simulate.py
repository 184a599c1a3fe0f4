"""Tests of leaklib.simulate: Euler-Maruyama neurons against the theory of leaklib.coherence.

Tolerance: a simulated quantity passes when it lies within Z standard errors of the theory, the
standard errors coming from the simulation itself (trials for the rate, 16 blocks of trials with a
jackknife for the coherence). Z = 4: a false alarm per comparison has probability ~1e-4 (the seeds
are fixed, so the test is deterministic anyway); the discretisation bias at dt = 0.01 with the
Brownian-bridge threshold test is below one standard error here (measured). Segments are 40.96 time
units long, many mean ISIs: with short segments (10 units) the Welch window averages the cross spectrum
over a band in which its phase (the response latency) turns, and the coherence at omega ~ 1 comes out
low by several standard errors (measured: -5.8 SE at nperseg=1024, -1.9 at 4096, -0.9 at dt=0.002).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from leaklib import coherence as coh
from leaklib import simulate as sim

Z = 4.0
OMEGAS = [1.2, 3.0, 6.0, 12.0]  # 8 ... 80 frequency resolutions (2 pi / 40.96) above DC


def _run(mu, D, leak, seed):
    s = sim.simulate_neurons(mu, D, leak=leak, t_max=400.0, dt=0.01, n_trials=64, rng=seed)
    return s, sim.estimate_spectra(s, nperseg=4096, n_blocks=16)


@pytest.fixture(scope="module")
def lif_supra():
    return _run(1.2, 0.1, True, 11)


@pytest.fixture(scope="module")
def lif_sub():
    return _run(0.8, 0.2, True, 12)


@pytest.fixture(scope="module")
def perfect_if():
    return _run(1.0, 0.3, False, 13)


def _theory(mu, D, leak, w):
    if leak:
        return coh.firing_rate(mu, D), coh.lif_coherence(w, mu, D), coh.lif_power_spectrum(w, mu, D)
    return coh.if_firing_rate(mu, D), coh.if_coherence(w, mu, D), coh.if_power_spectrum(w, mu, D)


@pytest.mark.parametrize("case", ["lif_supra", "lif_sub", "perfect_if"])
def test_rate_coherence_spectrum_match_theory(case, request):
    s, est = request.getfixturevalue(case)
    idx = [est.at(w) for w in OMEGAS]
    w = est.omega[idx]
    r0, c_th, s_th = _theory(s.mu, s.D, s.leak, w)
    rate, rate_se = sim.estimate_rate(s)
    assert abs(rate - r0) < Z * rate_se
    assert np.all(np.abs(est.coherence[idx] - c_th) < Z * est.coherence_se[idx]), (est.coherence[idx], c_th)
    assert np.all(np.abs(est.sxx[idx] - s_th) < Z * est.sxx_se[idx]), (est.sxx[idx], s_th)
    # the stimulus is white with two-sided spectrum S_ss = 2 D (supplement Eq. 9); one bin has ~4%
    # relative error here (~1150 segments), the mean over the ~150 bins below omega = 20 ~0.4%
    band = est.omega < 20
    assert np.mean(est.sss[band]) / (2 * s.D) == pytest.approx(1.0, abs=0.02)


def test_spike_spectrum_flattens_at_rate(lif_supra):
    s, est = lif_supra
    hi = (est.omega > 60) & (est.omega < 150)
    rate, _ = sim.estimate_rate(s)
    assert np.mean(est.sxx[hi]) == pytest.approx(rate, rel=0.02)


def test_simulation_decides_the_erratum(lif_supra, lif_sub):
    """Eq. 4 and Eq. 11 as printed are far outside the error bars; the corrected formula is inside."""
    for s, est in (lif_supra, lif_sub):
        idx = [est.at(w) for w in OMEGAS]
        w, c, se = est.omega[idx], est.coherence[idx], est.coherence_se[idx]
        assert np.max(np.abs(coh.lif_coherence(w, s.mu, s.D) - c) / se) < Z
        for eq in (4, 11):  # the printed formulas miss by many error bars at some of these frequencies
            assert np.max(np.abs(coh.lif_coherence_paper(w, s.mu, s.D, equation=eq) - c) / se) > 10


def test_bridge_correction_removes_rate_bias():
    mu, D, dt = 1.2, 0.1, 0.05  # coarse step: plain Euler-Maruyama misses crossings between grid points
    r0 = coh.firing_rate(mu, D)
    with_bridge = sim.estimate_rate(sim.simulate_neurons(mu, D, t_max=200, dt=dt, n_trials=64, rng=3))
    plain = sim.estimate_rate(sim.simulate_neurons(mu, D, t_max=200, dt=dt, n_trials=64, rng=3, bridge=False))
    assert abs(with_bridge[0] - r0) < Z * with_bridge[1]
    assert plain[0] < r0 - 5 * plain[1]


def test_simulation_shapes_and_burn_in():
    s = sim.simulate_neurons(0.5, 0.1, leak=False, t_max=3.0, dt=0.01, n_trials=5, rng=0)
    assert s.spikes.shape == s.stimulus.shape == (5, 300)
    assert s.duration == pytest.approx(3.0)
    # same seed, same result; different seed, different
    again = sim.simulate_neurons(0.5, 0.1, leak=False, t_max=3.0, dt=0.01, n_trials=5, rng=0)
    assert np.array_equal(s.spikes, again.spikes) and np.array_equal(s.stimulus, again.stimulus)
    with pytest.raises(ValueError):
        sim.simulate_neurons(1.0, 0.0)
    with pytest.raises(ValueError):
        sim.estimate_spectra(s, nperseg=64, n_blocks=8)


def test_network_neuron_rate_and_coherence_in_step_units():
    est = sim.simulate_network_neuron(30, input_mean=0.05, input_std=0.1, t_steps=6000, dt_steps=0.3,
                                      n_trials=32, nperseg=2048, n_blocks=8, rng=5)
    r = coh.network_rate_per_step(30, 0.05, 0.1)
    assert abs(est.rate_per_step - r) < Z * est.rate_se
    i = int(np.argmin(np.abs(est.omega_per_step - 0.05)))
    th = coh.network_coherence([est.freq_normalized[i]], 30, 0.05, 0.1)[0]
    assert abs(est.coherence[i] - th) < Z * est.coherence_se[i]
    assert est.freq_normalized[i] == pytest.approx(est.omega_per_step[i] / math.pi)

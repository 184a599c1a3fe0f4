"""Tests of leaklib.coherence: theory of Sec. 2.2 / supplement Sec. 7 against independent routes."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from scipy import integrate, stats

from leaklib import coherence as coh

# one sub-threshold (mu < v_T = 1) and two supra-threshold working points, normalised units
PARAMS = [(0.8, 0.2), (1.2, 0.1), (5.0, 0.5), (0.5, 0.05)]


def mfpt_quadrature(mu: float, D: float) -> float:
    """Mean first-passage time v_R=0 -> v_T=1 of dv = (mu - v) dt + sqrt(2D) dW by double quadrature.

    T = (1/D) int_0^1 dx e^{U(x)/D} int_{-inf}^x dy e^{-U(y)/D}, U(v) = v^2/2 - mu v (the textbook
    MFPT formula, an independent route to the paper's erfc integral for r0).
    """
    U = lambda v: v * v / 2 - mu * v  # noqa: E731
    def inner(x: float) -> float:
        # shift exponents by U(x) to stay in range: e^{(U(x) - U(y))/D}
        val, _ = integrate.quad(lambda y: math.exp((U(x) - U(y)) / D), -np.inf, x, epsabs=0, epsrel=1e-12,
                                limit=200)
        return val
    T, _ = integrate.quad(inner, 0.0, 1.0, epsabs=0, epsrel=1e-11, limit=200)
    return T / D


@pytest.mark.parametrize("mu,D", PARAMS)
def test_lif_rate_matches_mean_first_passage_time(mu, D):
    assert coh.firing_rate(mu, D) == pytest.approx(1.0 / mfpt_quadrature(mu, D), rel=1e-8)


def test_lif_rate_noiseless_limit():
    # D -> 0, mu > 1: deterministic period ln(mu / (mu - 1)); the noise correction is O(D)
    for mu in (1.5, 3.0):
        r_det = 1.0 / math.log(mu / (mu - 1.0))
        assert coh.firing_rate(mu, 1e-4) == pytest.approx(r_det, rel=2e-3)


@pytest.mark.parametrize("mu,D", PARAMS[:3])
def test_lif_power_spectrum_tends_to_rate(mu, D):
    r0 = coh.firing_rate(mu, D)
    s = coh.lif_power_spectrum([100.0, 400.0], mu, D)
    assert s[0] == pytest.approx(r0, rel=2e-2)
    assert s[1] == pytest.approx(r0, rel=1e-3)


@pytest.mark.parametrize("mu,D", PARAMS)
def test_coherences_are_between_zero_and_one(mu, D):
    w = np.concatenate([[0.0], np.logspace(-2, 2.5, 25)])
    for c in (coh.lif_coherence(w, mu, D), coh.if_coherence(w, mu, D)):
        assert np.all(np.isfinite(c))
        assert np.all(c >= 0) and np.all(c <= 1)
    assert np.all(coh.lif_power_spectrum(w, mu, D) > 0)


@pytest.mark.parametrize("mu,D", PARAMS[:2])
def test_lif_susceptibility_at_zero_is_rate_derivative(mu, D):
    h = 1e-5
    d_r0 = (coh.firing_rate(mu + h, D) - coh.firing_rate(mu - h, D)) / (2 * h)
    chi0 = coh.lif_susceptibility([0.0], mu, D)[0]
    assert chi0.real == pytest.approx(d_r0, rel=1e-7)
    assert abs(chi0.imag) < 1e-6
    # chi(-w) = conj(chi(w)) (real response function)
    pair = coh.lif_susceptibility([-2.0, 2.0], mu, D)
    assert pair[0] == pytest.approx(np.conj(pair[1]), rel=1e-14)


@pytest.mark.parametrize("mu,D", PARAMS[:2])
def test_high_frequency_coherence_is_twice_rate_over_omega(mu, D):
    # |chi| ~ r0 / sqrt(D w) for both models, S_xx -> r0, so C -> 2 r0 / w
    w = 1000.0
    assert coh.lif_coherence([w], mu, D)[0] * w / (2 * coh.firing_rate(mu, D)) == pytest.approx(1, abs=0.03)
    assert coh.if_coherence([1e5], mu, D)[0] * 1e5 / (2 * mu) == pytest.approx(1, abs=0.02)


def test_corrected_coherence_is_eq11_over_one_plus_omega_squared():
    mu, D = 1.2, 0.1
    w = np.array([0.3, 1.0, 3.0, 10.0])
    c11 = coh.lif_coherence_paper(w, mu, D, equation=11)
    c4 = coh.lif_coherence_paper(w, mu, D, equation=4)
    assert np.allclose(coh.lif_coherence(w, mu, D), c11 / (1 + w**2), rtol=1e-12)
    assert c11[-1] > 1.0          # Eq. 11 as printed leaves [0, 1]
    assert c4[0] < 0.1 * coh.lif_coherence(w, mu, D)[0]  # Eq. 4 as printed vanishes at low w
    with pytest.raises(ValueError):
        coh.lif_coherence_paper(w, mu, D, equation=7)


def test_result_does_not_depend_on_working_precision(monkeypatch):
    mu, D = 5.0, 0.5  # e^Delta = e^4.5, strong cancellation at small omega
    w = np.array([1e-3, 0.5, 20.0, 300.0])
    base = np.concatenate([coh.lif_coherence(w, mu, D), coh.lif_power_spectrum(w, mu, D)])
    coh.clear_cache()
    assert coh._lif_point.cache_info().currsize == 0
    monkeypatch.setattr(coh, "BASE_DPS", 60)
    high = np.concatenate([coh.lif_coherence(w, mu, D), coh.lif_power_spectrum(w, mu, D)])
    coh.clear_cache()
    assert np.allclose(base, high, rtol=1e-13, atol=0)
    assert np.all(coh.lif_digits_lost(w, mu, D) < coh.BASE_DPS - coh.GUARD_DIGITS + 1e-9)


def test_adaptive_precision_handles_tiny_omega():
    # the denominator D_iw(a) - e^Delta D_iw(b) vanishes like w: ~9 digits cancel at w = 1e-9
    mu, D = 1.2, 0.1
    lost = coh.lif_digits_lost([1e-9], mu, D)[0]
    assert lost > 8
    s = coh.lif_power_spectrum([0.0, 1e-3], mu, D)
    assert s[0] == pytest.approx(s[1], rel=1e-5)


def test_if_isi_characteristic_function_is_inverse_gaussian():
    mu, D = 1.0, 0.3
    # first passage over distance 1 at drift mu: inverse Gaussian, mean 1/mu, shape 1/(2D)
    mean, shape = 1.0 / mu, 1.0 / (2 * D)
    dist = stats.invgauss(mean / shape, scale=shape)
    for w in (0.5, 2.0, 7.0):
        re, _ = integrate.quad(lambda t: dist.pdf(t) * math.cos(w * t), 0, np.inf, limit=400)
        im, _ = integrate.quad(lambda t: dist.pdf(t) * math.sin(w * t), 0, np.inf, limit=400)
        assert coh.if_isi_characteristic_function(w, mu, D) == pytest.approx(re + 1j * im, abs=1e-8)
    assert dist.mean() == pytest.approx(1.0 / coh.if_firing_rate(mu, D))


def test_if_limits():
    mu, D = 0.7, 0.2
    assert coh.if_susceptibility(0.0, mu, D) == pytest.approx(1.0)       # d r0 / d mu = 1
    cv2 = 2 * D / mu
    assert coh.if_power_spectrum([0.0, 1e-6], mu, D) == pytest.approx([mu * cv2] * 2, rel=1e-5)
    assert coh.if_power_spectrum(1e4, mu, D) == pytest.approx(mu, rel=1e-6)
    assert coh.if_coherence(0.0, mu, D) == pytest.approx(1.0)            # D_st = D
    assert coh.if_coherence(0.0, mu, D, D_st=D / 4) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        coh.if_firing_rate(-0.1, D)


def test_network_mapping_by_hand():
    p = coh.network_to_diffusion(100, input_mean=0.05, input_std=0.1, v_th=1.0)
    assert (p.mu, p.D, p.time_unit) == pytest.approx((5.0, 0.5, 100.0))
    p = coh.network_to_diffusion(30, input_mean=0.1, input_std=0.2, v_th=2.0)
    assert (p.mu, p.D) == pytest.approx((1.5, 30 * 0.02 / 4))
    q = coh.network_to_diffusion(math.inf, input_mean=0.05, input_std=0.1)
    assert q.is_if and (q.mu, q.D, q.time_unit) == pytest.approx((0.05, 0.005, 1.0))
    f = np.array([0.01, 0.3])
    assert np.allclose(coh.network_coherence(f, 30, 0.05, 0.1), coh.lif_coherence(np.pi * f * 30, 1.5, 0.15))
    assert np.allclose(coh.network_coherence(f, math.inf, 0.05, 0.1), coh.if_coherence(np.pi * f, 0.05, 0.005))
    assert coh.network_rate_per_step(100, 0.05, 0.1) == pytest.approx(coh.firing_rate(5.0, 0.5) / 100)


def test_invalid_parameters_raise():
    with pytest.raises(ValueError):
        coh.firing_rate(1.0, 0.0)
    with pytest.raises(ValueError):
        coh.lif_coherence([np.nan], 1.0, 0.1)

"""Frequency response of white-noise-driven integrate-and-fire neurons (paper Sec. 2.2, supplement Sec. 7).

Normalised units of the supplement (its Eq. 5): ``dv/dt = f(v) + mu + sqrt(2 D) xi(t)`` with threshold
``v_T = 1``, reset ``v_R = 0``, no refractory period, ``<xi(t) xi(t')> = delta(t - t')``.

* LIF (``f(v) = -v``): time in units of tau_m. Firing rate r0 (supplement, formula after Eq. 7),
  susceptibility chi (Eq. 7, refs [36, 38, 39]), spike-train power spectrum S_xx (Eq. 8, ref. [40]),
  input-output coherence C (Eq. 6 with S_ss = 2 D_st, Eq. 9).
* IF / perfect integrator (``f(v) = 0``, tau_m = inf): formulas the paper does not give, derived in
  the chapter ``book/01_neurons_and_coherence.ipynb``: ISI density inverse Gaussian with
  characteristic function F(omega) = exp[(mu - sqrt(mu^2 - 4 i omega D)) / (2 D)], r0 = mu,
  S_xx = r0 (1 - |F|^2) / |1 - F|^2 (renewal process), chi = r0 ln F(omega) / (i omega)
  (linear response of the Fokker-Planck equation).

The coherence uses the exact relation S_xs = 2 D_st chi (Furutsu-Novikov: the stimulus is Gaussian
and enters like the mean input), so C = 2 D_st |chi|^2 / S_xx is exact, not only for weak stimuli.

Erratum. The modulus square of Eq. 7 carries |i w / (i w - 1)|^2 = w^2 / (1 + w^2); the supplement's
Eq. 10/11 keep only w^2, and the main text's Eq. 4 writes a different denominator. The correct
coherence is Eq. 11 divided by (1 + w^2) (:func:`lif_coherence`); :func:`lif_coherence_paper`
evaluates Eq. 4 and Eq. 11 as printed so that a simulation can decide (it does: see the tests and
Fig. ``fig2_erratum``).

Numerics. Parabolic cylinder functions of complex order ``D_{i w}`` and ``D_{i w - 1}`` come from
``mpmath.pcfd``. Their magnitudes span hundreds of decades over the plotted range (|D_{iw}| grows like
e^{pi w / 4}, e^Delta can be e^{100}), so every step stays in mpmath's arbitrary-exponent numbers and
only the final, O(1) ratios are converted to float64. The differences D(a) - e^Delta D(b) and
|D(a)|^2 - e^{2 Delta} |D(b)|^2 cancel: at small w the first vanishes like w (it is exactly 0 at
w = 0), and for small D the two terms are nearly equal. We therefore work at ``mp.dps = 30`` (16
digits for the float64 result plus 14 digits of headroom, which covers the cancellation of the
typical plotted range) and *measure* the digits lost in each difference; when fewer than
:data:`GUARD_DIGITS` digits would remain, the frequency is recomputed at a precision raised by the
loss. Results are therefore correct to double precision or flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Union

import mpmath as mp
import numpy as np

ArrayLike = Union[float, np.ndarray, list]

#: Working decimal precision of mpmath (see module docstring for the reason).
BASE_DPS: int = 30
#: Digits that must survive every cancellation; otherwise the precision is raised and we retry.
GUARD_DIGITS: int = 17
#: Largest precision the adaptive retry may reach before giving up with an error.
MAX_DPS: int = 400
#: Smallest |omega| evaluated; omega = 0 is returned as the limit omega -> 0 evaluated here.
OMEGA_MIN: float = 1e-9

V_T: float = 1.0
V_R: float = 0.0


def _check(mu: float, D: float) -> tuple[float, float]:
    mu, D = float(mu), float(D)
    if not (D > 0 and math.isfinite(D) and math.isfinite(mu)):
        raise ValueError(f"need finite mu and D > 0, got mu={mu}, D={D}")
    return mu, D


# ---------------------------------------------------------------------------------------------
# LIF: firing rate
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def _lif_rate_mp(mu: float, D: float, dps: int) -> mp.mpf:
    with mp.workdps(dps):
        lo = (mp.mpf(mu) - V_T) / mp.sqrt(2 * mp.mpf(D))
        hi = (mp.mpf(mu) - V_R) / mp.sqrt(2 * mp.mpf(D))
        # e^{z^2} erfc(z), written so that neither factor overflows or underflows for large |z|
        integrand = lambda z: mp.exp(z * z) * mp.erfc(z)  # noqa: E731  (mpmath: no overflow)
        pts = [lo] + ([mp.mpf(0)] if lo < 0 < hi else []) + [hi]
        T = mp.sqrt(mp.pi) * mp.quad(integrand, pts)
        return 1 / T


def firing_rate(mu: float, D: float) -> float:
    """Stationary firing rate r0 of the normalised LIF (supplement Sec. 7.2, formula after Eq. 7).

    ``r0 = [tau_r + sqrt(pi) * int_{(mu - v_T)/sqrt(2D)}^{(mu - v_R)/sqrt(2D)} e^{z^2} erfc(z) dz]^{-1}``
    with tau_r = 0, v_T = 1, v_R = 0; in spikes per tau_m.
    """
    mu, D = _check(mu, D)
    return float(_lif_rate_mp(mu, D, BASE_DPS))


# ---------------------------------------------------------------------------------------------
# LIF: parabolic cylinder functions at one frequency, precision-adaptive
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LIFPoint:
    chi: complex        # susceptibility chi(omega)
    sxx: float          # spike train power spectrum S_xx(omega)
    c_eq11_over_D: float  # r0 w^2 |N|^2 / (D Q): Eq. 11 with 2 D_st left out
    q: mp.mpf           # Q = |D_{iw}(a)|^2 - e^{2 Delta} |D_{iw}(b)|^2 (may be far outside float range)
    digits_lost: float


def _lost(terms: list, diff) -> float:
    big = max(abs(t) for t in terms)
    if big == 0:
        return 0.0
    if diff == 0:
        return float("inf")
    return float(mp.log10(big / abs(diff)))


@lru_cache(maxsize=65536)
def _lif_point(omega: float, mu: float, D: float) -> _LIFPoint:
    dps = BASE_DPS
    while True:
        with mp.workdps(dps):
            w = mp.mpf(omega)
            sD = mp.sqrt(mp.mpf(D))
            a = (mp.mpf(mu) - V_T) / sD
            b = (mp.mpf(mu) - V_R) / sD
            Delta = (V_R**2 - V_T**2 + 2 * mp.mpf(mu) * (V_T - V_R)) / (4 * mp.mpf(D))
            eD = mp.exp(Delta)
            nu = mp.mpc(0, w)
            Da, Db = mp.pcfd(nu, a), mp.pcfd(nu, b)
            Dm1a, Dm1b = mp.pcfd(nu - 1, a), mp.pcfd(nu - 1, b)
            den = Da - eD * Db                       # D_{iw}(a) - e^Delta D_{iw}(b)
            num = Dm1a - eD * Dm1b                   # D_{iw-1}(a) - e^Delta D_{iw-1}(b)
            q = abs(Da) ** 2 - eD**2 * abs(Db) ** 2  # |D_{iw}(a)|^2 - e^{2 Delta} |D_{iw}(b)|^2
            lost = max(_lost([Da, eD * Db], den), _lost([Dm1a, eD * Dm1b], num),
                       _lost([abs(Da) ** 2, eD**2 * abs(Db) ** 2], q))
            if dps - lost >= GUARD_DIGITS:
                r0 = _lif_rate_mp(mu, D, dps)
                iw = mp.mpc(0, w)
                chi = r0 * iw / (sD * (iw - 1)) * num / den
                sxx = r0 * q / abs(den) ** 2
                c11 = r0 * w**2 * abs(num) ** 2 / (mp.mpf(D) * q)
                return _LIFPoint(complex(chi), float(sxx), float(c11), +q, float(lost))
            if dps >= MAX_DPS:
                raise FloatingPointError(
                    f"LIF spectra at omega={omega}, mu={mu}, D={D}: {lost:.0f} digits cancel "
                    f"even at mp.dps={dps}")
            dps = min(MAX_DPS, int(math.ceil(lost)) + GUARD_DIGITS + 10)


def _omega_array(omega: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(omega, dtype=float)
    if not np.all(np.isfinite(w)):
        raise ValueError("omega must be finite")
    return w, np.maximum(np.abs(w), OMEGA_MIN)


def lif_digits_lost(omega: ArrayLike, mu: float, D: float) -> np.ndarray:
    """Decimal digits lost to cancellation at each omega (diagnostic for the precision choice)."""
    mu, D = _check(mu, D)
    w, aw = _omega_array(omega)
    return np.array([_lif_point(float(x), mu, D).digits_lost for x in aw.ravel()]).reshape(w.shape)


def lif_susceptibility(omega: ArrayLike, mu: float, D: float) -> np.ndarray:
    """Linear response chi(omega) of the LIF firing rate to a current modulation (supplement Eq. 7).

    ``chi = r0 i w / (sqrt(D) (i w - 1)) [D_{iw-1}(a) - e^Delta D_{iw-1}(b)] / [D_{iw}(a) - e^Delta D_{iw}(b)]``
    with a = (mu - v_T)/sqrt(D), b = (mu - v_R)/sqrt(D), Delta = (v_R^2 - v_T^2 + 2 mu (v_T - v_R)) / (4D).
    Convention x~(w) = int x(t) e^{i w t} dt (supplement Sec. 7.2); chi(-w) = conj(chi(w)).
    Returns complex128 with the shape of ``omega``; omega = 0 gives the limit dr0/dmu.
    """
    mu, D = _check(mu, D)
    w, aw = _omega_array(omega)
    out = np.array([_lif_point(float(x), mu, D).chi for x in aw.ravel()], dtype=complex).reshape(w.shape)
    return np.where(w < 0, np.conj(out), out)


def lif_power_spectrum(omega: ArrayLike, mu: float, D: float) -> np.ndarray:
    """Two-sided power spectrum S_xx(omega) of the LIF spike train (supplement Eq. 8, ref. [40]).

    ``S_xx = r0 (|D_{iw}(a)|^2 - e^{2 Delta} |D_{iw}(b)|^2) / |D_{iw}(a) - e^Delta D_{iw}(b)|^2``;
    tends to r0 for large |omega| (Poisson-like at short times).
    """
    mu, D = _check(mu, D)
    w, aw = _omega_array(omega)
    return np.array([_lif_point(float(x), mu, D).sxx for x in aw.ravel()]).reshape(w.shape)


def lif_coherence(omega: ArrayLike, mu: float, D: float, D_st: float | None = None) -> np.ndarray:
    """Corrected stimulus-spike-train coherence of the LIF (supplement Eq. 6 with Eqs. 7-9).

    ``C = 2 D_st |chi|^2 / S_xx
        = 2 D_st r0 w^2 / (D (1 + w^2)) |D_{iw-1}(a) - e^Delta D_{iw-1}(b)|^2
          / (|D_{iw}(a)|^2 - e^{2 Delta} |D_{iw}(b)|^2)``,
    i.e. the paper's Eq. 11 divided by (1 + w^2) (the erratum). ``D_st`` defaults to D (paper: D = D_st).
    """
    mu, D = _check(mu, D)
    D_st = D if D_st is None else float(D_st)
    w, aw = _omega_array(omega)
    c11 = np.array([_lif_point(float(x), mu, D).c_eq11_over_D for x in aw.ravel()]).reshape(w.shape)
    return 2 * D_st * c11 / (1 + aw**2)


def lif_coherence_paper(omega: ArrayLike, mu: float, D: float, equation: int = 11,
                        D_st: float | None = None) -> np.ndarray:
    """The coherence exactly as printed in the paper: main-text Eq. 4 or supplement Eq. 11.

    Eq. 11: ``2 D_st r0 w^2 / D |N|^2 / Q``; Eq. 4: ``2 D_st r0 w^2 / D |N|^2 / (1 + w^2 Q)``,
    N = D_{iw-1}(a) - e^Delta D_{iw-1}(b), Q = |D_{iw}(a)|^2 - e^{2 Delta} |D_{iw}(b)|^2.
    Kept to show the erratum; use :func:`lif_coherence` for the correct value.
    """
    if equation not in (4, 11):
        raise ValueError("equation must be 4 or 11")
    mu, D = _check(mu, D)
    D_st = D if D_st is None else float(D_st)
    w, aw = _omega_array(omega)
    if equation == 11:
        c11 = np.array([_lif_point(float(x), mu, D).c_eq11_over_D for x in aw.ravel()]).reshape(w.shape)
        return 2 * D_st * c11
    out = []
    for x in aw.ravel():
        p = _lif_point(float(x), mu, D)
        with mp.workdps(BASE_DPS):  # Eq. 4 = 2 D_st (r0 w^2 |N|^2 / (D Q)) * Q / (1 + w^2 Q)
            out.append(float(2 * D_st * p.c_eq11_over_D * p.q / (1 + mp.mpf(x) ** 2 * p.q)))
    return np.array(out).reshape(w.shape)


def clear_cache() -> None:
    """Forget cached LIF evaluations (for honest timing of a fresh curve)."""
    _lif_point.cache_clear()
    _lif_rate_mp.cache_clear()


# ---------------------------------------------------------------------------------------------
# IF (perfect integrator): derived in the chapter
# ---------------------------------------------------------------------------------------------
def if_firing_rate(mu: float, D: float) -> float:
    """Firing rate of the perfect IF, dv/dt = mu + sqrt(2D) xi, v_T = 1, v_R = 0: r0 = mu (mu > 0).

    The mean first-passage time over the distance v_T - v_R = 1 at drift mu is 1/mu, for any D.
    """
    mu, D = _check(mu, D)
    if mu <= 0:
        raise ValueError("the perfect integrator needs mu > 0 to fire at a finite mean rate")
    return mu


def if_isi_characteristic_function(omega: ArrayLike, mu: float, D: float) -> np.ndarray:
    """F(w) = <e^{i w T}> of the inverse-Gaussian ISI T: exp[(mu - sqrt(mu^2 - 4 i w D)) / (2 D)].

    Principal square root (Re > 0), the branch that gives |F| <= 1 and F(0) = 1. Computed in the
    stable form F = exp(2 i w / (mu + sqrt(mu^2 - 4 i w D))) (no cancellation for small D or w).
    """
    mu, D = _check(mu, D)
    w = np.asarray(omega, dtype=float)
    root = np.sqrt(mu**2 - 4j * w * D + 0j)
    return np.exp(2j * w / (mu + root))


def if_susceptibility(omega: ArrayLike, mu: float, D: float) -> np.ndarray:
    """Rate susceptibility of the perfect IF: chi(w) = mu (sqrt(mu^2 - 4 i w D) - mu) / (-2 i w D).

    Equivalently r0 ln F(w) / (i w); chi(0) = dr0/dmu = 1; |chi| ~ mu / sqrt(D |w|) at large |w|.
    Derived by linear response of the Fokker-Planck equation (chapter 01); stable form
    chi = 2 mu / (mu + sqrt(mu^2 - 4 i w D)).
    """
    mu, D = _check(mu, D)
    if_firing_rate(mu, D)
    w = np.asarray(omega, dtype=float)
    root = np.sqrt(mu**2 - 4j * w * D + 0j)
    return 2 * mu / (mu + root)


def if_power_spectrum(omega: ArrayLike, mu: float, D: float) -> np.ndarray:
    """Spike-train power spectrum of the perfect IF (renewal): S_xx = r0 (1 - |F|^2) / |1 - F|^2.

    omega = 0 gives the limit r0 CV^2 = r0 * 2D/mu (inverse Gaussian: CV^2 = 2 D / (mu (v_T - v_R))).
    """
    mu, D = _check(mu, D)
    r0 = if_firing_rate(mu, D)
    w = np.asarray(omega, dtype=float)
    aw = np.maximum(np.abs(w), OMEGA_MIN)
    # ln F = 2 i w / (mu + root) =: g; 1 - |F|^2 = -expm1(2 Re g); |1 - F|^2 = |expm1(g)|^2
    g = 2j * aw / (mu + np.sqrt(mu**2 - 4j * aw * D + 0j))
    s = r0 * (-np.expm1(2 * g.real)) / np.abs(np.expm1(g)) ** 2
    return np.where(np.abs(w) < OMEGA_MIN, r0 * 2 * D / mu, s)


def if_coherence(omega: ArrayLike, mu: float, D: float, D_st: float | None = None) -> np.ndarray:
    """Stimulus-spike-train coherence of the perfect IF: C = 2 D_st |chi|^2 / S_xx (C(0) = D_st/D)."""
    mu, D = _check(mu, D)
    D_st = D if D_st is None else float(D_st)
    return 2 * D_st * np.abs(if_susceptibility(omega, mu, D)) ** 2 / if_power_spectrum(omega, mu, D)


# ---------------------------------------------------------------------------------------------
# Mapping from the network's time-step neuron to the normalised diffusion model
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiffusionParams:
    """Normalised parameters of the network neuron with membrane time constant ``tau_m`` (steps).

    ``time_unit`` is the length of one normalised time unit in network steps: tau_m for LIF, 1 for IF.
    """

    tau_m: float
    mu: float
    D: float
    time_unit: float

    @property
    def is_if(self) -> bool:
        return math.isinf(self.tau_m)


def network_to_diffusion(tau_m: float, input_mean: float, input_std: float,
                         v_th: float = 1.0) -> DiffusionParams:
    """Map the network neuron (Algorithm 2: u += I[t]; u *= exp(-1/tau_m)) to (mu, D).

    In physical time t (unit: one step) the neuron is dU/dt = -U/tau_m + I0 + sqrt(2 D_I) xi(t) with
    I0 = ``input_mean`` and D_I = ``input_std``^2 / 2 (white input whose per-step increment has
    standard deviation ``input_std``). With v = U / v_th and t' = t / tau_m (supplement Eq. (a)-(f)):
    mu = tau_m I0 / v_th, D = tau_m D_I / v_th^2, omega' = omega tau_m. For tau_m = inf (IF) we keep
    physical time: mu = I0 / v_th, D = D_I / v_th^2, time unit one step.
    """
    D_I = input_std**2 / 2
    if math.isinf(tau_m):
        return DiffusionParams(tau_m=math.inf, mu=input_mean / v_th, D=D_I / v_th**2, time_unit=1.0)
    if tau_m <= 0:
        raise ValueError("tau_m must be positive")
    return DiffusionParams(tau_m=float(tau_m), mu=tau_m * input_mean / v_th,
                           D=tau_m * D_I / v_th**2, time_unit=float(tau_m))


def normalized_to_omega_per_step(freq_normalized: ArrayLike) -> np.ndarray:
    """Normalised frequency (1 = Nyquist of the 1-step network, 0.5 cycles/step) -> rad/step."""
    return np.pi * np.asarray(freq_normalized, dtype=float)


def network_coherence(freq_normalized: ArrayLike, tau_m: float, input_mean: float, input_std: float,
                      v_th: float = 1.0) -> np.ndarray:
    """Coherence of the network neuron with ``tau_m`` (steps; inf = IF) on the physical axis.

    ``freq_normalized``: 1 = Nyquist (0.5 cycles per step). Uses :func:`network_to_diffusion`.
    """
    p = network_to_diffusion(tau_m, input_mean, input_std, v_th)
    omega_model = normalized_to_omega_per_step(freq_normalized) * p.time_unit
    if p.is_if:
        return if_coherence(omega_model, p.mu, p.D)
    return lif_coherence(omega_model, p.mu, p.D)


def network_rate_per_step(tau_m: float, input_mean: float, input_std: float, v_th: float = 1.0) -> float:
    """Firing rate of the mapped neuron in spikes per network step."""
    p = network_to_diffusion(tau_m, input_mean, input_std, v_th)
    r = if_firing_rate(p.mu, p.D) if p.is_if else firing_rate(p.mu, p.D)
    return r / p.time_unit


__all__ = [
    "BASE_DPS", "GUARD_DIGITS", "firing_rate", "lif_susceptibility", "lif_power_spectrum",
    "lif_coherence", "lif_coherence_paper", "lif_digits_lost", "clear_cache", "if_firing_rate",
    "if_isi_characteristic_function", "if_susceptibility", "if_power_spectrum", "if_coherence",
    "DiffusionParams", "network_to_diffusion", "normalized_to_omega_per_step", "network_coherence",
    "network_rate_per_step",
]

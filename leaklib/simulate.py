"""Stochastic simulation of white-noise-driven IF/LIF neurons, and spectral estimates (paper Sec. 2.2).

The model is the supplement's Eq. 5, ``dv/dt = -v + mu + sqrt(2D) xi(t)`` (LIF, time in units of tau_m)
or ``dv/dt = mu + sqrt(2D) xi(t)`` (perfect IF), threshold v_T = 1, reset v_R = 0, no refractory period.
It is integrated by Euler-Maruyama for many independent trials at once (numpy, one vector operation
per time step over trials). A crossing between two grid points is detected with the Brownian-bridge
probability exp(-(1 - v_n)(1 - v_{n+1}) / (D dt)), which removes the O(sqrt(dt)) underestimate of the
firing rate that plain Euler-Maruyama has with an absorbing threshold.

The stimulus s(t) is the white-noise current itself, ``sqrt(2D) xi`` (D = D_st, as in the paper); per
step it is ``sqrt(2D/dt) * N(0, 1)``, whose two-sided spectrum is 2 D = S_ss (supplement Eq. 9). Spectra
are Welch estimates (``scipy.signal.welch``/``csd``) in the two-sided convention of the theory
(S(omega) with omega = 2 pi f, S_xx -> r0 at high frequency); error bars come from independent blocks
of trials, and the coherence uses a jackknife over blocks (bias-corrected, with its standard error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from .coherence import network_to_diffusion


@dataclass
class NeuronSimulation:
    """Spike trains and the stimulus that produced them; arrays are [n_trials, n_steps]."""

    spikes: np.ndarray      # bool: a spike in step n (between t_n and t_n + dt)
    stimulus: np.ndarray    # float32: s_n = sqrt(2 D / dt) xi_n, the white-noise current in step n
    dt: float
    mu: float
    D: float
    leak: bool

    @property
    def duration(self) -> float:
        return self.spikes.shape[1] * self.dt


def simulate_neurons(mu: float, D: float, *, leak: bool = True, t_max: float = 100.0,
                     dt: float = 1e-2, n_trials: int = 32, t_burn: float | None = None,
                     rng: np.random.Generator | int | None = 0, bridge: bool = True,
                     chunk: int = 4096) -> NeuronSimulation:
    """Euler-Maruyama simulation of ``n_trials`` independent neurons (supplement Eq. 5).

    ``leak=True``: LIF, dv = (-v + mu) dt + sqrt(2 D dt) N(0,1); ``leak=False``: perfect IF, drift mu.
    v starts at v_R = 0 and the first ``t_burn`` time units (default: 5 mean ISIs of the IF with the
    same mu, at least 5) are simulated and dropped so the recorded part is stationary.
    """
    if D <= 0 or dt <= 0 or t_max <= 0 or n_trials < 1:
        raise ValueError("need D > 0, dt > 0, t_max > 0, n_trials >= 1")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    if t_burn is None:
        t_burn = max(5.0, 5.0 / mu) if mu > 0 else 20.0
    n_burn = int(round(t_burn / dt))
    n_steps = int(round(t_max / dt))
    total = n_burn + n_steps
    spikes = np.zeros((n_trials, n_steps), dtype=bool)
    stimulus = np.empty((n_trials, n_steps), dtype=np.float32)
    v = np.zeros(n_trials)
    noise_scale = math.sqrt(2 * D * dt)
    decay = (1.0 - dt) if leak else 1.0
    drive = mu * dt
    inv_Ddt = 1.0 / (D * dt)
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        xi = rng.standard_normal((stop - start, n_trials))
        u = rng.random((stop - start, n_trials)) if bridge else None
        fired = np.zeros((stop - start, n_trials), dtype=bool)
        for k in range(stop - start):
            v_new = decay * v + drive + noise_scale * xi[k]
            hit = v_new >= 1.0
            if bridge:
                gap = (1.0 - v) * (1.0 - v_new)
                # only pairs with both ends below threshold need the bridge test
                hit |= u[k] < np.exp(-np.maximum(gap, 0.0) * inv_Ddt)
            v_new[hit] = 0.0
            fired[k] = hit
            v = v_new
        lo, hi = max(start, n_burn), stop
        if hi > lo:
            spikes[:, lo - n_burn:hi - n_burn] = fired[lo - start:hi - start].T
            stimulus[:, lo - n_burn:hi - n_burn] = (xi[lo - start:hi - start].T
                                                   * math.sqrt(2 * D / dt)).astype(np.float32)
    return NeuronSimulation(spikes=spikes, stimulus=stimulus, dt=dt, mu=float(mu), D=float(D), leak=leak)


def estimate_rate(sim: NeuronSimulation) -> tuple[float, float]:
    """Mean firing rate over trials and its standard error (spikes per time unit)."""
    per_trial = sim.spikes.sum(axis=1) / sim.duration
    n = per_trial.size
    se = float(per_trial.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return float(per_trial.mean()), se


@dataclass
class SpectralEstimate:
    """Welch estimates at angular frequencies ``omega`` (rad per time unit, DC excluded)."""

    omega: np.ndarray
    sxx: np.ndarray            # two-sided spike-train power spectrum, mean over blocks
    sxx_se: np.ndarray         # standard error from the spread over blocks
    sss: np.ndarray            # two-sided stimulus spectrum (should be 2 D)
    coherence: np.ndarray      # jackknife bias-corrected coherence
    coherence_se: np.ndarray   # jackknife standard error
    coherence_pooled: np.ndarray  # |<S_xs>|^2 / (<S_xx><S_ss>) pooled over all segments
    n_segments: int            # segments pooled (the coherence bias is about (1 - C)^2 / n_segments)
    n_blocks: int

    def at(self, omega: float) -> int:
        """Index of the frequency bin nearest ``omega``."""
        return int(np.argmin(np.abs(self.omega - omega)))


def estimate_spectra(sim: NeuronSimulation, nperseg: int = 1024, n_blocks: int = 8,
                     min_bin: int = 2) -> SpectralEstimate:
    """Spike-train spectrum and stimulus-spike coherence (paper Eq. 3/6) with error bars.

    Per trial: Welch (Hann window, 50% overlap, the trial's mean removed) for S_xx, S_ss and the cross spectrum
    S_xs of x = spikes/dt and s. Trials are split into ``n_blocks`` blocks; spectra are averaged within
    blocks. S_xx error bar: standard error over blocks. Coherence: leave-one-block-out jackknife,
    which corrects the O(1/segments) upward bias of the estimator and gives its standard error.
    Bins below ``min_bin`` (default 2: DC and the first bin, inside the Hann window's main lobe around
    DC) are dropped: there the window averages S_xs over a band in which its phase turns, which biases
    the coherence low (measured: several standard errors at bin 1).
    """
    n_trials = sim.spikes.shape[0]
    if n_trials < n_blocks or n_blocks < 2:
        raise ValueError("need n_trials >= n_blocks >= 2")
    fs = 1.0 / sim.dt
    # remove each trial's mean over the whole record (not per segment: per-segment detrending biases
    # the lowest frequency bins, which the Hann window's main lobe couples to the mean)
    x = sim.spikes.astype(np.float64) / sim.dt
    x -= x.mean(axis=1, keepdims=True)
    s = sim.stimulus.astype(np.float64)
    s -= s.mean(axis=1, keepdims=True)
    kw = dict(fs=fs, nperseg=nperseg, detrend=False, axis=-1)
    f, pxx = signal.welch(x, **kw)
    _, pss = signal.welch(s, **kw)
    _, pxs = signal.csd(x, s, **kw)
    keep = (np.arange(f.size) >= max(1, min_bin)) & (f < fs / 2)
    # scipy's one-sided density doubles every bin between DC and Nyquist: halve for two-sided S(omega)
    pxx, pss, pxs = pxx[:, keep] / 2, pss[:, keep] / 2, pxs[:, keep] / 2
    blocks = np.array_split(np.arange(n_trials), n_blocks)
    bxx = np.stack([pxx[b].mean(0) for b in blocks])
    bss = np.stack([pss[b].mean(0) for b in blocks])
    bxs = np.stack([pxs[b].mean(0) for b in blocks])
    w = np.array([len(b) for b in blocks], dtype=float)[:, None]

    def coh(mask: np.ndarray) -> np.ndarray:
        ww = w[mask]
        sxs = (bxs[mask] * ww).sum(0) / ww.sum()
        sxx = (bxx[mask] * ww).sum(0) / ww.sum()
        sss = (bss[mask] * ww).sum(0) / ww.sum()
        return np.abs(sxs) ** 2 / (sxx * sss)

    everything = np.ones(n_blocks, dtype=bool)
    c_all = coh(everything)
    loo = np.stack([coh(everything & (np.arange(n_blocks) != j)) for j in range(n_blocks)])
    c_jack = n_blocks * c_all - (n_blocks - 1) * loo.mean(0)
    c_se = np.sqrt((n_blocks - 1) / n_blocks * ((loo - loo.mean(0)) ** 2).sum(0))
    n_seg_per_trial = max(1, (x.shape[1] - nperseg) // (nperseg // 2) + 1)
    return SpectralEstimate(
        omega=2 * np.pi * f[keep],
        sxx=(bxx * w).sum(0) / w.sum(), sxx_se=bxx.std(0, ddof=1) / math.sqrt(n_blocks),
        sss=(bss * w).sum(0) / w.sum(),
        coherence=c_jack, coherence_se=c_se, coherence_pooled=c_all,
        n_segments=n_seg_per_trial * n_trials, n_blocks=n_blocks)


@dataclass
class NetworkNeuronEstimate:
    """Simulation of the network neuron mapped by :func:`leaklib.coherence.network_to_diffusion`."""

    tau_m: float
    omega_per_step: np.ndarray   # rad per network step
    freq_normalized: np.ndarray  # 1 = Nyquist of the 1-step network (pi rad/step)
    coherence: np.ndarray
    coherence_se: np.ndarray
    rate_per_step: float
    rate_se: float


def simulate_network_neuron(tau_m: float, input_mean: float, input_std: float, *, v_th: float = 1.0,
                            t_steps: float = 20000.0, dt_steps: float = 0.1, n_trials: int = 32,
                            nperseg: int = 8192, n_blocks: int = 8,
                            rng: np.random.Generator | int | None = 0) -> NetworkNeuronEstimate:
    """Simulate the diffusion model of a network neuron with ``tau_m`` steps (inf = IF), in step units.

    Durations are given in network steps (``t_steps`` recorded, Euler step ``dt_steps``) and converted to
    the model's normalised time (divide by tau_m for LIF); the frequencies come back in rad/step.
    """
    p = network_to_diffusion(tau_m, input_mean, input_std, v_th)
    sim = simulate_neurons(p.mu, p.D, leak=not p.is_if, t_max=t_steps / p.time_unit,
                           dt=dt_steps / p.time_unit, n_trials=n_trials, rng=rng)
    est = estimate_spectra(sim, nperseg=nperseg, n_blocks=n_blocks)
    rate, rate_se = estimate_rate(sim)
    omega = est.omega / p.time_unit
    return NetworkNeuronEstimate(tau_m=float(tau_m), omega_per_step=omega, freq_normalized=omega / np.pi,
                                 coherence=est.coherence, coherence_se=est.coherence_se,
                                 rate_per_step=rate / p.time_unit, rate_se=rate_se / p.time_unit)


__all__ = ["NeuronSimulation", "simulate_neurons", "estimate_rate", "SpectralEstimate",
           "estimate_spectra", "NetworkNeuronEstimate", "simulate_network_neuron"]

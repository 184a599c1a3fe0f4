"""Fig. 4 under the readings of the text (leaklib.spectra): hand-computed spectra, Parseval, rings, the verdict rule."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from leaklib import stats
from leaklib.figures import fig4_readings
from leaklib.plotting import plt
from leaklib.spectra import (
    READINGS,
    fig4_verdicts,
    flatten_spike_input,
    flattened_spectrum,
    input_spectrum_readings,
    population_spectrum,
    radial_spectrum,
    reading_summaries,
    same_mean_wider_band,
    spatial_spectrum,
    spectrum_values,
    spike_train_spectrum,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _as_input(sequence: torch.Tensor, num_steps: int, height: int, width: int) -> torch.Tensor:
    """A flattened (step-major) sequence ``[N]`` back to one image's spikes ``[T, 1, 1, H, W]``."""
    return sequence.reshape(num_steps, 1, 1, height, width)


# ---------------------------------------------------------------------------------------------- flattening


def test_flatten_is_step_major_with_pixels_in_raster_order():
    # spikes[t, b, c, h, w] = 1000 b + 100 t + 10 h + w (one channel, 2 x 2 pixels, 2 steps, 2 images)
    spikes = torch.zeros(2, 2, 1, 2, 2)
    for t in range(2):
        for b in range(2):
            for h in range(2):
                for w in range(2):
                    spikes[t, b, 0, h, w] = 1000 * b + 100 * t + 10 * h + w
    flat = flatten_spike_input(spikes)
    assert flat.shape == (8, 2)
    assert flat[:, 0].tolist() == [0, 1, 10, 11, 100, 101, 110, 111]
    assert flat[:, 1].tolist() == [1000, 1001, 1010, 1011, 1100, 1101, 1110, 1111]
    with pytest.raises(ValueError):
        flatten_spike_input(torch.zeros(3, 2))


# ---------------------------------------------------------------------------------------------- 1-D readings


def test_constant_input_has_no_power_and_no_moments():
    spikes = torch.full((6, 2, 1, 3, 3), 0.5)
    _, power = flattened_spectrum(spikes)
    assert power.shape == (2, 6 * 9 // 2 + 1) and power.abs().max().item() == 0.0
    summary = reading_summaries(spikes, ["flattened", "population"])
    for reading in ("flattened", "population"):
        assert summary[reading]["total"].tolist() == [0.0, 0.0]
        assert all(math.isnan(v) for v in summary[reading]["mean"].tolist())


def test_a_sinusoid_along_the_flattened_order_is_one_bin_at_its_frequency():
    num_steps, height, width = 4, 2, 5
    n = num_steps * height * width  # 40 samples: bins at multiples of 2/40 = 0.05
    k0 = 7
    sequence = torch.cos(2 * math.pi * k0 * torch.arange(n, dtype=torch.float64) / n)
    freqs, power = flattened_spectrum(_as_input(sequence, num_steps, height, width))
    assert freqs[k0].item() == pytest.approx(2 * k0 / n)
    expected = torch.zeros(n // 2 + 1, dtype=torch.float64)
    expected[k0] = 0.5  # a unit cosine has variance 1/2, all of it at k0
    torch.testing.assert_close(power[0], expected, atol=1e-12, rtol=0)
    summary = reading_summaries(_as_input(sequence, num_steps, height, width), ["flattened"])["flattened"]
    assert summary["mean"].item() == pytest.approx(2 * k0 / n) and summary["spread"].item() == pytest.approx(0.0, abs=1e-6)
    assert summary["upper"].item() == pytest.approx(0.0, abs=1e-12)  # 0.35 lies below the upper band (> 0.5)


def test_white_noise_is_flat_and_powers_sum_to_the_variance():
    gen = torch.Generator().manual_seed(0)
    spikes = torch.randn(8, 400, 1, 4, 4, generator=gen, dtype=torch.float64)  # N = 128 per image
    _, power = flattened_spectrum(spikes)
    variance = flatten_spike_input(spikes).var(0, unbiased=False)
    torch.testing.assert_close(power.sum(1), variance)  # Parseval, per image
    mean_power = power.mean(0)
    # single-sided: every inner bin carries 2 sigma^2 / N on average (sample variance (N-1)/N), Nyquist half
    expected = 2 * (127 / 128) / 128
    inner = mean_power[1:-1]
    assert inner.mean().item() == pytest.approx(expected, rel=0.02)
    assert (inner / expected - 1).abs().max().item() < 0.25  # 400 images: each bin within 25 %
    assert mean_power[-1].item() == pytest.approx(expected / 2, rel=0.25)
    assert mean_power[0].item() == pytest.approx(0.0, abs=1e-20)
    # above 0.5: bins k = 33..63 twice, Nyquist once, of 63 twice + 1 -> 63/127 of the power
    upper = reading_summaries(spikes.float(), ["flattened"])["flattened"]["upper"]
    assert upper.mean().item() == pytest.approx(63 / 127, abs=0.01)


def test_population_signal_is_the_spike_count_per_step():
    # counts of |spikes| per step: 2, 0, 2, 0 -> all power at Nyquist, power = variance = 1
    spikes = torch.zeros(4, 1, 1, 2, 2)
    spikes[0, 0, 0, 0, 0], spikes[0, 0, 0, 1, 1] = 1.0, -1.0
    spikes[2, 0, 0, 0, 1], spikes[2, 0, 0, 1, 0] = -1.0, 1.0
    freqs, power = population_spectrum(spikes)
    assert freqs.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert power[0].tolist() == pytest.approx([0.0, 0.0, 1.0])
    # the same spikes per pixel: every pixel's train is (1, 0, 0, 0) or (0, 0, 1, 0) up to sign
    _, pixel = spike_train_spectrum(spikes.flatten(2))
    assert pixel.sum(1).item() == pytest.approx(3 / 16)  # variance of a single spike in 4 steps


# ---------------------------------------------------------------------------------------------- spatial


def test_radial_spectrum_of_a_vertical_grating():
    height = width = 8
    x = torch.arange(width, dtype=torch.float64)
    image = torch.cos(2 * math.pi * 2 * x / width).expand(height, width)  # 2 cycles along the columns
    power = torch.fft.fft2(image).abs().square() / (height * width) ** 2
    radii, rings = radial_spectrum(power)
    assert radii.tolist() == pytest.approx([0.25 * r for r in range(7)])  # rings every 2/8, up to round(4 sqrt 2)
    expected = [0.0] * 7
    expected[2] = 0.5  # f_x = +-2 * 2/8 = +-0.5: ring 2, the whole variance 1/2
    assert rings.tolist() == pytest.approx(expected, abs=1e-12)
    # radial mean: ring 2 holds the lattice points of length in [1.5, 2.5): (+-2, 0), (0, +-2), (+-2, +-1), (+-1, +-2)
    _, averaged = radial_spectrum(power, reduce="mean")
    assert averaged[2].item() == pytest.approx(0.5 / 12)
    assert averaged[0].item() == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError):
        radial_spectrum(power, reduce="median")


def test_radial_spectrum_normalises_each_axis_on_a_rectangle():
    height, width = 4, 8
    y = torch.arange(height, dtype=torch.float64)[:, None]
    image = torch.cos(2 * math.pi * y / height).expand(height, width)  # 1 cycle along 4 rows: f_y = 2/4 = 0.5
    power = torch.fft.fft2(image).abs().square() / (height * width) ** 2
    radii, rings = radial_spectrum(power)
    assert radii[1].item() == pytest.approx(0.25)  # the finer axis' grid step, 2/8
    assert rings[2].item() == pytest.approx(0.5) and rings.sum().item() == pytest.approx(0.5)


def test_spatial_spectrum_averages_steps_and_keeps_parseval():
    height = width = 8
    x = torch.arange(width, dtype=torch.float64)
    grating = torch.cos(2 * math.pi * 2 * x / width).expand(height, width)
    spikes = torch.zeros(2, 1, 1, height, width, dtype=torch.float64)
    spikes[0, 0, 0] = grating + 3.0  # the spatial mean is removed
    spikes[1, 0, 0] = 2 * grating.T  # horizontal, amplitude 2: variance 2 at the same radius
    _, power = spatial_spectrum(spikes)
    assert power.shape == (1, 7)
    assert power[0, 2].item() == pytest.approx((0.5 + 2.0) / 2)  # mean over the two steps
    assert power[0].sum().item() == pytest.approx(1.25)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(3, 2, 3, 8, 8, generator=gen, dtype=torch.float64)
    _, power = spatial_spectrum(noise)
    variance = noise.flatten(3).var(3, unbiased=False).mean((0, 2))  # per image: mean over steps, channels
    torch.testing.assert_close(power.sum(1), variance)
    with pytest.raises(ValueError):
        spatial_spectrum(torch.zeros(2, 1, 8, 8))


# ---------------------------------------------------------------------------------------------- values


def test_spectrum_values_of_a_sinusoid_and_of_white_noise():
    num_steps, height, width = 3, 3, 3  # N = 27 (odd): no Nyquist bin
    n, k0 = 27, 4
    sequence = torch.cos(2 * math.pi * k0 * torch.arange(n, dtype=torch.float64) / n)
    values = spectrum_values(_as_input(sequence, num_steps, height, width))
    assert values.shape == (1, 2 * 13)  # Re and Im of k = 1..13
    expected = torch.zeros(26, dtype=torch.float64)
    expected[k0 - 1] = math.sqrt(n) / 2  # X_k0 = N / 2, scaled by 1 / sqrt(N), real
    torch.testing.assert_close(values[0], expected, atol=1e-12, rtol=0)
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(9, 50, 1, 5, 5, generator=gen, dtype=torch.float64)  # N = 225, odd
    values = spectrum_values(noise)
    variance = flatten_spike_input(noise).var(0, unbiased=False)
    torch.testing.assert_close(values.square().sum(1), 225 * variance / 2)  # Parseval for odd N
    summary = reading_summaries(noise, ["values"])["values"]
    assert summary["mean"].abs().max().item() < 0.15
    assert summary["spread"].mean().item() == pytest.approx(math.sqrt(0.5), rel=0.03)


def test_reading_summaries_match_the_moments_of_each_spectrum():
    gen = torch.Generator().manual_seed(3)
    spikes = torch.randn(6, 4, 1, 4, 4, generator=gen, dtype=torch.float64)
    summary = reading_summaries(spikes)
    assert list(summary) == list(READINGS)
    freqs, power = spike_train_spectrum(spikes)
    weights = power / power.sum(1, keepdim=True)
    centre = (weights * freqs).sum(1)
    torch.testing.assert_close(summary["pixel"]["mean"], centre)
    torch.testing.assert_close(summary["pixel"]["spread"],
                               ((weights * (freqs - centre[:, None]) ** 2).sum(1)).sqrt())
    with pytest.raises(ValueError, match="unknown reading"):
        reading_summaries(spikes, ["temporal"])


# ---------------------------------------------------------------------------------------------- the rule


def test_same_mean_wider_band_verdicts():
    rng = np.random.default_rng(0)
    clean_mean, clean_spread = rng.uniform(0.4, 0.6, 200), rng.uniform(0.2, 0.3, 200)
    tolerance = 0.1 * clean_spread.mean()
    jitter = rng.normal(0, 0.002, 200)
    result = same_mean_wider_band(clean_mean, clean_spread, clean_mean + jitter, clean_spread + 0.05 + jitter)
    assert result["tolerance"] == pytest.approx(tolerance)
    assert (result["mean_verdict"], result["band_verdict"], result["verdict"]) == (stats.REPRODUCED,) * 3
    assert result["band_beyond_shift"]
    shifted = same_mean_wider_band(clean_mean, clean_spread, clean_mean + 0.1 + jitter, clean_spread + 0.05)
    assert shifted["mean_verdict"] == stats.NOT_REPRODUCED and shifted["verdict"] == stats.NOT_REPRODUCED
    assert not shifted["band_beyond_shift"]  # the mean moves further than the band widens
    narrower = same_mean_wider_band(clean_mean, clean_spread, clean_mean + jitter, clean_spread - 0.05 + jitter)
    assert narrower["band_verdict"] == stats.OPPOSITE and narrower["verdict"] == stats.OPPOSITE
    unchanged = same_mean_wider_band(clean_mean, clean_spread, clean_mean + jitter, clean_spread + jitter)
    assert unchanged["band_verdict"] == stats.NOT_REPRODUCED and unchanged["mean_verdict"] == stats.REPRODUCED
    # a widening below the tolerance is significant, yet "roughly the same"
    small = same_mean_wider_band(clean_mean, clean_spread, clean_mean + jitter, clean_spread + tolerance / 3 + jitter)
    assert small["spread_interval"].low > 0 and small["band_verdict"] == stats.NOT_REPRODUCED
    # two images whose changes disagree wildly: nothing is decided
    noisy = same_mean_wider_band([0.5, 0.5], [0.2, 0.2], [0.5, 0.6], [0.3, 0.1])
    assert noisy["verdict"] == stats.INCONCLUSIVE
    one = same_mean_wider_band([0.5], [0.2], [0.5], [0.3])
    assert one["verdict"] == stats.CANNOT_DECIDE
    with pytest.raises(ValueError):
        same_mean_wider_band([0.5, 0.4], [0.2], [0.5], [0.3])


def test_fig4_verdicts_pairs_by_image_per_reading_and_condition():
    rows = []
    for reading, widen in (("pixel", 0.0), ("values", 0.1)):
        for image in range(30):
            base = 0.5 + 0.01 * (image % 7)
            rows.append({"reading": reading, "condition": "clean", "image": image, "mean": base, "spread": 0.3})
            # noisy rows listed in reverse order: pairing must follow the image index
            rows.append({"reading": reading, "condition": "noisy", "image": 29 - image,
                         "mean": 0.5 + 0.01 * ((29 - image) % 7) + 1e-4 * (image % 3),
                         "spread": 0.3 + widen + 1e-3 * (image % 2)})
    table = fig4_verdicts(pd.DataFrame(rows))
    assert list(table["reading"]) == ["pixel", "values"] and set(table["condition"]) == {"noisy"}
    assert table["images"].tolist() == [30, 30]
    assert table["mean change"].abs().max() < 1e-3
    assert table["verdict"].tolist() == [stats.NOT_REPRODUCED, stats.REPRODUCED]
    with pytest.raises(ValueError):
        fig4_verdicts(pd.DataFrame(rows), reference="none")


# ---------------------------------------------------------------------------------------------- from images


def test_input_spectrum_readings_pairs_conditions_and_scenario2_adds_sigma_squared():
    torch.manual_seed(0)
    images = torch.rand(24, 1, 6, 6)
    num_steps, sigma = 10, 0.5  # Gaussian severity 5
    result = input_spectrum_readings(images, num_steps=num_steps, seed=4, batch_size=10, bins=20, conditions={
        "clean": (1, "gaussian", 0), "again": (2, "impulse", 0), "noisy": (2, "gaussian", 5)})
    summary = result.summary
    assert list(dict.fromkeys(summary["reading"])) == list(READINGS)
    assert list(dict.fromkeys(summary["condition"])) == ["clean", "again", "noisy"]
    assert len(summary) == len(READINGS) * 3 * 24
    clean, again, noisy = (summary[summary["condition"] == c].reset_index(drop=True) for c in ("clean", "again", "noisy"))
    pd.testing.assert_frame_equal(clean.drop(columns="condition"), again.drop(columns="condition"))  # same draws
    # scenario 2 adds independent noise of variance sigma^2 to the flattened sequence (N = 360 samples)
    flat_c, flat_n = (t[t["reading"] == "flattened"]["total"].mean() for t in (clean, noisy))
    assert flat_n - flat_c == pytest.approx(sigma**2 * 359 / 360, rel=0.05)
    # frequency readings: each condition's distribution is a mean of unit-sum spectra
    dist = result.distributions
    sums = dist[dist["reading"] != "values"].groupby(["reading", "condition"])["mass"].sum()
    assert sums.to_numpy() == pytest.approx(1.0)
    values = dist[dist["reading"] == "values"].groupby("condition")["mass"].sum()
    for condition, total in values.items():
        assert total + result.outside[condition] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        input_spectrum_readings(images, num_steps=10, conditions={})


# ---------------------------------------------------------------------------------------------- figure


def test_fig4_readings_rows_histograms_and_fitted_curves():
    rng = np.random.default_rng(1)
    rows = [{"reading": r, "condition": c, "image": i, "mean": rng.normal(0.5, 0.02), "spread": rng.normal(0.3, 0.01)}
            for r in ("pixel", "values") for c in ("clean", "noisy") for i in range(40)]
    summary = pd.DataFrame(rows)
    edges = np.linspace(0, 1, 11)
    dist = pd.DataFrame([{"reading": r, "condition": c, "low": lo, "high": hi, "mass": 0.1}
                         for r in ("pixel", "values") for c in ("clean", "noisy") for lo, hi in itertools.pairwise(edges)])
    fig = fig4_readings(summary, dist)
    assert len(fig.axes) == 2 * 3
    first = fig.axes[0]
    assert len(first.patches) == 2  # one stairs patch per condition
    # unit mass spread evenly over [0, 1]: density 1
    assert first.patches[0].get_data().values == pytest.approx([1.0] * 10)
    for ax in fig.axes[1:3]:
        assert len(ax.lines) == 2  # a fitted normal curve per condition
        assert len(ax.patches) == 2
    fig = fig4_readings(summary)
    assert len(fig.axes) == 2 * 2
    with pytest.raises(ValueError, match="spread"):
        fig4_readings(summary.drop(columns="spread"))
    with pytest.raises(ValueError, match="one dataset"):
        fig4_readings(summary.assign(dataset=["a", "b"] * 80))

"""Tests of leaklib.encoding: signed Poisson coding, Algorithm 1 noise, the severity table, normalisation.

Statistical tests compare a count with its binomial (or normal) expectation and allow Z = 5 standard
errors; the generators are seeded, so every test is deterministic, and a false alarm of a correct
implementation has probability below 1e-6 per comparison.
"""

from __future__ import annotations

import math

import pytest
import torch

from leaklib.encoding import (
    NOISE_TYPES,
    NUM_SEVERITIES,
    SEVERITY_TABLE,
    noise_level,
    noisy_spikes,
    normalize_images,
    poisson_spikes,
)

Z = 5.0
STEPS = 4000


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _levels():
    x = (torch.arange(-10, 11, dtype=torch.float32) / 10).view(1, 3, 7)
    assert (x == 0).sum() == 1 and (x == 1).sum() == 1 and (x == -1).sum() == 1
    return x


# ---------------------------------------------------------------------------------------------
# clean coding


def test_poisson_rate_equals_intensity():
    x = _levels()
    spikes = poisson_spikes(x, _gen(0), num_steps=STEPS)
    assert spikes.shape == (STEPS, 1, 3, 7)
    p = x.abs()
    rate = spikes.abs().mean(0)
    sigma = (p * (1 - p) / STEPS).sqrt()
    assert torch.all((rate - p).abs() <= Z * sigma + 1e-12), (rate - p).abs().max()
    # the extremes are exact: |x| = 1 fires every step, x = 0 never
    assert torch.all(rate[p == 1.0] == 1.0) and torch.all(rate[p == 0.0] == 0.0)


def test_poisson_keeps_sign_and_is_ternary():
    x = _levels()
    spikes = poisson_spikes(x, _gen(1), num_steps=500)
    assert set(spikes.unique().tolist()) == {-1.0, 0.0, 1.0}
    fired = spikes != 0
    assert torch.equal(torch.sign(spikes)[fired], torch.sign(x).expand_as(spikes)[fired])
    assert not fired[:, x == 0].any()


def test_poisson_single_step_shape_and_dtype():
    x = _levels().double()
    out = poisson_spikes(x, _gen(2))
    assert out.shape == x.shape and out.dtype == torch.float64


def test_poisson_fresh_randomness_each_step():
    # x = 0.5 everywhere: steps must differ (independent draws), and the spike count per step is
    # binomial(n, 0.5); identical rows would make every step equal to the first
    x = torch.full((1, 10, 10), 0.5)
    spikes = poisson_spikes(x, _gen(3), num_steps=50)
    assert not all(torch.equal(spikes[0], spikes[t]) for t in range(1, 50))
    # correlation between consecutive steps ~ 0 (independent Bernoulli trials)
    a, b = spikes[:-1].flatten(), spikes[1:].flatten()
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert abs(corr) < Z / math.sqrt(a.numel())


def test_reproducible_with_seeded_generator():
    x = _levels()
    a = poisson_spikes(x, _gen(10), num_steps=64)
    b = poisson_spikes(x, _gen(10), num_steps=64)
    c = poisson_spikes(x, _gen(11), num_steps=64)
    assert torch.equal(a, b) and not torch.equal(a, c)
    for scenario in (1, 2):
        for noise in NOISE_TYPES:
            a = noisy_spikes(x, scenario, noise, 3, _gen(20), num_steps=32)
            b = noisy_spikes(x, scenario, noise, 3, _gen(20), num_steps=32)
            c = noisy_spikes(x, scenario, noise, 3, _gen(21), num_steps=32)
            assert torch.equal(a, b) and not torch.equal(a, c), (scenario, noise)


# ---------------------------------------------------------------------------------------------
# severity table


@pytest.mark.parametrize("num_steps", [None, 7])
def test_poisson_spikes_are_sign_times_uniform_below_intensity_bit_for_bit(num_steps):
    """o = sign(x) * (u < |x|) with u the generator's uniform draws in order, signed zeros included."""
    x = torch.tensor([[-1.0, -0.4, 0.0, 0.3, 1.0, -0.0]]).repeat(3, 1)
    shape = tuple(x.shape) if num_steps is None else (num_steps,) + tuple(x.shape)
    u = torch.rand(shape, generator=_gen(5))
    expected = torch.sign(x) * (u < x.abs()).float()
    got = poisson_spikes(x, _gen(5), num_steps)
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))  # the same bits
    assert (got.view(torch.int32) == torch.tensor(-0.0).view(torch.int32)).any()  # -0.0 where x < 0 is silent


def test_severity_table():
    assert NUM_SEVERITIES == 8
    assert set(SEVERITY_TABLE) == set(NOISE_TYPES) == {"gaussian", "impulse"}
    for s in range(1, 9):
        assert noise_level("gaussian", s) == pytest.approx(0.1 * s, abs=1e-12)
        assert noise_level("impulse", s) == pytest.approx(0.05 * s, abs=1e-12)
        assert SEVERITY_TABLE["gaussian"][s - 1] == pytest.approx(0.1 * s, abs=1e-12)
        assert SEVERITY_TABLE["impulse"][s - 1] == pytest.approx(0.05 * s, abs=1e-12)
    assert len(SEVERITY_TABLE["gaussian"]) == len(SEVERITY_TABLE["impulse"]) == 8
    assert noise_level("gaussian", 0) == noise_level("impulse", 0) == 0.0


@pytest.mark.parametrize("severity", [-1, 9, 1.5, True, "3"])
def test_noise_level_rejects_bad_severity(severity):
    with pytest.raises(ValueError, match="severity"):
        noise_level("gaussian", severity)


def test_noise_level_rejects_bad_noise():
    with pytest.raises(ValueError, match="noise"):
        noise_level("salt", 1)


def test_noisy_spikes_rejects_bad_arguments():
    x = _levels()
    with pytest.raises(ValueError, match="scenario"):
        noisy_spikes(x, 3, "gaussian", 1)
    with pytest.raises(ValueError, match="noise"):
        noisy_spikes(x, 1, "uniform", 1)
    with pytest.raises(ValueError, match="severity"):
        noisy_spikes(x, 2, "impulse", 9)
    with pytest.raises(ValueError, match="num_steps"):
        noisy_spikes(x, 1, "gaussian", 1, num_steps=0)
    with pytest.raises(ValueError, match="num_steps"):
        poisson_spikes(x, num_steps=-2)


# ---------------------------------------------------------------------------------------------
# Algorithm 1 noise


@pytest.mark.parametrize("scenario", [1, 2])
@pytest.mark.parametrize("noise", ["gaussian", "impulse"])
def test_severity_zero_is_clean_bit_for_bit(scenario, noise):
    x = _levels()
    clean = poisson_spikes(x, _gen(5), num_steps=40)
    assert torch.equal(noisy_spikes(x, scenario, noise, 0, _gen(5), num_steps=40), clean)


@pytest.mark.parametrize("noise", ["gaussian", "impulse"])
@pytest.mark.parametrize("severity", [1, 4, 8])
def test_scenario1_is_ternary(noise, severity):
    x = _levels()
    out = noisy_spikes(x, 1, noise, severity, _gen(6), num_steps=400)
    assert set(out.unique().tolist()) <= {-1.0, 0.0, 1.0}
    # and noise reaches the zero pixels: they spike now (clean coding never makes them spike)
    assert (out[:, x == 0] != 0).any()


def test_scenario2_gaussian_is_not_ternary():
    x = _levels()
    out = noisy_spikes(x, 2, "gaussian", 2, _gen(7), num_steps=100)
    values = out.unique()
    assert values.numel() > 100
    assert not set(values.tolist()) <= {-1.0, 0.0, 1.0}


def test_scenario2_impulse_is_ternary_with_spikes_at_zero_pixels():
    x = _levels()
    out = noisy_spikes(x, 2, "impulse", 4, _gen(8), num_steps=400)
    assert set(out.unique().tolist()) == {-1.0, 0.0, 1.0}
    at_zero = out[:, x == 0]
    assert (at_zero == 1).any() and (at_zero == -1).any()
    # salt and pepper also flips signs: negative spikes at positive pixels
    assert (out[:, x > 0] == -1).any()


@pytest.mark.parametrize("scenario", [1, 2])
@pytest.mark.parametrize("severity", [1, 3, 8])
def test_impulse_rate_on_zero_input(scenario, severity):
    # x = 0: clean coding never spikes, so every nonzero entry is a replaced one. Scenario 1 codes
    # the replaced pixel value +-1, which fires with probability 1; scenario 2 replaces the spike.
    # Expected: fraction nonzero = p_s, half of them +1.
    p = 0.05 * severity
    x = torch.zeros(2, 10, 10)
    out = noisy_spikes(x, scenario, "impulse", severity, _gen(30 + severity), num_steps=500)
    n = out.numel()
    hits = (out != 0).sum().item()
    assert abs(hits / n - p) <= Z * math.sqrt(p * (1 - p) / n)
    plus = (out == 1).sum().item()
    assert abs(plus / hits - 0.5) <= Z * math.sqrt(0.25 / hits)


def test_impulse_rate_scenario2_on_nonzero_input():
    # x = 1: clean spikes are all +1; impulse replaces an entry by -1 with probability p_s / 2
    p = noise_level("impulse", 6)
    x = torch.ones(1, 20, 20)
    out = noisy_spikes(x, 2, "impulse", 6, _gen(40), num_steps=500)
    n = out.numel()
    frac_neg = (out == -1).sum().item() / n
    assert abs(frac_neg - p / 2) <= Z * math.sqrt(p / 2 * (1 - p / 2) / n)
    assert not (out == 0).any()


@pytest.mark.parametrize("severity", [1, 5, 8])
def test_gaussian_scenario2_noise_std(severity):
    sigma = 0.1 * severity
    x = torch.zeros(1, 20, 20)
    out = noisy_spikes(x, 2, "gaussian", severity, _gen(50 + severity), num_steps=200)
    n = out.numel()  # 80000 N(0, sigma^2) draws: std error of the std ~ sigma / sqrt(2n)
    assert abs(out.std().item() - sigma) <= Z * sigma / math.sqrt(2 * n)
    assert abs(out.mean().item()) <= Z * sigma / math.sqrt(n)


def test_gaussian_scenario2_adds_noise_to_spikes():
    # x = 1: every clean spike is 1, so out - 1 is the noise itself
    x = torch.ones(1, 20, 20)
    out = noisy_spikes(x, 2, "gaussian", 3, _gen(60), num_steps=200)
    noise = out - 1.0
    n = noise.numel()
    assert abs(noise.std().item() - 0.3) <= Z * 0.3 / math.sqrt(2 * n)
    assert abs(noise.mean().item()) <= Z * 0.3 / math.sqrt(n)


@pytest.mark.parametrize("severity", [1, 4])
def test_gaussian_scenario1_rate_on_zero_input(severity):
    # x = 0: x_c = xi ~ N(0, sigma^2), then P(spike) = E[min(|xi|, 1)]. For sigma <= 0.4 the clip at 1
    # matters little; exactly, E[min(|xi|,1)] = sigma sqrt(2/pi) (1 - exp(-1/(2 sigma^2)))
    #                                           + P(|xi| > 1)   (integrating |xi| and 1 over the tails).
    sigma = 0.1 * severity
    tail = math.erfc(1 / (sigma * math.sqrt(2)))
    p = sigma * math.sqrt(2 / math.pi) * (1 - math.exp(-1 / (2 * sigma ** 2))) + tail
    x = torch.zeros(1, 20, 20)
    out = noisy_spikes(x, 1, "gaussian", severity, _gen(70 + severity), num_steps=500)
    n = out.numel()
    rate = (out != 0).sum().item() / n
    assert abs(rate - p) <= Z * math.sqrt(p * (1 - p) / n)
    # signs are symmetric around x = 0
    assert abs((out == 1).sum().item() - (out == -1).sum().item()) <= Z * math.sqrt(rate * n)


def test_scenario1_gaussian_rate_follows_shifted_intensity():
    # x = 0.5 with sigma = 0.2: x_c ~ N(0.5, 0.04). A +1 spike has probability E[clip(x_c, 0, 1)],
    # a -1 spike E[clip(-x_c, 0, 1)] = E[max(-x_c, 0)] = sigma phi(a) - mu Phi(-a), a = mu / sigma = 2.5
    # (x_c < -1 has probability ~1e-14). x_c is symmetric about 0.5, so the mass cut at 0 and at 1 is
    # the same: E[clip(x_c, 0, 1)] = 0.5 exactly.
    x = torch.full((1, 20, 20), 0.5)
    out = noisy_spikes(x, 1, "gaussian", 2, _gen(80), num_steps=500)
    n = out.numel()
    mu, s = 0.5, 0.2
    a = mu / s
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    neg_expected = s * phi - mu * 0.5 * math.erfc(a / math.sqrt(2))  # = 0.000401
    pos = (out == 1).sum().item() / n
    assert abs(pos - 0.5) <= Z * math.sqrt(0.25 / n)
    neg = (out == -1).sum().item() / n
    assert neg > 0
    assert abs(neg - neg_expected) <= Z * math.sqrt(neg_expected / n)


# ---------------------------------------------------------------------------------------------
# normalisation


def test_normalize_images_zero_mean_unit_max():
    gen = _gen(90)
    images = torch.rand(5, 3, 6, 6, generator=gen, dtype=torch.float64) * 255 + 10
    images[1] *= 0.01  # very different scales per image
    out = normalize_images(images)
    assert out.shape == images.shape
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.abs().amax(dim=(1, 2, 3)), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12)
    # per image, not per batch: each image is the affine map (img - mean) / max|img - mean|
    for i in range(5):
        centred = images[i] - images[i].mean()
        torch.testing.assert_close(out[i], centred / centred.abs().max(), rtol=1e-12, atol=1e-12)


def test_normalize_images_by_hand():
    # one 1x2x2 image [[0, 2], [4, 6]]: mean 3 -> [[-3, -1], [1, 3]] -> / 3
    img = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]])
    expected = torch.tensor([[[[-1.0, -1 / 3], [1 / 3, 1.0]]]])
    torch.testing.assert_close(normalize_images(img), expected)
    # a single image without batch dimension [C, H, W] works the same
    torch.testing.assert_close(normalize_images(img[0]), expected[0])


def test_normalize_constant_image_gives_zeros():
    images = torch.stack([torch.full((2, 3, 3), 7.0), torch.arange(18.0).view(2, 3, 3)])
    out = normalize_images(images)
    assert torch.equal(out[0], torch.zeros(2, 3, 3))
    assert torch.isfinite(out).all()
    assert out[1].abs().max().item() == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(5,), (4, 4)])
def test_normalize_images_shape_check(shape):
    with pytest.raises(ValueError, match="C, H, W"):
        normalize_images(torch.ones(shape))

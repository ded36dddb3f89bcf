"""The Rician clean estimate with the bias read at a local median (``RicianNoise.clean_estimate``), for single images
and series alike."""

from __future__ import annotations

import pytest
import torch

from monai_dnaprior.noise import get_noise_model
from monai_dnaprior.noise.estimation import local_median
from monai_dnaprior.noise.models import NoiseModel, rician_mean

SIGMA = 0.05


def _rician(level: float = SIGMA):
    return get_noise_model("rician", torch.zeros(1, 8, 8, 8), 3, level)


def median_bias_clean(model, estimate):
    return model.clean_estimate(estimate)[0]


def test_additive_gaussian_keeps_the_mean_itself():
    model = get_noise_model("gaussian", torch.zeros(1, 8, 8, 8), 3, SIGMA)
    estimate = torch.randn(4, 10, 12, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(median_bias_clean(model, estimate), estimate)


def test_returns_the_level_it_inverted_and_clears_the_background_s_variance():
    """The mean returned is the local median (the level the bias was read at; the floor in the background), and the
    variance is 0 where the background rule claims no signal."""
    model = _rician()
    floor = float(rician_mean(torch.tensor(0.0), SIGMA))
    estimate = torch.full((1, 20, 20), floor)
    estimate[:, :, 10:] = float(rician_mean(torch.tensor(0.4), SIGMA))
    estimate[:, 5, 15] += 0.1  # a bright outlier: the median leaves it out of the level
    variance = torch.full_like(estimate, 1e-4)
    clean, level, kept = model.clean_estimate(estimate, variance=variance)
    torch.testing.assert_close(level, local_median(estimate).where(clean > 0, torch.tensor(floor)))
    assert float(kept[:, :, :3].abs().max()) == 0.0 and float(kept[:, :, 12:].min()) == pytest.approx(1e-4)
    assert float(clean[0, 5, 15]) == pytest.approx(0.4 + 0.1, abs=2e-3)  # the outlier kept above its level


def test_a_smooth_estimate_gets_the_exact_inverse():
    """Where the estimate is linear over each neighbourhood its local median is itself: the pointwise inverse."""
    model = _rician()
    axis = torch.linspace(0, 1, 16)
    clean = 0.2 + 0.3 * axis[None, :, None, None] + 0.2 * axis[None, None, :, None] + torch.zeros(3, 16, 16, 8)
    estimate = rician_mean(clean, SIGMA)
    out = median_bias_clean(model, estimate)
    assert out.shape == estimate.shape and out.dtype == estimate.dtype
    torch.testing.assert_close(out, clean, atol=2e-3, rtol=0)


def test_near_the_floor_the_error_is_not_multiplied_by_the_inverse_s_slope():
    """Signal 1.5 sigma under a residual error of 0.2 sigma: the pointwise inverse multiplies the error by its slope
    there (about 1.4); the bias read at the local median keeps it about as it is, and the mean stays at the
    signal."""
    model = _rician()
    signal = 1.5 * SIGMA
    error = 0.2 * SIGMA * torch.randn(6, 24, 24, 12, generator=torch.Generator().manual_seed(1))
    estimate = rician_mean(torch.full_like(error, signal), SIGMA) + error
    original = estimate.clone()
    pointwise = NoiseModel.clean_estimate(model, estimate)[0]  # the base class's: the inverse voxel by voxel
    out = median_bias_clean(model, estimate)
    torch.testing.assert_close(estimate, original)  # the input is left as it was
    spread = float(error.std())
    assert float((pointwise - signal).std()) > 1.3 * spread
    assert float((out - signal).std()) < 1.1 * spread
    assert abs(float(out.mean()) - signal) < 0.02 * signal


def test_a_background_of_pure_noise_stays_zero():
    """An estimate at the noise floor everywhere (a background) is no signal: 0, as the pointwise inverse gives it."""
    model = _rician()
    floor = float(rician_mean(torch.tensor(0.0), SIGMA))
    estimate = floor + 0.01 * SIGMA * torch.randn(2, 20, 20, 10, generator=torch.Generator().manual_seed(2))
    assert float(median_bias_clean(model, estimate).abs().max()) == 0.0


def test_local_median_is_each_neighbourhood_s_median_and_keeps_an_edge():
    x = torch.randn(2, 7, 6, 5, generator=torch.Generator().manual_seed(3))
    out = local_median(x)
    c, i, j, k = 1, 3, 2, 2  # an inner voxel: its 27 neighbours
    assert float(out[c, i, j, k]) == float(x[c, i - 1:i + 2, j - 1:j + 2, k - 1:k + 2].flatten().median())
    edge = torch.zeros(1, 10, 10)
    edge[:, :, 5:] = 1.0  # a step: a median keeps it where an average would blur it
    torch.testing.assert_close(local_median(edge), edge)


def test_an_exact_zero_background_beside_tissue_stays_zero():
    """A step from a pure-noise background (at the floor) to tissue: the background next to the tissue is not lifted
    by the tissue's level."""
    model = _rician()
    floor = float(rician_mean(torch.tensor(0.0), SIGMA))
    estimate = torch.full((3, 16, 16, 8), floor)
    estimate[:, :, 8:] = float(rician_mean(torch.tensor(0.5), SIGMA))
    out = median_bias_clean(model, estimate)
    assert float(out[:, :, :8].abs().max()) == 0.0
    torch.testing.assert_close(out[:, :, 9:], torch.full_like(out[:, :, 9:], 0.5), atol=1e-3, rtol=0)

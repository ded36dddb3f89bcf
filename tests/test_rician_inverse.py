"""The Rician clean estimate with the bias read at a local median (``RicianNoise.clean_estimate``), for single images
and series alike."""

from __future__ import annotations

import math

import pytest
import torch

from monai_dnaprior import denoise
from monai_dnaprior.noise import get_noise_model, models
from monai_dnaprior.noise.estimation import box_mean, local_median
from monai_dnaprior.noise.rayleigh import rician_sigmas
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


def test_a_box_mean_without_its_centre_is_the_mean_of_the_others():
    x = torch.randn(1, 9, 11, generator=torch.Generator().manual_seed(1))
    others = box_mean(x, 2, 3, without_centre=True)
    for i, j in ((4, 5), (0, 0), (8, 10), (0, 6)):
        box = x[0, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
        assert float(others[0, i, j]) == pytest.approx((float(box.sum()) - float(x[0, i, j])) / (box.numel() - 1))
    torch.testing.assert_close(box_mean(x, 2, 3), torch.nn.functional.avg_pool2d(
        x[None], 3, 1, 1, count_include_pad=False)[0])


def _masked_square(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square on an exact-zero background (a phantom, or air), and its Rician magnitude at SIGMA."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.zeros(1, 128, 128)
    clean[:, 32:96, 32:96] = 0.6
    real, imaginary = (SIGMA * torch.randn(clean.shape, generator=gen) for _ in range(2))
    return clean, torch.hypot(clean + real, imaginary)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_floor_s_sigma_is_read_without_the_selection_s_bias(seed):
    """A voxel chosen by its own 7-voxel box favours the low voxels: the background's second moment reads sigma 1-3 %
    low. Chosen by its neighbours alone it reads sigma within 1 %; the level the filter runs with stays the first."""
    _, noisy = _masked_square(seed)
    level, floor = rician_sigmas(noisy, 2)
    assert floor == pytest.approx(SIGMA, rel=0.01)
    assert 0.95 * SIGMA < level < floor
    model = get_noise_model("rician", noisy, 2)
    assert (model.level, model.floor_level) == (level, floor)
    assert float(model.noise_floor(noisy)) == pytest.approx(floor * math.sqrt(math.pi / 2))
    assert model.with_level(0.1).floor_level is None  # a level read elsewhere sets the floor too
    assert get_noise_model("rician", noisy, 2, SIGMA).floor_level is None  # as does a level given
    assert rician_sigmas(noisy[..., 32:96, 32:96], 2)[1] is None  # no background: no floor of its own


def test_an_exact_zero_background_comes_back_as_zero_where_the_floor_is_unbiased(monkeypatch):
    """With the floor at the unbiased sigma the background of a magnitude whose clean background is exactly 0 comes
    back mostly 0 and its squared error about halves, against the floor at the filter's level; the tissue as it
    was, within 5 %."""
    clean, noisy = _masked_square(0)
    background = clean == 0

    def errors():
        image = denoise(noisy, "rician").image
        return (float(image[background].square().mean()), float((image[background] == 0).float().mean()),
                float((image - clean)[~background].square().mean()))

    unbiased = errors()
    monkeypatch.setattr(models, "rician_sigmas", lambda y, dims: (rician_sigmas(y, dims)[0], None))
    filters_level = errors()
    assert unbiased[0] < 0.6 * filters_level[0]
    assert unbiased[1] > filters_level[1] + 0.1
    assert unbiased[2] < 1.05 * filters_level[2]

"""The iterated linear combinations of patches (``filters/ridge.py``): the closed-form weights, the stage's effect
on a synthetic image against the estimate it starts from, coloured noise, 3D, and where the pipeline runs it."""

from __future__ import annotations

import pytest
import torch
from conftest import make_phantom, psnr

from monai_dnaprior import FilterConfig
from monai_dnaprior.filters import collaborative_refine, filter_passes
from monai_dnaprior.filters.pipeline import filter_observation, ridge_pass
from monai_dnaprior.filters.ridge import RidgePass, combination_weights, ridge_filter, ridge_refine
from monai_dnaprior.noise.field import NoiseField
from monai_dnaprior.noise.models import get_noise_model
from monai_dnaprior.noise.spectrum import NoiseSpectrum
from monai_dnaprior.settings import PRESETS

SMALL = RidgePass(patch=6, group=64, radius=8, step=2, iterations=2)


def _scene(shape: tuple[int, ...]) -> torch.Tensor:
    """Blobs, a sharp-edged square and stripes: flat regions, edges and a repeated texture."""
    clean = torch.as_tensor(make_phantom(shape))
    inner = tuple(slice(s // 4, s // 2) for s in shape)
    clean[inner] += 0.3
    stripes = 0.15 * torch.sin(torch.arange(shape[1]) * 1.3)
    clean[: shape[0] // 3] += stripes.view(1, -1, *([1] * (len(shape) - 2)))
    return clean


def _noisy(clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    return clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))


def test_weights_are_affine_and_limits_are_right():
    guide = torch.randn(3, 8, 25, generator=torch.Generator().manual_seed(0))
    theta = combination_weights(guide, torch.full((3, 1, 1), 2.0))
    torch.testing.assert_close(theta.sum(-1), torch.ones(3, 8), atol=1e-5, rtol=0)  # rows sum to 1
    # no noise: every patch is itself; overwhelming noise: every patch is the group's mean
    torch.testing.assert_close(combination_weights(guide, torch.full((3, 1, 1), 1e-9)), torch.eye(8).expand(3, 8, 8),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(combination_weights(guide, torch.full((3, 1, 1), 1e9)), torch.full((3, 8, 8), 1 / 8),
                               atol=1e-4, rtol=0)
    # a scalar noise level and its matrix give the same weights
    torch.testing.assert_close(theta, combination_weights(guide, 2.0 * torch.eye(8).expand(3, 8, 8)))


def test_weights_survive_a_flat_guide_without_noise():
    theta = combination_weights(torch.zeros(2, 6, 9), torch.zeros(2, 1, 1))
    assert torch.isfinite(theta).all()


def test_stage_lowers_the_error_of_the_estimate_it_starts_from():
    """From the Wiener pass's result (the previous stage), the combinations come closer to the clean image."""
    clean = _scene((48, 48))
    noisy = _noisy(clean, 0.1)
    passes = filter_passes(FilterConfig(), 2)
    previous = collaborative_refine(noisy[None, None], noisy[None, None], 0.1, passes)[0, 0]
    after = ridge_filter(noisy, previous, 0.1, SMALL)
    assert psnr(after, clean) > psnr(previous, clean) + 0.1
    assert psnr(after, clean) > psnr(noisy, clean) + 8


def test_more_noise_in_the_model_smooths_more():
    clean = _scene((40, 40))
    noisy = _noisy(clean, 0.1, seed=1)
    guide = collaborative_refine(noisy[None, None], noisy[None, None], 0.1, filter_passes(FilterConfig(), 2))[0, 0]
    rough = (ridge_filter(noisy, guide, 0.02, SMALL) - noisy).std()
    smooth = (ridge_filter(noisy, guide, 0.1, SMALL) - noisy).std()
    assert smooth > rough  # a larger sigma removes more of the observation


def test_coloured_noise_takes_the_shared_noise_into_account():
    """Low-pass noise: the combinations given its correlation beat the ones that take it white."""
    gen = torch.Generator().manual_seed(3)
    clean = _scene((48, 48))
    kernel = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    noise = torch.randn(48, 48, generator=gen, dtype=torch.float64)
    for dim in (0, 1):
        noise = sum(w * torch.roll(noise, k - 1, dim) for k, w in enumerate(kernel))
    noisy = (clean + 0.08 * noise / noise.std()).float()
    lags = torch.tensor([1 / 6, 2 / 3, 1.0, 2 / 3, 1 / 6])
    spectrum = NoiseSpectrum(torch.outer(lags, lags))
    guide = collaborative_refine(noisy[None, None], noisy[None, None], 0.08, filter_passes(FilterConfig(), 2),
                                 spectrum)[0, 0]
    coloured = ridge_filter(noisy, guide, 0.08, SMALL, spectrum)
    white = ridge_filter(noisy, guide, 0.08, SMALL)
    assert psnr(coloured, clean) > psnr(white, clean)


def test_lag_table_is_the_spectrum_correlation_centred():
    lags = torch.tensor([0.2, 0.6, 1.0, 0.6, 0.2])
    table = NoiseSpectrum(torch.outer(lags, lags)).lag_table([3, 1], torch.device("cpu"))
    assert table.shape == (7, 3) and table[3, 1] == 1
    torch.testing.assert_close(table[:, 1], torch.tensor([0.0, 0.2, 0.6, 1.0, 0.6, 0.2, 0.0]))


def test_volume_runs_and_improves_on_the_noisy_image():
    clean = _scene((20, 20, 8))
    noisy = _noisy(clean, 0.1, seed=2)
    out = ridge_refine(noisy[None, None], clean[None, None] * 0 + noisy.mean(), 0.1,
                       RidgePass(patch=3, group=16, radius=3, step=2, iterations=2, depth_radius=1, flat=0.0))[0, 0]
    assert out.shape == clean.shape and psnr(out, clean) > psnr(noisy, clean) + 3


def test_pipeline_runs_the_stage_where_the_preset_sets_it():
    assert ridge_pass(PRESETS["fast"][0], 2) is None
    assert ridge_pass(PRESETS["default"][0], 2) == RidgePass(patch=7, group=64, radius=12, step=6, iterations=2)
    assert ridge_pass(PRESETS["quality"][0], 2).step == 2
    assert ridge_pass(FilterConfig(), 3) == RidgePass(patch=4, group=128, radius=7, step=4, iterations=2,
                                                      depth_radius=2)  # volumes: cubes (docs/filter.md)
    assert ridge_pass(PRESETS["fast"][0], 3) is None
    assert ridge_pass(PRESETS["quality"][0], 3).iterations == 3
    clean = _scene((48, 48))
    noisy = _noisy(clean, 0.1, seed=4)
    field = NoiseField(get_noise_model("gaussian", noisy[None], 2, level=0.1), NoiseSpectrum.white(2))
    config = FilterConfig(ridge_patch=6, ridge_radius=8, ridge_step=2)
    without = filter_observation(noisy[None, None], field, FilterConfig(ridge_patch=0))
    with_stage = filter_observation(noisy[None, None], field, config, with_error=True)
    expected = ridge_refine(noisy[None, None], without.mean, 0.1, ridge_pass(config, 2))
    torch.testing.assert_close(with_stage.mean, expected)
    assert with_stage.variance is not None and psnr(with_stage.mean[0, 0], clean) > psnr(without.mean[0, 0], clean)


def test_a_flat_guide_is_kept_where_the_group_is_flat():
    """On a flat image the guide (the exact value) is kept, where combining 64 noisy patches would leave noise."""
    clean = torch.full((40, 40), 0.4)
    noisy = _noisy(clean, 0.1, seed=5)
    kept = ridge_filter(noisy, clean, 0.1, SMALL)
    combined = ridge_filter(noisy, clean, 0.1, RidgePass(patch=6, group=64, radius=8, step=2, flat=0.0))
    assert (kept - clean).abs().max() < 1e-3 < (combined - clean).abs().max()


@pytest.mark.parametrize("bad", [dict(patch=0), dict(iterations=0), dict(keep=1.0), dict(keep=-0.1), dict(flat=-1)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="RidgePass"):
        RidgePass(**bad)

"""The filter's 3D path for white noise (``filters/pipeline.py``): the Wiener pass's own search and the iterated
linear combinations of cubes; coloured volumes keep one search for every pass."""

from __future__ import annotations

import torch
from conftest import make_phantom, psnr

from monai_dnaprior import FilterConfig
from monai_dnaprior.filters import CollaborativePass, filter_passes
from monai_dnaprior.filters.pipeline import bayes_pass, filter_observation, ridge_pass
from monai_dnaprior.filters.ridge import RidgePass, ridge_filter
from monai_dnaprior.noise.field import NoiseField
from monai_dnaprior.noise.models import get_noise_model
from monai_dnaprior.noise.spectrum import NoiseSpectrum

TINY = dict(volume_radius=3, volume_depth_radius=1, volume_wiener_radius=3, volume_wiener_depth_radius=1,
            ridge_volume_radius=3, ridge_volume_group=32)


def _volume(seed: int = 0, sigma: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, NoiseField]:
    clean = torch.as_tensor(make_phantom((20, 20, 8)))
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    field = NoiseField(get_noise_model("gaussian", noisy[None], 3, level=sigma), NoiseSpectrum.white(3))
    return clean, noisy, field


def test_white_volume_passes_take_their_own_wiener_search():
    config = FilterConfig(volume_radius=7, volume_depth_radius=4, volume_wiener_radius=6, volume_wiener_depth_radius=3)
    thresholded, wiener = filter_passes(config, 3)
    assert thresholded == CollaborativePass.hard_threshold(2.7, patch=4, depth=4, group=16, radius=7, depth_radius=4,
                                                           step=3, adaptive=True)
    assert wiener == CollaborativePass.wiener(patch=4, depth=4, group=16, radius=6, depth_radius=3, step=3,
                                              adaptive=True)
    assert wiener.shapes(3) == ((4, 4, 4), (6, 6, 3), (3, 3, 1))
    coloured = filter_passes(config, 3, coloured=True)  # coloured volumes: one search for every pass
    assert all(p.radius == 7 and p.depth_radius == 4 for p in coloured if p.group > 1)
    assert filter_passes(config, 2) == filter_passes(FilterConfig(), 2)  # 2D untouched
    assert bayes_pass(FilterConfig(), filter_passes(FilterConfig(), 3), 3) is None  # no NL-Bayes step in 3D


def test_volume_combinations_follow_their_own_settings():
    config = FilterConfig(ridge_volume_patch=3, ridge_volume_group=48, ridge_volume_radius=4, ridge_volume_step=3,
                          ridge_volume_iterations=3, volume_depth_radius=1)
    assert ridge_pass(config, 3) == RidgePass(patch=3, group=48, radius=4, step=3, iterations=3, depth_radius=1)
    assert ridge_pass(FilterConfig(ridge_volume_patch=0), 3) is None
    assert ridge_pass(FilterConfig(ridge_volume_patch=4, ridge_volume_iterations=0), 3) is None
    assert ridge_pass(config, 2) == ridge_pass(FilterConfig(), 2)  # 2D keeps its own


def test_volume_combinations_cover_every_voxel_and_improve_the_estimate():
    """Cubes stepped by their side cover every voxel (a longer step is refused: ``FilterConfig``), and the stage adds
    to the collaborative estimate."""
    clean, noisy, field = _volume(3)
    without = filter_observation(noisy[None, None], field, FilterConfig(ridge_volume_patch=0, **TINY)).mean[0, 0]
    config = FilterConfig(ridge_volume_patch=3, ridge_volume_step=3, **TINY)
    result = filter_observation(noisy[None, None], field, config, with_error=True)
    out = result.mean[0, 0]
    assert torch.isfinite(out).all() and result.variance is not None
    assert psnr(out, clean) > psnr(without, clean)


def test_tiny_volume_groups_hold_no_copies_of_the_reference():
    """In a 6x10x10 volume a corner cube reaches 3x7x3 = 63 cubes: a group of 128 is cut to them (copies of the
    reference, taken as independent noise, kept it noisy: -1 dB against BM4D on a dev crop)."""
    clean = torch.as_tensor(make_phantom((6, 10, 10)))
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))
    guide = 0.5 * (clean + noisy)
    spec = dict(patch=4, radius=7, step=4, iterations=2, depth_radius=2)
    cut = ridge_filter(noisy, guide, 0.1, RidgePass(group=128, **spec))
    torch.testing.assert_close(cut, ridge_filter(noisy, guide, 0.1, RidgePass(group=63, **spec)))
    assert not torch.equal(cut, ridge_filter(noisy, guide, 0.1, RidgePass(group=62, **spec)))

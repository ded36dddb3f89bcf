"""White or coloured: smooth anatomy with white noise must read white, low-pass noise coloured
(:func:`~monai_dnaprior.noise.spectrum.colour_test`, through the noise field)."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.testing import data_path
from conftest import make_phantom

from monai_dnaprior.noise import estimate_noise_field
from monai_dnaprior.noise.spectrum import (
    _where_the_noise_is,
    colour_test,
    confirm_colour,
    estimate_noise_spectrum,
    flat_patch_spectrum,
)


def _upsampled(image: torch.Tensor) -> torch.Tensor:
    """``image`` (``(X, Y, Z)``) upsampled 2x in-plane by trilinear interpolation, with a channel axis."""
    up = torch.nn.functional.interpolate(image[None, None], scale_factor=(2, 2, 1), mode="trilinear",
                                         align_corners=False)
    return up[0]


def _smooth_head() -> torch.Tensor:
    """A smooth head on a dark background, interpolated 2x in-plane: ``(1, 64, 64, 16)``. Anatomy smooth at the voxel
    scale, whose patches above the darkest quarter read as low-pass noise to a plain Welch estimate."""
    g = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in (32, 32, 16)], indexing="ij")
    inside = torch.sigmoid((1 - (g[0] / 0.7) ** 2 - (g[1] / 0.6) ** 2 - (g[2] / 0.9) ** 2) / 0.1)
    tissue = 0.5 + 0.3 * torch.exp(-((g[0] - 0.2) ** 2 + (g[1] + 0.1) ** 2) / 0.08)
    tissue = tissue - 0.2 * torch.exp(-((g[0] + 0.25) ** 2 + (g[1] - 0.2) ** 2 + g[2] ** 2) / 0.05)
    return _upsampled(inside * tissue)


def _low_pass(noise: torch.Tensor) -> torch.Tensor:
    """``noise`` filtered by ``[1, 2, 1] / 4`` along the in-plane axes (circularly), unit std: correlation 2/3 at
    lag 1."""
    for dim in (-3, -2):
        noise = 0.25 * torch.roll(noise, 1, dim) + 0.5 * noise + 0.25 * torch.roll(noise, -1, dim)
    return noise / noise.std()


def _normalised(y: torch.Tensor) -> torch.Tensor:
    return (y - y.min()) / (y.max() - y.min())


def _noise(seed: int) -> torch.Tensor:
    return torch.randn(1, 64, 64, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sigma", [0.02, 0.05])
def test_a_clean_smooth_volume_with_white_noise_is_found_white(sigma):
    noisy = _smooth_head() + sigma * _noise(0)
    y = _normalised(noisy)
    test = colour_test(y, 3, mask=_where_the_noise_is(y, 3))
    assert test is not None and test.statistic < test.threshold and not test.coloured
    assert flat_patch_spectrum(y, 3)[0].is_white
    field, _ = estimate_noise_field(y, 3, "gaussian")
    assert field.is_white  # and its level is the noise's, not the anatomy's
    assert field.model.level == pytest.approx(sigma / float(noisy.max() - noisy.min()), rel=0.2)


def test_low_pass_noise_on_the_same_volume_is_found_coloured():
    y = _normalised(_smooth_head() + 0.03 * _low_pass(_noise(1)))
    test = colour_test(y, 3, mask=_where_the_noise_is(y, 3))
    assert test is not None and test.coloured and not test.anatomy
    field, _ = estimate_noise_field(y, 3, "gaussian")
    assert not field.is_white and field.spectrum.max_abs_correlation > 0.4


def test_smooth_anatomy_filling_the_image_with_white_noise_is_white():
    """No background of pure noise: the flattest patches are smooth anatomy, whose power climbs to the lowest
    frequencies (the test's rise): white."""
    clean = _upsampled(torch.from_numpy(make_phantom((32, 32, 16), low=0.0)))
    y = _normalised(clean + 0.03 * _noise(2))
    test = colour_test(y, 3, mask=_where_the_noise_is(y, 3))
    assert test is not None and test.anatomy and not test.coloured
    assert estimate_noise_field(y, 3, "gaussian")[0].is_white


def test_a_real_volume_cut_to_tissue_with_white_noise_is_white():
    """A real EPI frame (nibabel's ``example4d``) cut to a 33x41x24 box inside the brain: no background, its flattest
    patches anatomy with a rise of about 2.8-3.2 to the lowest frequencies (2.8-3.0 where it read coloured). White
    noise on it reads white for every draw (under the former rise limit 3, two of these six read coloured and were
    filtered at twice their level)."""
    frame = np.asarray(nib.load(os.path.join(data_path, "example4d.nii.gz")).dataobj[..., 0], dtype=np.float32)
    tissue = torch.from_numpy(frame[47:80, 27:68, :])
    tissue = tissue / tissue.max()
    for seed in range(6):
        noisy = tissue + 0.05 * torch.randn(tissue.shape, generator=torch.Generator().manual_seed(seed))
        assert estimate_noise_field(_normalised(noisy)[None], 3, "gaussian")[0].is_white, seed


def _curved_slice(seed: int, low_pass: bool = False) -> torch.Tensor:
    """A 64x64 slice filled by a smooth bowl (``4 (u^2 + v^2)`` on [-1, 1]^2: no background, the same curvature in
    every patch) with noise of std 0.05, white or filtered by ``[1, 2, 1] / 4`` along both axes, normalised."""
    u = torch.linspace(-1, 1, 64)
    bowl = 4 * (u[:, None] ** 2 + u[None, :] ** 2)
    noise = torch.randn(64, 64, generator=torch.Generator().manual_seed(seed))
    if low_pass:
        noise = _low_pass(noise[..., None])[..., 0]
    return _normalised(bowl + 0.05 * noise)[None]


def test_the_curvature_of_anatomy_filling_a_small_slice_is_not_read_as_colour():
    """A plane removed from each flattest patch leaves the anatomy's curvature, a correlation of 0.27-0.32 above the
    threshold (a 64x64 slice's 0.25) with no steep rise: the test read coloured on all eight draws, and the field
    took the flat patches' variance (the curvature's) as the level. A quadric removed leaves the noise: white."""
    for seed in range(8):
        y = _curved_slice(seed)
        test = colour_test(y, 2, mask=_where_the_noise_is(y, 2))
        assert test.statistic > test.threshold and not test.anatomy  # the plane's residual alone reads colour
        assert test.curved < test.threshold and not test.coloured
        assert estimate_noise_field(y, 2, "gaussian")[0].is_white, seed


def test_a_magnitude_reads_its_colour_with_the_plane_alone():
    """``curvature=False`` (a magnitude's field: its colour is taken only where strong, and its flattest patches lie
    in a Rayleigh background of pure noise) keeps the plane's decision: the curved slice's anatomy reads as colour."""
    y = _curved_slice(0)
    test = colour_test(y, 2, mask=_where_the_noise_is(y, 2), curvature=False)
    assert test.curved == test.statistic and test.coloured
    spectrum = estimate_noise_spectrum(y, 2)[0]
    assert not spectrum.is_white
    assert confirm_colour(spectrum, y, 2).is_white and not confirm_colour(spectrum, y, 2, curvature=False).is_white


def test_low_pass_noise_on_the_curved_slice_keeps_its_colour_with_a_quadric_removed():
    for seed in range(4):
        y = _curved_slice(seed, low_pass=True)
        test = colour_test(y, 2, mask=_where_the_noise_is(y, 2))
        assert test.curved > test.threshold and test.coloured
        assert not estimate_noise_field(y, 2, "gaussian")[0].is_white, seed


def test_white_noise_alone_reads_white_and_a_small_image_gets_no_test():
    x = torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(3))
    test = colour_test(x, 2)
    assert test is not None and not test.coloured and test.statistic < 0.05 and test.rise < 1.5
    assert colour_test(torch.randn(1, 20, 20), 2) is None  # too few patches: no test


def _half_coloured(everywhere: bool, seed: int = 0) -> torch.Tensor:
    """A dark left half (0.2) and a bright right half (1.0), each with noise of std about 0.05: low-pass in the dark
    half (in both halves where ``everywhere``), white in the bright one otherwise; the dark half's a little quieter,
    so that the flattest patches lie there."""
    gen = torch.Generator().manual_seed(seed)
    white = torch.randn(1, 128, 128, generator=gen)
    coloured = _low_pass(torch.randn(1, 128, 128, generator=gen))
    coloured = coloured / coloured.std()
    image = torch.full((1, 128, 128), 0.2)
    image[..., 64:] = 1.0
    noise = torch.where(torch.arange(128) < 64, 0.04 * coloured, 0.05 * (coloured if everywhere else white))
    return image + noise


def test_a_colour_only_the_darkest_half_holds_can_be_taken_away():
    """``above_darkest``: speckle's log magnifies a scan's own correlated floor in air, whose flattest patches read a
    colour the speckle does not have (a dev slice: -0.8 dB); the colour must hold above the darkest half too. A test
    there only takes colour away: noise coloured everywhere stays coloured."""
    for seed in range(2):
        dark_only = _half_coloured(False, seed)
        spectrum = estimate_noise_spectrum(dark_only[..., :64], 2)[0]
        assert not spectrum.is_white
        assert not confirm_colour(spectrum, dark_only, 2).is_white  # the whole image's flattest patches: coloured
        assert confirm_colour(spectrum, dark_only, 2, above_darkest=0.5).is_white
        everywhere = _half_coloured(True, seed)
        assert not confirm_colour(spectrum, everywhere, 2, above_darkest=0.5).is_white

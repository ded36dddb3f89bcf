"""The noise map: a smooth level recovered from the image, stationary noise left as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_phantom, psnr

from monai_dnaprior import denoise
from monai_dnaprior.noise.field import estimate_noise_field
from monai_dnaprior.noise.level_map import LevelMap, estimate_level_map, polynomial_terms


def _falloff(shape: tuple[int, ...], ratio: float = 5.0) -> np.ndarray:
    """A coil-like falloff: the level grows ``ratio`` times from the first row to the last, median 1."""
    g = np.exp(np.linspace(0, math.log(ratio), shape[0])).reshape(-1, *[1] * (len(shape) - 1)) * np.ones(shape)
    return g / np.median(g)


def _noisy(shape, g, sigma=0.05, seed=0):
    clean = make_phantom(shape)
    rng = np.random.default_rng(seed)
    return clean, (clean + sigma * g * rng.standard_normal(shape)).astype(np.float32)


def test_polynomial_terms_count_every_monomial():
    coords = torch.rand(5, 3, dtype=torch.float64)
    assert polynomial_terms(coords, 2).shape == (5, 10)  # 1 + 3 + 6
    assert torch.equal(polynomial_terms(coords, 0), torch.ones(5, 1, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(96, 96), (48, 48, 24)])
def test_a_known_falloff_is_recovered(shape):
    """A 5x falloff is found, and read within 15 % (RMS of the log ratio) of the true map."""
    g = _falloff(shape)
    _, noisy = _noisy(shape, g)
    level_map = estimate_level_map(torch.from_numpy(noisy)[None], len(shape))
    assert isinstance(level_map, LevelMap)
    found = level_map.on_grid(shape)[0].numpy()
    ratio = np.log(found / g)
    assert np.sqrt(np.mean((ratio - np.median(ratio)) ** 2)) < 0.15
    low, high, peak = level_map.summary()
    assert high / low > 3 and peak[0] > 0.9  # it rises along the first axis, to its far end


@pytest.mark.parametrize("seed", range(3))
def test_stationary_noise_gives_no_map_and_the_same_field(seed):
    """White noise of one level: no map, and the field is exactly the stationary one."""
    _, noisy = _noisy((96, 96), 1.0, seed=seed)
    y = torch.from_numpy(noisy)[None]
    assert estimate_level_map(y, 2) is None
    field, target = estimate_noise_field(y, 2, "gaussian")
    assert field.level_map is None and field.scale_map(target.shape, target.device) is None


def test_denoise_follows_the_map_and_reports_it():
    """With a 5x falloff the map lifts the result well above the one-level reading, and ``info`` says where it
    peaks."""
    g = _falloff((96, 96))
    clean, noisy = _noisy((96, 96), g)
    result = denoise(torch.from_numpy(noisy)[None], noise_model="gaussian")
    low, high = result.info["noise_map_range"]
    assert high / low > 3 and result.info["noise_map_peak"][0] > 0.9
    one_level = denoise(torch.from_numpy(noisy)[None], noise_model="gaussian", noise_level=float(np.std(noisy - clean)))
    assert psnr(result.image[0], clean) > psnr(one_level.image[0], clean) + 1.0


def test_a_given_level_means_no_map():
    """A level the user gives is one level: no map is estimated."""
    _, noisy = _noisy((96, 96), _falloff((96, 96)))
    result = denoise(torch.from_numpy(noisy)[None], noise_model="gaussian", noise_level=0.05)
    assert "noise_map_range" not in result.info


def _band(shape: tuple[int, int], peak: float = 2.5, centre: float = 0.4, width: float = 0.07) -> np.ndarray:
    """A raised band across the second axis: ``peak`` times the level at its centre, 1 far from it."""
    d = (np.arange(shape[1]) - centre * (shape[1] - 1)) / (width * shape[1])
    g = (1 + (peak - 1) * np.exp(-0.5 * d**2))[None] * np.ones(shape)
    return g / np.median(g)


def test_a_narrow_band_is_followed_by_the_local_part():
    """A band a polynomial cannot follow: the local part is kept, reads its peak near the band's centre and brings the
    map's error (RMS of the log ratio) well below what the polynomial alone reads."""
    shape = (160, 160)
    g = _band(shape)
    _, noisy = _noisy(shape, g, sigma=0.04)
    level_map = estimate_level_map(torch.from_numpy(noisy)[None], 2)
    assert level_map is not None and level_map.local is not None

    def error(found: np.ndarray) -> float:
        ratio = np.log(found / g)
        return float(np.sqrt(np.mean((ratio - np.median(ratio)) ** 2)))

    polynomial = LevelMap(level_map.coefficients, level_map.order, 2, level_map.low, level_map.high)
    polynomial.shift = float(polynomial.log_values(shape).median())
    assert error(level_map.on_grid(shape)[0].numpy()) < 0.75 * error(polynomial.on_grid(shape)[0].numpy())
    _, high, peak = level_map.summary()
    assert high > 1.5 and abs(peak[1] - 0.4) < 0.1  # smoothed: the true 2.5x peak reads lower


def test_a_narrow_band_on_a_small_slice_is_found():
    """On a slice of about 100 px the trend's windows are 6 Haar blocks, and the local part's half that (3 blocks,
    smoothed as wide in voxels as on a larger slice): the band is found with its peak near its centre on 6 of these 8
    draws (on none with the 4-block windows of a larger slice, whose 8 px squares the band's 7 px std straddles)."""
    found = 0
    for shape in ((96, 96), (104, 104)):
        g = _band(shape)
        for seed in range(4):
            level_map = estimate_level_map(torch.from_numpy(_noisy(shape, g, sigma=0.04, seed=seed)[1])[None], 2)
            if level_map is not None and level_map.local is not None:
                _, high, peak = level_map.summary()
                found += high > 1.5 and abs(peak[1] - 0.4) < 0.1
    assert found >= 5


def test_a_magnitude_background_reads_its_level_from_rayleigh_windows():
    """Windows of pure Rayleigh noise (a magnitude's background) read the level that varies across them from their
    second moment; bright windows keep the Haar reading, and windows of anatomy near the noise read none."""
    from monai_dnaprior.noise.windows import window_levels

    shape = (128, 128)
    g = _falloff(shape, ratio=3.0)
    clean = np.zeros(shape)
    clean[:, 64:] = 1.0  # the right half bright, the left half background
    rng = np.random.default_rng(0)
    sigma = 0.05 * g
    y = np.hypot(clean + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape)).astype(np.float32)
    levels, centres, rayleigh = window_levels(torch.from_numpy(y)[None], 2, side=8, floor=0.3, background=True)
    read = ~torch.isnan(levels)
    assert read[:, 4:].all() and int(read[:, :4].sum()) >= 24  # bright by the Haar MAD; most dark ones by Rayleigh
    true = torch.from_numpy(0.05 * g[8::16, 8::16].astype(np.float64))
    dark = read[:, :4]  # the Rayleigh readings: within 10 % (the bright windows' MAD of 64 values spreads 3x more)
    assert float((levels[:, :4][dark] / true[:, :4][dark]).log().abs().max()) < 0.1
    assert torch.equal(rayleigh, read & torch.isnan(window_levels(torch.from_numpy(y)[None], 2, 8, 0.3)[0]))
    without, _, none = window_levels(torch.from_numpy(y)[None], 2, side=8, floor=0.3)
    assert not none.any()
    assert torch.isnan(without[:, :4]).all() and not torch.isnan(without[:, 4:]).any()


def test_a_magnitude_background_above_the_floor_reads_its_level():
    """On the noisy side of a 5x falloff a magnitude's background lies above the windows' floor (set from the quiet
    side): its windows are white and Rayleigh and read their level from their second moment, not the Haar MAD's 0.66
    of it; the bright tissue's windows keep the MAD."""
    from monai_dnaprior.noise.windows import window_levels

    shape = (128, 128)
    g = _falloff(shape)
    clean = np.zeros(shape)
    clean[:, 64:] = 1.0
    rng = np.random.default_rng(0)
    sigma = 0.05 * g
    y = np.hypot(clean + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape)).astype(np.float32)
    floor = 3 * 0.05 * float(g.min())
    levels, _, rayleigh = window_levels(torch.from_numpy(y)[None], 2, side=8, floor=floor, background=True)
    true = torch.from_numpy(0.05 * g[8::16, 8::16].astype(np.float64))
    noisy_side = slice(5, None), slice(0, 4)  # the background's windows whose mean is above the floor
    assert int(rayleigh[noisy_side].sum()) >= 10 and not bool(rayleigh[:, 4:].any())  # 12 windows
    read = rayleigh[noisy_side]
    assert float((levels[noisy_side][read] / true[noisy_side][read]).log().abs().max()) < 0.1


def test_a_small_magnitude_with_faint_anatomy_finds_no_map():
    """The shipped 64x64 MR slice under stationary Rician noise: its few bright windows read no map, and the dark
    windows that pass as Rayleigh (faint anatomy, read high by their second moment) cannot carry one alone (before:
    maps of 0.75-1.47x on two of these four draws, up to 5 dB lost)."""
    from conftest import sample_slice

    from monai_dnaprior.intensity import IntensityWindow

    x = sample_slice()
    for seed, sigma in ((0, 0.08), (0, 0.1), (3, 0.08), (3, 0.1)):
        rng = np.random.default_rng(seed)
        y = np.hypot(x + sigma * rng.standard_normal(x.shape), sigma * rng.standard_normal(x.shape))
        y = torch.from_numpy(y.astype(np.float32))[None]
        field, _ = estimate_noise_field(IntensityWindow.from_image(y, zero_based=True).normalize(y), 2, "rician")
        assert field.level_map is None, (seed, sigma, field.level_map.summary())


def test_a_magnitude_under_a_coil_falloff_reads_its_map():
    """A Rician magnitude whose noise grows 5x across the image (a coil's falloff, normalised), its background a
    quarter of the image: one sigma's floor finds no background of pure noise there, which the map no longer asks
    for. The map is read, and the result gains about 11 dB on the input (before: no map, 5 dB)."""
    shape = (128, 128)
    g = _falloff(shape)
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    clean = np.where(xx**2 + yy**2 < 1.0, make_phantom(shape, low=0.3), 0.0)  # tissue in a disc, background around
    rng = np.random.default_rng(0)
    sigma = 0.04 * g
    y = np.hypot(clean + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape)).astype(np.float32)
    field, _ = estimate_noise_field(torch.from_numpy(y / y.max())[None], 2, "rician")
    assert field.level_map is not None
    low, high, _ = field.level_map.summary()
    assert high / low > 3.0  # the true map spans 5x; the polynomial reads most of it
    result = denoise(y[None], noise_model="rician").image[0]
    assert psnr(result, clean) - psnr(y, clean) > 8.0


def test_a_rayleigh_background_is_found_whatever_its_level():
    """Pure Rayleigh noise whose level grows 5x across the image reads as background block by block; Gaussian noise
    on a bright flat image (its mean far above 1.91 of its std) and a masked sharp magnitude do not."""
    from monai_dnaprior.noise.rayleigh import rayleigh_block_share, rician_background_sigma

    shape = (96, 96)
    rng = np.random.default_rng(0)
    sigma = 0.05 * _falloff(shape)
    background = np.hypot(sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape)).astype(np.float32)
    y = torch.from_numpy(background)[None]
    assert rayleigh_block_share(y, 2) > 0.7
    assert rician_background_sigma(y, 2) is not None  # one sigma's floor still finds part of it
    flat = torch.from_numpy((0.5 + 0.05 * rng.standard_normal(shape)).astype(np.float32))[None]
    assert rayleigh_block_share(flat, 2) == 0.0
    sharp = torch.from_numpy(np.where(rng.random(shape) > 0.5, 1.0, 0.2).astype(np.float32))[None]
    sharp[..., :32] = 0.0  # masked: no noise there
    assert rayleigh_block_share(sharp, 2) == 0.0


def test_a_background_whose_level_varies_reads_its_median_sigma_block_by_block():
    """A Rayleigh background left uneven (+-25 %, as an estimated map leaves it) reads its median sigma from its
    blocks; one floor's search drifts to the quiet part."""
    from monai_dnaprior.noise.rayleigh import rayleigh_block_sigma, rician_background_sigma

    shape = (128, 128)
    rng = np.random.default_rng(1)
    sigma = 0.04 * np.exp(np.log(1.25) * np.linspace(-1, 1, shape[0]))[:, None] * np.ones(shape)
    y = torch.from_numpy(np.hypot(sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))
                         .astype(np.float32))[None]
    assert abs(rayleigh_block_sigma(y, 2) / 0.04 - 1) < 0.05
    assert rician_background_sigma(y, 2) < 0.9 * 0.04
    flat = torch.from_numpy((0.5 + 0.05 * rng.standard_normal(shape)).astype(np.float32))[None]
    assert rayleigh_block_sigma(flat, 2) is None


def test_a_small_magnitude_under_a_coil_falloff_is_not_read_as_signal():
    """The shipped 64x64 MR slice, a Rician magnitude whose noise grows 5x across it: too few bright windows for a
    map, and its quiet side makes the finest scale look like signal; but its background is pure Rayleigh noise block
    by block, so the level is the noise's, not half an upper bound (before: an upper bound on these three draws, the
    result 0.5-0.6 dB above the input)."""
    from conftest import sample_slice

    x = sample_slice()
    for seed in (0, 1, 3):
        rng = np.random.default_rng(seed)
        sigma = 0.03 * _falloff(x.shape)
        y = np.hypot(x + sigma * rng.standard_normal(x.shape), sigma * rng.standard_normal(x.shape)).astype(np.float32)
        result = denoise(y[None], noise_model="rician")
        assert not result.info["level_upper_bound"], seed
        assert psnr(result.image[0], x) - psnr(y, x) > 1.5, seed

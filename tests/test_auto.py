"""The ``auto`` noise model on small synthetic scenes: speckle, counts, a magnitude and additive noise must each be
found, including where the older rules mistook one for another (speckle or counts of about four per voxel read as a
Rayleigh background, counts gated to Gaussian, a background quieter than the tissue, dark anatomy with no
background)."""

from __future__ import annotations

import warnings

import pytest
import torch

from monai_dnaprior.noise import choose_noise_model, detect_noise_model


def _blur(x: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x[None], size, 1, size // 2, count_include_pad=False)[0]


def _scene(n: int = 96, seed: int = 0) -> torch.Tensor:
    """A B-mode-like clean scene ``(1, n, n)`` in about [0.05, 1]: regions of different echo level (discs on a
    gradient, fading with depth) times a blurred field of random scatterers: texture at every intensity."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing="ij")
    anatomy = 0.55 + 0.15 * torch.sin(3 * xx + 2 * yy)
    for _ in range(5):
        cy, cx, r, level = torch.rand(4, generator=gen) * torch.tensor([0.6, 0.6, 0.12, 0.9]) + torch.tensor(
            [0.2, 0.2, 0.06, 0.1])
        anatomy = torch.where((yy - cy) ** 2 + (xx - cx) ** 2 < r**2, level, anatomy)
    anatomy = _blur((anatomy * torch.exp(-1.2 * yy))[None], 3)
    scatter = _blur(torch.empty(1, n, n).exponential_(generator=gen), 3)
    x = anatomy * (0.5 + 0.5 * scatter / scatter.mean())
    return (x - x.min()) / (x.max() - x.min()) * 0.95 + 0.05


def _speckle(x: torch.Tensor, looks: float, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return x * torch.distributions.Gamma(looks, looks).sample(x.shape)


def _counts(x: torch.Tensor, peak: float, seed: int) -> torch.Tensor:
    return torch.poisson(x * peak, generator=torch.Generator().manual_seed(seed)) / peak


def _magnitude(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.hypot(x + sigma * torch.randn(x.shape, generator=gen), sigma * torch.randn(x.shape, generator=gen))


@pytest.mark.parametrize("looks", [1, 2, 4, 8])
def test_speckle_on_a_textured_scene_is_speckle(looks):
    """Multiplicative speckle on a fully textured scene: the default must take it as speckle (the log filter), not as
    additive noise whose level the texture hides; four looks give the darkest blocks a Rayleigh's mean over std."""
    for seed in range(2):
        assert choose_noise_model("auto", _speckle(_scene(seed=seed), looks, seed), 2) == "speckle"


@pytest.mark.parametrize("dark", [0.003, 0.03])
def test_speckle_with_a_dark_region_is_speckle(dark):
    """A third of the scene nearly black: there the log's offset flattens the speckle, which must not read as a
    finest scale filled by signal."""
    x = _scene(seed=1).clone()
    x[..., :, :32] = dark * (0.5 + x[..., :, :32])
    assert choose_noise_model("auto", _speckle(x, 4, 1), 2) == "speckle"


@pytest.mark.parametrize("looks", [4, 8])
def test_speckle_over_a_narrow_intensity_range_is_speckle(looks):
    """A scene whose intensities span less than a factor 1.5 over their brighter half: the slope is read over all
    bins, and the darkest blocks' Rayleigh-like spread is no Rician background (the std grows with the mean)."""
    narrow = 0.45 + 0.4 * (_scene(seed=3) - 0.05)
    assert choose_noise_model("auto", _speckle(narrow, looks, 3), 2) == "speckle"


@pytest.mark.parametrize("looks", [16, 32])
def test_weak_speckle_over_a_narrow_intensity_range_is_speckle(looks):
    """Weak speckle over a narrow range: the brighter half's slope, read over a few bins, falls to 1.1-1.4 on some
    draws where all bins' reads 1.7 or more; either slope nearer speckle's than counts' lets the quadratic fit decide
    (before: Poisson on 3 of these 24 draws)."""
    chosen = []
    for seed in range(12):
        narrow = 0.45 + 0.4 * (_scene(seed=seed) - 0.05)
        chosen.append(str(choose_noise_model("auto", _speckle(narrow, looks, seed), 2)))
    assert chosen == ["speckle"] * 12, chosen


@pytest.mark.parametrize("peak", [10, 30, 100])
def test_counts_are_poisson(peak):
    """Counts (values on a lattice whose step's variance is the mean): at about 4 counts a voxel their darkest blocks
    look Rayleigh, and at 100 the flattest patches of a textured scene look coloured; both are still Poisson. A zero
    background (a phantom's outside) holds no noise."""
    x = _scene(seed=4)
    x[..., :, :30] = 0.0
    assert choose_noise_model("auto", _counts(x, peak, 4), 2) == "poisson"


def test_an_integer_image_with_additive_noise_is_not_counts():
    """Whole numbers whose noise variance is flat, not the mean: not counts, whatever the coincidence of the
    variance with the step times some mean."""
    gen = torch.Generator().manual_seed(5)
    x = _blur(torch.rand(1, 96, 96, generator=gen), 9)
    x = (x - x.min()) / (x.max() - x.min())
    integer = torch.round(200 + 800 * x + 20 * torch.randn(x.shape, generator=gen))
    assert detect_noise_model(integer, 2) == "gaussian"


def test_a_rayleigh_background_quieter_than_the_tissue_is_rician():
    """An EPI-like magnitude: half the image a background of pure noise (sigma 0.013), the tissue carrying its own
    texture and noise above it. The darkest blocks are Rayleigh although their std is well under a Rayleigh's
    share (0.655) of the tissue's."""
    gen = torch.Generator().manual_seed(6)
    x = _scene(seed=6)
    tissue = x + 0.012 * torch.randn(x.shape, generator=gen)
    tissue[..., :, :48] = 0.0
    assert choose_noise_model("auto", _magnitude(tissue, 0.013, 6), 2) == "rician"


def test_a_magnitude_under_a_coil_falloff_is_rician():
    """A textured magnitude beside a background of pure noise, under a 5x coil falloff that grows across the rows:
    the noise variance grows with position, which the binned profile reads as speckle's growth with the mean (over a
    floor); the dark background's level varying 3-4x says magnitude (before: speckle on seven of these draws, and
    Gaussian on three, where speckle's log was not noise-filled)."""
    import math

    draws = [(0, 24, 0.02), (1, 24, 0.02), (1, 24, 0.04), (1, 32, 0.02), (2, 24, 0.02), (2, 24, 0.04), (2, 32, 0.02),
             (2, 32, 0.04), (3, 24, 0.04), (3, 32, 0.04)]
    g = torch.exp(torch.linspace(0, math.log(5), 96))[None, :, None].expand(1, 96, 96)
    g = (g / g.median()).flip(-2)
    for seed, cut, sigma in draws:
        x = _scene(seed=seed).clone()
        x[..., :, :cut] = 0.0
        gen = torch.Generator().manual_seed(seed)
        n1, n2 = sigma * g * torch.randn(x.shape, generator=gen), sigma * g * torch.randn(x.shape, generator=gen)
        assert choose_noise_model("auto", torch.hypot(x + n1, n2), 2) == "rician", (seed, cut, sigma)


def test_dark_anatomy_without_a_background_is_rician():
    """A magnitude with no background of pure noise but anatomy down near its floor: additive noise that never went
    negative cannot hold anatomy that close to zero, so the magnitude's drop of spread there says Rician."""
    texture = _blur(torch.rand(1, 128, 128, generator=torch.Generator().manual_seed(7)), 9)
    ramp = torch.linspace(0, 1, 128).expand(1, 128, 128)
    x = 0.05 + 0.6 * ramp * (0.6 + 0.4 * (texture - texture.min()) / (texture.max() - texture.min()))
    for seed in range(2):  # the darkest anatomy at one sigma: no Rayleigh background, but the floor's drop
        assert choose_noise_model("auto", _magnitude(x, 0.05, seed), 2) == "rician"


def _tissue_with_dark_spots(dark: float) -> torch.Tensor:
    """Smooth tissue in [0.3, 1] with spots of value ``dark`` on about 8 % of it (vessels, CSF): ``(1, 128,
    128)``."""
    gen = torch.Generator().manual_seed(3)
    texture = _blur(torch.rand(1, 128, 128, generator=gen), 9)
    x = 0.3 + 0.7 * (texture - texture.min()) / (texture.max() - texture.min())
    return torch.where(_blur((torch.rand(1, 128, 128, generator=gen) < 0.01).float(), 3) > 0, dark, x)


def test_dark_spots_without_their_negatives_are_rician():
    """Tissue 2 sigma up and dark spots (vessels, CSF) in it, no background: the darkest bin reads 2.2-2.8 of its
    std with no drop of spread, but a hundred voxels lie within half a std of zero and none below it, where additive
    noise would have put a share of them (before: Gaussian on the third draw; a dev volume cut inside the brain lost
    0.7-1.0 dB so)."""
    x = _tissue_with_dark_spots(0.03)
    for seed in range(3):
        assert choose_noise_model("auto", _magnitude(x, 0.15, seed), 2) == "rician", seed


@pytest.mark.parametrize("sigma", [0.05, 0.08])
def test_dark_spots_above_a_bright_darkest_bin_are_rician(sigma):
    """The same dark spots in tissue 3-6 sigma up: the darkest bin reads 3-4.6 of its std, above the band, but the
    negatives additive noise would have put near the spots are still missing (before: Gaussian on every draw; a dev
    volume cut at its centre, with a little air, lost 2.1 dB so)."""
    x = _tissue_with_dark_spots(0.0)
    for seed in range(3):
        assert choose_noise_model("auto", _magnitude(x, sigma, seed), 2) == "rician", seed


def test_rescaled_counts_are_no_magnitude():
    """Counts of about 100 rescaled voxel by voxel by a gain within 5 % (a detector's flat-field correction) on the
    shipped MR slice: no lattice, and the dark blocks read as a Rayleigh background, but their exact zeros say counts
    (before: Rician on all 8 draws, 4.1 dB below Poisson named on the dev 64x64 slice)."""
    import numpy as np
    from conftest import sample_slice

    x = np.asarray(sample_slice(), dtype=np.float64)
    for seed in range(8):
        rng = np.random.default_rng(seed)
        gain = 1 + 0.05 * rng.uniform(-1, 1, x.shape)
        y = torch.from_numpy((rng.poisson(x * 100 * gain) / (100 * gain)).astype(np.float32))[None]
        assert choose_noise_model("auto", y, 2) != "rician", seed


def test_non_negative_additive_noise_stays_gaussian():
    """Additive noise on an offset scan that never goes negative (its darkest anatomy 3.5 sigma above zero): neither
    a magnitude nor counts."""
    gen = torch.Generator().manual_seed(8)
    x = _blur(torch.rand(1, 96, 96, generator=gen), 9)
    x = 0.1 + 0.9 * (x - x.min()) / (x.max() - x.min())
    noisy = (x + 0.03 * torch.randn(x.shape, generator=gen)).clamp_min(0)
    assert choose_noise_model("auto", noisy, 2) == "gaussian"
    assert choose_noise_model("auto", noisy - 0.5, 2) == "gaussian"  # negative values: additive at once


def test_too_small_to_choose_warns_and_is_gaussian():
    """A 24x24 slice (144 finest blocks) is too small to tell the models apart: Gaussian, and a warning naming the
    fix; a 64x64 speckle slice needs no warning."""
    torch.manual_seed(3)  # the Gamma draws
    g = torch.Generator().manual_seed(3)
    small = 0.5 + 0.5 * torch.rand(1, 24, 24, generator=g)
    speckle = small * torch.distributions.Gamma(4.0, 4.0).sample(small.shape)
    with pytest.warns(UserWarning, match="too few .* noise_model='rician', 'poisson' or 'speckle'"):
        assert choose_noise_model("auto", speckle, 2) == "gaussian"
    large = 0.5 + 0.5 * torch.rand(1, 64, 64, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detect_noise_model(large * torch.distributions.Gamma(4.0, 4.0).sample(large.shape), 2)


@pytest.mark.parametrize("floor", [0.01, 0.02])
def test_speckle_over_a_scans_own_noise_is_speckle(floor):
    """Weak speckle (16 looks) on the shipped MR slice plus an additive floor (the scan's own noise) flattens the
    darkest bins' log slope to 1.5-1.9: the variance read as a floor plus a quadratic growth still says speckle (before:
    taken as Poisson or Rician on 2 and 6 of these 10 draws)."""
    import numpy as np
    from conftest import sample_slice

    x = sample_slice()
    chosen = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        y = np.abs(x * rng.gamma(16.0, 1 / 16.0, x.shape) + floor * rng.standard_normal(x.shape))
        chosen.append(str(choose_noise_model("auto", torch.from_numpy(y.astype(np.float32))[None], 2)))
    assert chosen.count("speckle") >= 9, chosen

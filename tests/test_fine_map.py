"""The fine noise map: the finest diagonal detail's energy, edges masked, averaged locally."""

from __future__ import annotations

import numpy as np
import torch
from conftest import make_phantom

from monai_dnaprior.noise.fine_map import fine_log_level


def _with_edges(shape: tuple[int, ...]) -> np.ndarray:
    """The smooth phantom with a bright disc (or ball) whose edge is sharp, and a quadrant of bright dots every 4
    voxels (vessels, calcifications): what the outlier cut must leave out."""
    clean = make_phantom(shape).astype(np.float64)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    clean[sum(g**2 for g in grids) < 0.35**2] += 0.6
    index = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    dots = (index[0] % 4 == 0) & (index[1] % 4 == 0) & (index[0] < shape[0] // 2) & (index[1] < shape[1] // 2)
    return clean + 0.5 * dots


def _log_error(found: torch.Tensor, g: np.ndarray) -> float:
    """RMS of ``found - log g`` after their median difference (the map is relative)."""
    ratio = found.numpy() - np.log(g)
    return float(np.sqrt(np.mean((ratio - np.median(ratio)) ** 2)))


def _band(shape: tuple[int, ...], peak: float = 2.5) -> np.ndarray:
    d = (np.arange(shape[1]) - 0.4 * (shape[1] - 1)) / (0.07 * shape[1])
    profile = (1 + (peak - 1) * np.exp(-0.5 * d**2)).reshape(1, -1, *[1] * (len(shape) - 2))
    return profile * np.ones(shape)


def test_a_narrow_band_is_recovered_across_a_sharp_edge():
    """A 2.5x band crossing a disc's sharp edge: read within 0.16 RMS in log (a band of 7 % of the field of view,
    smoothed by the 5-voxel average), its peak above 2x."""
    shape = (160, 160)
    g = _band(shape)
    rng = np.random.default_rng(1)
    noisy = _with_edges(shape) + 0.04 * g * rng.standard_normal(shape)
    found = fine_log_level(torch.from_numpy(noisy)[None], 2)
    assert found.shape == shape and found.dtype == torch.float64
    assert _log_error(found, g) < 0.16
    profile = found.exp().median(0).values
    assert float(profile.max() / profile.median()) > 2.0
    assert abs(int(profile.argmax()) - 0.4 * 159) < 6


def test_stationary_noise_reads_a_flat_map_despite_the_edge():
    """Even noise over the sharp-edged phantom: the 5-95 % spread of the map stays within 1.3x (the dots and the
    disc's edge, which raise the finest scale's energy, are cut)."""
    shape = (128, 128)
    rng = np.random.default_rng(2)
    noisy = _with_edges(shape) + 0.05 * rng.standard_normal(shape)
    found = fine_log_level(torch.from_numpy(noisy)[None], 2)
    low, high = torch.quantile(found, torch.tensor([0.05, 0.95], dtype=torch.float64))
    assert float(high - low) < np.log(1.3)
    assert abs(float(found.median().exp()) / 0.05 - 1) < 0.05


def test_a_magnitude_reads_its_background_and_its_bright_half():
    """A Rician magnitude whose left half is background: the level growing 3x across the image is read in both
    halves (the dark by the Rayleigh second moment, the bright by the detail), within 0.1 RMS in log."""
    shape = (128, 128)
    g = np.exp(np.linspace(0, np.log(3.0), shape[1]))[None, :] * np.ones(shape)
    clean = np.zeros(shape)
    clean[:, 64:] = 1.0
    rng = np.random.default_rng(3)
    sigma = 0.04 * g
    y = np.hypot(clean + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))
    found = fine_log_level(torch.from_numpy(y)[None], 2, magnitude=True)
    inner = (slice(8, -8), slice(8, -8))  # the bright/dark seam itself is neither
    assert _log_error(found[inner], g[inner]) < 0.1
    gaussian = fine_log_level(torch.from_numpy(y)[None], 2)  # read as additive, the background reads low
    assert float(gaussian[:, :56].median() - found[:, :56].median()) < -0.3


def test_a_volume_and_a_mask_of_exact_zeros():
    """3D: a 2.5x band (7 voxels wide) across a volume is read within 0.15 RMS in log; a quarter of it masked to exact zeros does
    not pull the level of the rest down."""
    shape = (48, 96, 24)
    g = _band(shape)
    rng = np.random.default_rng(4)
    noisy = _with_edges(shape) + 0.04 * g * rng.standard_normal(shape)
    found = fine_log_level(torch.from_numpy(noisy)[None], 3)
    assert _log_error(found, g) < 0.15
    masked = noisy.copy()
    masked[:12] = 0.0
    with_mask = fine_log_level(torch.from_numpy(masked)[None], 3)
    assert torch.isfinite(with_mask).all()
    assert float((with_mask[12:20] - found[12:20]).abs().median()) < 0.05  # right beside the mask too

"""The Rayleigh background of an MRI magnitude: its moments, the per-component sigma read from it, and the tests
that find it.

Where the signal is 0 a magnitude ``|n1 + i n2|``, ``n1, n2 ~ N(0, sigma^2)``, is Rayleigh: its mean
``sigma sqrt(pi / 2)`` is the Rician noise floor, its std is ``sigma sqrt(2 - pi / 2)`` and its second moment
``2 sigma^2``. Where the signal is well above sigma the magnitude is close to Gaussian with std ``sigma``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from monai_dnaprior.noise.estimation import (
    blocks_to_voxels,
    box_mean,
    estimate_noise_level,
    haar_blocks,
    noisy_haar_blocks,
    robust_sigma,
)
from monai_dnaprior.noise.spectrum import flat_patch_spectrum, strongly_coloured

__all__ = [
    "RAYLEIGH_BACKGROUND_SHARE",
    "RAYLEIGH_MEAN",
    "RAYLEIGH_MEAN_TO_STD",
    "RAYLEIGH_STD",
    "ColouredBackground",
    "coloured_background",
    "coloured_rayleigh_background",
    "dark_rayleigh_spread",
    "estimate_rician_sigma",
    "has_rayleigh_background",
    "rayleigh_block_share",
    "rayleigh_block_sigma",
    "rayleigh_darkest_blocks",
    "rician_background_sigma",
    "rician_sigmas",
]

RAYLEIGH_MEAN = math.sqrt(math.pi / 2)  # 1.25: a Rayleigh's mean per unit sigma, the Rician noise floor
RAYLEIGH_STD = math.sqrt(2 - math.pi / 2)  # 0.655: a Rayleigh's std per unit sigma
RAYLEIGH_MEAN_TO_STD = RAYLEIGH_MEAN / RAYLEIGH_STD  # 1.91: a Rayleigh's mean over its std
RAYLEIGH_BACKGROUND_SHARE = 0.05
"""A magnitude with fewer of its blocks pure Rayleigh noise (:func:`rayleigh_block_share`) has no background."""

_MIN_BRIGHT_BLOCKS = 8  # fewer bright blocks than this (or a fiftieth of all) give no bright-block reading
_BACKGROUND_BOX = 7  # side of the local mean that finds the background
_BACKGROUND_TOLERANCE = 0.1  # local means up to this share above the floor count as background
_MIN_BACKGROUND_SHARE = 0.05  # a background under this share of the voxels that carry noise gives no estimate
# The darkest blocks are Rayleigh where their mean over their std is within these multiples of a Rayleigh's 1.91,
# and their std over the bright blocks' within these multiples of a Rayleigh's 0.655: wide enough for a Rician
# magnitude's spread over noise draws and for texture, which adds to the bright blocks' std only; Poisson reads
# below them, Gaussian and speckle further out, a masked background's tissue edges above
_RAYLEIGH_RATIO = (0.7, 1.2)
_DARK_TO_BRIGHT = (0.65, 1.25)
# The background of :func:`coloured_background`: blocks whose mean is within this multiple of the darkest
# tenth's, at least this many of them (and RAYLEIGH_BACKGROUND_SHARE of the blocks): four 8 px blocks read a k-space
# window's sigma within 15 % on the dev slices (a small masked slice's background may hold no more; with eight it was
# missed, and its anatomy's flat patches read as the noise)
_BACKGROUND_REACH = 1.5
_MIN_BACKGROUND_BLOCKS = 4


def estimate_rician_sigma(y: torch.Tensor, spatial_dims: int, snr: float = 3.0) -> float:
    """Per-component sigma of Rician (MRI magnitude) noise: from the background where there is one
    (:func:`rician_background_sigma`), else from the bright blocks where Rician is close to Gaussian.

    Over the whole image the Rayleigh background pulls the wavelet MAD low; the blocks whose mean is above ``snr``
    times the running estimate are near Gaussian with the full sigma (two refinements of the threshold from the
    all-block estimate; the all-block estimate where too few blocks are bright). That reading takes the anatomy's
    fine texture for noise too, which a background of pure noise does not hold.
    """
    readings = _rician_readings(y, spatial_dims, snr)
    return readings.bright if readings.background is None else readings.background


def rician_background_sigma(y: torch.Tensor, spatial_dims: int, snr: float = 3.0) -> float | None:
    """Per-component sigma of Rician noise read from a background of pure noise (see :func:`estimate_rician_sigma`),
    or None where the image has none (too little of it, or masked to exact zeros)."""
    return _rician_readings(y, spatial_dims, snr).background


def rician_sigmas(y: torch.Tensor, spatial_dims: int, snr: float = 3.0) -> tuple[float, float | None]:
    """:func:`estimate_rician_sigma`'s sigma, and the same background's without the selection's bias (None without a
    background): each voxel chosen by its neighbours alone (:func:`_rician_readings`). The first is the level the
    filter is run with, the second the noise floor's the Rician mean is inverted against
    (:class:`~monai_dnaprior.noise.models.RicianNoise`)."""
    readings = _rician_readings(y, spatial_dims, snr, unbiased=True)
    if readings.background is None:
        return readings.bright, None
    return readings.background, readings.unbiased


class _RicianReadings(NamedTuple):
    bright: float
    background: float | None
    unbiased: float | None


def _rician_readings(
    y: torch.Tensor, spatial_dims: int, snr: float, refinements: int = 4, unbiased: bool = False
) -> _RicianReadings:
    """The bright blocks' sigma (0 with too few blocks that carry noise) and the background's (None without one), as
    the voxels chosen with their own value read it and, with ``unbiased``, without it.

    Bright blocks: the wavelet MAD over the blocks whose mean is above ``snr`` times the running estimate.
    Background: its voxels are Rayleigh, whose second moment ``2 sigma^2`` is exact and unbiased (unlike any spread
    of the skewed Rayleigh); it is where a 7-voxel box's mean is within 10 % of the floor ``sigma sqrt(pi / 2)``,
    among the voxels that carry noise (a mask's exact zeros do not), ``sigma`` starting from the bright blocks' and
    refined with the background it finds; none where it is under 5 % of the voxels that carry noise. A voxel in its
    own box favours the low voxels and reads sigma 1-4 % low (the filter is run with that reading: on the development
    slices it measured better for the tissue, whose magnitude's spread is below sigma near the floor); its
    neighbours alone choose the ``unbiased`` background (``docs/noise.md``).
    """
    blocks = noisy_haar_blocks(y, spatial_dims)
    if blocks is None:
        return _RicianReadings(0.0, None, None)
    detail, mean, noisy = blocks
    detail, mean = detail[noisy], mean[noisy]
    bright = robust_sigma(detail)
    for _ in range(3):
        above = detail[mean > snr * bright]
        if above.numel() < max(_MIN_BRIGHT_BLOCKS, detail.numel() // 50):
            break
        bright = robust_sigma(above)
    if bright <= 0:
        return _RicianReadings(bright, None, None)
    carries = blocks_to_voxels(noisy, y.shape[-spatial_dims:], replicate=True).bool()
    background = _background_sigma(y, spatial_dims, carries, bright, refinements, without_centre=False)
    if background is None:
        return _RicianReadings(bright, None, None)
    if not unbiased:
        return _RicianReadings(bright, background, None)
    return _RicianReadings(bright, background,
                           _background_sigma(y, spatial_dims, carries, bright, refinements, without_centre=True))


def _background_sigma(
    y: torch.Tensor, spatial_dims: int, carries: torch.Tensor, start: float, refinements: int, without_centre: bool
) -> float | None:
    """:func:`_rician_readings`' background sigma from ``start``, each voxel chosen by its box's mean with or without
    its own value; None where the background is under 5 % of the voxels that carry noise (``carries``)."""
    local = box_mean(y.float(), spatial_dims, _BACKGROUND_BOX, without_centre)
    sigma = start
    for _ in range(refinements):
        background = carries & (local <= (1 + _BACKGROUND_TOLERANCE) * RAYLEIGH_MEAN * sigma)
        if int(background.sum()) < max(1.0, _MIN_BACKGROUND_SHARE * int(carries.sum())):
            return None
        sigma = float(y[background].double().square().mean() / 2) ** 0.5
    return sigma


def rayleigh_darkest_blocks(detail: torch.Tensor, mean: torch.Tensor) -> bool:
    """Whether the darkest tenth of the finest Haar blocks (``detail`` and ``mean``, the blocks that carry noise)
    are Rayleigh: their mean about 1.9 times their std, and that std about 0.66 times the brightest half's."""
    order = torch.argsort(mean)
    dark, bright = order[: order.numel() // 10], order[-order.numel() // 2:]
    dark_std, bright_std = robust_sigma(detail[dark]), robust_sigma(detail[bright])
    if dark_std <= 0 or bright_std <= 0:
        return False
    ratio = float(mean[dark].mean()) / dark_std
    spread = dark_std / bright_std / RAYLEIGH_STD
    return _within(ratio / RAYLEIGH_MEAN_TO_STD, _RAYLEIGH_RATIO) and _within(spread, _DARK_TO_BRIGHT)


def coloured_rayleigh_background(y: torch.Tensor, spatial_dims: int) -> bool:
    """Whether strongly coloured noise (a k-space window, :func:`~monai_dnaprior.noise.spectrum.strongly_coloured`),
    which the finest scale sees only in part, has a Rayleigh background: in the darkest blocks
    (:func:`_darkest_blocks`) the mean is about 1.9 times the voxels' std, and that std is no more than the flat
    patches' noise std (a Rayleigh's is 0.66 of it; on a small image the flattest patches lie in the background
    itself)."""
    dark = _darkest_blocks(y, spatial_dims)
    if dark is None or dark[1] <= 0 or abs(dark[0] / dark[1] / RAYLEIGH_MEAN_TO_STD - 1) >= 0.2:
        return False
    spectrum, variance = flat_patch_spectrum(y, spatial_dims, curvature=False)
    if not strongly_coloured(spectrum, variance, estimate_noise_level(y, spatial_dims)):
        return False
    return 0.6 * RAYLEIGH_STD < dark[1] / math.sqrt(variance) < 1.2


def _darkest_blocks(
    y: torch.Tensor, spatial_dims: int, block: int = 8,
    moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]] | None = None,
) -> tuple[float, float] | None:
    """Mean and voxel std over the darkest tenth of the ``block``-sided blocks all of whose voxels carry noise; None
    with too few such blocks. Their voxels' own spread, not the finest scale's, which sees a low-pass noise only in
    part. ``moments``: :func:`_noisy_block_moments`, where already read."""
    mean, square, full, side = moments or _noisy_block_moments(y, spatial_dims, block)
    mean, square = mean[full], square[full]
    if mean.numel() < 32:
        return None
    dark = torch.argsort(mean)[: max(8, mean.numel() // 10)]
    n = math.prod(side)
    std = float((square[dark] - mean[dark].square()).clamp_min(0).mean() * n / (n - 1)) ** 0.5
    return float(mean[dark].mean()), std


def _noisy_block_moments(
    y: torch.Tensor, spatial_dims: int, block: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """:func:`_block_moments` over blocks of ``block`` voxels a side (fewer on a thinner axis), which blocks have
    every voxel carrying noise, and the sides."""
    side = [min(block, n) for n in y.shape[-spatial_dims:]]
    noisy = blocks_to_voxels(haar_blocks(y, spatial_dims, exclude_clipped=False)[2], y.shape[-spatial_dims:])
    return (*_block_moments(y, noisy, side, spatial_dims), side)


class ColouredBackground(NamedTuple):
    """A magnitude's background of pure noise (:func:`coloured_background`): the per-component ``sigma`` read from it
    and the ``voxels`` it holds (boolean, like the image)."""

    sigma: float
    voxels: torch.Tensor


def coloured_background(
    y: torch.Tensor, spatial_dims: int, block: int = 8, tolerance: float = 0.15
) -> ColouredBackground | None:
    """A magnitude's background of pure noise, white or coloured: the per-component sigma read from it and where it
    is (boolean, like ``y``); None where it has none (under :data:`RAYLEIGH_BACKGROUND_SHARE` of the blocks, at least
    :data:`_MIN_BACKGROUND_BLOCKS`).

    The background: the ``block``-sided blocks whose mean is within ``tolerance`` of a Rayleigh's 1.91 times their
    voxels' std (no test of whiteness: under a k-space window the magnitude is Rayleigh too, its finest scale not
    its voxels' spread), among those within :data:`_BACKGROUND_REACH` of the darkest tenth's mean; sigma from their
    voxels' second moment ``2 sigma^2``, exact whatever the noise's colour (signal in that background only raises
    it)."""
    if min(y.shape[-spatial_dims:]) < 2 * block:
        return None
    moments = _noisy_block_moments(y, spatial_dims, block)
    dark = _darkest_blocks(y, spatial_dims, block, moments)
    if dark is None:
        return None
    mean, square, full, side = moments
    n = block**spatial_dims
    std = ((square - mean.square()).clamp_min(0) * n / (n - 1)).sqrt().clamp_min(1e-12)
    rayleigh = (mean / std / RAYLEIGH_MEAN_TO_STD - 1).abs() < tolerance
    background = full & rayleigh & (mean < _BACKGROUND_REACH * dark[0])
    if int(background.sum()) < max(_MIN_BACKGROUND_BLOCKS, RAYLEIGH_BACKGROUND_SHARE * int(full.sum())):
        return None
    voxels = blocks_to_voxels(background.reshape(y.shape[0], *background.shape[2:]), y.shape[-spatial_dims:],
                              side=side)
    return ColouredBackground(float(square[background].double().mean() / 2) ** 0.5, voxels.bool())


def rayleigh_block_share(y: torch.Tensor, spatial_dims: int, block: int = 8, tolerance: float = 0.15) -> float:
    """The share of the ``block``-sided blocks (all of whose voxels carry noise) that read as pure Rayleigh noise
    whatever its level (:func:`_rayleigh_blocks`). A background found so does not assume one sigma: under a coil's
    falloff its level varies 5x. 0 on an image under two blocks a side."""
    found = _rayleigh_blocks(y, spatial_dims, block, tolerance)
    if found is None:
        return 0.0
    rayleigh, _, full = found
    return float(rayleigh.sum()) / max(float(full.sum()), 1.0)


def has_rayleigh_background(y: torch.Tensor, spatial_dims: int, block: int = 8, tolerance: float = 0.15) -> bool:
    """Whether a magnitude has a background of pure noise whatever its level: at least
    :data:`RAYLEIGH_BACKGROUND_SHARE` of its blocks read as pure Rayleigh noise (:func:`rayleigh_block_share`)."""
    return _background_blocks(y, spatial_dims, block, tolerance) is not None


def dark_rayleigh_spread(y: torch.Tensor, spatial_dims: int, block: int = 8, tolerance: float = 0.15) -> float:
    """How much the level of a magnitude's background varies: over its blocks of pure Rayleigh noise
    (:func:`_rayleigh_blocks`) among the darkest quarter of the blocks (by RMS), the 95th over the 5th percentile of
    each block's sigma ``sqrt(mean(y^2) / 2)``. On the dev scans a stationary background (speckle over a scan's own
    noise included) reads 1.0-2.1, one across a 5x coil falloff 2.7-4.2; 1 where under
    :data:`RAYLEIGH_BACKGROUND_SHARE` of the blocks are Rayleigh or fewer than 8 of them dark."""
    found = _background_blocks(y, spatial_dims, block, tolerance)
    if found is None:
        return 1.0
    rayleigh, sigma, full = found
    dark = rayleigh & (sigma <= torch.quantile(sigma[full], 0.25))
    if int(dark.sum()) < 8:
        return 1.0
    q05, q95 = torch.quantile(sigma[dark], torch.tensor([0.05, 0.95], dtype=torch.float64))
    return float(q95 / q05.clamp_min(1e-30))


def rayleigh_block_sigma(y: torch.Tensor, spatial_dims: int, block: int = 8, tolerance: float = 0.15) -> float | None:
    """Per-component sigma of Rician noise, the median over the blocks of pure Rayleigh noise
    (:func:`_rayleigh_blocks`) of each block's exact reading ``sqrt(mean(y^2) / 2)``; None where under
    :data:`RAYLEIGH_BACKGROUND_SHARE` of the blocks are such. Unlike one floor's search
    (:func:`rician_background_sigma`), which keeps the voxels near the floor of its running estimate, it does not drift
    to the quietest part of a background whose level varies (a magnitude divided by an estimated noise map)."""
    found = _background_blocks(y, spatial_dims, block, tolerance)
    return None if found is None else float(found[1][found[0]].median())


def _background_blocks(
    y: torch.Tensor, spatial_dims: int, block: int, tolerance: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """:func:`_rayleigh_blocks`' Rayleigh blocks, every block's sigma ``sqrt(mean(y^2) / 2)`` (float64) and which
    blocks have every voxel carrying noise; None where the Rayleigh blocks are under
    :data:`RAYLEIGH_BACKGROUND_SHARE` of those (no background)."""
    found = _rayleigh_blocks(y, spatial_dims, block, tolerance)
    if found is None:
        return None
    rayleigh, square, full = found
    if float(rayleigh.sum()) < RAYLEIGH_BACKGROUND_SHARE * max(float(full.sum()), 1.0):
        return None
    return rayleigh, (square.double() / 2).sqrt(), full


def _rayleigh_blocks(
    y: torch.Tensor, spatial_dims: int, block: int, tolerance: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Which ``block``-sided blocks of ``y`` (``(C, *spatial)``) are pure Rayleigh noise, their voxels' mean square,
    and which blocks have every voxel carrying noise; None on an image under two blocks a side. A block is Rayleigh
    where its mean is within ``tolerance`` of a Rayleigh's 1.91 times its voxels' std and its finest diagonal Haar
    detail's std within twice ``tolerance`` of the voxels' (white: an anatomy's spread lives in the voxels, not the
    finest detail), whatever its level."""
    if min(y.shape[-spatial_dims:]) < 2 * block:
        return None
    detail, _, noisy = haar_blocks(y, spatial_dims, exclude_clipped=False)
    shape = [2 * n for n in detail.shape[-spatial_dims:]]  # the image cropped to even sides
    x = y[(..., *[slice(0, n) for n in shape])]
    mean, square, full = _block_moments(x, blocks_to_voxels(noisy, shape), block, spatial_dims)
    detail_square, _, _ = _block_moments(detail.square(), torch.ones_like(detail), block // 2, spatial_dims)
    n = block**spatial_dims
    std = ((square - mean.square()).clamp_min(0) * n / (n - 1)).sqrt().clamp_min(1e-12)
    rayleigh = (mean / std / RAYLEIGH_MEAN_TO_STD - 1).abs() < tolerance
    white = (detail_square.sqrt() / std - 1).abs() < 2 * tolerance
    return full & rayleigh & white, square, full


def _block_moments(
    x: torch.Tensor, noisy: torch.Tensor, side: int | list[int], spatial_dims: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over blocks of ``side`` voxels of ``x`` (``(..., *spatial)``): the mean, the mean square, and whether every
    voxel carries noise (``noisy``, like ``x``)."""
    pool = torch.nn.functional.avg_pool2d if spatial_dims == 2 else torch.nn.functional.avg_pool3d
    shape = (-1, 1, *x.shape[-spatial_dims:])
    x = x.float().reshape(shape)
    return pool(x, side), pool(x.square(), side), pool(noisy.float().reshape(shape), side) == 1.0


def _within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] < value < bounds[1]

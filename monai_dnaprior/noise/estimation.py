"""Noise-level estimation from the image alone, over the voxels that carry noise.

Everything here works on the finest-scale orthonormal Haar coefficients: one block of ``2^d`` voxels gives one
all-high-pass detail coefficient (its std is the white-noise sigma) and one mean. Blocks that carry no noise are
left out: constant runs (exact zeros of a scanner mask, padding) and blocks touching a clipped (saturated) value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers import median_filter

__all__ = [
    "MAD_TO_SIGMA",
    "binned_variance",
    "blocks_to_voxels",
    "box_mean",
    "estimate_log_noise_level",
    "estimate_noise_level",
    "estimate_poisson_gain",
    "finest_scale_quietness",
    "finest_scale_quietness_where",
    "haar_blocks",
    "haar_finest_detail",
    "local_median",
    "noisy_haar_blocks",
    "robust_sigma",
    "slice_noise_scale",
    "too_thin",
]

MAD_TO_SIGMA = 0.6744897501960817  # median(|N(0, 1)|)
_MIN_BLOCKS = 8  # fewer blocks than this give no estimate
_CLIPPED_SHARE = 0.002  # an extreme value taken by more than this share of voxels is a clip, not a sample


def haar_finest_detail(x: torch.Tensor, spatial_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Finest-scale orthonormal Haar coefficients of ``x``: the all-high-pass detail and the low-pass mean.

    Returns:
        ``(detail, mean)``, one value per ``2^spatial_dims`` block: the diagonal (HH or HHH) coefficient,
        whose standard deviation is the white-noise sigma, and the block's mean intensity.
    """
    for dim in range(-spatial_dims, 0):  # crop to even sizes
        x = x.narrow(dim, 0, (x.shape[dim] // 2) * 2)
    detail, mean = x, x
    for dim in range(-spatial_dims, 0):
        even_d, odd_d = detail.unfold(dim, 2, 2).unbind(-1)
        detail = (even_d - odd_d) / math.sqrt(2.0)
        even_m, odd_m = mean.unfold(dim, 2, 2).unbind(-1)
        mean = (even_m + odd_m) / 2.0
    return detail, mean


def _block_extremes(x: torch.Tensor, spatial_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum and maximum of every finest Haar block."""
    low, high = x, x
    for dim in range(-spatial_dims, 0):
        low = low.narrow(dim, 0, (low.shape[dim] // 2) * 2).unfold(dim, 2, 2).amin(-1)
        high = high.narrow(dim, 0, (high.shape[dim] // 2) * 2).unfold(dim, 2, 2).amax(-1)
    return low, high


def haar_blocks(
    x: torch.Tensor, spatial_dims: int, exclude_clipped: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Finest Haar detail and mean of every block, and which blocks carry noise.

    A block carries no noise when all its voxels are equal (a mask, padding, a constant run) or, with
    ``exclude_clipped``, when it touches the image's minimum or maximum and that value is taken by more than
    0.2 % of the voxels (clipping or saturation).

    Returns:
        ``(detail, mean, noisy)`` of the same shape, ``noisy`` boolean.
    """
    x = x.float()
    detail, mean = haar_finest_detail(x, spatial_dims)
    low, high = _block_extremes(x, spatial_dims)
    noisy = high > low
    if exclude_clipped and x.numel() > 0:
        for value, touches in ((x.min(), low), (x.max(), high)):
            if float((x == value).float().mean()) > _CLIPPED_SHARE:
                noisy &= touches != value
    return detail, mean, noisy


def too_thin(x: torch.Tensor, spatial_dims: int) -> bool:
    """Whether a spatial axis of ``x`` is shorter than a Haar block's 2 voxels: no finest scale to read."""
    return any(s < 2 for s in x.shape[-spatial_dims:])


def noisy_haar_blocks(
    x: torch.Tensor, spatial_dims: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """:func:`haar_blocks` (clipped blocks excluded) where enough blocks carry noise to estimate from, else None
    (a constant or too thin image)."""
    if too_thin(x, spatial_dims):
        return None
    detail, mean, noisy = haar_blocks(x, spatial_dims)
    return None if int(noisy.sum()) < _MIN_BLOCKS else (detail, mean, noisy)


def blocks_to_voxels(
    blocks: torch.Tensor, shape: Sequence[int], replicate: bool = False, side: int | Sequence[int] = 2
) -> torch.Tensor:
    """A map over the finest Haar blocks (:func:`haar_blocks`; or blocks of ``side`` voxels per axis) back on the
    voxel grid whose spatial shape is ``shape``: each block's value on its voxels; a last partial row (column, slice)
    gets 0, or with ``replicate`` its neighbour's value. Float."""
    out = blocks.float()
    sides = [side] * len(shape) if isinstance(side, int) else list(side)
    for dim, n in zip(range(-len(shape), 0), sides):
        out = out.repeat_interleave(n, dim)
    pad = [q for s, v in zip(reversed(shape), reversed(out.shape[-len(shape):])) for q in (0, s - v)]
    return torch.nn.functional.pad(out[None], pad, mode="replicate" if replicate else "constant")[0]


def box_mean(x: torch.Tensor, spatial_dims: int, size: int, without_centre: bool = False) -> torch.Tensor:
    """Mean of ``x`` (``(C, *spatial)``) over a box of side ``size`` (no larger than the image) around each voxel,
    one axis at a time (a box is separable, and so is the count of its voxels inside the image); an even side gives
    one more voxel along each axis, which callers crop. ``without_centre``: the mean of the box's other voxels (a
    voxel chosen by it is then not chosen by its own value)."""
    pool = torch.nn.functional.avg_pool2d if spatial_dims == 2 else torch.nn.functional.avg_pool3d
    out, count = x[None], torch.ones_like(x[:1])[None] if without_centre else None
    for axis, n in enumerate(x.shape[-spatial_dims:]):
        kernel = [1] * spatial_dims
        kernel[axis] = min(size, n - 1 + n % 2)
        padding = [k // 2 for k in kernel]
        out = pool(out, kernel, 1, padding, count_include_pad=False)
        if count is not None:  # the box's voxels inside the image
            count = pool(count, kernel, 1, padding, count_include_pad=True) * kernel[axis]
    if count is None:
        return out[0]
    return ((out * count - x[None]) / (count - 1).clamp_min(1))[0]


def local_median(x: torch.Tensor) -> torch.Tensor:
    """The median of every voxel's ``3^d`` neighbourhood in each channel of ``x`` ``(C, *spatial)`` (MONAI's
    ``median_filter``, the border replicated), one channel at a time (its neighbourhoods take ``3^d`` times the
    memory of what it filters)."""
    return torch.stack([median_filter(channel, 3, x.ndim - 1) for channel in x])


def robust_sigma(detail: torch.Tensor) -> float:
    """``median |d| / 0.6745``: the std of zero-mean Gaussian coefficients, robust to sparse signal."""
    if detail.numel() == 0:
        return 0.0
    return float(detail.abs().median()) / MAD_TO_SIGMA


def estimate_noise_level(x: torch.Tensor, spatial_dims: int) -> float:
    """Standard deviation of additive white Gaussian noise in ``x`` from its finest diagonal Haar coefficients.

    The smaller of the wavelet MAD (Donoho & Johnstone: ``median(|HH|) / 0.6745`` over the blocks that carry noise,
    pooled over channels) and the quietest windows' estimate (:func:`finest_scale_quietness`): both read the noise
    where it dominates the finest scale, and the quiet windows still do where signal detail fills most of it (a
    sharp, high-SNR scan). 0 when there are too few noisy blocks (a constant or too thin image).
    """
    median, quiet = _finest_scale_levels(x, spatial_dims)
    return median if quiet is None else min(median, quiet)


def _finest_scale_levels(x: torch.Tensor, spatial_dims: int) -> tuple[float, float | None]:
    """The wavelet MAD over the blocks that carry noise (0 with too few of them) and the quietest windows'
    estimate (None where there is none)."""
    blocks = noisy_haar_blocks(x, spatial_dims)
    if blocks is None:
        return 0.0, None
    detail, _, noisy = blocks
    return robust_sigma(detail[noisy]), _quietest_windows_sigma(detail, noisy, spatial_dims)


_WINDOW = 4  # finest-scale coefficients per window side (in-plane; one plane deep in 3D)
_QUIET_SHARE = 0.1  # the quietest windows' share


def _quietest_windows_sigma(detail: torch.Tensor, noisy: torch.Tensor, spatial_dims: int) -> float | None:
    """Noise std from the quietest windows of finest detail coefficients: the lowest decile of the windows' mean
    squares over its expectation under pure Gaussian noise (the decile of ``chi2_k / k``, Wilson-Hilferty). Signal
    only adds energy, so the quietest windows are the nearest to noise alone. None with fewer than 8 windows all
    of whose blocks carry noise."""
    window = [_WINDOW, _WINDOW] + [1] * (spatial_dims - 2)
    if any(s < w for s, w in zip(detail.shape[-spatial_dims:], window)):
        return None
    pool = torch.nn.functional.avg_pool2d if spatial_dims == 2 else torch.nn.functional.avg_pool3d
    shape = (-1, 1, *detail.shape[-spatial_dims:])
    energy = pool(detail.reshape(shape).square(), window)
    full = pool(noisy.reshape(shape).float(), window) == 1.0
    energy = energy[full]
    if energy.numel() < _MIN_BLOCKS:
        return None
    k = math.prod(window)
    z = -1.2815515655446004  # the standard normal's 10th percentile
    decile = (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3  # of chi2_k / k
    return math.sqrt(float(torch.quantile(energy.double(), _QUIET_SHARE)) / decile)


def finest_scale_quietness(x: torch.Tensor, spatial_dims: int) -> float:
    """How evenly the finest scale's energy spreads: the quietest windows' noise estimate over the wavelet MAD's.

    About 1 where noise fills the finest scale (stationary noise gives every window the same energy, up to its
    sampling spread, which the estimate corrects); well below 1 where signal detail does (a sharp scan with little
    noise), and then no estimate from this image measures the noise: it is at most the quiet windows' level. 1
    where either estimate is missing.
    """
    median, quiet = _finest_scale_levels(x, spatial_dims)
    return 1.0 if quiet is None or median <= 0 else quiet / median


def estimate_log_noise_level(y: torch.Tensor, spatial_dims: int, offset: float, floor: float = 0.05) -> float:
    """Std of ``log n`` for multiplicative noise ``y = x n``: the wavelet MAD of ``log(y + offset)`` over the blocks
    whose mean intensity is above ``floor`` (the dark background, where speckle vanishes, would bias it to 0)."""
    if too_thin(y, spatial_dims):
        return 0.0
    log_y = torch.log(y.float().clamp_min(0) + offset)
    detail, _ = haar_finest_detail(log_y, spatial_dims)
    _, mean, noisy = haar_blocks(y, spatial_dims, exclude_clipped=False)
    signal = detail[noisy & (mean > floor)]
    if signal.numel() < _MIN_BLOCKS:
        return estimate_noise_level(log_y, spatial_dims)
    return robust_sigma(signal)


def binned_variance(x: torch.Tensor, spatial_dims: int, bins: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust noise variance against local mean: the noisy blocks binned by mean, ``(means, variances)`` per bin."""
    detail, mean, noisy = haar_blocks(x, spatial_dims, exclude_clipped=False)
    detail, mean = detail[noisy], mean[noisy].clamp_min(0)
    bins = min(bins, mean.numel() // _MIN_BLOCKS)
    if bins < 1:
        return torch.zeros(0), torch.zeros(0)
    order = torch.argsort(mean)
    means, variances = [], []
    for chunk in torch.tensor_split(order, bins):
        means.append(mean[chunk].mean())
        variances.append(robust_sigma(detail[chunk]) ** 2)
    return torch.stack(means).cpu(), torch.tensor(variances)


def estimate_poisson_gain(x: torch.Tensor, spatial_dims: int, bins: int = 16) -> float:
    """Gain ``a`` of scaled Poisson noise, ``var(y) = a * E[y]``, from the Haar detail energy against local mean.

    The noisy blocks are binned by mean intensity; in each bin the robust variance ``(median |d| / 0.6745)^2`` over
    the bin's mean is one reading of ``a``, and ``a`` is the median of those readings. Every bin counts alike (a
    least-squares slope leans on the brightest few, and spreads more over noise draws), and a bin whose texture adds
    to its variance is outvoted.
    """
    if too_thin(x, spatial_dims):
        return 0.0
    m, v = binned_variance(x, spatial_dims, bins)
    readings = v[m > 0] / m[m > 0]
    return float(readings.median()) if readings.numel() else 0.0


def slice_noise_scale(
    x: torch.Tensor, axis: int, min_blocks: int = 64, tolerance: float = 1.3
) -> torch.Tensor | None:
    """Relative noise std of each slice of a ``(C, H, W, D)`` image along spatial ``axis``, or None if it is even.

    Each slice's level is the in-plane wavelet MAD over its noisy blocks; slices with fewer than ``min_blocks`` take
    their neighbours' level. The levels count as varying when the 90th percentile is more than ``tolerance`` times
    the 10th; they are then smoothed by a running median of three slices and divided by their median.
    """
    dim = 1 + axis % 3
    levels = []
    for k in range(x.shape[dim]):
        detail, _, noisy = haar_blocks(x.select(dim, k), 2)
        detail = detail[noisy]
        levels.append(robust_sigma(detail) if detail.numel() >= min_blocks else float("nan"))
    s = torch.tensor(levels, dtype=torch.float64)
    known = ~torch.isnan(s)
    if int(known.sum()) < 3:
        return None
    low, high = torch.quantile(s[known], torch.tensor([0.1, 0.9], dtype=torch.float64))
    if not float(high) > tolerance * float(low) or float(low) <= 0:
        return None
    index = torch.arange(len(s))
    nearest = index[known][(index[:, None] - index[known][None]).abs().argmin(1)]
    s = s[nearest]
    padded = torch.cat([s[:1], s, s[-1:]])
    s = padded.unfold(0, 3, 1).median(-1).values
    return (s / s.median()).float()


def finest_scale_quietness_where(x: torch.Tensor, spatial_dims: int, blocks: torch.Tensor) -> float:
    """:func:`finest_scale_quietness` over the finest Haar blocks that carry noise (clipped ones excluded) and are in
    ``blocks`` (boolean, one value per block, shaped as :func:`haar_blocks` gives them): read where the noise is
    known to be, such as the anatomy of a log-transformed image, whose dark background the log's offset flattens.
    1 where either estimate is missing (too few such blocks, or no full window of them)."""
    if too_thin(x, spatial_dims):
        return 1.0
    detail, _, noisy = haar_blocks(x, spatial_dims)
    noisy = noisy & blocks.to(noisy.device)
    if int(noisy.sum()) < _MIN_BLOCKS:
        return 1.0
    median, quiet = robust_sigma(detail[noisy]), _quietest_windows_sigma(detail, noisy, spatial_dims)
    return 1.0 if quiet is None or median <= 0 else quiet / median

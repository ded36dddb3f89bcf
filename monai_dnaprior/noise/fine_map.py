"""The noise map at fine resolution: the finest diagonal detail's energy where no edge is near, averaged locally.

A window's robust level (:mod:`.windows`) is too noisy on windows small enough to follow a narrow band or a g-factor's
ridges, and its fit trims a narrow peak as if it were an edge. Here every voxel's diagonal detail (stride 1, the
orthonormal all-high-pass difference of its ``2^d`` neighbourhood, whose variance is the local noise variance) is a
sample of ``sigma(x)^2`` unless

- it is an outlier: beyond :data:`OUTLIER` local stds (an edge, a vessel, a calcification; the variance of what is
  left is corrected for the cut);
- its neighbourhood carries no noise: constant (a mask, padding) or touching a clipped value (an extreme taken
  by many voxels);
- for a magnitude, its neighbourhood is neither bright (above :data:`BRIGHT_SNR` local stds, where Rician noise is
  close to Gaussian) nor a dark background (below :data:`DARK_SNR`, nearly Rayleigh), judged on the image smoothed
  by a Gaussian of :data:`SMOOTH_FOR_SNR` voxels: a dark voxel gives ``y^2 / 2``, whose mean is the Rayleigh
  ``sigma^2``.

Masking edges by a smoothed image's gradient as well measured no better on the development slices (a 2.5x band,
-0.05 to +0.04 dB). The samples are averaged by a normalised Gaussian of :data:`FINE_SMOOTH` voxels (where few samples lie near, by one
four times as wide), from one global level (or the windows' trend) and refined :data:`_ROUNDS` times.
"""

from __future__ import annotations

import math

import torch
from monai.networks.layers import GaussianFilter

from monai_dnaprior.noise.estimation import MAD_TO_SIGMA

__all__ = ["BRIGHT_SNR", "DARK_SNR", "FINE_SMOOTH", "OUTLIER", "SMOOTH_FOR_SNR", "fine_log_level"]

FINE_SMOOTH = 5.0
"""Std (voxels) of the Gaussian that averages the samples: on the 2D development slices 3.5 / 5 / 7 voxels gave a
2.5x band -0.23 / -0.16 / -0.13 dB from the oracle and a g-factor map -0.88 / -0.77 / -0.87."""
OUTLIER = 3.0
SMOOTH_FOR_SNR = 2.0
BRIGHT_SNR = 4.0
DARK_SNR = 1.6
_CUT_VARIANCE = 0.9733  # E[z^2 | |z| < 3] for a standard normal z
_ROUNDS = 4
_SPARSE = 0.05  # the wide average takes over where the narrow one's weight is about this or less
_CLIPPED_SHARE = 0.002


def _diagonal_detail(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """The orthonormal all-high-pass Haar difference of every voxel's ``2^d`` neighbourhood (stride 1), the last row
    of each axis repeated: ``(C, *spatial)``."""
    detail = x
    for dim in range(-spatial_dims, 0):
        detail = torch.diff(detail, dim=dim) / math.sqrt(2.0)
        detail = torch.cat([detail, detail.narrow(dim, -1, 1)], dim)
    return detail


def _next_along(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` shifted by one voxel back along ``dim``, its last row repeated."""
    return torch.cat([x.narrow(dim, 1, x.shape[dim] - 1), x.narrow(dim, -1, 1)], dim)


def _carries_no_noise(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Voxels whose ``2^d`` neighbourhood (this voxel and the next along each axis) is constant (a mask, padding)
    or holds a clipped value (:func:`_frequent_extremes`)."""
    low, high, clipped = x, x, _frequent_extremes(x)
    for dim in range(-spatial_dims, 0):
        low, high = torch.minimum(low, _next_along(low, dim)), torch.maximum(high, _next_along(high, dim))
        clipped = clipped | _next_along(clipped, dim)
    return (high == low) | clipped


def _frequent_extremes(x: torch.Tensor) -> torch.Tensor:
    """Voxels at the image's minimum or maximum where that value is taken by more than 0.2 % of the voxels (a mask,
    clipping, saturation)."""
    out = torch.zeros_like(x, dtype=torch.bool)
    for value in (x.min(), x.max()):
        at = x == value
        if float(at.float().mean()) > _CLIPPED_SHARE:
            out |= at
    return out


class _Average:
    """Normalised Gaussian averages of std ``sigma`` over the spatial axes of ``(C, *spatial)`` tensors, channels
    pooled, taken on a grid pooled ``factor`` x (the average is smooth at that scale) and interpolated back."""

    def __init__(self, spatial_dims: int, sigma: float, factor: int) -> None:
        self.spatial_dims, self.factor = spatial_dims, factor
        self.blur = GaussianFilter(spatial_dims, sigma / factor, truncated=3.0)

    def __call__(self, values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean of weighted values, mean of weights)`` near every voxel, each ``(*spatial)``."""
        spatial = tuple(values.shape[1:])
        kernel = [min(self.factor, n) for n in spatial]
        pool = torch.nn.functional.avg_pool3d if self.spatial_dims == 3 else torch.nn.functional.avg_pool2d
        both = torch.stack([(values * weights).sum(0), weights.sum(0)])[:, None]  # (2, 1, *spatial)
        both = self.blur(pool(both, kernel, kernel, ceil_mode=True))
        mode = "trilinear" if self.spatial_dims == 3 else "bilinear"
        both = torch.nn.functional.interpolate(both, size=spatial, mode=mode, align_corners=False)[:, 0]
        return both[0], both[1]


def fine_log_level(
    x: torch.Tensor, spatial_dims: int, magnitude: bool = False, start: torch.Tensor | None = None
) -> torch.Tensor:
    """The log of the local noise std of ``x`` (``(C, *spatial)``, additive noise; ``magnitude``: a Rician
    magnitude with its Rayleigh background) on its spatial grid, float64: ``(*spatial)``. ``start``: the level to
    refine (``(*spatial)``, a coarser map's), else one global level: a magnitude's voxels are judged dark or bright
    against it, and from one level the background on the noisy side of a 5x falloff is neither."""
    x = x.double()
    spatial = tuple(x.shape[1:])
    excluded = _carries_no_noise(x, spatial_dims)
    detail = _diagonal_detail(x, spatial_dims)
    energy = detail.square()
    narrow, wide = _Average(spatial_dims, FINE_SMOOTH, 2), _Average(spatial_dims, 4 * FINE_SMOOTH, 8)
    if magnitude:
        blur = GaussianFilter(spatial_dims, SMOOTH_FOR_SNR, truncated=3.0)
        smooth = blur(x[:, None])[:, 0] / blur(torch.ones((1, 1, *spatial), dtype=x.dtype))[0]
    if start is None:
        level = torch.full(spatial, float(detail.abs().median()) / MAD_TO_SIGMA, dtype=x.dtype).clamp_min(1e-12)
    else:
        level = start.to(x).clamp_min(1e-12)
    for _ in range(_ROUNDS):
        keep = (energy < (OUTLIER * level).square()) & ~excluded
        samples = energy / _CUT_VARIANCE
        if magnitude:
            dark = (smooth < DARK_SNR * level) & ~excluded
            keep = (keep & (smooth > BRIGHT_SNR * level)) | dark
            samples = torch.where(dark, x.square() / 2, samples)
        keep = keep.to(x.dtype)
        total, weight = narrow(samples, keep)
        total_wide, weight_wide = wide(samples, keep)
        near = weight / (weight + _SPARSE)  # the kernels sum to 1: weight is the share of samples kept near
        variance = near * total / weight.clamp_min(1e-12) + (1 - near) * total_wide / weight_wide.clamp_min(1e-12)
        if float(weight_wide.min()) <= 0:  # no sample within reach somewhere: keep the previous level
            break
        level = variance.clamp_min(1e-24).sqrt()
    return level.log()

"""The noise map's local part: what a smooth polynomial cannot follow (a narrow band, a g-factor's ridges).

Small windows' log-levels minus the polynomial's trend are smoothed by a normalised Gaussian over the window grid
(windows that read far above it trimmed: edges and texture only raise a level) and kept only where they predict the
windows better than the trend alone, by generalised cross-validation: the smoother's degrees of freedom (its weights
on each window's own value) are charged against the residual it removes. Where it is kept, the map's local part is
then read voxel by voxel (:mod:`.fine_map`): these windows decide whether there is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from monai.networks.layers import GaussianFilter

__all__ = ["LOCAL_SMOOTH", "MIN_GAIN", "LocalFit", "fit_local", "local_at", "local_windows"]

_SIDES = {2: 4, 3: 3}  # Haar blocks per window side of the local part: 2D where the trend's windows are 8 blocks
LOCAL_SMOOTH = 1.5
"""Std of the Gaussian over the window grid, in windows of :data:`_SIDES` blocks (1 window followed the development
slices' stationary texture: 9 of 60 stationary cases gained a false map; 1.5 gave 1 of 60 and kept every band's
gain); as wide in voxels over smaller windows."""
MIN_GAIN = 0.9
"""The local part is kept only where its generalised cross-validation error is below this share of the trend's."""
_TRIM = 2.5  # windows more than this many robust stds above the smoothed residual are dropped
_ROUNDS = 6


@dataclass
class LocalFit:
    """A local part: ``grid`` on the window grid whose first and last centres lie at ``extent`` per axis, and the
    smoother's degrees of freedom per window kept (``dof_share``)."""

    grid: torch.Tensor
    extent: tuple[tuple[float, float], ...]
    dof_share: float


def local_windows(trend_side: int, spatial_dims: int) -> tuple[int, float]:
    """The local part's window side in Haar blocks and its smoothing's std in those windows: in 2D half the trend's
    windows (twice its resolution: a small slice's trend windows are smaller, and so are these), the smoothing as wide
    in voxels as :data:`LOCAL_SMOOTH` is over 4-block windows (a finer one found false maps on the 100 px dev
    slices); in 3D, 3-block windows."""
    side = max(2, trend_side // 2) if spatial_dims == 2 else _SIDES[3]
    return side, LOCAL_SMOOTH * _SIDES[spatial_dims] / side


def local_at(local: torch.Tensor, extent: tuple[tuple[float, float], ...], coords: torch.Tensor) -> torch.Tensor:
    """The values of ``local`` (on a regular grid whose first and last points lie at ``extent`` per axis) at points
    ``(N, d)``: linear interpolation, constant beyond the outer points."""
    scaled = [((coords[:, a] - lo) / max(hi - lo, 1e-12) * 2 - 1).clamp(-1, 1) for a, (lo, hi) in enumerate(extent)]
    points = torch.stack(scaled[::-1], -1).view(1, -1, *([1] * (len(extent) - 1)), len(extent))  # (x, y[, z]) order
    sampled = torch.nn.functional.grid_sample(local[None, None].to(points), points, mode="bilinear",
                                              align_corners=True)
    return sampled.flatten().to(coords)


def _smooth(values: torch.Tensor, mask: torch.Tensor, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised Gaussian smoothing (std ``width``) of ``values`` where ``mask``, and each window's weight on its own
    value."""
    blur = GaussianFilter(values.ndim, width, truncated=3.0)
    weight = blur(mask.double()[None, None])[0, 0].clamp_min(1e-12)
    smooth = blur((torch.nan_to_num(values) * mask)[None, None])[0, 0] / weight
    impulse = torch.zeros((7,) * values.ndim, dtype=torch.float64)
    impulse[(3,) * values.ndim] = 1
    centre_weight = float(blur(impulse[None, None]).max())
    return smooth, centre_weight / weight


def _robust_std(values: torch.Tensor) -> float:
    return max(1.4826 * float((values - values.median()).abs().median()), 1e-6)


def fit_local(
    residual: torch.Tensor, centres: torch.Tensor, trend_terms: int, width: float = LOCAL_SMOOTH
) -> LocalFit | None:
    """The local part of ``residual`` (the windows' log-levels minus the trend, NaN where a window reads no level;
    ``centres`` as :func:`~monai_dnaprior.noise.windows.window_levels` gives them; smoothed by a Gaussian of std
    ``width`` windows), or None where it does not beat the
    trend (of ``trend_terms`` coefficients) by :data:`MIN_GAIN` or too few windows read a level."""
    read = ~torch.isnan(residual)
    n_read = int(read.sum())
    if min(residual.shape) < 4 or n_read < 48:
        return None
    keep = read & (residual <= residual[read].median() + _TRIM * _robust_std(residual[read]))
    for _ in range(_ROUNDS):
        smooth, self_weight = _smooth(residual, keep, width)
        left = residual - smooth
        kept = read & (left <= _TRIM * _robust_std(left[keep]))
        if torch.equal(kept, keep):
            break
        keep = kept
    n = int(keep.sum())
    dof = float(self_weight[keep].sum())
    trend_error = float((residual[keep] - residual[keep].mean()).square().sum()) / (1 - trend_terms / n) ** 2
    local_error = float(left[keep].square().sum()) / max(1 - (trend_terms + dof) / n, 1e-3) ** 2
    if not math.isfinite(local_error) or local_error >= MIN_GAIN * trend_error:
        return None
    extent = tuple((float(c.min()), float(c.max())) for c in centres)
    return LocalFit(smooth, extent, dof / n)

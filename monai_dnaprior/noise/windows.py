"""Robust noise levels of windows: the MAD of the finest diagonal Haar detail over each window of blocks."""

from __future__ import annotations

import torch

from monai_dnaprior.noise.estimation import MAD_TO_SIGMA, haar_blocks

__all__ = ["window_levels"]

_MIN_SHARE = 0.75  # a window with a smaller share of its blocks carrying noise reads no level
_WHITE_TOLERANCE = 0.3  # a window's finest-detail level within this share of its voxels' std: no anatomy in it
RAYLEIGH_RATIO = (0.73, 0.8)
"""A window whose ``mean(y)^2 / mean(y^2)`` lies here is read as pure Rayleigh noise: ``pi / 4 = 0.785`` (its
spread over a 16x16 window is about 0.015); a Rician magnitude of signal-to-noise ratio 1 reads 0.80 (and its level
1.22x too high), 2 reads 0.86. Windows that still read high are trimmed by the map's fit as edges are."""


def window_levels(
    x: torch.Tensor, spatial_dims: int, side: int, floor: float | None = None, background: bool = False,
    blocks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The noise level of every window of ``side`` Haar blocks per axis of ``x`` (``(C, *spatial)``), the windows'
    centres, and which windows read it from a Rayleigh background.

    Returns:
        ``(levels, centres, rayleigh)``: the levels on the window grid (float64, NaN where less than three quarters of a
        window's blocks carry noise, or where their mean is below ``floor``: a magnitude's Rayleigh background reads
        0.66 of its noise), the centres ``(spatial_dims, *grid)`` on coordinates scaled to [-1, 1] per axis, and a
        boolean grid of the windows read from their second moment (below).
        With ``background`` (a magnitude), a window that holds pure Rayleigh noise (:data:`RAYLEIGH_RATIO`) reads it
        from its exact second moment, ``sigma^2 = mean(y^2) / 2``: one left without a level, or one above ``floor``
        whose finest detail's level is within :data:`_WHITE_TOLERANCE` of its voxels' std (the noisy side of a coil's
        falloff, whose background's Haar MAD reads 0.66 of its level). ``blocks``:
        :func:`~monai_dnaprior.noise.estimation.haar_blocks` of ``x`` where the caller has them already.
    """
    detail, mean, noisy = haar_blocks(x, spatial_dims) if blocks is None else blocks
    if floor is not None:
        noisy = noisy & (mean > floor)
    grid = tuple(n // side for n in detail.shape[1:])
    values = detail.abs().masked_fill(~noisy, float("nan"))
    values = values[(slice(None), *[slice(0, g * side) for g in grid])]
    for dim in range(1, spatial_dims + 1):
        values = values.unfold(dim, side, side)  # (C, *grid, side, ..., side)
    values = values.movedim(0, spatial_dims).reshape(*grid, -1)
    counts = (~torch.isnan(values)).sum(-1)
    levels = (values.nanmedian(-1).values / MAD_TO_SIGMA).double()
    keep = (counts >= _MIN_SHARE * side**spatial_dims) & (levels > 0)
    rayleigh = torch.zeros_like(keep)
    if background:
        voxels = x[(slice(None), *[slice(0, 2 * g * side) for g in grid])].double()
        for dim in range(1, spatial_dims + 1):
            voxels = voxels.unfold(dim, 2 * side, 2 * side)
        voxels = voxels.movedim(0, spatial_dims).reshape(*grid, -1)
        first, second = voxels.mean(-1), voxels.square().mean(-1)
        ratio = first.square() / second.clamp_min(1e-30)
        inside = (ratio >= RAYLEIGH_RATIO[0]) & (ratio <= RAYLEIGH_RATIO[1])
        # a window above the floor (the noisy side of a falloff) may be pure noise too: white, its finest detail's
        # level near its voxels' std, where an anatomy's texture spreads the voxels only
        white = (levels / (second - first.square()).clamp_min(1e-30).sqrt() - 1).abs() < _WHITE_TOLERANCE
        rayleigh = (~keep | white) & inside & (voxels > 0).all(-1)  # a mask's exact zeros are no noise
        levels = torch.where(rayleigh, (second / 2).sqrt(), levels)
        keep = keep | rayleigh
    # a window's centre, in voxels (2 per block), on coordinates scaled to [-1, 1] like the map's grid
    centres = torch.meshgrid(*[-1 + 2 * (2 * side * (torch.arange(g, dtype=torch.float64) + 0.5) - 0.5) / max(n - 1, 1)
                               for g, n in zip(grid, x.shape[1:])], indexing="ij")
    return levels.masked_fill(~keep, float("nan")), torch.stack(centres), rayleigh

"""The noise map: the level of additive noise as a smooth function of position.

A coil array's sensitivity falling off with depth, a parallel-imaging g-factor, CT tube-current modulation and
bowtie filters all make the noise's standard deviation vary smoothly across a scan: ``n(x) = g(x) n0(x)`` with
``n0`` stationary. The map ``g`` (median 1 over the image) is read from the finest Haar scale:
the robust level (MAD) of every window of blocks, a low-order polynomial fitted to their logarithms (a Gaussian bump,
an exponential falloff and a tilt are all quadratic there), windows that read above the fit trimmed away (edges and
texture only ever raise a window's level), the fit refitted. The map is kept only where its spread over the image
exceeds :data:`FLAT_SPREAD`: stationary noise then gives no map at all, and the result of stationary noise is the
same with or without this module.

Where there is a map, the observation divided by it has stationary noise of the base level: every filter pass,
the spectrum and the Rician background rule work on that, and the result (and the uncertainty map) is multiplied
back, as an expert does with a known g-factor map.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from monai_dnaprior.noise.estimation import MAD_TO_SIGMA, haar_blocks

__all__ = ["FLAT_SPREAD", "MIN_EXPLAINED", "LevelMap", "estimate_level_map", "polynomial_terms"]

FLAT_SPREAD = 1.5
"""A fitted map whose 95th percentile over the image is at most this many times its 5th is taken as flat."""
MIN_EXPLAINED = 0.4
"""A fitted map that explains less than this share of the windows' log-level variance (adjusted R^2) is taken as
flat: the windows' levels then follow the anatomy's texture, not a smooth field (on the development slices, stationary
white and coloured noise read at most 0.3, noise maps 0.43-0.93)."""
_WINDOWS = {2: (8, 6, 4), 3: (4, 3)}  # Haar blocks per window side, the largest that gives _MIN_WINDOWS windows
_MIN_WINDOWS = 48  # fewer windows than this: no map
_MIN_SHARE = 0.75  # a window with a smaller share of its blocks carrying noise reads no level
_TRIM = 2.5  # windows more than this many robust stds above the fit are dropped (edges, texture)
_ROUNDS = 6
_ORDERS = (0, 1, 2, 3, 4)


@dataclass
class LevelMap:
    """A fitted noise map: the polynomial's coefficients on coordinates scaled to [-1, 1] per axis.

    Attributes:
        coefficients: one per term of :func:`polynomial_terms`, for ``log g``.
        order: the polynomial's order.
        spatial_dims: the number of coordinates.
        low, high: the range of ``log g`` at the windows it was fitted on (the map is clamped to it, so that it never
            extrapolates beyond what was read).
        explained: the share of the windows' log-level variance the fit explains (adjusted R^2).
        shift: what makes the map's median 1 over the image.
    """

    coefficients: torch.Tensor
    order: int
    spatial_dims: int
    low: float
    high: float
    explained: float = 1.0
    shift: float = 0.0

    def log_values(self, shape: tuple[int, ...], device: torch.device | str | None = None) -> torch.Tensor:
        """``log g`` on a voxel grid of spatial ``shape``."""
        axes = [torch.linspace(-1, 1, n, dtype=torch.float64, device=device) for n in shape]
        grids = torch.meshgrid(*axes, indexing="ij")
        terms = polynomial_terms(torch.stack([g.flatten() for g in grids], -1), self.order)
        values = (terms @ self.coefficients.to(terms)).clamp(self.low, self.high) - self.shift
        return values.view(shape)

    def summary(self, size: int = 32) -> tuple[float, float, tuple[float, ...]]:
        """The map's least and greatest value, and where it peaks as a share (0-1) of each axis, on a coarse grid."""
        values = self.log_values((size,) * self.spatial_dims).exp()
        peak = torch.unravel_index(values.argmax(), values.shape)
        return float(values.min()), float(values.max()), tuple(round(float(p) / (size - 1), 2) for p in peak)

    def on_grid(self, shape: tuple[int, ...], device: torch.device | str | None = None) -> torch.Tensor:
        """``g`` (float32) on a voxel grid of spatial ``shape``, with a leading channel axis of 1."""
        return self.log_values(shape, device).exp().float()[None]


def polynomial_terms(coords: torch.Tensor, order: int) -> torch.Tensor:
    """Every monomial of ``coords`` ``(N, d)`` up to total degree ``order``, the constant first: ``(N, terms)``."""
    columns = [torch.ones(coords.shape[0], dtype=coords.dtype, device=coords.device)]
    for degree in range(1, order + 1):
        for combo in itertools.combinations_with_replacement(range(coords.shape[1]), degree):
            columns.append(math.prod(coords[:, a] for a in combo))
    return torch.stack(columns, -1)


def _window_levels(
    x: torch.Tensor, spatial_dims: int, floor: float | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The robust level (MAD of the finest diagonal Haar detail) of every window of blocks that carry noise and the
    windows' centres on coordinates scaled to [-1, 1]; None with too few windows. Windows whose blocks' mean is below
    ``floor`` are left out (a magnitude's Rayleigh background reads 0.66 of its noise)."""
    detail, mean, noisy = haar_blocks(x, spatial_dims)
    if floor is not None:
        noisy = noisy & (mean > floor)
    sides = [s for s in _WINDOWS[spatial_dims] if math.prod(n // s for n in detail.shape[1:]) >= _MIN_WINDOWS]
    if not sides:
        return None
    side = sides[0]
    grid = tuple(n // side for n in detail.shape[1:])
    values = detail.abs().masked_fill(~noisy, float("nan"))
    values = values[(slice(None), *[slice(0, g * side) for g in grid])]
    for dim in range(1, spatial_dims + 1):
        values = values.unfold(dim, side, side)  # (C, *grid, side, ..., side)
    values = values.movedim(0, spatial_dims).reshape(*grid, -1)
    counts = (~torch.isnan(values)).sum(-1)
    levels = values.nanmedian(-1).values / MAD_TO_SIGMA
    keep = (counts >= _MIN_SHARE * side**spatial_dims) & (levels > 0)
    if int(keep.sum()) < _MIN_WINDOWS // 2:
        return None
    voxels = x.shape[1:]  # a window's centre, in voxels, on coordinates scaled to [-1, 1] like the map's grid
    centres = torch.meshgrid(*[-1 + 2 * (2 * side * (torch.arange(g, dtype=torch.float64) + 0.5) - 0.5) / max(n - 1, 1)
                               for g, n in zip(grid, voxels)], indexing="ij")
    coords = torch.stack([c[keep] for c in centres], -1)
    return levels[keep].double(), coords


def estimate_level_map(x: torch.Tensor, spatial_dims: int, floor: float | None = None) -> LevelMap | None:
    """The noise map of ``x`` (``(C, *spatial)``, additive noise in the fit domain), or None where the level is even
    (its fitted spread at most :data:`FLAT_SPREAD`) or too few windows carry noise.

    The polynomial's order (0 to 4, as many windows allow) is the one with the least Bayesian information criterion
    over the windows kept; order 0 (a constant) is an even level, and so is a fit that explains too little
    (:data:`MIN_EXPLAINED`).

    Args:
        x: the observation.
        spatial_dims: 2 or 3.
        floor: windows whose blocks' mean is below this are left out (a magnitude's background); None keeps all.
    """
    read = _window_levels(x, spatial_dims, floor)
    if read is None:
        return None
    levels, coords = read
    fits = [fit for order in _ORDERS if (fit := _trimmed_fit(levels.log(), coords, order)) is not None]
    if not fits:
        return None
    coefficients, order, fitted, _, explained = min(fits, key=lambda fit: fit[3])
    if order == 0 or explained < MIN_EXPLAINED:
        return None
    q05, q95 = torch.quantile(fitted, torch.tensor([0.05, 0.95], dtype=torch.float64))
    if float(q95 - q05) <= math.log(FLAT_SPREAD):
        return None
    level_map = LevelMap(coefficients, order, spatial_dims, float(fitted.min()), float(fitted.max()), explained)
    level_map.shift = float(level_map.log_values(tuple(x.shape[1:])).median())
    return level_map


def _trimmed_fit(
    target: torch.Tensor, coords: torch.Tensor, order: int
) -> tuple[torch.Tensor, int, torch.Tensor, float] | None:
    """Least squares of ``target`` on the monomials of ``coords`` up to ``order``, the windows that read above the
    fit by more than :data:`_TRIM` robust stds dropped and the fit redone; ``(coefficients, order, fitted values at
    the windows kept, BIC)``, or None with too few windows for the order."""
    terms = polynomial_terms(coords, order)
    keep = torch.ones_like(target, dtype=torch.bool)
    for _ in range(_ROUNDS):
        if int(keep.sum()) < 3 * terms.shape[1]:
            return None
        coefficients = torch.linalg.lstsq(terms[keep], target[keep, None]).solution[:, 0]
        residual = target - terms @ coefficients
        spread = 1.4826 * float((residual[keep] - residual[keep].median()).abs().median())
        kept = residual <= _TRIM * max(spread, 1e-6)
        if torch.equal(kept, keep):
            break
        keep = kept
    n, k = int(keep.sum()), terms.shape[1]
    rss = float(residual[keep].square().sum())
    total = float((target[keep] - target[keep].mean()).square().sum())
    explained = 1 - (rss / max(n - k, 1)) / (total / max(n - 1, 1)) if total > 0 else 0.0
    bic = n * math.log(max(rss, 1e-12) / n) + k * math.log(n)
    return coefficients, order, (terms @ coefficients)[keep], bic, explained

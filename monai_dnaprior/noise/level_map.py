"""The noise map: the level of additive noise as a smooth function of position.

A coil array's sensitivity falling off with depth, a parallel-imaging g-factor, CT tube-current modulation and
bowtie filters all make the noise's standard deviation vary smoothly across a scan: ``n(x) = g(x) n0(x)`` with
``n0`` stationary. The map ``g`` (median 1 over the image) is read from the finest Haar scale:
the robust level (MAD) of every window of blocks, a low-order polynomial fitted to their logarithms (a Gaussian bump,
an exponential falloff and a tilt are all quadratic there), windows that read above the fit trimmed away (edges and
texture only ever raise a window's level), the fit refitted; what it cannot follow (a narrow band, a g-factor's
ridges) is added where windows half the size say it predicts them better (:mod:`.local_map`), read voxel by voxel
(:mod:`.fine_map`). The map is kept only where its spread over the image
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
from typing import ClassVar

import torch

from monai_dnaprior.noise.estimation import haar_blocks
from monai_dnaprior.noise.fine_map import fine_log_level
from monai_dnaprior.noise.local_map import fit_local, local_at, local_windows
from monai_dnaprior.noise.windows import window_levels

__all__ = ["FLAT_SPREAD", "MIN_EXPLAINED", "LevelMap", "estimate_level_map", "polynomial_terms"]

FLAT_SPREAD = 1.5
"""A fitted map whose 95th percentile over the image is at most this many times its 5th is taken as flat."""
MIN_EXPLAINED = 0.4
"""A fitted map that explains less than this share of the windows' log-level variance (adjusted R^2) is taken as
flat: the windows' levels then follow the anatomy's texture, not a smooth field (on the development slices, stationary
white and coloured noise read at most 0.3, noise maps 0.43-0.93)."""
MIN_EXPLAINED_LOCAL = 0.5
"""The same for a map with a local part, whose freedom can follow texture: on the development slices stationary
noise read at most 0.47 with it, noise maps 0.58-0.85."""
_WINDOWS = {2: (8, 6, 4), 3: (4, 3)}  # Haar blocks per window side, the largest that gives _MIN_WINDOWS windows
_MIN_WINDOWS = 48  # fewer windows than this: no map
_TRIM = 2.5  # windows more than this many robust stds above the fit are dropped (edges, texture)
_ROUNDS = 6
_ORDERS = (0, 1, 2, 3, 4)


@dataclass
class LevelMap:
    """A fitted noise map: the polynomial's coefficients on coordinates scaled to [-1, 1] per axis, and its local
    part where it has one.

    Attributes:
        coefficients: one per term of :func:`polynomial_terms`, for ``log g``.
        order: the polynomial's order.
        spatial_dims: the number of coordinates.
        low, high: the range of ``log g`` at the windows it was fitted on (the map is clamped to it, so that it never
            extrapolates beyond what was read).
        explained: the share of the windows' log-level variance the fit explains (adjusted R^2).
        shift: what makes the map's median 1 over the image.
        local: the local part on a regular grid (the fine map's, every other voxel: :mod:`.fine_map`), or None.
        local_extent: the first and last grid points of ``local`` per axis, on the coordinates of the polynomial.
    """

    coefficients: torch.Tensor
    order: int
    spatial_dims: int
    low: float
    high: float
    explained: float = 1.0
    shift: float = 0.0
    local: torch.Tensor | None = None
    local_extent: tuple[tuple[float, float], ...] = ()
    given: ClassVar[bool] = False  # read from the image (a :class:`~.given_map.GivenMap` is given)

    def log_values(self, shape: tuple[int, ...], device: torch.device | str | None = None) -> torch.Tensor:
        """``log g`` on a voxel grid of spatial ``shape``."""
        axes = [torch.linspace(-1, 1, n, dtype=torch.float64, device=device) for n in shape]
        coords = torch.stack([g.flatten() for g in torch.meshgrid(*axes, indexing="ij")], -1)
        return (self.log_at(coords).clamp(self.low, self.high) - self.shift).view(shape)

    def log_at(self, coords: torch.Tensor) -> torch.Tensor:
        """``log g`` before its clamp and shift, at points ``(N, d)`` on coordinates scaled to [-1, 1]."""
        values = polynomial_terms(coords, self.order) @ self.coefficients.to(coords)
        if self.local is not None:
            values = values + local_at(self.local, self.local_extent, coords)
        return values

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
    x: torch.Tensor, spatial_dims: int, floor: float | None, blocks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """The levels of the windows that read one (the largest windows that give :data:`_MIN_WINDOWS`), their centres
    ``(N, d)`` and their side in Haar blocks; None with too few windows, counted without a magnitude's Rayleigh
    windows: their second moment counts a faint anatomy as noise (a Rician of signal-to-noise ratio 1 reads 1.22x its
    level, and passes as Rayleigh), so they extend a map the bright windows read but cannot carry one alone."""
    grid = blocks[0].shape[1:]
    sides = [s for s in _WINDOWS[spatial_dims] if math.prod(n // s for n in grid) >= _MIN_WINDOWS]
    if not sides:
        return None
    levels, centres, rayleigh = window_levels(x, spatial_dims, sides[0], floor, floor is not None, blocks)
    keep = ~torch.isnan(levels)
    if int((keep & ~rayleigh).sum()) < _MIN_WINDOWS // 2:
        return None
    return levels[keep], centres[:, keep].T, sides[0]


def estimate_level_map(x: torch.Tensor, spatial_dims: int, floor: float | None = None) -> LevelMap | None:
    """The noise map of ``x`` (``(C, *spatial)``, additive noise in the fit domain), or None where the level is even
    (its fitted spread at most :data:`FLAT_SPREAD`) or too few windows carry noise.

    The polynomial's order (0 to 4, as many windows allow) is the one with the least Bayesian information criterion
    over the windows kept; order 0 (a constant) is an even level, and so is a fit that explains too little
    (:data:`MIN_EXPLAINED`). A local part is added where it predicts smaller windows better (:mod:`.local_map`);
    with it the map must explain :data:`MIN_EXPLAINED_LOCAL` of the windows' variance, else the polynomial alone is
    judged.

    Args:
        x: the observation.
        spatial_dims: 2 or 3.
        floor: windows whose blocks' mean is below this are left out (a magnitude's background); None keeps all.
    """
    blocks = haar_blocks(x, spatial_dims)  # read once, by the trend's windows and the local part's
    read = _window_levels(x, spatial_dims, floor, blocks)
    if read is None:
        return None
    levels, coords, side = read
    fits = [fit for order in _ORDERS if (fit := _trimmed_fit(levels.log(), coords, order)) is not None]
    if not fits:
        return None
    coefficients, order, fitted, _, explained = min(fits, key=lambda fit: fit[3])
    trend = LevelMap(coefficients, order, spatial_dims, 0.0, 0.0)
    candidates = [(trend, fitted, explained, MIN_EXPLAINED)] if order > 0 else []
    with_local = _with_local_part(x, spatial_dims, floor, blocks, trend, levels, coords, side)
    if with_local is not None:
        candidates.insert(0, (*with_local, MIN_EXPLAINED_LOCAL))
    for level_map, fitted, explained, least in candidates:
        q05, q95 = torch.quantile(fitted, torch.tensor([0.05, 0.95], dtype=torch.float64))
        if explained >= least and float(q95 - q05) > math.log(FLAT_SPREAD):
            break
    else:
        return None
    level_map.low, level_map.high, level_map.explained = float(fitted.min()), float(fitted.max()), explained
    if level_map.local is not None:
        _read_fine_local(level_map, x, floor is not None)
    level_map.shift = float(level_map.log_values(tuple(x.shape[1:])).median())
    return level_map


def _read_fine_local(level_map: LevelMap, x: torch.Tensor, magnitude: bool) -> None:
    """Replace the local part of ``level_map`` by the fine map (:mod:`.fine_map`, refined from the polynomial trend)
    less that trend, kept on a grid of every other voxel: where the windows found a local part, the fine map follows it
    closer (on the 2D development slices, a 2.5x band -0.96 / -2.15 / -0.01 / -0.24 -> -0.16 / -0.18 / +0.16 / -0.34
    dB from the oracle)."""
    spatial_dims = level_map.spatial_dims
    smooth = LevelMap(level_map.coefficients, level_map.order, spatial_dims, -math.inf, math.inf)
    fine = fine_log_level(x, spatial_dims, magnitude, smooth.log_values(tuple(x.shape[1:])).exp())
    stride = [2 if n >= 8 else 1 for n in fine.shape]
    pooled = torch.nn.functional.avg_pool3d if spatial_dims == 3 else torch.nn.functional.avg_pool2d
    grid = pooled(fine[None, None], stride, stride)[0, 0]
    centres = [(s - 1) / 2 + s * torch.arange(g, dtype=torch.float64) for s, g in zip(stride, grid.shape)]
    axes = [-1 + 2 * c / max(n - 1, 1) for c, n in zip(centres, fine.shape)]
    coords = torch.stack([a.flatten() for a in torch.meshgrid(*axes, indexing="ij")], -1)
    trend = (polynomial_terms(coords, level_map.order) @ level_map.coefficients).view(grid.shape)
    level_map.local = grid - grid.median() - trend
    level_map.local_extent = tuple((float(a[0]), float(a[-1])) for a in axes)
    values = level_map.local + trend
    level_map.low, level_map.high = float(values.min()), float(values.max())


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
    bic = n * math.log(max(rss, 1e-12) / n) + k * math.log(n)
    return coefficients, order, (terms @ coefficients)[keep], bic, _explained(target[keep], residual[keep], k)


def _explained(target: torch.Tensor, residual: torch.Tensor, terms: float) -> float:
    """The share of ``target``'s variance that a fit of ``terms`` degrees of freedom explains (adjusted R^2)."""
    n, total = target.numel(), float((target - target.mean()).square().sum())
    if total <= 0:
        return 0.0
    return 1 - (float(residual.square().sum()) / max(n - terms, 1)) / (total / max(n - 1, 1))


def _with_local_part(
    x: torch.Tensor, spatial_dims: int, floor: float | None, blocks: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    trend: LevelMap, levels: torch.Tensor, coords: torch.Tensor, trend_side: int,
) -> tuple[LevelMap, torch.Tensor, float] | None:
    """``trend`` (read on windows of ``trend_side`` Haar blocks) with a local part
    (:func:`~monai_dnaprior.noise.local_map.local_windows`), its values at the trend's windows (``levels`` at
    ``coords``) that read within :data:`_TRIM` robust stds above it, and the share of their variance it explains; None
    where no local part beats the trend."""
    side, width = local_windows(trend_side, spatial_dims)
    small, centres, _ = window_levels(x, spatial_dims, side, floor, floor is not None, blocks)
    trend_values = trend.log_at(centres.flatten(1).T).view(small.shape)
    local = fit_local(small.log() - trend_values, centres, len(trend.coefficients), width)
    if local is None:
        return None
    level_map = LevelMap(trend.coefficients, trend.order, spatial_dims, 0.0, 0.0, local=local.grid,
                         local_extent=local.extent)
    fitted = level_map.log_at(coords)
    residual = levels.log() - fitted
    spread = 1.4826 * float((residual - residual.median()).abs().median())
    keep = residual <= residual.median() + _TRIM * max(spread, 1e-6)
    terms = len(trend.coefficients) + local.dof_share * int(keep.sum())
    return level_map, fitted[keep], _explained(levels.log()[keep], residual[keep], terms)

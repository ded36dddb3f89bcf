"""The series Wiener pass: each patch of the series in a joint transform of space and volumes, shrunk coefficient by
coefficient with the energy a pilot estimate puts there.

The transform is separable: an orthonormal DCT over the patch's voxels (what BM4D does in space) and, across the
volumes, the eigenvectors of the pilot patch's second moments (the pilot's own principal components, so that the
series' few signal components each get one axis). Each noisy coefficient ``t`` becomes ``t p^2 / (p^2 + sigma^2)``
with ``p`` the pilot's coefficient and ``sigma^2`` the patch's noise variance (from the MP-PCA map, so the noise may
vary across the scan). Patches overlap; each is weighted by ``1 / (sigma^2 sum g^2)``, its estimate's noise
(BM3D's Wiener weight).

Given its pilot the pass is linear in the series, so each voxel's expected squared error is known up to the clean
signal: the noise it keeps, ``sigma^2 sum_il (D_mi V_cl)^2 g_il^2`` (the transform is orthonormal), and the signal it
shrinks away, ``(sum_il D_mi V_cl (g_il - 1) p_il)^2`` with the pilot's coefficients ``p`` for the clean ones; the
patches' errors averaged with the estimate's own weights (overlaps taken as fully correlated).
"""

from __future__ import annotations

import torch

from monai_dnaprior.filters.collaborative import dct_matrix
from monai_dnaprior.progress import report_share
from monai_dnaprior.series.patches import PatchGrid

__all__ = ["series_wiener"]


def _along(x: torch.Tensor, matrices: list[torch.Tensor], transpose: bool = False) -> torch.Tensor:
    """``x`` ``(P, *sides, C)`` with each patch axis multiplied by its matrix (or its transpose)."""
    for axis, m in enumerate(matrices, start=1):
        x = torch.movedim(torch.movedim(x, axis, -1) @ (m if transpose else m.T), -1, axis)
    return x


def series_wiener(
    series: torch.Tensor, pilot: torch.Tensor, variance: torch.Tensor, sides: tuple[int, ...], step: int,
    with_error: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The Wiener estimate of ``series`` ``(C, *spatial)`` given a ``pilot`` of the same shape and the noise
    ``variance`` map ``(*spatial)``; with ``with_error`` also its expected squared error, like the series."""
    channels = series.shape[0]
    grid = PatchGrid(series.shape[1:], sides, step, channels)
    work = torch.float32
    dcts = [dct_matrix(side, series.device).to(work) for side in grid.sides]
    squared = [d.square() for d in dcts]
    sums, weights = grid.new_sums(channels, series)
    errors = grid.new_sums(channels, series)[0] if with_error else None
    flat_variance = variance.reshape(1, -1)
    for k, index in enumerate(grid.chunks()):
        x = grid.gather(series, index).to(work)
        p = grid.gather(pilot, index).to(work)
        noise = grid.gather(flat_variance, index).to(work).mean((1, 2)).clamp_min(1e-12)
        _, vectors = torch.linalg.eigh((p.transpose(1, 2) @ p).double())
        vectors = vectors.to(work)
        shape = (x.shape[0], *grid.sides, channels)
        coeff = _along((x @ vectors).reshape(shape), dcts)
        guide = _along((p @ vectors).reshape(shape), dcts)
        energy = guide.square()
        per_patch = noise.reshape(-1, *[1] * (len(shape) - 1))
        gain = energy / (energy + per_patch)
        estimate = _along(coeff * gain, dcts, transpose=True).reshape(x.shape) @ vectors.transpose(1, 2)
        weight = 1.0 / (noise * gain.square().flatten(1).sum(1).clamp_min(1.0))
        grid.add(sums, weights, index, estimate, weight)
        if errors is not None:
            kept = _along(gain.square() * per_patch, squared, transpose=True).reshape(x.shape)
            lost = _along(guide * (gain - 1), dcts, transpose=True).reshape(x.shape) @ vectors.transpose(1, 2)
            grid.add(errors, None, index, kept @ vectors.square().transpose(1, 2) + lost.square(), weight)
        report_share((k + 1) * grid.chunk / max(len(grid), 1))
    estimate = grid.average(sums, weights).to(series.dtype)
    return (estimate, grid.average(errors, weights).to(series.dtype)) if errors is not None else estimate

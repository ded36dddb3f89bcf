"""Block matching: for patches on a regular grid, the most similar patches nearby (2D or 3D, any patch shape).

Similarity is the squared distance between patches of a guide image: the noisy observation for the hard-thresholding
pass (BM3D's first stage), a pilot estimate of the clean image for the Wiener passes and the NL-Bayes step (the
second stage of BM3D, Dabov et al., 2007), whose low noise makes the matches follow the anatomy, not the noise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

__all__ = ["grid_positions", "match_blocks", "patch_indices"]

_SHIFTED_VOXELS = 2**19  # bounds the stack of shifted copies of the pilot held at once (small: cache-friendly)


def grid_positions(size: int, step: int) -> torch.Tensor:
    """Start positions ``0, step, 2 step, ...`` along an axis of ``size`` patch positions, always with the last one."""
    positions = list(range(0, size, step))
    if positions[-1] != size - 1:
        positions.append(size - 1)
    return torch.tensor(positions)


def _flat(coords: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Row-major flat index of the ``(..., ndim)`` coordinates ``coords`` in an array of ``shape``."""
    strides = torch.tensor([math.prod(shape[d + 1 :]) for d in range(len(shape))], device=coords.device)
    return (coords * strides).sum(-1)


def patch_indices(corners: torch.Tensor, patch: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """Flat indices, in an image of ``shape``, of every voxel of the patches whose first corner is ``corners``
    ``(..., ndim)``: ``(..., prod(patch))``, the patch voxels in row-major order."""
    local = torch.stack(torch.meshgrid(*[torch.arange(p, device=corners.device) for p in patch], indexing="ij"), -1)
    return _flat(corners, shape)[..., None] + _flat(local.reshape(-1, len(patch)), shape)


def _box_sums_at(x: torch.Tensor, patch: Sequence[int], grids: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sums of ``x`` ``(N, *spatial)`` over the patches whose first corners lie on the grid ``grids`` (one index
    vector per axis), by running sums axis by axis: ``(N, *grid shape)``."""
    for axis, (p, g) in enumerate(zip(patch, grids), start=1):
        running = F.pad(x.movedim(axis, -1).cumsum(-1), (1, 0)).movedim(-1, axis)
        x = running.index_select(axis, g + p) - running.index_select(axis, g)
    return x


def _patch_distances(pilot: torch.Tensor, offsets: torch.Tensor, patch: Sequence[int], radius: Sequence[int],
                     grids: Sequence[torch.Tensor]) -> torch.Tensor:
    """Squared distance between each reference patch (on the grid) and the patch ``offset`` away:
    ``(references, offsets)``."""
    shape = pilot.shape
    padded = F.pad(pilot, [q for r in reversed(radius) for q in (r, r)])
    step = max(1, _SHIFTED_VOXELS // pilot.numel())
    parts = []
    for a in range(0, offsets.shape[0], step):
        shifted = torch.stack([
            padded[tuple(slice(r + o, r + o + s) for r, o, s in zip(radius, off, shape))]
            for off in offsets[a : a + step].tolist()
        ])
        parts.append(_box_sums_at((shifted - pilot).square(), patch, grids).flatten(1).T)
    return torch.cat(parts, 1)


def match_blocks(
    pilot: torch.Tensor, patch: Sequence[int], radius: Sequence[int], step: Sequence[int], group: int
) -> torch.Tensor:
    """Group every reference patch with its most similar neighbours in ``pilot``.

    Args:
        pilot: a clean-ish estimate, spatial dims only: ``(H, W)`` or ``(H, W, D)``.
        patch: patch size per axis (no larger than the image).
        radius: search radius per axis, in voxels, around each reference patch.
        step: spacing of the reference patches per axis (the last position is always included, so every voxel is
            covered).
        group: patches per group, the reference first.

    Returns:
        ``(references, group, ndim)`` corner coordinates of the grouped patches, most similar first. Where fewer
        than ``group`` patches lie within the search window, the reference fills the rest.
    """
    shape = pilot.shape
    positions = [s - p + 1 for s, p in zip(shape, patch)]
    axes = [grid_positions(n, t).to(pilot.device) for n, t in zip(positions, step)]
    refs = torch.stack([g.flatten() for g in torch.meshgrid(*axes, indexing="ij")], -1)
    if group <= 1:
        return refs[:, None]
    radius = [min(r, n - 1) for r, n in zip(radius, positions)]
    offsets = torch.tensor(list(itertools.product(*[range(-r, r + 1) for r in radius])), device=pilot.device)
    dist = _patch_distances(pilot, offsets, patch, radius, axes)
    for d, n in enumerate(positions):  # offsets that leave the image, axis by axis (no (refs, offsets, ndim) array)
        dist.masked_fill_((offsets[:, d] < -refs[:, d, None]) | (offsets[:, d] > n - 1 - refs[:, d, None]), float("inf"))
    dist[:, offsets.shape[0] // 2] = -1.0  # the reference itself (offset 0) always leads its group
    best_dist, best = torch.topk(dist, min(group, offsets.shape[0]), dim=1, largest=False, sorted=True)
    chosen = offsets[best]
    chosen[torch.isinf(best_dist)] = 0
    return refs[:, None] + chosen

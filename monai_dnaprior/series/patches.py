"""Overlapping patches of a series: a grid of patch corners, the patches gathered as ``(P, M, C)`` matrices (P
patches, M voxels each, C volumes), and estimates added back into the series with a weight per patch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

__all__ = ["PatchGrid"]


def _starts(length: int, side: int, step: int) -> list[int]:
    """Patch corners along one axis: every ``step``, and one flush with the end so that every voxel is covered."""
    last = max(length - side, 0)
    return sorted(set(range(0, last + 1, step)) | {last})


class PatchGrid:
    """Patches of side ``sides`` with corners every ``step`` voxels over a spatial ``shape`` (the last corner flush
    with the end), visited in chunks that hold about ``chunk_values`` values for ``channels`` volumes (bounded
    memory, whatever the series' size)."""

    def __init__(self, shape: Sequence[int], sides: Sequence[int], step: int, channels: int = 1,
                 chunk_values: int = 2**22) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.sides = tuple(min(int(p), s) for p, s in zip(sides, self.shape))
        self.voxels = math.prod(self.shape)
        strides = [1] * len(self.shape)
        for d in range(len(self.shape) - 2, -1, -1):
            strides[d] = strides[d + 1] * self.shape[d + 1]
        axes = [torch.tensor(_starts(s, p, step)) * st for s, p, st in zip(self.shape, self.sides, strides)]
        offsets = [torch.arange(p) * st for p, st in zip(self.sides, strides)]
        self.corners = _outer_sum(axes)  # (P,) flat index of each patch's first voxel
        self.offsets = _outer_sum(offsets)  # (M,) flat offsets of a patch's voxels from its corner
        self.chunk = max(64, chunk_values // (self.patch_voxels * max(channels, 1)))

    @property
    def patch_voxels(self) -> int:
        return int(self.offsets.numel())

    def __len__(self) -> int:
        return int(self.corners.numel())

    def chunks(self) -> Iterator[torch.Tensor]:
        """Flat voxel indices ``(P_chunk, M)`` of the patches, chunk by chunk."""
        for start in range(0, len(self), self.chunk):
            yield self.corners[start:start + self.chunk, None] + self.offsets[None, :]

    @staticmethod
    def gather(series: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The patches ``(P, M, C)`` of ``series`` ``(C, *shape)`` at the flat voxel ``index`` ``(P, M)``."""
        flat = series.reshape(series.shape[0], -1)
        return flat[:, index.to(series.device)].permute(1, 2, 0)

    def new_sums(self, channels: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed sums ``(C, voxels)`` and weights ``(voxels,)`` for :meth:`add`."""
        return (torch.zeros(channels, self.voxels, dtype=like.dtype, device=like.device),
                torch.zeros(self.voxels, dtype=like.dtype, device=like.device))

    @staticmethod
    def add(sums: torch.Tensor, weights: torch.Tensor | None, index: torch.Tensor, values: torch.Tensor,
            weight: torch.Tensor) -> None:
        """Add ``values`` ``(P, M, C)`` at ``index`` ``(P, M)`` into ``sums``, each patch weighted by ``weight``
        ``(P,)``, and the weights into ``weights`` (None: summed elsewhere already)."""
        index = index.to(sums.device).reshape(-1)
        w = weight[:, None].expand(-1, values.shape[1])
        sums.index_add_(1, index, (values * w[..., None]).reshape(-1, values.shape[-1]).T.to(sums.dtype))
        if weights is not None:
            weights.index_add_(0, index, w.reshape(-1).to(weights.dtype))

    def average(self, sums: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The weighted average ``(C, *shape)``."""
        return (sums / weights.clamp_min(1e-30)).reshape(sums.shape[0], *self.shape)


def _outer_sum(parts: list[torch.Tensor]) -> torch.Tensor:
    """Every sum of one element of each part, the last part varying fastest, flattened."""
    total = parts[0]
    for p in parts[1:]:
        total = (total[:, None] + p[None, :]).reshape(-1)
    return total

"""Large images filtered in slabs along their last axis, each with a margin for its patches and searches, so that
the block matching's distance table (references x offsets) stays bounded."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from monai_dnaprior.progress import in_shares, sub_span

__all__ = ["by_channel", "in_slabs"]

_MATCH_TABLE = 2**25  # references x offsets of one block matching; larger images go in slabs along the last axis
_MIN_SLAB = 4  # reference positions along the last axis per slab, at the least


def _slabs(depth: int, slab: int, margin: int) -> list[tuple[int, int, int, int]]:
    """``(start, stop, keep_start, keep_stop)`` of overlapping slabs covering ``depth`` along an axis."""
    out = []
    for k in range(0, depth, slab):
        start, stop = max(0, k - margin), min(depth, k + slab + margin)
        out.append((start, stop, k - start, min(k + slab, depth) - start))
    return out


def _slab_width(shape: Sequence[int], patch: Sequence[int], radius: Sequence[int], step: Sequence[int],
                matched: bool) -> int:
    """Positions along the last axis per slab such that the block matching's distance table, references x offsets,
    stays bounded (2D: columns of a large image; 3D: slices of a large volume)."""
    refs_across = math.prod(-(-max(1, s - p + 1) // t) for s, p, t in zip(shape[:-1], patch[:-1], step[:-1]))
    offsets = math.prod(2 * r + 1 for r in radius) if matched else 1
    return max(_MIN_SLAB * step[-1], _MATCH_TABLE * step[-1] // (refs_across * offsets))


def in_slabs(
    filter_part: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    noisy: torch.Tensor, pilot: torch.Tensor, patch: Sequence[int], radius: Sequence[int], step: Sequence[int],
    matched: bool,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``filter_part(noisy, pilot)`` over a single-channel image; a large one slab by slab along its last axis
    (bounded memory), each slab with a margin wide enough for its patches and searches. Every output (a tensor
    or a tuple of them, each shaped like ``noisy``) is put together from the slabs' kept parts."""
    slab = _slab_width(noisy.shape, patch, radius, step, matched)
    if slab >= noisy.shape[-1]:
        return filter_part(noisy, pilot)
    outs: list[torch.Tensor] | None = None
    slabs = _slabs(noisy.shape[-1], slab, patch[-1] + radius[-1])
    for k, (start, stop, keep0, keep1) in enumerate(slabs):
        with sub_span(k / len(slabs), (k + 1) / len(slabs)):
            part = filter_part(noisy[..., start:stop], pilot[..., start:stop])
        parts = part if isinstance(part, tuple) else (part,)
        outs = outs or [torch.empty_like(noisy) for _ in parts]
        for out, p in zip(outs, parts):
            out[..., start + keep0 : start + keep1] = p[..., keep0:keep1]
    return tuple(outs) if len(outs) > 1 else outs[0]


def by_channel(
    noisy: torch.Tensor, guide: torch.Tensor, image_filter: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``image_filter(noisy_image, guide_image)`` over every image of ``(B, C, *spatial)`` ``noisy`` and its ``guide``,
    the progress in equal shares."""
    out = torch.empty_like(noisy)
    for i in in_shares(noisy.shape[0] * noisy.shape[1]):
        b, c = divmod(i, noisy.shape[1])
        out[b, c] = image_filter(noisy[b, c], guide[b, c])
    return out

"""An optional progress callback for long denoising calls, set for a block of code rather than passed through
every layer: ``with reporting_progress(callback): transform(img)``. The engine calls ``callback(done, total)`` in
voxels as the fit and the refinement go on; nothing happens where none is set."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["ProgressCallback", "active_progress", "reporting_progress"]

ProgressCallback = Callable[[int, int], None]

_ACTIVE: ContextVar[ProgressCallback | None] = ContextVar("monai_dnaprior_progress", default=None)


@contextmanager
def reporting_progress(callback: ProgressCallback | None) -> Iterator[None]:
    """Make ``callback(done, total)`` the progress callback of the denoising calls made inside the block."""
    token = _ACTIVE.set(callback)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_progress() -> ProgressCallback | None:
    """The progress callback set by the innermost :func:`reporting_progress`, or None."""
    return _ACTIVE.get()

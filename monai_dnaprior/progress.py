"""Progress of long denoising calls, reported as the work goes on.

A callback is set for a block of code rather than passed through every layer:
``with reporting_progress(callback): transform(img)`` makes the call report ``callback(done, total)`` in voxels.
Inside, the work is split into spans (:meth:`ProgressTracker.span`: the noise estimate, each filter pass, each
fitted slice), and the innermost loops (groups of patches, slabs, iterations) report the share of their span that is
done (:func:`report_share`), so the reported share follows the time spent. Nothing happens where no callback is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["ProgressCallback", "ProgressTracker", "active_progress", "in_shares", "report_share",
           "reporting_progress", "sub_span"]

ProgressCallback = Callable[[int, int], None]

_ACTIVE: ContextVar[ProgressCallback | None] = ContextVar("monai_dnaprior_progress", default=None)
_SPAN: ContextVar[tuple[ProgressTracker, float, float] | None] = ContextVar("monai_dnaprior_span", default=None)


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


class ProgressTracker:
    """The work of one denoising call, ``total`` units (voxels), reported to ``callback(done, total)``."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0.0

    def report(self, done: float) -> None:
        """Set the work done (never backwards) and report it."""
        self.done = min(max(self.done, done), self.total)
        if self.callback is not None:
            self.callback(int(self.done), self.total)

    def advance(self, units: float) -> None:
        """Mark ``units`` more as done."""
        self.report(self.done + units)

    @contextmanager
    def span(self, units: float) -> Iterator[None]:
        """A stage of ``units`` of the work: :func:`report_share` inside reports a share of it; at its end all of it
        is done."""
        start = self.done
        token = _SPAN.set((self, start, units))
        try:
            yield
        finally:
            _SPAN.reset(token)
            self.report(start + units)


def report_share(fraction: float) -> None:
    """Report that ``fraction`` (0-1) of the innermost span is done; nothing outside a span."""
    span = _SPAN.get()
    if span is not None:
        tracker, start, units = span
        tracker.report(start + units * min(max(fraction, 0.0), 1.0))


@contextmanager
def sub_span(low: float, high: float) -> Iterator[None]:
    """Narrow the innermost span to its ``[low, high]`` share (a slab of a pass, a slice of a fit), so that the
    loops inside report within it."""
    span = _SPAN.get()
    if span is None:
        yield
        return
    tracker, start, units = span
    token = _SPAN.set((tracker, start + units * low, units * (high - low)))
    try:
        yield
    finally:
        _SPAN.reset(token)


def in_shares(count: int) -> Iterator[int]:
    """``0, ..., count - 1``, each step inside its own share of the innermost span (:func:`sub_span`): the channels
    of an image, the passes of a filter."""
    for k in range(count):
        with sub_span(k / count, (k + 1) / count):
            yield k

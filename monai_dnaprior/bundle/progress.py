"""Progress of a folder run inside each image: log lines naming the file, the share of its voxels done, and the
time left by voxels."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ImageProgress", "format_duration", "naming_the_file"]


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min`` or ``3.5 h``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ImageProgress:
    """A ``progress(done, total)`` callback for :func:`monai_dnaprior.denoising.denoise` (which reports its work as
    it goes: the noise estimate, each filter pass, each network iteration) that logs, at most every ``interval``
    seconds and at the end,
    ``<file>: 30% (98304 of 327680 voxels), about 2 min left in this image, 25 min in all``.

    Time left in this image: the seconds so far per unit of work done, times the work still to do. Time left in
    all: that, plus the voxels of the files after this one at the seconds per voxel of everything denoised so far
    in this run (the files before this one and this image's share done).

    Args:
        name: the file's name, in every line.
        voxels: this image's voxel count.
        voxels_after: the voxels of the files still to do after this one.
        logger: where the lines go (INFO).
        tag: a prefix, e.g. ``"[rank 1/2] [3/10] "``.
        interval: least seconds between two lines.
        unit: what the engine's work unit is called.
        seconds_before: the seconds spent on the files denoised before this one in the run.
        voxels_before: the voxels of those files.
    """

    def __init__(
        self,
        name: str,
        voxels: int = 1,
        voxels_after: int = 0,
        logger: logging.Logger | None = None,
        tag: str = "",
        interval: float = 10.0,
        unit: str = "voxels",
        seconds_before: float = 0.0,
        voxels_before: int = 0,
    ) -> None:
        self.name, self.voxels, self.voxels_after = name, max(1, voxels), max(0, voxels_after)
        self.logger = logger or logging.getLogger("monai_dnaprior.bundle")
        self.tag, self.interval, self.unit = tag, interval, unit
        self.seconds_before, self.voxels_before = max(0.0, seconds_before), max(0, voxels_before)
        self.start = time.perf_counter()
        self.last_log = -float("inf")
        self.calls = 0
        self.finished = False

    def time_left(self, done: float, total: float, elapsed: float) -> tuple[float, float]:
        """Seconds left in this image and in all, after ``elapsed`` seconds with ``done`` of ``total`` units done."""
        fraction = min(1.0, max(done, 0.0) / total)
        left_here = elapsed / done * (total - done) if done > 0 else float("inf")
        per_voxel = (self.seconds_before + elapsed) / max(1e-9, self.voxels_before + fraction * self.voxels)
        return left_here, left_here + per_voxel * self.voxels_after

    def __call__(self, done: int, total: int) -> None:
        self.calls += 1
        now = time.perf_counter()
        if total <= 0 or self.finished or (now - self.last_log < self.interval and done < total):
            return
        self.last_log, self.finished = now, done >= total  # the last line once, however often the end is reported
        done = min(max(done, 0), total)
        if done <= 0:
            self.logger.info("%s%s: 0%% (0 of %d %s)", self.tag, self.name, total, self.unit)
            return
        left_here, left_all = self.time_left(done, total, now - self.start)
        self.logger.info("%s%s: %.0f%% (%d of %d %s), about %s left in this image, %s in all", self.tag, self.name,
                         100 * done / total, done, total, self.unit, format_duration(left_here),
                         format_duration(left_all))


class _Prefix(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_dnaprior_prefixed", False):
            record.msg = f"{self.prefix}{record.msg}"
            record._dnaprior_prefixed = True
        return True


@contextmanager
def naming_the_file(prefix: str, logger_name: str = "monai_dnaprior") -> Iterator[None]:
    """Prefix the method's own log lines (logger ``monai_dnaprior``: noise level, iterations ...) with ``prefix``,
    e.g. the file's name, for the duration of the block."""
    target = logging.getLogger(logger_name)
    prefix_filter = _Prefix(prefix)
    target.addFilter(prefix_filter)
    try:
        yield
    finally:
        target.removeFilter(prefix_filter)

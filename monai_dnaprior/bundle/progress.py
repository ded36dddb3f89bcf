"""Progress of a folder run inside each image: log lines naming the file, the share of its voxels done, and the
time left by voxels."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ImageProgress", "SliceProgress", "naming_the_file"]


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ImageProgress:
    """A ``progress(done, total)`` callback for :func:`monai_dnaprior.denoising.denoise` (which counts in voxels) that
    logs, at most every ``interval`` seconds and at the end,
    ``<file>: 30% (98304 of 327680 voxels), about 2 min left in this image, 25 min in all``.

    The time left in all is by voxels: this image's rate (seconds per voxel, so far) times the voxels still to do,
    this image's and those of the files after it.

    Args:
        name: the file's name, in every line.
        voxels: this image's voxel count.
        voxels_after: the voxels of the files still to do after this one.
        logger: where the lines go (INFO).
        tag: a prefix, e.g. ``"[rank 1/2] [3/10] "``.
        interval: least seconds between two lines.
        unit: what the engine's work unit is called.
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
    ) -> None:
        self.name, self.voxels, self.voxels_after = name, max(1, voxels), max(0, voxels_after)
        self.logger = logger or logging.getLogger("monai_dnaprior.bundle")
        self.tag, self.interval, self.unit = tag, interval, unit
        self.start = time.perf_counter()
        self.last_log = -float("inf")
        self.calls = 0

    def __call__(self, done: int, total: int) -> None:
        self.calls += 1
        now = time.perf_counter()
        if total <= 0 or (now - self.last_log < self.interval and done < total):
            return
        self.last_log = now
        elapsed = now - self.start
        fraction = min(1.0, max(done, 0) / total)
        if fraction <= 0:
            self.logger.info("%s%s: 0%% (0 of %d %s)", self.tag, self.name, total, self.unit)
            return
        left_here = elapsed * (1 - fraction) / fraction
        per_voxel = elapsed / (fraction * self.voxels)
        left_all = left_here + per_voxel * self.voxels_after
        self.logger.info("%s%s: %.0f%% (%d of %d %s), about %s left in this image, %s in all", self.tag, self.name,
                         100 * fraction, done, total, self.unit, _duration(left_here), _duration(left_all))


SliceProgress = ImageProgress


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

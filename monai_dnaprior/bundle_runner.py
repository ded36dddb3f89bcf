"""The bundle's folder runner: denoise every image of a folder (this process's share under ``torch.distributed``),
one file at a time, logging progress, skipping unreadable files and finished outputs, failing loudly at the end."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping
from typing import NoReturn

import numpy as np
import torch.distributed as dist

from monai_dnaprior.bundle_io import find_inputs, plan_outputs, save_atomic

__all__ = ["DenoiseFolder", "DenoiseFolderError", "shard"]

logger = logging.getLogger("monai_dnaprior.bundle")


class DenoiseFolderError(RuntimeError):
    """Some inputs of the folder could not be denoised (or none could be found)."""


def shard(items: list, rank: int, world_size: int) -> list:
    """The share of ``items`` for ``rank`` of ``world_size``: every item in exactly one share, sizes differing by
    at most one."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}.")
    return items[rank::world_size]


def _as_bool(value: bool | str | int) -> bool:
    """A flag from a config or a command line, where ``--overwrite false`` arrives as the string ``"false"``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"Expected true or false, got {value!r}.")
        return text in ("true", "1", "yes")
    return bool(value)


def _root_cause(error: BaseException) -> str:
    """The innermost error of a chain (MONAI's ``Compose`` wraps errors), on one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {text[:300]}"


class DenoiseFolder:
    """Denoise every image in ``dataset_dir`` into ``output_dir``, ``<name>_<output_postfix>.nii.gz`` per input, with
    the input's shape and affine. Under ``torch.distributed`` each rank takes ``inputs[rank::world_size]``.

    A file that cannot be read or denoised is logged and skipped; the others are still processed, and ``run``
    fails at the end. Outputs are written atomically, never over an input, and existing outputs are kept (skipped)
    unless ``overwrite``.

    Args:
        dataset_dir: folder of NIfTI / DICOM / MetaImage / NRRD files and DICOM series sub-folders.
        output_dir: folder of the outputs (created); not an input's folder.
        transform: maps ``{image_key: path}`` to a dict whose ``image_key`` holds the channel-first denoised image
            (e.g. a ``Compose`` of ``LoadImaged``, ``EnsureChannelFirstd`` and ``DNAPriorDenoised``).
        image_key: the key of the image in ``transform``'s dictionaries.
        output_postfix: appended to the input's name.
        output_ext: ``".nii.gz"`` or ``".nii"``.
        output_dtype: data type of the written images.
        overwrite: re-denoise inputs whose output exists.
        rank: this process's rank; from ``torch.distributed`` when None (0 when it is not initialised).
        world_size: the number of processes; from ``torch.distributed`` when None (1 when it is not initialised).
        exit_on_error: on failure log one error line and raise ``SystemExit(1)`` (what a command line wants);
            when False raise the error instead (what a Python caller wants).
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        transform: Callable[[Mapping[Hashable, object]], Mapping[Hashable, object]],
        image_key: str = "image",
        output_postfix: str = "denoised",
        output_ext: str = ".nii.gz",
        output_dtype: str = "float32",
        overwrite: bool | str = False,
        rank: int | None = None,
        world_size: int | None = None,
        exit_on_error: bool | str = True,
    ) -> None:
        if output_ext not in (".nii.gz", ".nii"):
            raise ValueError(f"output_ext must be '.nii.gz' or '.nii', got {output_ext!r}.")
        self.dataset_dir = os.fspath(dataset_dir)
        self.output_dir = os.fspath(output_dir)
        self.transform = transform
        self.image_key = image_key
        self.output_postfix = output_postfix
        self.output_ext = output_ext
        self.output_dtype = np.dtype(output_dtype)
        self.overwrite = _as_bool(overwrite)
        self.rank = rank
        self.world_size = world_size
        self.exit_on_error = _as_bool(exit_on_error)

    def _ranks(self) -> tuple[int, int]:
        distributed = dist.is_available() and dist.is_initialized()
        rank = self.rank if self.rank is not None else (dist.get_rank() if distributed else 0)
        world = self.world_size if self.world_size is not None else (dist.get_world_size() if distributed else 1)
        return int(rank), int(world)

    def _fail(self, message: str, error: Exception) -> NoReturn:
        logger.error(message)
        if self.exit_on_error:
            raise SystemExit(1)
        raise error

    def run(self) -> dict[str, list[str]]:
        """Denoise this process's share of the inputs.

        Returns:
            the inputs ``"written"``, ``"skipped"`` (output already there) and ``"failed"``.

        Raises:
            SystemExit: (``exit_on_error``) no inputs, an unsafe ``output_dir``, or any input failed.
            FileNotFoundError, NotADirectoryError, ValueError, DenoiseFolderError: the same, without ``exit_on_error``.
        """
        rank, world = self._ranks()
        tag = f"[rank {rank}/{world}] " if world > 1 else ""
        try:
            inputs = find_inputs(self.dataset_dir)
            outputs = plan_outputs(inputs, self.output_dir, self.output_postfix, self.output_ext)
        except (OSError, ValueError) as e:
            self._fail(f"{tag}{e}", e)
        share = shard(list(zip(inputs, outputs)), rank, world)
        logger.info("%sdenoising %d of %d images from %s into %s", tag, len(share), len(inputs), self.dataset_dir,
                    self.output_dir)
        summary: dict[str, list[str]] = {"written": [], "skipped": [], "failed": []}
        start, fitted_seconds = time.perf_counter(), 0.0
        for i, (src, dst) in enumerate(share, 1):
            name = os.path.basename(os.path.normpath(src))
            if os.path.exists(dst) and not self.overwrite:
                logger.info("%s[%d/%d] %s: %s exists, skipped (overwrite=True re-denoises)", tag, i, len(share),
                            name, os.path.basename(dst))
                summary["skipped"].append(src)
                continue
            logger.info("%s[%d/%d] %s: denoising", tag, i, len(share), name)
            t0 = time.perf_counter()
            try:
                data = self.transform({self.image_key: src})
                save_atomic(data[self.image_key], dst, self.output_dtype)
            except Exception as e:  # one bad file must not stop the others
                logger.error("%s[%d/%d] %s: FAILED after %.1f s: %s", tag, i, len(share), name,
                             time.perf_counter() - t0, _root_cause(e))
                logger.debug("%s%s failed", tag, src, exc_info=True)
                summary["failed"].append(src)
                continue
            seconds = time.perf_counter() - t0
            fitted_seconds += seconds
            done = len(summary["written"]) + 1
            left = (len(share) - i) * fitted_seconds / done
            logger.info("%s[%d/%d] %s: wrote %s in %.1f s (about %.0f s left)", tag, i, len(share), name, dst,
                        seconds, left)
            summary["written"].append(src)
        logger.info("%sdone in %.1f s: %d written, %d skipped, %d failed", tag, time.perf_counter() - start,
                    len(summary["written"]), len(summary["skipped"]), len(summary["failed"]))
        if summary["failed"]:
            names = ", ".join(os.path.basename(os.path.normpath(p)) for p in summary["failed"])
            message = f"{tag}{len(summary['failed'])} of {len(share)} images failed: {names}"
            self._fail(message, DenoiseFolderError(message))
        return summary

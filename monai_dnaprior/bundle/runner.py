"""The bundle's folder runner: denoise every image of a folder (this process's share under ``torch.distributed``),
one file at a time, logging progress inside each image, skipping unreadable files and outputs already made with the
same settings, and failing loudly at the end, once, for every rank."""

from __future__ import annotations

import datetime
import heapq
import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import NoReturn

import torch.distributed as dist
from monai.transforms import LoadImage

import monai_dnaprior
from monai_dnaprior.bundle.checks import as_flag, root_cause
from monai_dnaprior.bundle.inputs import check_input, find_inputs, input_voxels, noise_map_path
from monai_dnaprior.bundle.outputs import check_writable, plan_outputs, save_atomic, written_dtype
from monai_dnaprior.bundle.sidecar import fingerprint, is_current, plain, sidecar_path, transform_settings, write_sidecar
from monai_dnaprior.bundle.progress import ImageProgress, format_duration, naming_the_file
from monai_dnaprior.progress import reporting_progress

__all__ = ["NOISE_MAP_KEY", "DenoiseFolder", "DenoiseFolderError", "shard"]

logger = logging.getLogger("monai_dnaprior.bundle")

NOISE_MAP_KEY = "noise_map"
"""The key under which an input's noise map (``noise_map_dir``) reaches the transform, loaded channel-first."""
GATHER_TIMEOUT = datetime.timedelta(days=7)
"""How long a rank that has finished waits for the others to report their failures (a fit can take hours)."""


class DenoiseFolderError(RuntimeError):
    """Some inputs of the folder could not be denoised (or none could be found)."""


def shard(items: Sequence, rank: int, world_size: int, sizes: Sequence[float] | None = None) -> list:
    """The share of ``items`` for ``rank`` of ``world_size``, balanced by ``sizes`` (e.g. voxel counts, which the
    time goes by): the largest item first onto the least-loaded rank (the lowest rank on a tie), and so on down.
    Deterministic, every item in exactly one share, each share in the items' order. Without ``sizes`` every item
    counts the same and the share sizes differ by at most one.

    Raises:
        ValueError: ``rank`` is not in ``[0, world_size)``, or ``sizes`` does not match ``items``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}.")
    sizes = [1.0] * len(items) if sizes is None else [float(s) for s in sizes]
    if len(sizes) != len(items):
        raise ValueError(f"sizes has {len(sizes)} entries for {len(items)} items.")
    loads = [(0.0, r) for r in range(world_size)]  # (load, rank): a tie goes to the lower rank
    owner = [0] * len(items)
    for i in sorted(range(len(items)), key=lambda i: (-sizes[i], i)):
        load, r = heapq.heappop(loads)
        owner[i] = r
        heapq.heappush(loads, (load + sizes[i], r))
    return [item for item, r in zip(items, owner) if r == rank]


class DenoiseFolder:
    """Denoise every image in ``dataset_dir`` into ``output_dir``, ``<name>_<output_postfix>.nii.gz`` per input, with
    the input's shape, affine, (NIfTI) header and data type. Under ``torch.distributed`` each rank takes its share,
    balanced by voxel count (:func:`shard`).

    A file that cannot be read or denoised is logged and skipped; the others are still processed. At the end the
    ranks gather their failures (no rank exits early, so none is killed while another still works), rank 0 lists
    them once, and ``run`` fails. Outputs are written atomically, never over an input, each with a JSON sidecar
    holding a fingerprint of the settings and of the input; an output whose fingerprint matches is kept (skipped),
    one made with other settings or from a changed input is redone, and ``overwrite`` redoes every one.

    Args:
        dataset_dir: folder of NIfTI / DICOM / MetaImage / NRRD files and DICOM series sub-folders, a DICOM series
            folder, or one image file.
        output_dir: folder of the outputs (created, and checked writable before the first fit); not an input's folder.
        transform: maps ``{image_key: path}`` to a dict whose ``image_key`` holds the channel-first denoised image
            (e.g. a ``Compose`` of ``LoadImaged``, ``EnsureChannelFirstd`` and ``DNAPriorDenoised``).
        image_key: the key of the image in ``transform``'s dictionaries.
        output_postfix: appended to the input's name.
        output_ext: ``".nii.gz"`` or ``".nii"``.
        output_dtype: data type of the written images; None: the input's (a NIfTI input's stored integer or float
            type, with its scaling; float32 for other formats), integers rounded and clipped.
        overwrite: re-denoise every input, even those whose output was made with the same settings.
        rank: this process's rank; from ``torch.distributed`` when None (0 when it is not initialised).
        world_size: the number of processes; from ``torch.distributed`` when None (1 when it is not initialised).
        exit_on_error: on failure log one error line and raise ``SystemExit(1)`` (what a command line wants);
            when False raise the error instead (what a Python caller wants).
        settings: what the settings fingerprint is made of; :func:`transform_settings` of ``transform`` when None.
        progress_interval: least seconds between two progress lines inside an image.
        noise_map_dir: a folder of noise maps, one per input under the input's name
            (:func:`~monai_dnaprior.bundle.inputs.noise_map_path`), each passed to ``transform`` loaded under
            :data:`NOISE_MAP_KEY` (its ``DNAPriorDenoised`` then takes ``noise_map_key``); an input without one fails.
            Its files count in the settings fingerprint.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        transform: Callable[[Mapping[Hashable, object]], Mapping[Hashable, object]],
        image_key: str = "image",
        output_postfix: str = "denoised",
        output_ext: str = ".nii.gz",
        output_dtype: str | None = None,
        overwrite: bool | str = False,
        rank: int | None = None,
        world_size: int | None = None,
        exit_on_error: bool | str = True,
        settings: object = None,
        progress_interval: float = 10.0,
        noise_map_dir: str | os.PathLike | None = None,
    ) -> None:
        if output_ext not in (".nii.gz", ".nii"):
            raise ValueError(f"output_ext must be '.nii.gz' or '.nii', got {output_ext!r}.")
        self.dataset_dir = os.fspath(dataset_dir)
        self.output_dir = os.fspath(output_dir)
        self.transform = transform
        self.image_key = image_key
        self.output_postfix = output_postfix
        self.output_ext = output_ext
        self.output_dtype = None if output_dtype is None else written_dtype(output_dtype)
        self.overwrite = as_flag(overwrite, "overwrite")
        self.rank = rank
        self.world_size = world_size
        self.exit_on_error = as_flag(exit_on_error, "exit_on_error")
        self.settings = settings
        self.progress_interval = float(progress_interval)
        self.noise_map_dir = None if noise_map_dir is None else os.fspath(noise_map_dir)

    def _distributed(self) -> bool:
        return self.rank is None and self.world_size is None and dist.is_available() and dist.is_initialized()

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

    def _settings(self) -> dict:
        settings = self.settings if self.settings is not None else transform_settings(self.transform)
        dtype = "input's" if self.output_dtype is None else str(self.output_dtype)
        return {"monai_dnaprior": monai_dnaprior.__version__, "output_dtype": dtype, "transform": plain(settings)}

    def run(self) -> dict[str, list[str]]:
        """Denoise this process's share of the inputs.

        Returns:
            the inputs ``"written"``, ``"skipped"`` (output already made with the same settings) and ``"failed"``
            (under ``torch.distributed``: this rank's; rank 0 reports every rank's).

        Raises:
            SystemExit: (``exit_on_error``) no inputs, an unsafe or read-only ``output_dir``, or any input failed.
            FileNotFoundError, ValueError, PermissionError, DenoiseFolderError: the same, without ``exit_on_error``.
        """
        rank, world = self._ranks()
        tag = f"[rank {rank}/{world}] " if world > 1 else ""
        group = None
        if self._distributed() and world > 1:  # a CPU group with a long timeout for the final gather
            group = dist.new_group(backend="gloo", timeout=GATHER_TIMEOUT)
        try:
            if self.noise_map_dir is not None and os.path.realpath(self.noise_map_dir) == os.path.realpath(
                    self.dataset_dir):
                raise ValueError(f"noise_map_dir is dataset_dir ({self.dataset_dir!r}): each input would be its own "
                                 "noise map; put the maps in a folder of their own.")
            inputs = find_inputs(self.dataset_dir)
            outputs = plan_outputs(inputs, self.output_dir, self.output_postfix, self.output_ext)
            check_writable(self.output_dir)
        except (OSError, ValueError) as e:
            self._fail(f"{tag}{e}", e)
        sizes = [input_voxels(src) for src in inputs]
        share = shard(list(zip(inputs, outputs, sizes)), rank, world, sizes)
        voxels = [n for _, _, n in share]
        settings = self._settings()
        logger.info("%sdenoising %d of %d images from %s into %s", tag, len(share), len(inputs), self.dataset_dir,
                    self.output_dir)
        summary: dict[str, list[str]] = {"written": [], "skipped": [], "failed": []}
        start, fitted_seconds, fitted_voxels = time.perf_counter(), 0.0, 0
        for i, (src, dst, _) in enumerate(share, 1):
            name = os.path.basename(os.path.normpath(src))
            where = f"{tag}[{i}/{len(share)}] {name}"
            try:
                noise_map = None if self.noise_map_dir is None else noise_map_path(src, self.noise_map_dir)
                digest = fingerprint(settings, src, noise_map)
            except (OSError, ValueError) as e:
                logger.error("%s: FAILED: %s", where, root_cause(e))
                summary["failed"].append(src)
                continue
            current = is_current(dst, digest)
            if current and not self.overwrite:
                logger.info("%s: %s exists with the same settings, skipped (overwrite=True re-denoises)", where,
                            os.path.basename(dst))
                summary["skipped"].append(src)
                continue
            if current is False and not self.overwrite:
                logger.info("%s: %s was made with other settings or from another input; denoising again", where,
                            os.path.basename(dst))
            logger.info("%s: denoising", where)
            t0 = time.perf_counter()
            reporter = ImageProgress(name, voxels[i - 1], sum(voxels[i:]), logger, f"{tag}[{i}/{len(share)}] ",
                                     self.progress_interval, seconds_before=fitted_seconds,
                                     voxels_before=fitted_voxels)
            try:
                check_input(src)
                item: dict[Hashable, object] = {self.image_key: src}
                if noise_map is not None:
                    item[NOISE_MAP_KEY] = LoadImage(image_only=True, ensure_channel_first=True)(noise_map)
                with reporting_progress(reporter), naming_the_file(f"{where}: "):
                    data = self.transform(item)
                if os.path.exists(sidecar_path(dst)):
                    os.remove(sidecar_path(dst))  # never a sidecar that vouches for an output being replaced
                save_atomic(data[self.image_key], dst, self.output_dtype, source=src)
                write_sidecar(dst, settings, src, digest, noise_map)
            except Exception as e:  # one bad file must not stop the others
                logger.error("%s: FAILED after %.1f s: %s", where, time.perf_counter() - t0, root_cause(e))
                logger.debug("%s%s failed", tag, src, exc_info=True)
                summary["failed"].append(src)
                continue
            seconds = time.perf_counter() - t0
            fitted_seconds, fitted_voxels = fitted_seconds + seconds, fitted_voxels + voxels[i - 1]
            left = sum(voxels[i:]) * fitted_seconds / max(1, fitted_voxels)
            logger.info("%s: wrote %s in %.1f s (about %s left)", where, dst, seconds, format_duration(left))
            summary["written"].append(src)
        logger.info("%sdone in %.1f s: %d written, %d skipped, %d failed", tag, time.perf_counter() - start,
                    len(summary["written"]), len(summary["skipped"]), len(summary["failed"]))
        failed, total = summary["failed"], len(share)
        if group is not None:  # every rank waits here: none exits while another still works
            gathered: list = [None] * world
            dist.all_gather_object(gathered, (summary["failed"], len(share)), group=group)
            failed = [p for rank_failed, _ in gathered for p in rank_failed]
            total = sum(n for _, n in gathered)
            dist.destroy_process_group(group)
            if failed and rank != 0:
                logger.info("%s%d of %d images failed across the ranks; rank 0 lists them", tag, len(failed), total)
                return summary
        if failed:
            names = ", ".join(os.path.basename(os.path.normpath(p)) for p in sorted(failed))
            message = f"{tag}{len(failed)} of {total} images failed: {names}"
            self._fail(message, DenoiseFolderError(message))
        return summary

"""Files in and out of the bundle: find the input images, name the outputs, refuse unsafe output folders,
and write each output atomically (a temporary file in the output folder, then ``os.replace``)."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
from numpy.typing import DTypeLike

__all__ = [
    "IMAGE_SUFFIXES",
    "find_inputs",
    "input_stem",
    "plan_outputs",
    "save_atomic",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".mha", ".mhd", ".nrrd", ".nhdr")
"""File types taken as inputs; a sub-folder holding DICOM files is taken as one DICOM series."""


def _is_dicom_file(path: str) -> bool:
    """A ``.dcm`` file, or any file with the DICOM preamble (``DICM`` at byte 128)."""
    if path.lower().endswith(".dcm"):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _is_dicom_series(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_file() and not e.name.startswith(".") and _is_dicom_file(e.path) for e in entries)


def find_inputs(dataset_dir: str | os.PathLike) -> list[str]:
    """The images directly in ``dataset_dir``, sorted: files ending in :data:`IMAGE_SUFFIXES`, and sub-folders
    that hold DICOM files (each read as one series). Hidden entries are ignored; nothing is searched recursively.

    Raises:
        FileNotFoundError: ``dataset_dir`` does not exist.
        NotADirectoryError: ``dataset_dir`` is a file.
        ValueError: no input image was found.
    """
    folder = os.fspath(dataset_dir)
    if not os.path.exists(folder):
        raise FileNotFoundError(f"dataset_dir {folder!r} does not exist; pass --dataset_dir with a folder of images.")
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"dataset_dir {folder!r} is not a folder; pass --dataset_dir with a folder of images.")
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            is_image = entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)
            if is_image or (entry.is_dir() and _is_dicom_series(entry.path)):
                found.append(entry.path)
    if not found:
        raise ValueError(
            f"No input images in dataset_dir {folder!r} (looked for {', '.join(IMAGE_SUFFIXES)} files and "
            "sub-folders of DICOM files)."
        )
    return sorted(found)


def input_stem(path: str | os.PathLike) -> str:
    """The input's name without its image suffix (a DICOM series folder keeps its folder name)."""
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def plan_outputs(
    inputs: Sequence[str], output_dir: str | os.PathLike, postfix: str = "denoised", ext: str = ".nii.gz"
) -> list[str]:
    """The output path of every input, ``<output_dir>/<stem>_<postfix><ext>``, after checking that no write can
    touch an input.

    Raises:
        ValueError: ``output_dir`` is an input's folder or lies inside a DICOM series, an output would replace an
            input, or two inputs would write the same output.
    """
    out_dir = os.path.realpath(os.fspath(output_dir))
    real_inputs = {os.path.realpath(p) for p in inputs}
    input_dirs = {os.path.dirname(p) for p in real_inputs}
    if out_dir in input_dirs:
        raise ValueError(
            f"output_dir {os.fspath(output_dir)!r} is the input folder; choose another --output_dir so that the "
            "outputs cannot replace or mix with the inputs."
        )
    for real in real_inputs:
        if os.path.isdir(real) and (out_dir == real or out_dir.startswith(real + os.sep)):
            raise ValueError(f"output_dir {os.fspath(output_dir)!r} lies inside the DICOM series {real!r}.")
    outputs = [os.path.join(out_dir, f"{input_stem(p)}_{postfix}{ext}") for p in inputs]
    seen: dict[str, str] = {}
    for src, dst in zip(inputs, outputs):
        if dst in real_inputs:
            raise ValueError(f"Writing {dst!r} would replace an input; choose another --output_dir.")
        if dst in seen:
            raise ValueError(f"Inputs {seen[dst]!r} and {src!r} would both be written to {dst!r}; rename one.")
        seen[dst] = src
    return outputs


def _as_saved_array(img: torch.Tensor) -> np.ndarray:
    """The array laid out as the input file was: without the channel that ``EnsureChannelFirst`` added, or with the
    channels moved back last (``(H, W, D, C)``, as NIfTI stores them)."""
    arr = np.asarray(img.detach().cpu())
    original = getattr(img, "meta", {}).get("original_channel_dim")
    added = original is None or original == "no_channel" or (isinstance(original, float) and math.isnan(original))
    if added and arr.shape[0] == 1:
        return arr[0]
    return np.moveaxis(arr, 0, -1)


def save_atomic(img: torch.Tensor, path: str | os.PathLike, output_dtype: DTypeLike = np.float32) -> None:
    """Write the channel-first ``img`` as NIfTI to ``path`` with its affine and the input's layout, through a
    temporary file in the same folder renamed into place when complete: an interrupted write never leaves a
    partial file under the final name, nor a temporary file.

    Args:
        img: the channel-first image; a ``MetaTensor`` carries the affine and the original channel layout.
        path: the final path, ending in ``.nii.gz`` or ``.nii``.
        output_dtype: the data type written.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    ext = ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]
    if ext not in (".nii.gz", ".nii"):
        raise ValueError(f"The output path {path!r} must end with .nii.gz or .nii.")
    affine = getattr(img, "affine", None)
    affine = np.eye(4) if affine is None else np.asarray(affine.detach().cpu(), dtype=np.float64)
    nifti = nib.Nifti1Image(_as_saved_array(img).astype(output_dtype), affine)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name[: -len(ext)]}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}")
    try:
        nib.save(nifti, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

"""Files in and out of the bundle: find the input images (files, DICOM series folders, a single file), name the
outputs, refuse unsafe or read-only output folders, write each output atomically with the input's NIfTI header, and
keep a settings fingerprint beside each output so that a rerun with other settings redoes it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.data import FolderLayout
from monai.utils import optional_import
from numpy.typing import DTypeLike

itk, _HAS_ITK = optional_import("itk")

__all__ = [
    "IMAGE_SUFFIXES",
    "check_input",
    "check_writable",
    "dicom_series",
    "find_inputs",
    "fingerprint",
    "input_stem",
    "input_voxels",
    "is_current",
    "plan_outputs",
    "save_atomic",
    "sidecar_path",
    "write_sidecar",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".mha", ".mhd", ".nrrd", ".nhdr")
"""File types taken as inputs; DICOM files are also found without a suffix (by their preamble) and a folder of
DICOM files is taken as one DICOM series."""

_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_NOT_DICOM = tuple(s for s in IMAGE_SUFFIXES if s != ".dcm")


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


def _visible_files(folder: str) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries if e.is_file() and not e.name.startswith("."))


def _dicom_files(folder: str) -> list[str]:
    return [p for p in _visible_files(folder) if not p.lower().endswith(_NOT_DICOM) and _is_dicom_file(p)]


def dicom_series(folder: str | os.PathLike) -> dict[str, list[str]]:
    """The DICOM files directly in ``folder`` grouped by series (ITK's GDCM series UIDs, as MONAI's ``ITKReader``
    reads them; files GDCM cannot read are left out); one group ``""`` holding every DICOM file when ITK is not
    installed or there is only one file."""
    folder = os.fspath(folder)
    files = _dicom_files(folder)
    if not files or not _HAS_ITK:
        return {"": files} if files else {}
    if len(files) == 1:
        return {"": files}
    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.AddSeriesRestriction("0008|0021")  # the same grouping as monai.data.ITKReader
    names.SetDirectory(folder)
    return {str(uid): sorted(str(f) for f in names.GetFileNames(uid)) for uid in names.GetSeriesUIDs()}


def find_inputs(dataset_dir: str | os.PathLike) -> list[str]:
    """The images of ``dataset_dir``, sorted.

    ``dataset_dir`` may be one image file, or a folder. In a folder: files ending in :data:`IMAGE_SUFFIXES`;
    DICOM files (``.dcm`` or any file with the DICOM preamble), the folder itself being one input when they form one
    series (several files), or one input per file when each is its own series; and sub-folders of DICOM files,
    each one series. Hidden entries are ignored; nothing is searched deeper.

    Raises:
        FileNotFoundError: ``dataset_dir`` does not exist.
        ValueError: ``dataset_dir`` is a file that is not an image, or no input image was found.
    """
    folder = os.fspath(dataset_dir)
    if not os.path.exists(folder):
        raise FileNotFoundError(f"dataset_dir {folder!r} does not exist; pass --dataset_dir with a folder of images.")
    if not os.path.isdir(folder):
        if folder.lower().endswith(IMAGE_SUFFIXES) or _is_dicom_file(folder):
            return [folder]
        raise ValueError(f"dataset_dir {folder!r} is neither a folder nor an image file ({', '.join(IMAGE_SUFFIXES)} "
                         "or DICOM); pass --dataset_dir with a folder of images or one image.")
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_file() and entry.name.lower().endswith(_NOT_DICOM):
                found.append(entry.path)
            elif entry.is_dir() and _dicom_files(entry.path):
                found.append(entry.path)
    series = dicom_series(folder)
    grouped = {os.path.realpath(f) for files in series.values() for f in files}
    found += [f for f in _dicom_files(folder) if os.path.realpath(f) not in grouped]  # unreadable: fail, reported
    if all(len(files) == 1 for files in series.values()):
        found += [files[0] for files in series.values()]  # single-file series (or none): one input each
    else:
        found.append(os.path.abspath(folder))  # its DICOM files are a series: one input (check_input refuses several)
    if not found:
        raise ValueError(
            f"No input images in dataset_dir {folder!r} (looked for {', '.join(IMAGE_SUFFIXES)} files, DICOM files "
            "and sub-folders of DICOM files)."
        )
    return sorted(set(found))


def check_input(path: str | os.PathLike) -> None:
    """Refuse a DICOM folder that holds several multi-file series (a reader would take only the first).

    Raises:
        ValueError: the folder holds more than one DICOM series.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        return
    series = dicom_series(path)
    if len(series) > 1:
        raise ValueError(
            f"{path!r} holds {len(series)} DICOM series; a reader takes only the first: move each series into a "
            "folder of its own."
        )


def input_stem(path: str | os.PathLike) -> str:
    """The input's name without its image suffix (a DICOM series folder keeps its folder name)."""
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def input_voxels(path: str | os.PathLike) -> int:
    """The number of voxels of an input, from its NIfTI header when it is NIfTI (cheap), else estimated from its
    size on disk (two bytes a voxel); used to share out the time left, so a rough figure is enough."""
    path = os.fspath(path)
    try:
        if path.lower().endswith(_NIFTI_SUFFIXES):
            return max(1, math.prod(nib.load(path).shape))
        files = _visible_files(path) if os.path.isdir(path) else [path]
        return max(1, sum(os.path.getsize(f) for f in files) // 2)
    except Exception:  # an unreadable input fails later, with its own message
        return 1


def plan_outputs(
    inputs: Sequence[str], output_dir: str | os.PathLike, postfix: str = "denoised", ext: str = ".nii.gz"
) -> list[str]:
    """The output path of every input, ``<output_dir>/<stem>_<postfix><ext>`` (MONAI's ``FolderLayout``), after
    checking that no write can touch an input.

    Raises:
        ValueError: ``output_dir`` is an input's folder or lies inside a DICOM series, an output would replace an
            input, or two inputs would write the same output.
    """
    out_dir = os.path.realpath(os.fspath(output_dir))
    real_inputs = {os.path.realpath(p) for p in inputs}
    input_dirs = {os.path.dirname(p) for p in real_inputs if not os.path.isdir(p)}
    if out_dir in input_dirs:
        raise ValueError(
            f"output_dir {os.fspath(output_dir)!r} is the input folder; choose another --output_dir so that the "
            "outputs cannot replace or mix with the inputs."
        )
    for real in real_inputs:
        if os.path.isdir(real) and (out_dir == real or out_dir.startswith(real + os.sep)):
            raise ValueError(f"output_dir {os.fspath(output_dir)!r} lies inside the DICOM series {real!r}.")
    layout = FolderLayout(out_dir, postfix=postfix, extension=ext, parent=False, makedirs=False)
    outputs = [os.fspath(layout.filename(subject=input_stem(p))) for p in inputs]
    seen: dict[str, str] = {}
    for src, dst in zip(inputs, outputs):
        if dst in real_inputs:
            raise ValueError(f"Writing {dst!r} would replace an input; choose another --output_dir.")
        if dst in seen:
            raise ValueError(f"Inputs {seen[dst]!r} and {src!r} would both be written to {dst!r}; rename one.")
        seen[dst] = src
    return outputs


def check_writable(output_dir: str | os.PathLike) -> None:
    """Create ``output_dir`` if needed and check that a file can be created in it, before any fit.

    Raises:
        PermissionError: the folder cannot be created or written to (read-only, no permission, full disk ...).
    """
    folder = os.fspath(output_dir)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dnaprior-write-test-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise PermissionError(
            f"output_dir {folder!r} is not writable ({reason}); choose another --output_dir or fix its permissions."
        ) from None


def _as_saved_array(img: torch.Tensor) -> np.ndarray:
    """The array laid out as the input file was: without the channel that ``EnsureChannelFirst`` added, or with the
    channels moved back last (``(H, W, D, C)``, as NIfTI stores them)."""
    arr = np.asarray(img.detach().cpu())
    original = getattr(img, "meta", {}).get("original_channel_dim")
    added = original is None or original == "no_channel" or (isinstance(original, float) and math.isnan(original))
    if added and arr.shape[0] == 1:
        return arr[0]
    return np.moveaxis(arr, 0, -1)


def _nifti_image(arr: np.ndarray, affine: np.ndarray, source: str | None) -> nib.Nifti1Image:
    """The output image: the source NIfTI's header (codes, units, zooms, TR, description) with only the data
    changed when the data still has the source's shape and affine; else a fresh header with ``affine``."""
    if source is not None and source.lower().endswith(_NIFTI_SUFFIXES):
        try:
            src = nib.load(source)
        except Exception:
            src = None
        if src is not None and tuple(src.shape) == arr.shape and np.allclose(src.affine, affine, atol=1e-4):
            header = src.header.copy()
            if not isinstance(header, nib.Nifti1Header):
                header = nib.Nifti1Header.from_header(header)
            out = nib.Nifti1Image(arr, None, header)  # no affine: qform/sform and their codes stay the source's
            out.header.set_data_dtype(arr.dtype)
            out.header.set_slope_inter(np.nan, np.nan)  # the data are written as they are, unscaled
            return out
    out = nib.Nifti1Image(arr, affine)
    out.header.set_qform(affine, code=1)  # scanner coordinates, as the reader gave them
    out.header.set_sform(affine, code=1)
    out.header.set_xyzt_units("mm", "sec")
    return out


def save_atomic(
    img: torch.Tensor, path: str | os.PathLike, output_dtype: DTypeLike = np.float32, source: str | None = None
) -> None:
    """Write the channel-first ``img`` as NIfTI to ``path`` with its affine and the input's layout, through a
    temporary file in the same folder renamed into place when complete: an interrupted write never leaves a
    partial file under the final name, nor a temporary file.

    Args:
        img: the channel-first image; a ``MetaTensor`` carries the affine and the original channel layout.
        path: the final path, ending in ``.nii.gz`` or ``.nii``.
        output_dtype: the data type written.
        source: the input file; when it is NIfTI of the same shape and affine, its header is kept (qform/sform and
            their codes, units, zooms, TR, description), only the data and data type change.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    ext = ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]
    if ext not in _NIFTI_SUFFIXES:
        raise ValueError(f"The output path {path!r} must end with .nii.gz or .nii.")
    affine = getattr(img, "affine", None)
    affine = np.eye(4) if affine is None else np.asarray(affine.detach().cpu(), dtype=np.float64)
    nifti = _nifti_image(_as_saved_array(img).astype(output_dtype), affine, source)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name[: -len(ext)]}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}")
    try:
        nib.save(nifti, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _input_state(path: str) -> list:
    """Names, sizes and modification times of an input's files: a changed input changes the fingerprint."""
    files = _visible_files(path) if os.path.isdir(path) else [path]
    state = []
    for f in files:
        st = os.stat(f)
        state.append([os.path.basename(f), st.st_size, st.st_mtime_ns])
    return state


def fingerprint(settings: Mapping, source: str) -> str:
    """A hash of the settings that shape an output and of the input's files (names, sizes, times)."""
    payload = json.dumps({"settings": settings, "input": _input_state(os.fspath(source))}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sidecar_path(output: str | os.PathLike) -> str:
    """``<output without .nii.gz/.nii>.json``: the settings fingerprint beside each output."""
    output = os.fspath(output)
    for ext in _NIFTI_SUFFIXES:
        if output.endswith(ext):
            return output[: -len(ext)] + ".json"
    return output + ".json"


def write_sidecar(output: str | os.PathLike, settings: Mapping, source: str, digest: str) -> None:
    """Write the JSON sidecar of ``output`` atomically: fingerprint, input and settings."""
    path = sidecar_path(output)
    body = {"fingerprint": digest, "input": os.path.abspath(source), "settings": settings}
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w") as f:
            json.dump(body, f, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def is_current(output: str | os.PathLike, digest: str) -> bool | None:
    """Whether ``output`` exists with a sidecar of fingerprint ``digest``: True (keep it), False (it was made with
    other settings or from another input, or has no sidecar: redo it), None (no output)."""
    if not os.path.exists(output):
        return None
    try:
        with open(sidecar_path(output)) as f:
            return json.load(f).get("fingerprint") == digest
    except (OSError, ValueError, AttributeError):
        return False

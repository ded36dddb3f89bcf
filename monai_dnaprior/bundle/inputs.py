"""The bundle's inputs: image files, DICOM series folders or a single file, checked cheaply before any work."""

from __future__ import annotations

import math
import os

import nibabel as nib
from monai.utils import optional_import

itk, _HAS_ITK = optional_import("itk")

__all__ = ["IMAGE_SUFFIXES", "NIFTI_SUFFIXES", "check_input", "dicom_series", "find_inputs", "input_files", "input_stem",
           "input_voxels", "noise_map_path"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".mha", ".mhd", ".nrrd", ".nhdr")
"""File types taken as inputs; DICOM files are also found without a suffix (by their preamble) and a folder of
DICOM files is taken as one DICOM series."""

NIFTI_SUFFIXES = (".nii.gz", ".nii")
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


def input_files(folder: str) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries if e.is_file() and not e.name.startswith("."))


def _dicom_files(folder: str) -> list[str]:
    return [p for p in input_files(folder) if not p.lower().endswith(_NOT_DICOM) and _is_dicom_file(p)]


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


def noise_map_path(path: str | os.PathLike, noise_map_dir: str | os.PathLike) -> str:
    """The noise map of the input ``path`` in ``noise_map_dir``: the image file there with the input's name
    (:func:`input_stem`; any of :data:`IMAGE_SUFFIXES`, so a DICOM series folder ``s1`` takes ``s1.nii.gz``).

    Raises:
        FileNotFoundError: there is none.
        ValueError: there are several (``a.nii`` and ``a.nii.gz``).
    """
    folder, stem = os.fspath(noise_map_dir), input_stem(path)
    found = [f for f in input_files(folder) if f.lower().endswith(IMAGE_SUFFIXES) and input_stem(f) == stem]
    if not found:
        raise FileNotFoundError(f"no noise map for {os.path.basename(os.path.normpath(os.fspath(path)))!r} in "
                                f"noise_map_dir {folder!r}: put one there under the input's name ({stem}.nii.gz, say).")
    if len(found) > 1:
        raise ValueError(f"several noise maps for {stem!r} in noise_map_dir {folder!r} "
                         f"({', '.join(os.path.basename(f) for f in found)}); keep one.")
    return found[0]


def input_voxels(path: str | os.PathLike) -> int:
    """The number of voxels of an input, from its NIfTI header when it is NIfTI (cheap), else estimated from its
    size on disk (two bytes a voxel); used to share out the time left, so a rough figure is enough."""
    path = os.fspath(path)
    try:
        if path.lower().endswith(NIFTI_SUFFIXES):
            return max(1, math.prod(nib.load(path).shape))
        files = input_files(path) if os.path.isdir(path) else [path]
        return max(1, sum(os.path.getsize(f) for f in files) // 2)
    except Exception:  # an unreadable input fails later, with its own message
        return 1

"""The bundle's outputs: named beside nothing the user gave, written atomically with the input's NIfTI header, in the
input's own data type (rounded and clipped for integers, with its scaling) or the one asked for."""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
from monai.data import FolderLayout
from numpy.typing import DTypeLike

from monai_dnaprior.bundle.inputs import NIFTI_SUFFIXES, input_stem

__all__ = ["check_writable", "plan_outputs", "save_atomic", "written_dtype"]


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


def _load_nifti(source: str | None) -> nib.Nifti1Image | nib.Nifti2Image | None:
    """The source image (header only is read) when it is a NIfTI file that loads, else None."""
    if source is None or not source.lower().endswith(NIFTI_SUFFIXES):
        return None
    try:
        return nib.load(source)
    except Exception:
        return None


def written_dtype(output_dtype: DTypeLike | None, source: str | None = None, data_dtype: DTypeLike = np.float32
                  ) -> np.dtype:
    """The data type an output is written in: ``output_dtype`` when given; else the source NIfTI's stored type
    where it is an integer or float type (an int16 CT stays int16, a uint8 stays uint8); else ``data_dtype`` (the
    denoised array's: float32 as MONAI's ``LoadImage`` reads DICOM, MetaImage and NRRD) where it is one, else float32.

    Raises:
        ValueError: ``output_dtype`` is not an integer or float type.
    """
    if output_dtype is not None:
        dtype = np.dtype(output_dtype)
        if dtype.kind not in "iuf":
            raise ValueError(f"output_dtype must be an integer or float type, got {output_dtype!r}.")
        return dtype
    src = _load_nifti(source)
    if src is not None:
        stored = src.header.get_data_dtype()
        if stored.kind in "iuf" and stored.fields is None:
            return np.dtype(stored.newbyteorder("="))
    dtype = np.dtype(data_dtype)
    return dtype if dtype.kind in "iuf" else np.dtype(np.float32)


def _source_scaling(src: nib.Nifti1Image | None, dtype: np.dtype) -> tuple[float, float] | None:
    """The source's ``scl_slope``/``scl_inter`` where it stores this integer ``dtype`` scaled (a CT stored as int16
    with a slope of 0.5): the output is then stored with the same scaling, so it keeps the source's resolution."""
    if src is None or dtype.kind not in "iu" or src.header.get_data_dtype().newbyteorder("=") != dtype:
        return None
    # nibabel moves a loaded file's scl_slope/scl_inter from the header into the array proxy
    slope, inter = float(getattr(src.dataobj, "slope", 1.0)), float(getattr(src.dataobj, "inter", 0.0))
    if slope == 1.0 and inter == 0.0 or not (np.isfinite(slope) and np.isfinite(inter) and slope != 0):
        return None
    return slope, inter


def _to_dtype(arr: np.ndarray, dtype: np.dtype, scaling: tuple[float, float] | None) -> np.ndarray:
    """``arr`` in ``dtype``: integers rounded and clipped to the type's range (as the transform returns integer
    images), through ``scaling`` (stored = (value - inter) / slope) where there is one."""
    if dtype.kind not in "iu":
        return arr.astype(dtype)
    values = arr.astype(np.float64)
    if scaling is not None:
        slope, inter = scaling
        values = (values - inter) / slope
    info = np.iinfo(dtype)
    return np.clip(np.round(values), info.min, info.max).astype(dtype)


def _nifti_image(
    arr: np.ndarray, affine: np.ndarray, src: nib.Nifti1Image | None, scaling: tuple[float, float] | None = None
) -> nib.Nifti1Image:
    """The output image: the source NIfTI's header (codes, units, zooms, TR, description) with only the data
    changed when the data still has the source's shape and affine; else a fresh header with ``affine``. The data
    are stored unscaled, or with ``scaling`` (slope, inter) where given."""
    out = None
    if src is not None and tuple(src.shape) == arr.shape and np.allclose(src.affine, affine, atol=1e-4):
        header = src.header.copy()
        if not isinstance(header, nib.Nifti1Header):
            header = nib.Nifti1Header.from_header(header)
        out = nib.Nifti1Image(arr, None, header)  # no affine: qform/sform and their codes stay the source's
        out.header.set_data_dtype(arr.dtype)
    if out is None:
        out = nib.Nifti1Image(arr, affine)
        out.header.set_qform(affine, code=1)  # scanner coordinates, as the reader gave them
        out.header.set_sform(affine, code=1)
        out.header.set_xyzt_units("mm", "sec")
    if scaling is None:
        out.header.set_slope_inter(np.nan, np.nan)  # the data are written as they are, unscaled
    else:
        out.header.set_slope_inter(*scaling)  # nibabel then writes the stored integers as they are
    return out


def save_atomic(
    img: torch.Tensor, path: str | os.PathLike, output_dtype: DTypeLike | None = None, source: str | None = None
) -> None:
    """Write the channel-first ``img`` as NIfTI to ``path`` with its affine and the input's layout, through a
    temporary file in the same folder renamed into place when complete: an interrupted write never leaves a
    partial file under the final name, nor a temporary file.

    Args:
        img: the channel-first image; a ``MetaTensor`` carries the affine and the original channel layout.
        path: the final path, ending in ``.nii.gz`` or ``.nii``.
        output_dtype: the data type written; None: the source's (:func:`written_dtype`). Integer types are
            rounded and clipped to their range; a source stored as scaled integers (``scl_slope``/``scl_inter``)
            gives an output stored with the same scaling.
        source: the input file; when it is NIfTI of the same shape and affine, its header is kept (qform/sform and
            their codes, units, zooms, TR, description), only the data (and data type) change.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    ext = ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]
    if ext not in NIFTI_SUFFIXES:
        raise ValueError(f"The output path {path!r} must end with .nii.gz or .nii.")
    affine = getattr(img, "affine", None)
    affine = np.eye(4) if affine is None else np.asarray(affine.detach().cpu(), dtype=np.float64)
    arr = _as_saved_array(img)
    src = _load_nifti(source)
    dtype = written_dtype(output_dtype, source, arr.dtype)
    scaling = _source_scaling(src, dtype)
    nifti = _nifti_image(_to_dtype(arr, dtype, scaling), affine, src, scaling)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name[: -len(ext)]}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}")
    try:
        nib.save(nifti, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

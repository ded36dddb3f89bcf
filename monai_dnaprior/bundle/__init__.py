"""The MONAI Bundle's Python side (``bundle/configs/*.json`` point here): the folder runner, its file handling,
progress reporting and the checks that turn bad settings into one error line. The method itself lives in the
package's other modules; nothing here is needed to use the transforms."""

from __future__ import annotations

from monai_dnaprior.bundle.checks import check_settings, run_evaluator
from monai_dnaprior.bundle.io import (
    IMAGE_SUFFIXES,
    check_input,
    check_writable,
    dicom_series,
    find_inputs,
    fingerprint,
    input_stem,
    is_current,
    plan_outputs,
    save_atomic,
    sidecar_path,
)
from monai_dnaprior.bundle.progress import ImageProgress, SliceProgress, naming_the_file
from monai_dnaprior.bundle.runner import DenoiseFolder, DenoiseFolderError, shard, transform_settings

__all__ = [
    "IMAGE_SUFFIXES",
    "DenoiseFolder",
    "DenoiseFolderError",
    "ImageProgress",
    "SliceProgress",
    "check_input",
    "check_settings",
    "check_writable",
    "dicom_series",
    "find_inputs",
    "fingerprint",
    "input_stem",
    "is_current",
    "naming_the_file",
    "plan_outputs",
    "run_evaluator",
    "save_atomic",
    "shard",
    "sidecar_path",
    "transform_settings",
]

"""The MONAI Bundle's Python side (``bundle/configs/*.json`` point here): the folder runner, its file handling,
progress reporting and the checks that turn bad settings into one error line. The method itself lives in the
package's other modules; nothing here is needed to use the transforms."""

from __future__ import annotations

from monai_dnaprior.bundle.checks import (
    ReadableInputs,
    as_flag,
    check_setting_names,
    check_settings,
    root_cause,
    run_evaluator,
)
from monai_dnaprior.bundle.inputs import IMAGE_SUFFIXES, check_input, dicom_series, find_inputs, input_stem, input_voxels
from monai_dnaprior.bundle.outputs import check_writable, plan_outputs, save_atomic, written_dtype
from monai_dnaprior.bundle.sidecar import fingerprint, is_current, sidecar_path, transform_settings
from monai_dnaprior.bundle.progress import ImageProgress, format_duration, naming_the_file
from monai_dnaprior.bundle.runner import DenoiseFolder, DenoiseFolderError, shard

__all__ = [
    "IMAGE_SUFFIXES",
    "DenoiseFolder",
    "DenoiseFolderError",
    "ImageProgress",
    "ReadableInputs",
    "as_flag",
    "check_input",
    "check_setting_names",
    "check_settings",
    "check_writable",
    "dicom_series",
    "find_inputs",
    "fingerprint",
    "format_duration",
    "input_stem",
    "input_voxels",
    "is_current",
    "naming_the_file",
    "plan_outputs",
    "root_cause",
    "run_evaluator",
    "save_atomic",
    "shard",
    "sidecar_path",
    "transform_settings",
    "written_dtype",
]

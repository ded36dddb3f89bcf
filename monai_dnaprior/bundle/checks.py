"""Settings checks and error handling for the bundle's command line: a typo or a bad value is one error line and
exit status 1, not a page of traceback from the config parser."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import nibabel as nib

from monai_dnaprior.bundle.io import check_input, find_inputs
from monai_dnaprior.bundle.runner import _as_bool, _root_cause
from monai_dnaprior.denoising import NOISE_MODEL_CHOICES, VOLUME_MODES
from monai_dnaprior.settings import PRESETS
from monai_dnaprior.validation import check_choice, check_options

__all__ = ["ReadableInputs", "check_settings", "run_evaluator"]

logger = logging.getLogger("monai_dnaprior.bundle")


def check_settings(
    noise_model: str = "auto",
    noise_level: object = None,
    preset: str = "default",
    max_iters: object = None,
    seed: object = 0,
    device: object = None,
    volume_mode: str = "auto",
    exit_on_error: bool | str = True,
) -> bool:
    """Check the bundle's settings before anything is built (the configs call this first in ``initialize``).

    Returns:
        True when every setting is valid.

    Raises:
        SystemExit: (``exit_on_error``) after logging one error line naming the setting.
        ValueError, TypeError: the same, without ``exit_on_error``.
    """
    try:
        check_choice("noise_model", noise_model, NOISE_MODEL_CHOICES)
        check_choice("preset", preset, tuple(PRESETS))
        check_choice("volume_mode", volume_mode, VOLUME_MODES)
        check_options(noise_level=noise_level, seed=seed, device=None if device is None else str(device))
        if max_iters is not None and (isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1):
            raise ValueError(f"max_iters must be a positive integer or null (the preset's), got {max_iters!r}.")
    except (ValueError, TypeError) as e:
        logger.error("Invalid setting: %s", e)
        if _as_bool(exit_on_error):
            raise SystemExit(1) from None
        raise
    return True


class ReadableInputs:
    """The inputs of ``dataset_dir`` split into those that pass a cheap read check (a NIfTI header that loads, a DICOM
    folder of one series) and those that fail it, each failure logged as one line naming the file. For
    ``denoise_segment.json``, whose evaluator would otherwise stop at the first unreadable file.

    Attributes:
        good: the inputs to process.
        failed: the inputs skipped, with their one-line reasons.
    """

    def __init__(self, dataset_dir: str | os.PathLike, exit_on_error: bool | str = True) -> None:
        self.good: list[str] = []
        self.failed: list[tuple[str, str]] = []
        try:
            paths = find_inputs(dataset_dir)
        except (OSError, ValueError) as e:
            logger.error("%s", e)
            if _as_bool(exit_on_error):
                raise SystemExit(1) from None
            raise
        for path in paths:
            try:
                check_input(path)
                if path.lower().endswith((".nii", ".nii.gz")):
                    nib.load(path).header  # noqa: B018  (reads and checks the header only)
            except Exception as e:
                reason = _root_cause(e)
                logger.error("%s: FAILED: %s (skipped)", os.path.basename(os.path.normpath(path)), reason)
                self.failed.append((path, reason))
                continue
            self.good.append(path)

    def __iter__(self):
        return iter(self.good)


def _failing_input(error: BaseException, inputs: Sequence[str]) -> str | None:
    """The input named in the error chain's messages (MONAI's loaders name the file), if any."""
    text = []
    while error is not None:
        text.append(str(error))
        error = error.__cause__ or error.__context__
    joined = "\n".join(text)
    for path in sorted(inputs, key=len, reverse=True):
        if path in joined or os.path.basename(os.path.normpath(path)) in re.split(r"[\s'\"(),:]+", joined):
            return path
    return None


def run_evaluator(evaluator, inputs: Sequence[str] | ReadableInputs = (), exit_on_error: bool | str = True) -> None:
    """Run a MONAI evaluator (``denoise_segment.json``); a failure is one error line naming the input file and the
    cause, and exit status 1 (``exit_on_error``), instead of the evaluator's page of traceback. Inputs that a
    :class:`ReadableInputs` skipped are listed at the end, and the run then fails too.

    Args:
        evaluator: e.g. a ``SupervisedEvaluator``.
        inputs: the input paths (or the :class:`ReadableInputs`), to name the one that failed.
        exit_on_error: log one error line and raise ``SystemExit(1)``; when False re-raise the error.
    """
    skipped = list(inputs.failed) if isinstance(inputs, ReadableInputs) else []
    inputs = list(inputs)
    try:
        evaluator.run()
    except Exception as e:
        failing = _failing_input(e, [os.fspath(p) for p in inputs])
        where = os.path.basename(os.path.normpath(failing)) if failing else "an input"
        logger.error("%s: FAILED: %s (the outputs before it are written; move it aside and run again)", where,
                     _root_cause(e))
        logger.debug("evaluator failed", exc_info=True)
        if _as_bool(exit_on_error):
            raise SystemExit(1) from None
        raise
    if skipped:
        names = ", ".join(os.path.basename(os.path.normpath(p)) for p, _ in skipped)
        message = f"{len(skipped)} of {len(inputs) + len(skipped)} images failed: {names}"
        logger.error(message)
        if _as_bool(exit_on_error):
            raise SystemExit(1)
        raise RuntimeError(message)

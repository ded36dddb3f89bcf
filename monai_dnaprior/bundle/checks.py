"""Settings checks and error handling for the bundle's command line: a typo, an unknown setting or a bad value is one
error line and exit status 1, checked before anything is built, not a page of traceback from the config parser or a
failure repeated file by file."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.utils import damerau_levenshtein_distance, str2bool

from monai_dnaprior.bundle.inputs import check_input, find_inputs
from monai_dnaprior.devices import resolve_device
from monai_dnaprior.transforms import DNAPriorDenoise
from monai_dnaprior.validation import check_additive_noise

__all__ = ["ReadableInputs", "as_flag", "check_setting_names", "check_settings", "root_cause", "run_evaluator"]

logger = logging.getLogger("monai_dnaprior.bundle")

_WORKFLOW_KEYS = frozenset({"_meta_", "imports", "initialize", "run", "finalize"})
"""Top-level keys MONAI's workflow reads itself (the metadata, the imports and the three expression lists)."""

_RENAMED = {"pilot": ("prior", "pilot was replaced by prior in 0.8.0: --pilot network is --prior network+filter, "
                              "--pilot thresholded is --prior filter")}
"""Settings that were renamed: the new name and how the old values map."""


def as_flag(value: bool | str | int, name: str = "flag") -> bool:
    """A true/false setting from a config or a command line, where ``--overwrite false`` arrives as the string
    ``"false"`` (``monai.utils.str2bool``: yes/true/t/y/1 and no/false/f/n/0, any case).

    Raises:
        ValueError: naming the setting, for anything else.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    try:
        return str2bool(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise ValueError(f"{name} must be true or false, got {value!r}.") from None


def root_cause(error: BaseException) -> str:
    """The innermost error of a chain (MONAI's ``Compose`` and config parser wrap errors), on one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {text[:300]}"


def as_series(value: object) -> bool | None:
    """The ``series`` setting from a config or a command line: null/none/auto (decide from the channel count), or a
    true/false flag (``--series true`` arrives as a string).

    Raises:
        ValueError: anything else.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "auto", "")):
        return None
    try:
        return as_flag(value, "series")
    except ValueError:
        raise ValueError(f"series must be true (the channels are repeats of one anatomy), false or null (decide from "
                         f"the channel count), got {value!r}.") from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _fail(message: str, error: Exception, exit_on_error: bool | str) -> NoReturn:
    logger.error("%s", message)
    if as_flag(exit_on_error, "exit_on_error"):
        raise SystemExit(1) from None
    raise error


def _check_device(device: object) -> None:
    """The device exists on this machine: CUDA available, and the CUDA index below the GPU count."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise RuntimeError(f"device={str(device)!r} was asked for but this machine has {torch.cuda.device_count()} "
                           f"CUDA device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1}).")


def check_settings(
    noise_model: str = "auto",
    noise_level: object = None,
    preset: str = "default",
    prior: str = "auto",
    max_iters: object = None,
    seed: object = None,
    volume_mode: object = None,
    device: object = None,
    output_dtype: object = None,
    exit_on_error: bool | str = True,
    series: object = None,
    noise_map_dir: object = None,
) -> bool:
    """Check the bundle's settings before anything is built (the configs call this in ``initialize``): the settings
    of :class:`~monai_dnaprior.transforms.DNAPriorDenoised` (checked by building it, so the rules are the
    transform's: a network setting with a prior that fits no network is refused), the device (once, on this
    machine: ``cuda`` without CUDA fails here, not file by file) and the written data type.

    Args:
        noise_model, noise_level, preset, prior, max_iters, seed, volume_mode, device: as
            :class:`~monai_dnaprior.transforms.DNAPriorDenoise`; ``max_iters``, ``seed`` and ``volume_mode`` are
            network settings (None unless ``prior`` is ``network`` or ``network+filter``).
        output_dtype: the data type written, None (the input's) or an integer or float numpy type name.
        exit_on_error: log one error line and raise ``SystemExit(1)``; when False re-raise the error.
        series: true, false or null (:func:`as_series`; :class:`~monai_dnaprior.transforms.DNAPriorDenoise`).
        noise_map_dir: null, or a folder of noise maps (one per input, under its name) for additive noise.

    Returns:
        True when every setting is valid.

    Raises:
        SystemExit: (``exit_on_error``) after logging one error line naming the setting.
        ValueError, TypeError, RuntimeError: the same, without ``exit_on_error``.
    """
    try:
        DNAPriorDenoise(noise_model=noise_model, noise_level=noise_level, preset=preset, prior=prior,
                        max_iters=max_iters, seed=seed, volume_mode=volume_mode, device=device,
                        series=as_series(series))
        _check_device(device)
        if noise_map_dir is not None:
            if not os.path.isdir(os.fspath(noise_map_dir)):
                raise ValueError(f"noise_map_dir {noise_map_dir!r} is not a folder; pass a folder holding one noise map "
                                 "per input, under the input's name, or leave it null.")
            check_additive_noise("noise_map_dir", noise_model)
        if output_dtype is not None:
            try:
                kind = np.dtype(output_dtype).kind
            except TypeError:
                kind = None
            if kind not in ("i", "u", "f"):
                raise ValueError(f"output_dtype must be null (the input's) or an integer or float type such as "
                                 f"'float32', 'int16', 'uint8'; got {output_dtype!r}.")
    except (ValueError, TypeError, RuntimeError) as e:
        _fail(f"Invalid setting: {_one_line(e)}", e, exit_on_error)
    return True


def _running_config() -> tuple[ConfigParser | None, object, object]:
    """The parser of the bundle run that called us, and the ``config_file`` and ``tracking`` that
    ``monai.bundle.scripts.create_workflow`` (``python -m monai.bundle run``) was given, from the call stack: MONAI
    passes the command line's overrides to the parser as keys and keeps no record of which keys the files had."""
    parser, files, tracking = None, None, None
    frame = sys._getframe(1)
    while frame is not None:
        local = frame.f_locals
        if parser is None and isinstance(local.get("self"), ConfigParser):
            parser = local["self"]
        if frame.f_code.co_name == "create_workflow" and frame.f_globals.get("__name__") == "monai.bundle.scripts":
            files = local.get("config_file")
            tracking = (local.get("_args") or {}).get("tracking")
            break
        frame = frame.f_back
    return parser, files, tracking


def _closest(name: str, options: Sequence[str]) -> str | None:
    """The option nearest ``name`` by edit distance (as ``monai.utils.look_up_option`` suggests), if near enough."""
    if not options:
        return None
    distance = {o: damerau_levenshtein_distance(name.lower(), o.lower()) for o in options}
    best = min(sorted(options), key=distance.get)
    return best if distance[best] <= max(3, len(name) // 3) else None


def check_setting_names(exit_on_error: bool | str = True) -> bool:
    """Refuse settings that no config file of the run has (``--nois_model gaussian``, ``--pilot network``): MONAI's
    ``bundle run`` adds an unknown ``--key value`` to the config as a new key that nothing reads, so a typo would run
    with the default and say nothing. One error line names each unknown key and the closest known one.

    Called first in the configs' ``initialize``. The known keys are those of the config files given to
    ``python -m monai.bundle run`` (your own extra config files count); a workflow built another way (e.g.
    ``ConfigWorkflow`` in Python) is not checked here, since its files are not known.

    Returns:
        True when every key is known (or nothing could be checked).

    Raises:
        SystemExit: (``exit_on_error``) after logging one error line.
        ValueError: the same, without ``exit_on_error``.
    """
    parser, files, tracking = _running_config()
    if parser is None or files is None:
        return True
    try:
        known = set(ConfigParser.load_config_files(files)) | _WORKFLOW_KEYS
    except Exception:  # the files were read once already; if not now, the run will say why
        return True
    if isinstance(tracking, str):
        from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

        known |= set(DEFAULT_EXP_MGMT_SETTINGS.get(tracking, {}).get("configs", {}))
    elif isinstance(tracking, dict):
        known |= set(tracking.get("configs", {}))
    unknown = [k for k in parser.get() if k not in known]
    if not unknown:
        return True
    settings = sorted(k for k in known if k not in _WORKFLOW_KEYS)
    parts = []
    for key in unknown:
        top = re.split(r"::|#", key)[0]
        text = f"Unknown setting {key!r}"
        guess, note = _RENAMED.get(top, (_closest(top, settings), None))
        if guess:
            text += f"; did you mean {guess!r}?"
        if note:
            text += f" ({note})"
        parts.append(text if text.endswith(("?", ")")) else text + ".")
    message = " ".join(parts)
    _fail(message, ValueError(message), exit_on_error)


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
            _fail(str(e), e, exit_on_error)
        for path in paths:
            try:
                check_input(path)
                if path.lower().endswith((".nii", ".nii.gz")):
                    nib.load(path).header  # noqa: B018  (reads and checks the header only)
            except Exception as e:
                reason = root_cause(e)
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
        logger.debug("evaluator failed", exc_info=True)
        _fail(f"{where}: FAILED: {root_cause(e)} (the outputs before it are written; move it aside and run again)",
              e, exit_on_error)
    if skipped:
        names = ", ".join(os.path.basename(os.path.normpath(p)) for p, _ in skipped)
        message = f"{len(skipped)} of {len(inputs) + len(skipped)} images failed: {names}"
        _fail(message, RuntimeError(message), exit_on_error)

"""The settings fingerprint kept beside each output, so that a rerun keeps an output made with the same settings from
the same input and redoes one made otherwise."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping

import numpy as np
import torch
from monai.transforms import Compose

from monai_dnaprior.bundle.inputs import NIFTI_SUFFIXES, input_files
from monai_dnaprior.devices import resolve_device
from monai_dnaprior.settings import resolve_prior
from monai_dnaprior.transforms import DNAPriorDenoise, DNAPriorDenoised

__all__ = ["fingerprint", "is_current", "plain", "sidecar_path", "transform_settings", "write_sidecar"]


def _input_state(path: str) -> list:
    """Names, sizes and modification times of an input's files: a changed input changes the fingerprint."""
    files = input_files(path) if os.path.isdir(path) else [path]
    state = []
    for f in files:
        st = os.stat(f)
        state.append([os.path.basename(f), st.st_size, st.st_mtime_ns])
    return state


def fingerprint(settings: Mapping, source: str, noise_map: str | None = None) -> str:
    """A hash of the settings that shape an output and of the input's files (names, sizes, times), and of its noise
    map's where one is given."""
    state = {"settings": settings, "input": _input_state(os.fspath(source))}
    if noise_map is not None:
        state["noise_map"] = _input_state(os.fspath(noise_map))
    payload = json.dumps(state, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sidecar_path(output: str | os.PathLike) -> str:
    """``<output without .nii.gz/.nii>.json``: the settings fingerprint beside each output."""
    output = os.fspath(output)
    for ext in NIFTI_SUFFIXES:
        if output.endswith(ext):
            return output[: -len(ext)] + ".json"
    return output + ".json"


def write_sidecar(output: str | os.PathLike, settings: Mapping, source: str, digest: str,
                  noise_map: str | None = None) -> None:
    """Write the JSON sidecar of ``output`` atomically: fingerprint, input (and noise map) and settings."""
    path = sidecar_path(output)
    body = {"fingerprint": digest, "input": os.path.abspath(source), "settings": settings}
    if noise_map is not None:
        body["noise_map"] = os.path.abspath(noise_map)
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


def plain(value: object) -> object:
    """JSON-able settings: plain values kept, containers recursed, arrays by their hash, anything else left out."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.ndarray, torch.Tensor)):
        arr = np.ascontiguousarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
        return {"array": hashlib.sha256(arr.tobytes()).hexdigest()[:16], "shape": list(arr.shape),
                "dtype": str(arr.dtype)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    return None


def _denoiser_settings(transform: DNAPriorDenoise) -> dict:
    """What :class:`DNAPriorDenoise` can change an output by: the prior that runs (``auto`` is ``filter``), the
    filter's and (only where one is fitted) the network's settings with its seed, not the preset's name (its
    settings are there), and the device's type, not its index."""
    settings = {k: v for k, v in vars(transform).items() if not k.startswith("_")}
    settings["prior"] = str(resolve_prior(settings.get("prior", "auto")))
    settings.pop("preset", None)
    if settings.get("network_config") is None:
        settings.pop("network_config", None)
        settings.pop("seed", None)  # seeds the network only
    return settings


def _describe(transform: object) -> dict:
    entry: dict = {"transform": f"{type(transform).__module__}.{type(transform).__qualname__}"}
    settings = {k: v for k, v in vars(transform).items() if not k.startswith("_")}
    if isinstance(transform, DNAPriorDenoise):
        settings = _denoiser_settings(transform)
    if isinstance(transform, DNAPriorDenoised):
        settings.pop("uncertainty_key", None)  # a second output that the runner does not write
    for name, value in sorted(settings.items()):
        if hasattr(value, "__call__") and hasattr(value, "__dict__") and not dataclasses.is_dataclass(value):
            if name == "denoiser":  # DNAPriorDenoised's array transform: its settings are the method's
                entry[name] = _describe(value)
            continue
        if name == "device":  # where a fit runs changes its output only by device type (cpu, cuda)
            value = _device_type(value)
        value = plain(value)
        if value is not None:
            entry[name] = value
    return entry


def _device_type(device: object) -> str:
    try:
        return resolve_device(device).type
    except Exception:  # e.g. CUDA asked for and not available: the fit itself will say so
        return str(device)


def transform_settings(transform: Callable) -> list[dict]:
    """The settings of every transform of ``transform`` (a ``Compose`` is flattened) that can change its output:
    what the settings fingerprint of an output is made of, with the package version and the written data type.
    Left out: what cannot change the result, such as the network's settings and seed where no network is fitted,
    the preset's name (its settings are in), the CUDA device's index, the uncertainty map's key."""
    items = transform.flatten().transforms if isinstance(transform, Compose) else [transform]
    return [_describe(t) for t in items]

"""Checks of user input that fail early, with a message that says what was wrong and what to do."""

from __future__ import annotations

import math
import numbers

import torch
from monai.utils import StrEnum, look_up_option

from monai_dnaprior.settings import NoiseModelName, Prior, resolve_prior

__all__ = ["check_image", "check_network_settings", "check_option", "check_slice_axis", "check_device", "check_noise_level", "check_noise_map", "check_additive_noise", "check_options", "check_seed"]


def check_option(name: str, value: object, options: type[StrEnum]) -> StrEnum:
    """``value`` as a member of ``options`` (MONAI's ``look_up_option``, whose message names the closest option for a
    typo), or a ValueError that also names the setting."""
    try:
        return look_up_option(value, options)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"Unknown {name} {value!r}: {' '.join(str(e).split())}") from None


def check_seed(seed: object) -> None:
    """A seed is an integer (the fit is deterministic by design; there is no random mode).

    Raises:
        TypeError: ``seed`` is not an integer (None, a float, a string).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer (e.g. 0), got {seed!r}; the fit is deterministic for a given seed.")


def check_noise_level(noise_level: object) -> None:
    """A noise level is None (estimate it) or a non-negative finite number.

    Raises:
        TypeError: a string or another non-number (``"0.1"``: pass ``0.1``).
        ValueError: negative, NaN or infinite.
    """
    if noise_level is None:
        return
    if isinstance(noise_level, bool) or not isinstance(noise_level, numbers.Real):
        raise TypeError(f"noise_level must be a number or None (estimate it), got {noise_level!r} "
                        f"({type(noise_level).__name__}).")
    if not (math.isfinite(float(noise_level)) and noise_level >= 0):
        raise ValueError(f"noise_level must be a non-negative number or None (estimate), got {noise_level!r}.")


def check_additive_noise(what: str, noise_model: object) -> None:
    """``what`` (a given noise spectrum or map) describes additive noise: refused with a named ``noise_model`` that
    is not (Poisson, speckle); ``auto`` then chooses between Gaussian and Rician.

    Raises:
        ValueError: ``noise_model`` is ``poisson`` or ``speckle``.
    """
    if str(noise_model) in (NoiseModelName.POISSON, NoiseModelName.SPECKLE):
        raise ValueError(f"{what} describes additive noise; use noise_model 'auto', 'gaussian' or 'rician', not "
                         f"{str(noise_model)!r}.")


def check_noise_map(noise_map: object, image_shape: tuple[int, ...]) -> torch.Tensor:
    """A noise map for a channel-first image of ``image_shape``: the noise's relative std at every voxel, of the
    image's spatial shape (axes of size 1 do not count: a leading channel axis, a depth-1 slice's), positive and
    finite. Returned as a float64 tensor of the image's spatial shape (a copy: the input is never modified).

    Raises:
        TypeError: not a numeric array or tensor (complex or boolean included).
        ValueError: another shape, or a value that is not positive and finite.
    """
    if not isinstance(noise_map, torch.Tensor):
        if getattr(noise_map, "dtype", None) is None:
            raise TypeError(f"noise_map must be a numeric numpy array or torch tensor, got {type(noise_map).__name__}.")
        noise_map = torch.as_tensor(noise_map)
    if noise_map.is_complex() or noise_map.dtype == torch.bool:
        raise TypeError(f"noise_map must hold real numbers (the noise's relative std), got {noise_map.dtype}.")
    spatial = tuple(image_shape[1:])
    if [n for n in noise_map.shape if n > 1] != [n for n in spatial if n > 1]:  # axes of size 1 do not count
        raise ValueError(f"noise_map has shape {tuple(noise_map.shape)}; the image {tuple(image_shape)} needs a map of "
                         f"its spatial shape {spatial} (or {(1, *spatial)}), one value per voxel.")
    values = noise_map.detach().to("cpu", torch.float64).reshape(spatial).clone()
    bad = int((~(torch.isfinite(values) & (values > 0))).sum())
    if bad:
        raise ValueError(f"noise_map has {bad} values that are not positive and finite out of {values.numel()}; it is "
                         "the noise's relative std (a g-factor map, say), above 0 everywhere (clamp it, e.g. "
                         "`noise_map.clamp_min(1e-3)`, or fill its holes).")
    return values


def check_device(device: object) -> None:
    """A device is None (CUDA when available, else CPU), a ``torch.device`` or a string torch understands.

    Raises:
        ValueError: an unknown device string (``"gpu"``: use ``"cuda"``).
        TypeError: neither a string nor a ``torch.device``.
    """
    if device is None or isinstance(device, torch.device):
        return
    if not isinstance(device, str):
        raise TypeError(f"device must be None, a string such as 'cpu' or 'cuda:0', or a torch.device; got {device!r}.")
    if device.strip().lower().split(":")[0] == "gpu":
        raise ValueError(f"Unknown device {device!r}; for a GPU use 'cuda' (or 'cuda:0', 'cuda:1' ...), or 'cpu'.")
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:1' ... or None (CUDA when available)."
                         ) from None


def check_slice_axis(slice_axis: object) -> None:
    """A slice axis is a spatial axis, -3 to 2.

    Raises:
        ValueError: anything else.
    """
    if isinstance(slice_axis, bool) or slice_axis not in (-3, -2, -1, 0, 1, 2):
        raise ValueError(f"slice_axis must be a spatial axis in -3..2, got {slice_axis!r}.")


def check_options(noise_level: object = None, seed: object = 0, device: object = None, slice_axis: object = -1) -> None:
    """The settings checks of :func:`monai_dnaprior.denoising.denoise` and the transforms that need more than a
    choice."""
    check_noise_level(noise_level)
    check_seed(seed)
    check_device(device)
    check_slice_axis(slice_axis)


def check_image(img: torch.Tensor, name: str = "image") -> None:
    """Check a channel-first ``(C, H, W)`` or ``(C, H, W, D)`` real, finite, non-empty image.

    Raises:
        TypeError: complex or non-numeric data.
        ValueError: wrong number of dimensions, an empty axis, or NaN/infinite values.
    """
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"The {name} must be a numeric numpy array or torch tensor, got {type(img).__name__}"
                        f"{' of ' + str(img.dtype) if hasattr(img, 'dtype') else ''}.")
    if img.is_complex():
        raise TypeError(f"The {name} is complex; take its magnitude first (e.g. `abs(img)`) and denoise that.")
    if img.dtype == torch.bool:
        raise TypeError(f"The {name} is boolean (a mask?); denoise an intensity image instead.")
    if img.ndim not in (3, 4):
        raise ValueError(
            f"The {name} has shape {tuple(img.shape)} ({img.ndim} dims); a channel-first (C, H, W) or (C, H, W, D) "
            "image is expected. Add a channel dimension first (MONAI: EnsureChannelFirst, or img[None])."
        )
    _check_layout(img, name)
    if img.numel() == 0:
        raise ValueError(f"The {name} is empty (shape {tuple(img.shape)}); every axis needs at least one element.")
    if img.is_floating_point():
        bad = int((~torch.isfinite(img)).sum())
        if bad:
            raise ValueError(
                f"The {name} has {bad} NaN or infinite values out of {img.numel()}; clean them first "
                "(e.g. `torch.nan_to_num(img)` or MONAI's `NormalizeIntensity`/masking)."
            )
        if img.dtype == torch.float64 and bool((img.abs() > torch.finfo(torch.float32).max).any()):
            raise ValueError(f"The {name} has values beyond the float32 range (+-3.4e38) the fit runs in; rescale it first.")


def _check_layout(img: torch.Tensor, name: str) -> None:
    """Refuse layouts that are not channel-first images but look like one: a channel-last image read as
    channel-first, and a batch."""
    channels, spatial = img.shape[0], tuple(img.shape[1:])
    if channels <= 1 or 0 in spatial:
        return
    if sum(s > 1 for s in spatial) < 2:
        raise ValueError(
            f"The {name} has shape {tuple(img.shape)}: read channel-first, that is {channels} channels of a "
            f"{spatial} image with fewer than two axes longer than 1. If it is channel-last (H, W, C), move the "
            "channels first (MONAI: EnsureChannelFirst(channel_dim=-1), or np.moveaxis(img, -1, 0)); a 2D image "
            "without channels needs img[None]."
        )
    if img.ndim == 4 and spatial[0] == 1:
        raise ValueError(
            f"The {name} has shape {tuple(img.shape)}, which looks like a batch (B, 1, H, W) of {channels} images, "
            "not a channel-first image; denoise the items one by one (e.g. `[t(x) for x in batch]`), or pass a "
            "channel-first (C, H, W) image."
        )


def check_network_settings(prior: str, **settings: object) -> None:
    """Refuse network settings (those given, not None) where ``prior`` fits no network: they would change nothing.

    Raises:
        ValueError: naming the settings and the priors that fit a network.
    """
    given = sorted(k for k, v in settings.items() if v is not None)
    if given and resolve_prior(prior) == Prior.FILTER:
        raise ValueError(
            f"{', '.join(given)} {'sets' if len(given) == 1 else 'set'} the network fit, and prior={str(prior)!r} "
            "fits no network (the filter alone). Pass prior='network' (the network alone) or prior='network+filter' "
            "(Rician: the fit guides the filter), or leave them out."
        )

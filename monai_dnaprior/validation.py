"""Checks of user input that fail early, with a message that says what was wrong and what to do."""

from __future__ import annotations

import torch

__all__ = ["check_image", "check_choice"]


def check_choice(name: str, value: object, choices: tuple) -> None:
    """Raise a ValueError naming the choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(repr(c) for c in choices)}.")


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

"""The ``auto`` noise model: the one the data allow, tested on the image as it came."""

from __future__ import annotations

import torch
from monai.utils import look_up_option

from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.noise.field import detect_noise_model
from monai_dnaprior.noise.models import get_noise_model
from monai_dnaprior.noise.spectrum import estimate_noise_spectrum
from monai_dnaprior.settings import NoiseModelName

__all__ = ["choose_noise_model"]


def choose_noise_model(noise_model: str, x: torch.Tensor, spatial_dims: int, has_psd: bool = False) -> NoiseModelName:
    """The model to use: the one asked for, or for ``"auto"`` the one :func:`detect_noise_model` finds. Signal-dependent
    noise whose variance-stabilised form is still coloured, and any noise with a given spectrum, is taken as additive
    (Gaussian), except a Rician magnitude (a Rayleigh background)."""
    noise_model = look_up_option(noise_model, NoiseModelName)
    if noise_model != NoiseModelName.AUTO:
        return noise_model
    detected = NoiseModelName(detect_noise_model(x, spatial_dims))
    if detected == NoiseModelName.RICIAN or (detected == NoiseModelName.GAUSSIAN and not has_psd):
        return detected
    if has_psd:
        return NoiseModelName.GAUSSIAN
    window = IntensityWindow.from_image(x, zero_based=True)
    stabilised = get_noise_model(detected, window.normalize(x), spatial_dims).forward(window.normalize(x))
    return detected if estimate_noise_spectrum(stabilised, spatial_dims)[0].is_white else NoiseModelName.GAUSSIAN

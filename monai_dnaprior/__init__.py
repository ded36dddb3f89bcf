"""DNA-Prior for MONAI: training-free denoising of medical images by a dual-domain Deep Image Prior."""

from __future__ import annotations

from monai_dnaprior.engine import VOLUME_MODES, DenoiseResult, denoise
from monai_dnaprior.fit import FitConfig, FitResult, PriorState, fit_prior
from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.losses import SpectralFidelity, radial_frequency, spatial_fft, total_variation
from monai_dnaprior.networks import DIPHourglass
from monai_dnaprior.noise import (
    NOISE_MODELS,
    NoiseField,
    NoiseModel,
    NoiseSpectrum,
    detect_noise_model,
    estimate_noise_field,
    estimate_noise_level,
    estimate_noise_spectrum,
    estimate_poisson_gain,
    get_noise_model,
)
from monai_dnaprior.presets import PRESETS, preset_config
from monai_dnaprior.stopping import OutputAverager
from monai_dnaprior.transforms import DNAPriorDenoise, DNAPriorDenoised, DNAPriorDenoiseD, DNAPriorDenoiseDict

__version__ = "0.7.1"

__all__ = [
    "DIPHourglass",
    "DNAPriorDenoise",
    "DNAPriorDenoiseD",
    "DNAPriorDenoiseDict",
    "DNAPriorDenoised",
    "DenoiseResult",
    "FitConfig",
    "FitResult",
    "IntensityWindow",
    "NOISE_MODELS",
    "NoiseField",
    "NoiseModel",
    "NoiseSpectrum",
    "OutputAverager",
    "PRESETS",
    "PriorState",
    "SpectralFidelity",
    "VOLUME_MODES",
    "denoise",
    "detect_noise_model",
    "estimate_noise_field",
    "estimate_noise_spectrum",
    "estimate_noise_level",
    "estimate_poisson_gain",
    "fit_prior",
    "get_noise_model",
    "preset_config",
    "radial_frequency",
    "spatial_fft",
    "total_variation",
]

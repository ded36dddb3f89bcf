"""DNA-Prior for MONAI: denoising of medical images with no training data, from the noise field estimated from each
image: a collaborative filter by default, the DNA-Prior network (an untrained encoder-decoder fitted under a
dual-domain objective) on request."""

from __future__ import annotations

from monai_dnaprior.denoising import DenoiseResult, denoise
from monai_dnaprior.filters import CollaborativePass, filter_observation
from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.network import (
    DIPHourglass,
    FitResult,
    OutputAverager,
    PriorState,
    SpectralFidelity,
    fit_prior,
    radial_frequency,
    spatial_fft,
    total_variation,
)
from monai_dnaprior.noise import (
    NOISE_MODELS,
    GaussianNoise,
    PoissonNoise,
    RicianNoise,
    SpeckleNoise,
    NoiseField,
    NoiseModel,
    NoiseSpectrum,
    choose_noise_model,
    detect_noise_model,
    estimate_noise_field,
    estimate_noise_level,
    estimate_noise_spectrum,
    estimate_poisson_gain,
    get_noise_model,
)
from monai_dnaprior.progress import reporting_progress
from monai_dnaprior.settings import (
    NETWORK_ALONE,
    PRESETS,
    FilterConfig,
    NetworkConfig,
    NoiseModelName,
    Preset,
    Prior,
    VolumeMode,
    preset_settings,
)
from monai_dnaprior.transforms import DNAPriorDenoise, DNAPriorDenoised, DNAPriorDenoiseD, DNAPriorDenoiseDict

__version__ = "0.8.0"

__all__ = [
    "CollaborativePass",
    "DIPHourglass",
    "DNAPriorDenoise",
    "DNAPriorDenoiseD",
    "DNAPriorDenoiseDict",
    "DNAPriorDenoised",
    "DenoiseResult",
    "FilterConfig",
    "FitResult",
    "GaussianNoise",
    "IntensityWindow",
    "NOISE_MODELS",
    "NETWORK_ALONE",
    "NetworkConfig",
    "NoiseField",
    "NoiseModel",
    "NoiseModelName",
    "NoiseSpectrum",
    "OutputAverager",
    "PRESETS",
    "PoissonNoise",
    "Preset",
    "Prior",
    "PriorState",
    "RicianNoise",
    "SpeckleNoise",
    "SpectralFidelity",
    "VolumeMode",
    "choose_noise_model",
    "denoise",
    "detect_noise_model",
    "estimate_noise_field",
    "estimate_noise_level",
    "estimate_noise_spectrum",
    "estimate_poisson_gain",
    "filter_observation",
    "fit_prior",
    "get_noise_model",
    "preset_settings",
    "radial_frequency",
    "reporting_progress",
    "spatial_fft",
    "total_variation",
]

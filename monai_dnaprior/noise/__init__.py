"""Noise: estimation from the image alone (levels, masks, spectra), the noise models the fit works in, one class
each, and the ``auto`` choice among them."""

from __future__ import annotations

from monai_dnaprior.noise.estimation import (
    MAD_TO_SIGMA,
    binned_variance,
    estimate_log_noise_level,
    estimate_noise_level,
    estimate_poisson_gain,
    finest_scale_quietness,
    haar_blocks,
    haar_finest_detail,
    robust_sigma,
    slice_noise_scale,
)
from monai_dnaprior.noise.rayleigh import estimate_rician_sigma, rician_background_sigma
from monai_dnaprior.noise.models import (
    NOISE_MODELS,
    SPECKLE_OFFSET,
    GaussianNoise,
    NoiseModel,
    PoissonNoise,
    RicianNoise,
    SpeckleNoise,
    get_noise_model,
    noise_model_class,
    rician_mean,
)
from monai_dnaprior.noise.spectrum import NoiseSpectrum, estimate_noise_spectrum, spectrum_from_psd
from monai_dnaprior.noise.field import UPPER_BOUND_SHARE, NoiseField, estimate_noise_field
from monai_dnaprior.noise.auto import choose_noise_model, detect_noise_model

__all__ = [
    "MAD_TO_SIGMA",
    "NOISE_MODELS",
    "SPECKLE_OFFSET",
    "UPPER_BOUND_SHARE",
    "GaussianNoise",
    "NoiseField",
    "NoiseModel",
    "NoiseSpectrum",
    "PoissonNoise",
    "RicianNoise",
    "SpeckleNoise",
    "binned_variance",
    "choose_noise_model",
    "detect_noise_model",
    "estimate_log_noise_level",
    "estimate_noise_field",
    "estimate_noise_level",
    "estimate_noise_spectrum",
    "estimate_poisson_gain",
    "estimate_rician_sigma",
    "finest_scale_quietness",
    "get_noise_model",
    "haar_blocks",
    "haar_finest_detail",
    "noise_model_class",
    "rician_background_sigma",
    "rician_mean",
    "robust_sigma",
    "slice_noise_scale",
    "spectrum_from_psd",
]

"""The ``auto`` noise model: the one the data allow, tested on the image as it came (the rules are scale-free)."""

from __future__ import annotations

import torch
from monai.utils import look_up_option

from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.noise.estimation import binned_variance, haar_blocks, too_thin
from monai_dnaprior.noise.models import get_noise_model
from monai_dnaprior.noise.rayleigh import coloured_rayleigh_background, rayleigh_darkest_blocks
from monai_dnaprior.noise.spectrum import estimate_noise_spectrum
from monai_dnaprior.settings import NoiseModelName

__all__ = ["choose_noise_model", "detect_noise_model"]

_MIN_DETECTION_BLOCKS = 256  # fewer finest blocks that carry noise: too few to tell the models apart
_MULTIPLICATIVE_SLOPE = 1.6  # log variance against log mean above this: variance grows as the mean's square
_COUNTING_SLOPE = 0.6  # above this: in proportion to the mean


def detect_noise_model(y: torch.Tensor, spatial_dims: int) -> NoiseModelName:
    """The noise model the data allow, from the image as it came.

    - ``rician``: a non-negative image whose darkest blocks are Rayleigh
      (:func:`~monai_dnaprior.noise.rayleigh.rayleigh_darkest_blocks`): an MRI magnitude with a background of pure
      noise. Where the noise is coloured (a k-space window), the finest scale sees only part of it and the test
      reads the darkest blocks' own voxels against the flat patches' noise instead
      (:func:`~monai_dnaprior.noise.rayleigh.coloured_rayleigh_background`);
    - ``poisson``/``speckle``: a non-negative image whose noise variance grows with the local mean over its
      brighter half, in proportion to it (counts) or to its square (multiplicative);
    - ``gaussian`` otherwise.
    """
    if float(y.min()) < -1e-6 * float(y.abs().max()) or too_thin(y, spatial_dims):
        return NoiseModelName.GAUSSIAN
    detail, mean, noisy = haar_blocks(y, spatial_dims, exclude_clipped=False)
    if int(noisy.sum()) < _MIN_DETECTION_BLOCKS:
        return NoiseModelName.GAUSSIAN
    if rayleigh_darkest_blocks(detail[noisy], mean[noisy]) or coloured_rayleigh_background(y, spatial_dims):
        return NoiseModelName.RICIAN
    return _signal_dependence(y, spatial_dims)


def _signal_dependence(y: torch.Tensor, spatial_dims: int) -> NoiseModelName:
    """Speckle, Poisson or Gaussian by the slope of the log noise variance against the log local mean over the
    brighter half of the intensity bins (2, 1 or 0 in theory); Gaussian where their means span too little."""
    m, v = binned_variance(y, spatial_dims)
    keep = (m >= m.median()) & (m > 0) & (v > 0)
    if int(keep.sum()) < 4 or float(m[keep].max()) < 1.5 * float(m[keep].min()):
        return NoiseModelName.GAUSSIAN
    slope = float(torch.linalg.lstsq(
        torch.stack([m[keep].log(), torch.ones(int(keep.sum()))], 1).double(), v[keep].log()[:, None].double()
    ).solution[0])
    if slope > _MULTIPLICATIVE_SLOPE:
        return NoiseModelName.SPECKLE
    if slope > _COUNTING_SLOPE:
        return NoiseModelName.POISSON
    return NoiseModelName.GAUSSIAN


def choose_noise_model(noise_model: str, x: torch.Tensor, spatial_dims: int, has_psd: bool = False) -> NoiseModelName:
    """The model to use: the one asked for, or for ``"auto"`` the one :func:`detect_noise_model` finds. Signal-dependent
    noise whose variance-stabilised form is still coloured, and any noise with a given spectrum, is taken as additive
    (Gaussian), except a Rician magnitude (a Rayleigh background)."""
    noise_model = look_up_option(noise_model, NoiseModelName)
    if noise_model != NoiseModelName.AUTO:
        return noise_model
    detected = detect_noise_model(x, spatial_dims)
    if detected == NoiseModelName.RICIAN or (detected == NoiseModelName.GAUSSIAN and not has_psd):
        return detected
    if has_psd:
        return NoiseModelName.GAUSSIAN
    window = IntensityWindow.from_image(x, zero_based=True)
    stabilised = get_noise_model(detected, window.normalize(x), spatial_dims).forward(window.normalize(x))
    return detected if estimate_noise_spectrum(stabilised, spatial_dims)[0].is_white else NoiseModelName.GAUSSIAN

"""A magnitude series' clean estimate with the Rician bias read at a local median.

The Rician mean's inverse is steep near the noise floor (its slope is infinite at the floor): applied voxel by voxel
to a denoised series it removes the bias and multiplies the filter's residual error there by that slope. In a
diffusion series at b = 1000 s/mm^2 the CSF's diffusion-weighted signal lies about two noise sigmas above the floor,
and the amplified error differs between the directions, which reads as a false anisotropy. Here the bias is read at
the median of each voxel's ``3^d`` neighbourhood (volume by volume; a median keeps a tissue's edge where a smoothing
would carry the tissue's level into a background beside it) and subtracted, and the estimate's own variation around
that level is kept as it is: ``clean = inverse(s) + (m - s)``, ``s`` the median of the estimate ``m``; 0 where
either ``s`` or ``m`` holds no signal (:meth:`~monai_dnaprior.noise.models.NoiseModel.no_signal`). Models whose
inverse is not a magnitude's take their own ``clean_estimate``.
"""

from __future__ import annotations

import torch
from monai.networks.layers import median_filter

from monai_dnaprior.noise.models import NoiseModel

__all__ = ["local_median", "median_bias_clean"]


def local_median(x: torch.Tensor) -> torch.Tensor:
    """The median of every voxel's ``3^d`` neighbourhood in each channel of ``x`` ``(C, *spatial)`` (MONAI's
    ``median_filter``, the border replicated), one channel at a time (its neighbourhoods take ``3^d`` times the
    memory of what it filters)."""
    return torch.stack([median_filter(channel, 3, x.ndim - 1) for channel in x])


def median_bias_clean(model: NoiseModel, estimate: torch.Tensor) -> torch.Tensor:
    """The clean series from ``estimate`` ``(C, *spatial)`` (the denoised observation's mean in the fit domain):
    for a magnitude, the bias read at the local median; otherwise ``model.clean_estimate``."""
    if not model.is_magnitude:
        return model.clean_estimate(estimate)[0]
    median = local_median(estimate)
    level = model.unobserve(median)
    background = model.no_signal(median) | model.no_signal(estimate)
    return torch.where(background, torch.zeros_like(estimate), level + estimate - median).clamp_min(0)

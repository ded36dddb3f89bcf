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

from monai_dnaprior.noise.models import NoiseModel

__all__ = ["local_median", "median_bias_clean"]


def local_median(x: torch.Tensor) -> torch.Tensor:
    """The median of every voxel's ``3^d`` neighbourhood in each channel of ``x`` ``(C, *spatial)`` (the border
    replicated), one channel at a time (the neighbourhoods take ``3^d`` times a channel's memory)."""
    spatial_dims = x.ndim - 1
    out = torch.empty_like(x)
    for c in range(x.shape[0]):
        padded = torch.nn.functional.pad(x[c][None, None], (1,) * (2 * spatial_dims), mode="replicate")[0, 0]
        for dim in range(spatial_dims):
            padded = padded.unfold(dim, 3, 1)
        out[c] = padded.reshape(*x.shape[1:], -1).median(-1).values
    return out


def median_bias_clean(model: NoiseModel, estimate: torch.Tensor) -> torch.Tensor:
    """The clean series from ``estimate`` ``(C, *spatial)`` (the denoised observation's mean in the fit domain):
    for a magnitude, the bias read at the local median; otherwise ``model.clean_estimate``."""
    if not model.is_magnitude:
        return model.clean_estimate(estimate)[0]
    median = local_median(estimate)
    level = model.clean_estimate(median)[0]
    background = model.no_signal(median) | model.no_signal(estimate)
    return torch.where(background, torch.zeros_like(estimate), level + estimate - median).clamp_min(0)

"""The per-voxel uncertainty map: the expected error of the returned image, in its intensity units.

The returned image is the last collaborative Wiener pass's output (its estimate of the observation's mean, mapped
to the clean image; in 2D averaged with the NL-Bayes step's, whose error is not modelled: the average's is the
smaller). Given its pilot that pass is linear in the observation, so its error per voxel is known in closed form up
to the clean signal (:func:`monai_dnaprior.wiener.collaborative_wiener` with ``return_variance``):

- the residual noise variance ``sum_il (B_ij A_lk)^2 gain_li^2 variance_i`` (exact for a pilot independent of the
  noise; coloured noise through its per-coefficient variances);
- the squared bias, what the shrinkage removed of the signal, ``(B^T (gain - 1) X A)^2``, with the pilot's
  coefficients for the clean ``X`` scaled by :data:`monai_dnaprior.wiener.BIAS_INFLATION` (the pilot is itself shrunk
  and reads the signal low; a thresholded pilot less so: :data:`monai_dnaprior.wiener.THRESHOLDED_BIAS_INFLATION`);

averaged over the overlapping groups with the image's own weights (``sum w e / sum w``, overlaps treated as fully
correlated: the independent form ``sum w^2 e / (sum w)^2`` came out 10x too small). Rician maps it through the
inverse of its mean, or through a fit's linear step plus the bias that step leaves (:func:`clean_error`). The
fit-domain error std is mapped to the image's intensities through the noise model's inverse by its local slope
(delta method) and the per-slice levels.

A global Monte-Carlo SURE rescaling was tried and dropped: it subtracts ``sigma^2`` from a residual about 10x larger
than the error, so a 2 % error in the estimated noise level moved it by 30 % (and below zero for Poisson/Rician).
"""

from __future__ import annotations

import torch

from monai_dnaprior.noise.models import NoiseModel

__all__ = ["clean_error", "observation_bias", "to_image_domain"]


def to_image_domain(model: NoiseModel, refined: torch.Tensor, std: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The fit-domain error std ``std`` of ``refined`` mapped through the noise model's inverse by its local slope
    (delta method: ``|d inverse / dx| std``), in the [0, 1]-normalised image domain.

    The slope is a central difference with both sides inverted together, so that an inverse with a global factor
    (speckle keeps the mean intensity) gives both the same factor.
    """
    x, std64 = refined.double(), std.double()
    step = 1e-4 * std64.clamp_min(1e-6)
    both = model.inverse(torch.stack([x - step, x + step]), y.double())
    return (((both[1] - both[0]).abs() / 2) * (std64 / step)).to(std.dtype)


def clean_error(model: NoiseModel, mean: torch.Tensor, clean: torch.Tensor, error: torch.Tensor, by_fit: bool,
                min_slope: float = 0.1) -> torch.Tensor:
    """Fit-domain error std of the clean estimate ``clean`` made from the estimated observation mean ``mean``, whose
    expected squared error is ``error``.

    Where the mean is the clean image (all models but Rician) that is ``sqrt(error)``. A Rician mean inverted
    exactly scales the error by the mean's slope (delta method; the slope floored at ``min_slope``: at the noise
    floor every mean below the Rayleigh's maps to 0); mapped back by the fit's linear step (``by_fit``) it adds the
    bias that step leaves (:func:`observation_bias`).
    """
    if model.name != "rician":
        return error.clamp_min(0).sqrt()
    if by_fit:
        return (error + observation_bias(model, mean, clean)).clamp_min(0).sqrt()
    return error.clamp_min(0).sqrt() / model.observe_slope(clean).clamp_min(min_slope)


def observation_bias(model: NoiseModel, mean: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Squared fit-domain bias of ``clean``, the observation mean ``mean`` mapped back by one linear step from a fit,
    against the exact ``unobserve(mean)`` (Rician; 0 for the other models). Near the noise floor the mean's slope
    falls to 0 and the two part: their squared disagreement is the bias the linear step leaves."""
    if model.name != "rician":
        return torch.zeros_like(clean)
    return (clean.abs() - model.unobserve(mean)).square()

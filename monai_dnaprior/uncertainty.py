"""The per-voxel uncertainty map: the expected error of the returned image, in its intensity units.

The returned image is the last collaborative Wiener pass's output (its estimate of the observation's mean, mapped
to the clean image), in 2D with white noise averaged with the NL-Bayes step's. Given its pilot the Wiener pass is
linear in the observation, so its error per voxel is known in closed form up to the clean signal
(:func:`monai_dnaprior.filters.collaborative.collaborative_filter` with ``return_variance``):

- the residual noise variance ``sum_il (B_ij A_lk)^2 gain_li^2 variance_i`` (exact for a pilot independent of the
  noise; coloured noise through its per-coefficient variances);
- the squared bias, what the shrinkage removed of the signal, ``(B^T (gain - 1) X A)^2``, with the group's own
  estimate's coefficients for the clean ``X``, scaled by :data:`monai_dnaprior.filters.collaborative.BIAS_INFLATION`
  (the estimate is shrunk and reads the signal low);

averaged over the overlapping groups with the image's own weights (``sum w e / sum w``: overlaps are taken as fully
correlated). Where the NL-Bayes step is averaged in, the map is the average's error (:func:`averaged_error`) with the
step's own, the posterior variance of the NL-Bayes model of the result
(:func:`monai_dnaprior.filters.nl_bayes.bayes_variance`): the groups' covariance sees how much similar patches
differ, which the fixed DCT coefficients miss. Where the observation's mean is not the clean image (Rician), the
error is mapped through the inverse of the mean by quadrature, or through a fit's linear step plus the bias that step
leaves (:func:`clean_error`). A background that the background rule returns as 0 (its neighbourhood's mean at the
noise floor) has a map of 0 there: the rule claims no signal, so signal below the floor is missed. The fit-domain
error std is mapped to the image's intensities through the noise model's inverse by its local slope (delta method)
and the per-slice levels.

The map is not rescaled by a Monte-Carlo SURE estimate, globally or locally: it subtracts ``sigma^2`` from a
residual much larger than the error, so a small error in the estimated noise level moves it far. Measured against
the actual error: ``benchmarks/results/uncertainty/README.md``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from monai_dnaprior.noise.models import NoiseModel

__all__ = ["averaged_error", "clean_error", "observation_bias", "to_image_domain"]

_QUADRATURE = 5  # Gauss-Hermite nodes of the Rician inverse's error


def to_image_domain(model: NoiseModel, refined: torch.Tensor, std: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The fit-domain error std ``std`` of ``refined`` mapped through the noise model's inverse by its local slope
    (delta method: ``|d inverse / dx| std``), in the [0, 1]-normalised image domain.

    The slope is the steeper of the two one-sided differences, all three points inverted together so that an
    inverse with a global factor (speckle keeps the mean intensity) gives each the same factor. A central
    difference reads a kink as flat: Rician's ``|x|`` at a background's 0 gave a map of 0 there.
    """
    x, std64 = refined.double(), std.double()
    step = 1e-4 * std64.clamp_min(1e-6)
    lower, centre, upper = model.inverse(torch.stack([x - step, x, x + step]), y.double())
    slope = torch.maximum((upper - centre).abs(), (centre - lower).abs()) / step
    return (slope * std64).to(std.dtype)


def averaged_error(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Expected squared error of the average of two estimates whose expected squared errors are ``first`` and
    ``second``, their errors taken as fully correlated (both come from the same noise)."""
    return ((first.clamp_min(0).sqrt() + second.clamp_min(0).sqrt()) / 2).square()


def clean_error(model: NoiseModel, mean: torch.Tensor, clean: torch.Tensor, error: torch.Tensor, by_fit: bool
                ) -> torch.Tensor:
    """Fit-domain error std of the clean estimate ``clean`` made from the estimated observation mean ``mean``, whose
    expected squared error is ``error``.

    Where the mean is the clean image (``model.mean_is_clean``: all models but Rician) that is ``sqrt(error)``. A
    mean inverted exactly (``mean`` the level the inverse is read at, the local median: its error taken as the
    estimate's): the root mean square of ``unobserve(mean + e) - unobserve(mean)`` over ``e ~ N(0, error)``, by
    Gauss-Hermite quadrature (near the noise floor the inverse is steep and a mean below the floor maps to 0, where a
    slope would mislead). Mapped back by the fit's linear step (``by_fit``) it adds the bias that step leaves
    (:func:`observation_bias`).
    """
    if model.mean_is_clean:
        return error.clamp_min(0).sqrt()
    if by_fit:
        return (error + observation_bias(model, mean, clean)).clamp_min(0).sqrt()
    nodes, weights = np.polynomial.hermite.hermgauss(_QUADRATURE)
    std = error.clamp_min(0).sqrt()
    level = model.unobserve(mean)
    total = torch.zeros_like(clean)
    for node, weight in zip(nodes, weights / math.sqrt(math.pi)):
        shifted = model.unobserve(mean + float(math.sqrt(2) * node) * std)
        total += float(weight) * (shifted - level).square()
    return total.sqrt()


def observation_bias(model: NoiseModel, mean: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Squared fit-domain bias of ``clean``, the observation mean ``mean`` mapped back by one linear step from a fit,
    against the exact ``unobserve(mean)`` (0 where the mean is the clean image). Near the Rician noise floor the mean's
    slope falls to 0 and the two part: their squared disagreement is the bias the linear step leaves."""
    if model.mean_is_clean:
        return torch.zeros_like(clean)
    return (clean.abs() - model.unobserve(mean)).square()

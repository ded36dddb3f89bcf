"""The NL-Bayes second step (Lebrun, Buades & Morel, 2013): a Gaussian model per group of similar patches.

For each group of patches matched on a pilot, the patches are taken as draws of a Gaussian whose covariance
``C`` is that of the pilot's patches and whose mean ``m`` is the mean of the noisy ones; each noisy patch ``y``
is then replaced by its posterior mean ``m + C (C + sigma^2 N)^-1 (y - m)``, ``N`` the noise's correlation over
the patch (the identity for white noise; coloured noise from its spectrum, exactly). Where a DCT Wiener pass
shrinks fixed coefficients, this adapts the basis to every group (the eigenvectors of ``C``), so the two make
different errors. 2D or 3D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from monai_dnaprior.block_matching import match_blocks, patch_indices
from monai_dnaprior.noise.spectrum import NoiseSpectrum
from monai_dnaprior.wiener import GROUPED_VOXELS, in_slabs

__all__ = ["BayesPass", "bayes_refine", "nl_bayes"]


@dataclass(frozen=True)
class BayesPass:
    """Square (2D) or cubic (3D) patch side, patches per group, search radius and reference step, in voxels."""

    patch: int = 7
    group: int = 80
    radius: int = 16
    step: int = 4

    def shapes(self, spatial_dims: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Patch shape, search radius and reference step per axis."""
        return (self.patch,) * spatial_dims, (self.radius,) * spatial_dims, (self.step,) * spatial_dims


def nl_bayes(
    noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, spec: BayesPass = BayesPass(),
    spectrum: NoiseSpectrum | None = None,
) -> torch.Tensor:
    """One NL-Bayes step over a single-channel image ``(H, W)`` or ``(H, W, D)`` with noise of std ``sigma`` (white,
    or coloured as ``spectrum`` says): groups matched on ``pilot``, every patch's posterior mean, the overlapping
    estimates averaged."""
    shape = noisy.shape
    patch, radius, step = spec.shapes(noisy.ndim)
    patch = tuple(min(p, s) for p, s in zip(patch, shape))
    correlation = None if spectrum is None or spectrum.is_white else _positive_definite(spectrum.covariance(patch))
    correlation = None if correlation is None else correlation.to(noisy)
    groups = match_blocks(pilot, patch, radius, step, spec.group)
    numerator = torch.zeros(noisy.numel(), device=noisy.device)
    count = torch.zeros(noisy.numel(), device=noisy.device)
    noisy_flat, pilot_flat = noisy.flatten(), pilot.flatten()
    chunk = max(1, GROUPED_VOXELS // (groups.shape[1] * math.prod(patch)))
    for a in range(0, groups.shape[0], chunk):
        index = patch_indices(groups[a : a + chunk], patch, shape)  # (refs, group, voxels)
        estimate = _posterior_mean(noisy_flat[index], pilot_flat[index], sigma, correlation)
        numerator.index_add_(0, index.flatten(), estimate.flatten())
        count.index_add_(0, index.flatten(), torch.ones_like(estimate).flatten())
    return (numerator / count).view(shape)


def _positive_definite(correlation: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    """The nearest correlation matrix whose eigenvalues are at least ``floor`` (a spectrum truncated to a few lags,
    or estimated, can dip below zero at some frequency)."""
    values, vectors = torch.linalg.eigh(correlation.double())
    return (vectors * values.clamp_min(floor)) @ vectors.T


def _posterior_mean(
    noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, correlation: torch.Tensor | None = None
) -> torch.Tensor:
    """``m + C (C + sigma^2 N)^-1 (y - m)`` for every patch ``y`` of the groups ``(refs, group, voxels)``, ``C``
    the covariance of the group's pilot patches, ``m`` the mean of its noisy ones and ``N`` the noise's
    ``correlation`` over the patch (None: the identity); as ``y - sigma^2 N (C + sigma^2 N)^-1 (y - m)``, one
    Cholesky solve per group (``C + sigma^2 N`` is positive definite; in float64 where a tiny ``sigma`` leaves it
    too ill-conditioned for float32)."""
    centred = pilot - pilot.mean(1, keepdim=True)
    covariance = centred.transpose(1, 2) @ centred / max(1, pilot.shape[1] - 1)
    if correlation is None:
        covariance.diagonal(dim1=1, dim2=2).add_(sigma**2)
    else:
        covariance = covariance + sigma**2 * correlation.to(covariance)
    factor, failed = torch.linalg.cholesky_ex(covariance)
    if bool(failed.any()):  # in float64 too: sigma is negligible, and the posterior mean is the patch itself
        if noisy.dtype == torch.float64:
            return noisy
        wide = None if correlation is None else correlation.double()
        return _posterior_mean(noisy.double(), pilot.double(), sigma, wide).to(noisy.dtype)
    residual = torch.cholesky_solve((noisy - noisy.mean(1, keepdim=True)).transpose(1, 2), factor)
    if correlation is not None:
        residual = correlation.to(residual) @ residual
    return noisy - sigma**2 * residual.transpose(1, 2)


def _bayes_image(
    noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, spec: BayesPass, spectrum: NoiseSpectrum | None
) -> torch.Tensor:
    """:func:`nl_bayes` over a single-channel image, a large one in slabs (:func:`~monai_dnaprior.wiener.in_slabs`)."""
    patch, radius, step = spec.shapes(noisy.ndim)
    return in_slabs(lambda n, p: nl_bayes(n, p, sigma, spec, spectrum), noisy, pilot, patch, radius, step,
                    spec.group > 1)


def bayes_refine(
    noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, spec: BayesPass = BayesPass(),
    spectrum: NoiseSpectrum | None = None,
) -> torch.Tensor:
    """NL-Bayes step of ``noisy`` ``(B, C, *spatial)`` (Gaussian noise of std ``sigma``, white or coloured as
    ``spectrum`` says) with ``pilot``, an estimate of the clean image of the same shape, channel by channel."""
    if sigma <= 0:
        return noisy.clone()
    out = torch.empty_like(noisy)
    for b in range(noisy.shape[0]):
        for c in range(noisy.shape[1]):
            out[b, c] = _bayes_image(noisy[b, c], pilot[b, c], sigma, spec, spectrum)
    return out

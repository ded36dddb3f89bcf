"""The NL-Bayes second step (Lebrun, Buades & Morel, 2013): a Gaussian model per group of similar patches.

For each group of patches matched on a pilot, the patches are taken as draws of a Gaussian whose covariance
``C`` is that of the pilot's patches and whose mean ``m`` is the mean of the noisy ones (shrunk towards the origin
where the pilot's is near it, by the noise left in that mean: shared by nearby patches under coloured noise); each
noisy patch ``y`` is then replaced by its posterior mean ``m + C (C + sigma^2 N)^-1 (y - m)``, ``N`` the noise's
correlation over the patch (the identity for white noise; coloured noise from its spectrum, exactly). Where a DCT
Wiener pass shrinks fixed coefficients, this adapts the basis to every group (the eigenvectors of ``C``), so the two
make different errors. 2D or 3D.

The same model gives the error of an estimate (:func:`bayes_variance`): a patch's posterior covariance is
``C - C (C + sigma^2 N)^-1 C``, its diagonal the expected squared error of every voxel of the posterior mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from monai_dnaprior.filters.block_matching import match_blocks, patch_indices
from monai_dnaprior.noise.spectrum import NoiseSpectrum
from monai_dnaprior.filters.collaborative import GROUPED_VOXELS
from monai_dnaprior.filters.slabs import by_channel, in_slabs
from monai_dnaprior.progress import in_shares, report_share

__all__ = ["POSTERIOR_INFLATION", "BayesPass", "bayes_refine", "bayes_variance", "nl_bayes"]

# The model's covariance is that of a shrunk estimate's patches, which lack the detail it lost, so its posterior
# variance reads the error low; scaled by this, measured against the actual error of the 2D dev scans
# (benchmarks/uncertainty.py: averaged with the Wiener pass's error, the map's RMS over the RMSE 0.83-1.20).
POSTERIOR_INFLATION = 1.5


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
    spectrum: NoiseSpectrum | None = None, shared_mean: bool = True,
) -> torch.Tensor:
    """One NL-Bayes step over a single-channel image ``(H, W)`` or ``(H, W, D)`` with noise of std ``sigma`` (white,
    or coloured as ``spectrum`` says): groups matched on ``pilot``, every patch's posterior mean, the overlapping
    estimates averaged. ``shared_mean``: a coloured noise's group mean is shrunk by the noise its patches share
    (:func:`_mean_noise`); else it is the noisy patches' plain mean."""
    patch = _patch_shape(spec, noisy.shape)
    coloured = spectrum is not None and not spectrum.is_white
    correlation = _positive_definite(spectrum.covariance(patch)).to(noisy) if coloured else None
    noisy_flat, pilot_flat = noisy.flatten(), pilot.flatten()

    def per_patch(index: torch.Tensor) -> torch.Tensor:
        mean_noise = None  # white noise's sigma^2 / group
        if coloured:
            mean_noise = _mean_noise(index, noisy.shape, sigma, spectrum) if shared_mean else torch.zeros(
                (index.shape[0], 1, 1), device=noisy.device)
        return _posterior_mean(noisy_flat[index], pilot_flat[index], sigma, correlation, mean_noise)

    return _over_groups(pilot, spec, per_patch)


def _mean_noise(index: torch.Tensor, shape: Sequence[int], sigma: float, spectrum: NoiseSpectrum) -> torch.Tensor:
    """The noise variance of every voxel of a group's mean patch, ``(refs, 1, 1)`` for the groups whose voxel
    indices are ``index`` ``(refs, group, voxels)``: ``sigma^2`` times the noise's correlation averaged over every
    pair of the group's patches, at the lag between their corners (patches nearer than the correlation length share
    their noise, and a mean over them keeps more of it than ``sigma^2 / group``). Each corner is coded as one integer
    on a grid wide enough that a difference of codes is a difference of lags, and the correlation is looked up by it."""
    corners = torch.stack(torch.unravel_index(index[..., 0], tuple(shape)), -1)
    corners = corners - corners.amin(1, keepdim=True)
    spread = int(corners.amax()) + 1  # lags between two corners of a group lie within +-(spread - 1) per axis
    side = 2 * spread - 1
    code = (corners * torch.tensor([side ** (corners.shape[-1] - 1 - d) for d in range(corners.shape[-1])],
                                   device=index.device)).sum(-1).to(torch.int32)
    table = spectrum.lag_table([spread - 1] * corners.shape[-1], index.device)
    lag = code[:, :, None] - code[:, None] + (side ** corners.shape[-1]) // 2
    return sigma**2 * table.flatten()[lag.long()].mean((1, 2))[:, None, None]


def _patch_shape(spec: BayesPass, shape: Sequence[int]) -> tuple[int, ...]:
    """The pass's patch, no larger than the image ``shape``."""
    return tuple(min(p, s) for p, s in zip(spec.shapes(len(shape))[0], shape))


def _over_groups(
    guide: torch.Tensor, spec: BayesPass, per_patch: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Groups of similar patches matched on ``guide`` (a single-channel image), ``per_patch(index)`` a value for
    every voxel of every patch of the groups whose voxel indices are ``index`` ``(refs, group, voxels)``, and the
    overlapping values averaged voxel by voxel (in chunks of bounded memory)."""
    patch = _patch_shape(spec, guide.shape)
    _, radius, step = spec.shapes(guide.ndim)
    groups = match_blocks(guide, patch, radius, step, spec.group)
    total = torch.zeros(guide.numel(), device=guide.device)
    count = torch.zeros(guide.numel(), device=guide.device)
    chunk = max(1, GROUPED_VOXELS // (groups.shape[1] * math.prod(patch)))
    for a in range(0, groups.shape[0], chunk):
        index = patch_indices(groups[a : a + chunk], patch, guide.shape)
        values = per_patch(index)
        total.index_add_(0, index.flatten(), values.flatten())
        count.index_add_(0, index.flatten(), torch.ones_like(values).flatten())
        report_share(min(a + chunk, groups.shape[0]) / groups.shape[0])
    return (total / count).view(guide.shape)


def _positive_definite(correlation: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    """The nearest correlation matrix whose eigenvalues are at least ``floor`` (a spectrum truncated to a few lags,
    or estimated, can dip below zero at some frequency)."""
    values, vectors = torch.linalg.eigh(correlation.double())
    return (vectors * values.clamp_min(floor)) @ vectors.T


def _posterior_mean(
    noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, correlation: torch.Tensor | None = None,
    mean_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """``m + C (C + sigma^2 N)^-1 (y - m)`` for every patch ``y`` of the groups ``(refs, group, voxels)``, ``C``
    the covariance of the group's pilot patches, ``m`` the mean of its noisy ones (:func:`_group_mean`) and ``N``
    the noise's ``correlation`` over the patch (None: the identity); as ``y - sigma^2 N (C + sigma^2 N)^-1 (y - m)``,
    one Cholesky solve per group (``C + sigma^2 N`` is positive definite; in float64 where a tiny ``sigma`` leaves it
    too ill-conditioned for float32). ``mean_noise``: the noise left in each group's mean ``(refs, 1, 1)``, None
    for white noise's ``sigma^2 / group``."""
    factor, failed = torch.linalg.cholesky_ex(_noisy_covariance(pilot, sigma, correlation))
    if bool(failed.any()):  # in float64 too: sigma is negligible, and the posterior mean is the patch itself
        if noisy.dtype == torch.float64:
            return noisy
        wide = None if correlation is None else correlation.double()
        wide_mean = None if mean_noise is None else mean_noise.double()
        return _posterior_mean(noisy.double(), pilot.double(), sigma, wide, wide_mean).to(noisy.dtype)
    if mean_noise is None:
        mean_noise = torch.full((noisy.shape[0], 1, 1), sigma**2 / noisy.shape[1], dtype=noisy.dtype,
                                device=noisy.device)
    centred = noisy - _group_mean(noisy, pilot, mean_noise)
    residual = torch.cholesky_solve(centred.transpose(1, 2), factor)
    if correlation is not None:
        residual = correlation.to(residual) @ residual
    return noisy - sigma**2 * residual.transpose(1, 2)


def _group_mean(noisy: torch.Tensor, pilot: torch.Tensor, mean_noise: torch.Tensor) -> torch.Tensor:
    """The model's mean ``m`` for the groups ``(refs, group, voxels)``: the mean of the noisy patches shrunk towards
    the origin by the empirical Wiener gain ``p^2 / (p^2 + v)``, ``p`` the pilot patches' mean and ``v`` the noise
    left in the mean of the group (``mean_noise``; ``sigma^2 / group`` for white noise): where the pilot is 0 (a
    masked background), so is the mean, which would otherwise keep ``v`` of noise; elsewhere ``p^2`` dwarfs it."""
    energy = pilot.mean(1, keepdim=True).square()
    shrunk = noisy.mean(1, keepdim=True) * energy  # divided after, as before: white outputs the same to the bit
    return shrunk / (energy + mean_noise.to(energy)).clamp_min(torch.finfo(energy.dtype).tiny)


def _noisy_covariance(pilot: torch.Tensor, sigma: float, correlation: torch.Tensor | None) -> torch.Tensor:
    """``C + sigma^2 N`` for the groups ``(refs, group, voxels)``: ``C`` the covariance of their ``pilot`` patches,
    ``N`` the noise's ``correlation`` over the patch (None: the identity)."""
    centred = pilot - pilot.mean(1, keepdim=True)
    covariance = centred.transpose(1, 2) @ centred / max(1, pilot.shape[1] - 1)
    if correlation is None:
        covariance.diagonal(dim1=1, dim2=2).add_(sigma**2)
        return covariance
    return covariance + sigma**2 * correlation.to(covariance)


def _posterior_variance(patches: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per group of ``patches`` ``(refs, group, voxels) -> (refs, voxels)``, white noise: the diagonal of the
    posterior covariance ``sigma^2 (I - sigma^2 (C + sigma^2 I)^-1)``, plus the variance of the group's mean,
    ``sigma^2 / group`` (in float64: a nearly singular ``C + sigma^2 I``; where even that cannot be factored, sigma
    is negligible and so is the posterior variance)."""
    factor, failed = torch.linalg.cholesky_ex(_noisy_covariance(patches.double(), sigma, None))
    precision = torch.cholesky_inverse(factor).diagonal(dim1=1, dim2=2)
    variance = (sigma**2 * (1 - sigma**2 * precision)).clamp_min(0).masked_fill(failed[:, None] != 0, 0.0)
    return (variance + sigma**2 / patches.shape[1]).to(patches.dtype)


def _variance_image(estimate: torch.Tensor, sigma: float, spec: BayesPass) -> torch.Tensor:
    """:func:`bayes_variance` over a single-channel image ``(H, W)`` or ``(H, W, D)``."""
    flat = estimate.flatten()
    return _over_groups(estimate, spec,
                        lambda index: _posterior_variance(flat[index], sigma)[:, None].expand(index.shape))


def _bayes_image(
    noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, spec: BayesPass, spectrum: NoiseSpectrum | None,
    shared_mean: bool = True,
) -> torch.Tensor:
    """:func:`nl_bayes` over a single-channel image, a large one in slabs (:func:`~monai_dnaprior.filters.slabs.in_slabs`)."""
    patch, radius, step = spec.shapes(noisy.ndim)
    return in_slabs(lambda n, p: nl_bayes(n, p, sigma, spec, spectrum, shared_mean), noisy, pilot, patch, radius,
                    step, spec.group > 1)


def bayes_refine(
    noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, spec: BayesPass = BayesPass(),
    spectrum: NoiseSpectrum | None = None, shared_mean: bool = True,
) -> torch.Tensor:
    """NL-Bayes step of ``noisy`` ``(B, C, *spatial)`` (Gaussian noise of std ``sigma``, white or coloured as
    ``spectrum`` says) with ``pilot``, an estimate of the clean image of the same shape, channel by channel;
    ``shared_mean`` as :func:`nl_bayes`'s."""
    if sigma <= 0:
        return noisy.clone()
    return by_channel(noisy, pilot, lambda n, p: _bayes_image(n, p, sigma, spec, spectrum, shared_mean))


def bayes_variance(estimate: torch.Tensor, sigma: float, spec: BayesPass = BayesPass()) -> torch.Tensor:
    """Expected squared error per voxel of ``estimate`` ``(B, C, *spatial)``, an image denoised of white Gaussian
    noise of std ``sigma``, under the NL-Bayes model of its own groups (matched on it; every patch's posterior
    variance, the overlapping ones averaged, times :data:`POSTERIOR_INFLATION`).

    Where Wiener shrinkage of fixed coefficients sees only the detail the estimate kept, the groups' covariance also
    counts how much their patches differ, so textured groups, whose detail is partly lost, read a larger error.
    """
    out = torch.zeros_like(estimate)
    if sigma <= 0:
        return out
    patch, radius, step = spec.shapes(estimate.ndim - 2)
    for i in in_shares(estimate.shape[0] * estimate.shape[1]):
        b, c = divmod(i, estimate.shape[1])
        out[b, c] = in_slabs(lambda e, _: _variance_image(e, sigma, spec), estimate[b, c], estimate[b, c], patch,
                             radius, step, spec.group > 1)
    return POSTERIOR_INFLATION * out

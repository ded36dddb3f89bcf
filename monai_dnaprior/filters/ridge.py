"""Iterated linear combinations of patches (after Herbreteau & Kervrann's NL-Ridge and LIChI).

Every patch of a group of ``k`` similar patches is re-estimated as an affine combination of the group's patches,
``X_hat = Theta Z``, the ``k x k`` weights from a closed form: with ``X`` the guide's group (the previous estimate),
``Q = X X^T + D`` and ``D`` the noise's Gram matrix over the group, ``Theta = I - (Q^-1 - Q^-1 1 1^T Q^-1 / 1^T Q^-1
1) D`` (the ridge ``X X^T Q^-1`` with its rows constrained to sum to 1, so a group's offset passes unshrunk). Where a
Wiener or NL-Bayes step shrinks the coefficients of a patch basis, this works across the group, in ``k`` dimensions
whatever the patch size, and adapts to each group.

The passes iterate with a combined image ``Z`` (LIChI's scheme): it starts as the observation; every iteration the
groups of ``Z`` are combined with weights from the guide, ``X`` becomes the result and ``Z`` moves towards it by a
share that shrinks to 0 at the last iteration, so each iteration filters a less noisy ``Z`` against a better guide.
The noise left in ``Z`` is read per group from its distance to the observation, ``t = 1 - rms(Y - Z) / sigma``,
and ``D = n (t sigma)^2 I`` for white noise. Coloured noise: the group's patches share noise where they lie within
its correlation length, and ``D_km = n (t sigma)^2 rho(p_k - p_m)``, ``rho`` the noise's correlation at the lag
between the patches' corners. Each patch estimate's weight in the aggregation is the inverse of its noise,
``1 / |Theta_j|^2`` (at most ``k``). Where the guide's group is flat (its spread about the group's mean patch
small against the noise left), a patch averages only ``k`` noisy values where the guide averaged far more: the
result is ``X + g (Theta Z - X)``, ``g = snr / (snr + flat)``, ``snr`` the group's spread over ``(t sigma)^2``.
2D or 3D. Groups must be large (64): a patch's estimate averages at most
``k`` values, and with 16 or 32 a flat CT slice lost up to 1.3 dB (``docs/filter.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from monai_dnaprior.filters.block_matching import match_blocks, patch_indices
from monai_dnaprior.filters.collaborative import GROUPED_VOXELS
from monai_dnaprior.filters.slabs import by_channel, in_slabs
from monai_dnaprior.noise.spectrum import NoiseSpectrum
from monai_dnaprior.progress import report_share

__all__ = ["RidgePass", "combination_weights", "ridge_filter", "ridge_refine"]


@dataclass(frozen=True)
class RidgePass:
    """Patch side (square in 2D, cube in 3D), patches per group, search radius, reference step, iterations, the
    iterations between two block matchings, the first share ``Z`` keeps of itself (LIChI's ``tau``, falling
    linearly to 0 at the last iteration), in 3D the search radius along the last axis (0: ``radius``), and the
    signal-to-noise ratio of a group's guide at which half of the combination replaces the guide (``flat``; 0: all
    of it everywhere)."""

    patch: int = 7
    group: int = 64
    radius: int = 12
    step: int = 3
    iterations: int = 2
    rematch: int = 3
    keep: float = 0.75
    depth_radius: int = 0
    flat: float = 0.25

    def __post_init__(self) -> None:
        if min(self.patch, self.group, self.radius, self.step, self.iterations, self.rematch) < 1:
            raise ValueError(f"RidgePass needs positive sizes and counts, got {self!r}.")
        if self.flat < 0:
            raise ValueError(f"RidgePass.flat is a signal-to-noise ratio, at least 0, got {self.flat!r}.")
        if not 0 <= self.keep < 1:
            raise ValueError(f"RidgePass.keep is a share in [0, 1), got {self.keep!r}.")

    def shapes(self, spatial_dims: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Patch shape, search radius and reference step per axis."""
        radius = (self.radius,) * spatial_dims
        if spatial_dims == 3 and self.depth_radius > 0:
            radius = (self.radius, self.radius, self.depth_radius)
        return (self.patch,) * spatial_dims, radius, (self.step,) * spatial_dims


def combination_weights(guide: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The affine combination weights ``Theta`` ``(refs, k, k)`` for the guide groups ``(refs, k, n)`` and the noise
    Gram matrices ``noise`` ``(refs, k, k)`` (or ``(refs, 1, 1)`` times the identity): row ``j`` combines the
    group's patches into patch ``j``'s estimate, and the rows sum to 1. In the guide's precision; groups whose
    ``Q`` does not factor (next to no noise left, fewer voxels than patches: a singular Gram matrix) again in
    float64 with a little more on the diagonal."""
    k = guide.shape[1]
    scalar = noise.shape[-1] != k
    q = guide @ guide.transpose(1, 2)
    if scalar:
        q.diagonal(dim1=1, dim2=2).add_(noise[:, :, 0].to(q))
    else:
        q += noise.to(q)
    factor, failed = torch.linalg.cholesky_ex(q)
    if bool(failed.any()):  # also where a truncated or estimated spectrum leaves the noise's Gram matrix indefinite:
        # its off-diagonal mass on the diagonal makes it positive semi-definite (diagonally dominant)
        bad = failed != 0
        wide = q[bad].double()
        scale = wide.diagonal(dim1=1, dim2=2).mean(-1) + 1e-12
        wide.diagonal(dim1=1, dim2=2).add_(1e-4 * scale[:, None])
        if not scalar:
            off = noise[bad].double().abs().sum(-1) - noise[bad].double().diagonal(dim1=1, dim2=2).abs()
            wide.diagonal(dim1=1, dim2=2).add_(off)
        factor = factor.clone()
        factor[bad] = torch.linalg.cholesky(wide).to(factor)
    inverse = torch.cholesky_inverse(factor)
    row = inverse.sum(-1, keepdim=True)
    row = row / row.sum(1, keepdim=True).clamp_min(torch.finfo(row.dtype).tiny).sqrt()
    constrained = inverse.baddbmm_(row, row.transpose(1, 2), alpha=-1.0)  # Q^-1 - Q^-1 1 1^T Q^-1 / 1^T Q^-1 1
    if scalar:
        theta = constrained.mul_(-noise.to(q))
    else:
        theta = -(noise.to(q) @ constrained)
    theta.diagonal(dim1=1, dim2=2).add_(1.0)
    return theta


def ridge_filter(
    noisy: torch.Tensor, guide: torch.Tensor, sigma: float, spec: RidgePass = RidgePass(),
    spectrum: NoiseSpectrum | None = None,
) -> torch.Tensor:
    """The iterated combinations over a single-channel image ``(H, W)`` or ``(H, W, D)`` with noise of std
    ``sigma`` (white, or coloured as ``spectrum`` says), starting from ``guide``, an estimate of the clean image."""
    shape = noisy.shape
    patch, radius, step = spec.shapes(noisy.ndim)
    patch = tuple(min(p, s) for p, s in zip(patch, shape))
    n = math.prod(patch)
    lags = None
    if spectrum is not None and not spectrum.is_white:
        reach = torch.tensor([min(r, s - 1) for r, s in zip(radius, shape)], device=noisy.device)
        lags = (spectrum.lag_table(reach.tolist(), noisy.device), reach)
    group = spec.group
    if noisy.ndim == 3:  # a tiny volume: no more cubes than a corner reference reaches, since the reference fills a
        # short group and its copies, taken as independent noise, would keep it as noisy as it was
        group = min(group, math.prod(min(r + 1, s - p + 1) for r, s, p in zip(radius, shape, patch)))
    y_flat, x_flat, z_flat = noisy.flatten(), guide.flatten(), noisy.flatten()
    groups = None
    for m in range(spec.iterations):
        keep = (1 - (m + 1) / spec.iterations) * spec.keep
        if m % spec.rematch == 0:
            groups = match_blocks(x_flat.view(shape), patch, radius, step, group)
        x_flat, z_flat = _iteration(y_flat, x_flat, z_flat, groups, shape, patch, n, sigma, keep, lags, spec.flat)
        report_share((m + 1) / spec.iterations)
    return z_flat.view(shape)


def _iteration(
    y_flat: torch.Tensor, x_flat: torch.Tensor, z_flat: torch.Tensor, groups: torch.Tensor, shape: Sequence[int],
    patch: tuple[int, ...], n: int, sigma: float, keep: float, lags: tuple[torch.Tensor, torch.Tensor] | None,
    flat: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration over the flattened observation ``Y``, guide ``X`` and combined image ``Z``: every group of
    ``Z`` (corners ``groups``) combined with the guide's weights; the new guide and ``Z``, aggregated alike."""
    k = groups.shape[1]
    numerator_x = torch.zeros_like(x_flat)
    numerator_z = torch.zeros_like(x_flat)
    denominator = torch.zeros_like(x_flat)
    chunk = max(1, GROUPED_VOXELS // (k * n * 4))
    for a in range(0, groups.shape[0], chunk):
        corners = groups[a : a + chunk]
        index = patch_indices(corners, patch, shape)
        x, y, z = x_flat[index], y_flat[index], z_flat[index]
        left = 1 - (y - z).square().mean((1, 2)).sqrt() / sigma  # the share of the noise left in Z, per group
        left = left.clamp_min(keep + 1e-6)
        level = n * (sigma * left) ** 2
        if lags is None:
            noise = level[:, None, None]
        else:
            table, reach = lags
            delta = corners[:, :, None] - corners[:, None]
            inside = (delta.abs() <= reach).all(-1)
            rho = table[tuple((delta.clamp(-reach, reach) + reach).unbind(-1))] * inside
            noise = level[:, None, None] * rho
        theta = combination_weights(x, noise)
        estimate = theta @ z
        if flat > 0:  # where the guide's group is flat against the noise left, the guide is kept
            snr = (x - x.mean(1, keepdim=True)).square().mean((1, 2)) / (sigma * left) ** 2
            estimate = torch.lerp(x, estimate, (snr / (snr + flat))[:, None, None])
        mixed = (1 - keep / left)[:, None, None] * estimate + (keep / left)[:, None, None] * z
        weight = (1 / theta.square().sum(-1).clamp_min(1.0 / k))[..., None].expand_as(estimate)
        where = index.flatten()
        numerator_x.index_add_(0, where, (estimate * weight).flatten())
        numerator_z.index_add_(0, where, (mixed * weight).flatten())
        denominator.index_add_(0, where, weight.flatten())
    return numerator_x / denominator, numerator_z / denominator


def _ridge_image(noisy: torch.Tensor, guide: torch.Tensor, sigma: float, spec: RidgePass,
                 spectrum: NoiseSpectrum | None) -> torch.Tensor:
    """:func:`ridge_filter` over a single-channel image, a large one in slabs."""
    patch, radius, step = spec.shapes(noisy.ndim)
    return in_slabs(lambda y, g: ridge_filter(y, g, sigma, spec, spectrum), noisy, guide, patch,
                    tuple(r * spec.iterations for r in radius), step, True)


def ridge_refine(
    noisy: torch.Tensor, guide: torch.Tensor, sigma: float, spec: RidgePass = RidgePass(),
    spectrum: NoiseSpectrum | None = None,
) -> torch.Tensor:
    """:func:`ridge_filter` of ``noisy`` ``(B, C, *spatial)`` (Gaussian noise of std ``sigma``, white or coloured as
    ``spectrum`` says) from ``guide``, an estimate of the clean image of the same shape, channel by channel."""
    if sigma <= 0:
        return noisy.clone()
    return by_channel(noisy, guide, lambda n, g: _ridge_image(n, g, sigma, spec, spectrum))

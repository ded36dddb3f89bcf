"""Collaborative filtering of the observation: a hard-thresholding pass and empirical Wiener passes.

Shrinking each transform coefficient of the noisy image by ``|pilot|^2 / (|pilot|^2 + sigma^2)`` keeps what the
pilot says is signal and drops what it says is noise. The transform is a patch's DCT (``group=1``: a local DCT
Wiener filter) or, for a group of similar patches found by block matching on the pilot, the patches' DCT followed
by a DCT across the group (collaborative filtering, the second stage of BM3D/BM4D). Each pass's result is the next
pass's pilot. The first pilot is best made by a hard-thresholding pass (``threshold``, BM3D's first stage): groups
matched on the noisy image itself, every coefficient below ``threshold`` times its noise std zeroed. It keeps the
strong detail that a smooth pilot (a blurred image, a network's fit) loses for good, so one Wiener pass after it
beats several after a smooth pilot: each Wiener pass's result reads the signal low, and the next shrinks more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from monai_dnaprior.filters.block_matching import match_blocks, patch_indices
from monai_dnaprior.filters.slabs import in_slabs
from monai_dnaprior.progress import in_shares, report_share
from monai_dnaprior.noise.spectrum import NoiseSpectrum

__all__ = ["BIAS_INFLATION", "CollaborativePass", "RiskTally", "axis_transform", "collaborative_filter",
           "collaborative_refine", "dct_matrix", "group_variances", "haar_matrix", "patch_basis"]

# An adaptive group takes the Haar wavelet only where it predicts less than this share of the DCT's risk (on the 2D
# dev slices 1.0 cost up to 0.04 dB, 0.9 nothing; piecewise-constant phantoms keep most of the gain: docs/filter.md)
_MARGIN = 0.9
GROUPED_VOXELS = 2**22  # bounds the grouped patches held at once
# The group's own estimate reads the clean signal's energy low (detail it shrank away is invisible to it), so the
# squared bias it gives is scaled up by this, per number of spatial dimensions; measured against the actual error of
# the Wiener pass alone (benchmarks/uncertainty.py: the map's RMS over the RMSE, 0.84-1.22 on the 2D dev scans,
# 0.90-1.00 on the EPI volume).
BIAS_INFLATION = {2: 7.0, 3: 11.0}


def dct_matrix(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` of size ``n x n`` (``D @ x`` transforms, ``D.T @ c`` inverts)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=torch.float32)


def haar_matrix(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Orthonormal Haar wavelet matrix of size ``n x n`` (every level; ``n`` a power of 2), the mean first."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"A Haar matrix needs a power of 2, got {n}.")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        pair = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        h = torch.cat([torch.kron(h, pair[:1]), torch.kron(torch.eye(h.shape[0], dtype=torch.float64), pair[1:])])
        h = h / h.square().sum(1, keepdim=True).sqrt()
    return h.to(device=device, dtype=torch.float32)


def axis_transform(n: int, device: torch.device | str | None = None, haar: bool = False) -> torch.Tensor:
    """The orthonormal transform along one axis of ``n`` samples: the DCT, or the Haar wavelet where ``haar`` and
    ``n`` is a power of 2."""
    return haar_matrix(n, device) if haar and n & (n - 1) == 0 else dct_matrix(n, device)


def patch_basis(patch: Sequence[int], device: torch.device, haar: bool = False) -> torch.Tensor:
    """Separable transform of a row-major flattened patch: the DCT along every axis (``haar``: the Haar wavelet
    along every axis whose side is a power of 2)."""
    basis = axis_transform(patch[0], device, haar)
    for p in patch[1:]:
        basis = torch.kron(basis, axis_transform(p, device, haar))
    return basis


@dataclass
class RiskTally:
    """The risk the adaptive Wiener passes predicted, summed over their groups: with the DCT alone (``dct``) and with
    the lower of the DCT's and the Haar wavelet's per group (``chosen``)."""

    dct: float = 0.0
    chosen: float = 0.0

    @property
    def cut(self) -> float:
        """The share of the DCT's risk that the Haar wavelet, where it predicts less, removes (0 with no adaptive
        pass)."""
        return 1.0 - self.chosen / self.dct if self.dct > 0 else 0.0


@dataclass(frozen=True)
class CollaborativePass:
    """One collaborative pass: patch side, and for block matching the search radius, reference step and group size.

    With ``adaptive`` (white noise), every group takes the DCT or the Haar wavelet (in the patch and across the
    group), whichever its shrinkage predicts the lower risk for (:func:`collaborative_filter`).

    Its shrinkage is hard thresholding where ``threshold > 0`` (:meth:`hard_threshold`: no pilot, groups matched on
    the noisy image, coefficients below ``threshold`` times their noise std zeroed) and else empirical Wiener
    (:meth:`wiener`: groups matched on the pilot, gains from its coefficients). ``group=1`` filters every patch on
    its own (a local DCT filter, no search). In 3D, ``depth`` is the patch size along the last axis (1: flat
    patches; ``patch``: cubes), ``depth_radius`` the search radius along it, and the references step through every
    slice.
    """

    patch: int = 8
    group: int = 1
    radius: int = 8
    step: int = 1
    depth: int = 1
    depth_radius: int = 1
    threshold: float = 0.0
    adaptive: bool = False

    @classmethod
    def hard_threshold(cls, threshold: float, **shape: int) -> CollaborativePass:
        """A hard-thresholding pass (BM3D's first stage), ``threshold`` in noise stds."""
        if threshold <= 0:
            raise ValueError(f"A hard-thresholding pass needs a positive threshold, got {threshold!r}.")
        return cls(threshold=threshold, **shape)

    @classmethod
    def wiener(cls, **shape: int) -> CollaborativePass:
        """An empirical Wiener pass (BM3D's second stage; ``group=1``: a local DCT Wiener filter)."""
        return cls(**shape)

    @property
    def is_hard_threshold(self) -> bool:
        return self.threshold > 0

    def shapes(self, spatial_dims: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Patch shape, search radius and reference step per axis."""
        if spatial_dims == 2:
            return (self.patch,) * 2, (self.radius,) * 2, (self.step,) * 2
        return (self.patch, self.patch, self.depth), (self.radius, self.radius, self.depth_radius), (
            self.step, self.step, 1)


def collaborative_filter(
    noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, spec: CollaborativePass, spectrum: NoiseSpectrum | None = None,
    return_variance: bool = False, tally: RiskTally | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One pass over a single-channel image ``(H, W)`` or ``(H, W, D)`` with noise of std ``sigma``: Wiener
    with ``pilot``, or hard thresholding where ``spec.threshold`` is set (``pilot`` unused).

    White noise gives every coefficient the variance ``sigma^2``; coloured noise (``spectrum``) gives each patch-DCT
    coefficient its own, ``sigma^2 b^T C b`` with ``C`` the noise covariance over the patch (as BM3D does for
    correlated noise), and each coefficient of the group transform the variance that follows from it and from the
    noise the group's patches share where they lie within its correlation length (near or overlapping patches).
    Every group's estimate is weighted by ``1 / sum(gain^2 variance)`` (its residual noise: groups the pilot
    calls flat are trusted more; hard thresholding: the noise of the coefficients kept, at least one's), and the
    overlapping estimates are averaged voxel by voxel. Hard thresholding treats the group's mean (its first
    coefficient) as any other, as BM3D does: a flat group at the origin (a masked background, exactly 0) comes back
    as 0, not as the mean of its noise.

    With ``spec.adaptive`` and white noise, each group is filtered in the DCT and in the Haar wavelet (in the patch
    and across the group) and keeps the one whose shrinkage predicts the lower risk (:func:`_filter_groups`); a
    Wiener pass adds both risks to ``tally``.

    With ``return_variance`` it also returns the expected squared error of the estimate per voxel: the filter is
    linear given the pilot, so a group estimate's voxel ``j`` of patch ``k`` carries the residual noise variance
    ``sum_il (B_ij A_lk)^2 gain_li^2 variance_i``, plus the squared bias, what the shrinkage removed of the signal,
    ``(B^T (gain - 1) G A)_kj^2`` with ``G = gain Y`` the group's own estimate standing for the clean coefficients
    (hard thresholding: the removed coefficients themselves), times :data:`BIAS_INFLATION`. The estimate stands in
    better than the pilot: measured on the 2D dev scans, the map's rank correlation with the error rose by 0.02 on
    average and by 0.08 on the worst case. Both are averaged over the overlapping groups with the image's weights
    (``sum w e / sum w``: the overlapping estimates share their noise, so their errors are treated as fully
    correlated; see :mod:`monai_dnaprior.uncertainty`).
    """
    shape = noisy.shape
    patch, radius, step = spec.shapes(noisy.ndim)
    patch = tuple(min(p, s) for p, s in zip(patch, shape))
    hard = spec.is_hard_threshold
    groups = match_blocks(noisy if hard else pilot, patch, radius, step, spec.group)
    variance = torch.full((patch_voxels := math.prod(patch),), sigma**2, device=noisy.device)
    white = spectrum is None or spectrum.is_white
    transforms = [(patch_basis(patch, noisy.device), dct_matrix(groups.shape[1], noisy.device))]
    if spec.adaptive and white:
        transforms.append((patch_basis(patch, noisy.device, haar=True),
                           axis_transform(groups.shape[1], noisy.device, haar=True)))
    cross = None  # coloured noise: the group's patches share noise where they lie within its correlation
    if not white:
        basis = transforms[0][0]
        variance = sigma**2 * spectrum.coefficient_variances(basis, patch)
        if groups.shape[1] > 1:
            table, reach = spectrum.coefficient_cross_covariances(basis, patch)
            cross = (sigma**2 * table.to(noisy.device), reach, float(variance.min()))
    numerator = torch.zeros(noisy.numel(), device=noisy.device)
    denominator = torch.zeros(noisy.numel(), device=noisy.device)
    error = torch.zeros(noisy.numel(), device=noisy.device) if return_variance else None
    inflation = BIAS_INFLATION[noisy.ndim] if return_variance else None
    noisy_flat, pilot_flat = noisy.flatten(), pilot.flatten()
    chunk = max(1, GROUPED_VOXELS // (groups.shape[1] * patch_voxels * len(transforms)))
    if cross is not None:
        chunk = max(1, chunk // groups.shape[1])
    risks = torch.zeros(2, dtype=torch.float64, device=noisy.device)  # the DCT's and the lower, for ``tally``
    for a in range(0, groups.shape[0], chunk):
        index = patch_indices(groups[a : a + chunk], patch, shape)  # (refs, group, voxels)
        if cross is not None:
            variance = group_variances(groups[a : a + chunk], transforms[0][1], *cross)
        noisy_groups, pilot_groups = noisy_flat[index], None if hard else pilot_flat[index]
        best = None
        for basis, across in transforms:
            found = _filter_groups(noisy_groups, pilot_groups, variance, spec.threshold, basis, across, inflation)
            if best is not None and tally is not None and not hard:
                risks += torch.stack([best[3].sum(), torch.minimum(best[3], found[3]).sum()]).double()
            best = found if best is None else _lower_risk(best, found)
        estimate, weight, group_error, _ = best
        weight = weight[:, None, None].expand_as(estimate)
        numerator.index_add_(0, index.flatten(), (estimate * weight).flatten())
        denominator.index_add_(0, index.flatten(), weight.flatten())
        if error is not None:
            error.index_add_(0, index.flatten(), (group_error * weight).flatten())
        report_share(min(a + chunk, groups.shape[0]) / groups.shape[0])
    if tally is not None:
        tally.dct, tally.chosen = tally.dct + float(risks[0]), tally.chosen + float(risks[1])
    out = (numerator / denominator).view(shape)
    if error is None:
        return out
    return out, (error / denominator).view(shape)


def _filter_groups(
    noisy: torch.Tensor, pilot: torch.Tensor | None, variance: torch.Tensor, threshold: float, basis: torch.Tensor,
    across: torch.Tensor, inflation: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Shrink groups ``(refs, group, voxels)`` in one transform: hard thresholding where ``threshold > 0`` (the
    group's mean kept), else empirical Wiener with ``pilot``'s groups.

    Returns:
        ``(estimate, weight, error, risk)``: the groups' estimates, their aggregation weights ``1 / sum(gain^2
        variance)`` ``(refs,)``, the expected squared error per voxel (with ``inflation``; else None) and the risk
        the shrinkage predicts ``(refs,)``: Wiener ``sum e v / (e + v)`` with ``e`` the pilot's energy; hard
        thresholding ``v`` per coefficient kept and ``max(c^2 - v, 0)`` per coefficient zeroed.
    """
    coef = _group_transform(noisy, basis, across)
    if threshold > 0:
        gain = (coef.square() > threshold**2 * variance).to(coef)
        risk = (gain * variance + (1 - gain) * (coef.square() - variance).clamp_min(0)).sum((1, 2))
    else:
        energy = _group_transform(pilot, basis, across).square()
        gain = energy / (energy + variance)
        risk = (gain * variance).sum((1, 2))
    estimate = _inverse_group_transform(gain * coef, basis, across)
    kept = (gain.square() * variance).sum((1, 2))
    # hard thresholding: at least one coefficient's noise (BM3D's), so a group with every coefficient zeroed is not
    # trusted without bound
    weight = 1.0 / (kept.clamp_min(float(variance.min())) if threshold > 0 else kept + 1e-12)
    error = None
    if inflation is not None:
        noise = _inverse_group_transform(gain.square() * variance, basis.square(), across.square())
        kept = coef if threshold > 0 else gain * coef
        error = noise + inflation * _inverse_group_transform((gain - 1) * kept, basis, across).square()
    return estimate, weight, error, risk


def _lower_risk(
    first: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor],
    second: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per group, ``second`` where it predicts less than :data:`_MARGIN` of ``first``'s risk, else ``first``."""
    pick = second[3] < _MARGIN * first[3]
    expand = pick[:, None, None]
    error = None if first[2] is None else torch.where(expand, second[2], first[2])
    return (torch.where(expand, second[0], first[0]), torch.where(pick, second[1], first[1]), error,
            torch.where(pick, second[3], first[3]))


def group_variances(
    corners: torch.Tensor, across: torch.Tensor, table: torch.Tensor, reach: int, floor: float
) -> torch.Tensor:
    """Noise variance of every group coefficient ``(refs, group, coefficients)`` where the group's patches share
    correlated noise: ``sum_km A_lk A_lm cov_i(p_k - p_m)``, ``table`` holding ``cov_i(delta)`` for ``|delta| <=
    reach`` (zero beyond); at least ``floor``."""
    delta = corners[:, :, None] - corners[:, None]  # (refs, group, group, ndim)
    inside = (delta.abs() <= reach).all(-1)
    index = tuple((delta.clamp(-reach, reach) + reach).unbind(-1))
    shared = table[index] * inside[..., None]  # (refs, group, group, coefficients)
    return torch.einsum("lk,lm,rkmi->rli", across, across, shared).clamp_min(floor)


def _group_transform(groups: torch.Tensor, basis: torch.Tensor, across: torch.Tensor) -> torch.Tensor:
    """Patch DCT then DCT across the group: ``(refs, group, voxels) -> (refs, group, coefficients)``."""
    coef = groups @ basis.T
    return coef if across.shape[0] == 1 else torch.matmul(across, coef)


def _inverse_group_transform(coef: torch.Tensor, basis: torch.Tensor, across: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`_group_transform` (its inverse for orthonormal ``basis`` and ``across``)."""
    voxels = coef @ basis
    return voxels if across.shape[0] == 1 else torch.matmul(across.T, voxels)


def _filter_image(
    noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, spec: CollaborativePass, spectrum: NoiseSpectrum | None,
    return_variance: bool = False, tally: RiskTally | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One pass over a single-channel image (:func:`in_slabs`)."""
    patch, radius, step = spec.shapes(noisy.ndim)
    return in_slabs(
        lambda n, p: collaborative_filter(n, p, sigma, spec, spectrum, return_variance, tally),
        noisy, pilot, patch, radius, step, spec.group > 1,
    )


def collaborative_refine(
    noisy: torch.Tensor,
    pilot: torch.Tensor,
    sigma: float,
    passes: Sequence[CollaborativePass],
    spectrum: NoiseSpectrum | None = None,
    return_variance: bool = False,
    tally: RiskTally | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Wiener-filter ``noisy`` with ``pilot`` as the first pilot, pass after pass, each result the next pilot.

    Args:
        noisy: observation with Gaussian noise of std ``sigma``, ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
        pilot: an estimate of the clean image, same shape.
        sigma: the noise std.
        passes: the passes to run, in order (channels are filtered one by one).
        spectrum: the noise's correlation (coloured noise), with as many axes as the image has spatial ones;
            None or white: white noise.
        return_variance: also return the expected squared error of the result per voxel (noise variance plus
            squared bias of the last pass; see :func:`collaborative_filter`), same shape; computed in the last pass
            only.
        tally: where given, the adaptive Wiener passes add their predicted risks to it (:class:`RiskTally`).
    """
    if sigma <= 0 or not passes:
        return (noisy.clone(), torch.zeros_like(noisy)) if return_variance else noisy.clone()
    out = torch.empty_like(noisy)
    var = torch.empty_like(noisy) if return_variance else None
    channels = noisy.shape[1]
    for i in in_shares(noisy.shape[0] * channels):
        b, c = divmod(i, channels)
        estimate = pilot[b, c]
        for k in in_shares(len(passes)):
            last = var is not None and k == len(passes) - 1
            estimate = _filter_image(noisy[b, c], estimate, sigma, passes[k], spectrum, last, tally)
            if last:
                estimate, var[b, c] = estimate
        out[b, c] = estimate
    return out if var is None else (out, var)

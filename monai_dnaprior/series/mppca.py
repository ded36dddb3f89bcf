"""Local PCA across the volumes with the Marchenko-Pastur noise threshold (MP-PCA; Veraart et al., NeuroImage 2016).

In each patch of M voxels, the C volumes make an M x C matrix. Its centred sample covariance has C eigenvalues; those
of pure noise with variance sigma^2 follow the Marchenko-Pastur law, a bulk of width ``4 sigma^2 sqrt(n / M)`` for n
noise components. The noise count is the largest n whose n smallest eigenvalues fit that bulk with sigma^2 their
mean; the patch keeps the other components, and sigma^2 is read off for free. Each kept component is shrunk by the
factor that minimises the Frobenius error for its eigenvalue (Gavish & Donoho, IEEE Trans. Inf. Theory 2017; for
diffusion MRI, Ma et al., NeuroImage 2020): a hard cut keeps the noise along the kept axes, most on the weakest ones,
which carry a diffusion series' angular contrast. Patches overlap; each voxel is the average of its patches, a patch
that kept p components weighted by ``1 / (1 + p)``.
"""

from __future__ import annotations

import torch

from monai_dnaprior.progress import report_share
from monai_dnaprior.series.patches import PatchGrid

__all__ = ["marchenko_pastur_split", "mppca", "optimal_shrinkage"]


def marchenko_pastur_split(eigenvalues: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise count and the noise variance of each row of ascending ``eigenvalues`` ``(P, C)`` of sample
    covariances over ``samples`` voxels: the largest n with ``lambda_n - lambda_1 < 4 sqrt(n / samples) sigma_n^2``,
    ``sigma_n^2`` the mean of the n smallest."""
    channels = eigenvalues.shape[-1]
    n = torch.arange(1, channels + 1, device=eigenvalues.device, dtype=eigenvalues.dtype)
    variance = eigenvalues.cumsum(-1) / n
    spread = eigenvalues - eigenvalues[..., :1]
    fits = spread < 4 * torch.sqrt(n / samples) * variance
    fits[..., 0] = True
    count = (fits * n).amax(-1).long()  # the largest n that fits
    return count, variance.gather(-1, (count - 1)[..., None])[..., 0]


def optimal_shrinkage(eigenvalues: torch.Tensor, variance: torch.Tensor, samples: int) -> torch.Tensor:
    """The factor ``(P, C)`` on each principal component of a patch whose sample covariance over ``samples`` voxels has
    ``eigenvalues`` ``(P, C)`` and whose noise variance is ``variance`` ``(P,)``: with ``y^2 = lambda / sigma^2`` and
    ``beta = C / samples``, ``sqrt((y^2 - beta - 1)^2 - 4 beta) / y^2`` above the bulk's edge ``(1 + sqrt(beta))^2``,
    0 below it (the Frobenius-optimal singular value shrinker over ``y``)."""
    beta = eigenvalues.shape[-1] / samples
    y2 = eigenvalues / variance[:, None].clamp_min(torch.finfo(eigenvalues.dtype).tiny)
    above = y2 > (1 + beta**0.5) ** 2
    factor = ((y2 - beta - 1).square() - 4 * beta).clamp_min(0).sqrt() / y2.clamp_min(1.0)
    return torch.where(above, factor, torch.zeros_like(factor))


def mppca(series: torch.Tensor, sides: tuple[int, ...], step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MP-PCA of ``series`` ``(C, *spatial)``: the denoised series and the noise variance map ``(*spatial)``
    (each patch's estimate, averaged with the same weights)."""
    channels = series.shape[0]
    grid = PatchGrid(series.shape[1:], sides, step, channels)
    sums, weights = grid.new_sums(channels + 1, series)
    samples = grid.patch_voxels
    work = torch.float64
    for k, index in enumerate(grid.chunks()):
        x = grid.gather(series, index).to(work)
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        eigenvalues, vectors = torch.linalg.eigh(centred.transpose(1, 2) @ centred / samples)
        eigenvalues = eigenvalues.clamp_min(0)
        count, variance = marchenko_pastur_split(eigenvalues, samples)
        keep = (torch.arange(channels, device=x.device)[None, :] >= count[:, None]).to(work)
        kept = vectors * (keep * optimal_shrinkage(eigenvalues, variance, samples))[:, None, :]
        estimate = centred @ kept @ vectors.transpose(1, 2) + mean
        values = torch.cat([estimate, variance[:, None, None].expand(-1, samples, 1)], -1)
        grid.add(sums, weights, index, values, 1.0 / (1.0 + channels - count).to(work))
        report_share((k + 1) * grid.chunk / max(len(grid), 1))
    out = grid.average(sums, weights)
    return out[:channels].to(series.dtype), out[channels].to(series.dtype)

"""Empirical Wiener refinement in the local DCT domain, with the fitted prior as the pilot estimate.

The prior's fit is smooth but loses some fine detail; the noisy image has all the detail and all the noise.
Shrinking each local DCT coefficient of the noisy image by ``|pilot|^2 / (|pilot|^2 + sigma^2)`` keeps what the
pilot says is signal and drops what it says is noise (the second stage of BM3D, without block matching).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = ["dct_matrix", "wiener_refine"]

_SLICES_PER_CHUNK = 8


def dct_matrix(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` of size ``n x n`` (``D @ x`` transforms, ``D.T @ c`` inverts)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=torch.float32)


def _refine_2d(noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, patch: int, stride: int) -> torch.Tensor:
    """``noisy`` and ``pilot`` are ``(B, C, H, W)``; every patch position is filtered and the overlaps averaged."""
    pad = patch - 1
    mode = "reflect" if min(noisy.shape[-2:]) > pad else "replicate"
    noisy_p = F.pad(noisy, (pad,) * 4, mode=mode)
    pilot_p = F.pad(pilot, (pad,) * 4, mode=mode)
    size = noisy_p.shape[-2:]
    basis = torch.kron(*(2 * [dct_matrix(patch, noisy.device)]))  # separable 2D DCT of flattened patches
    b, c = noisy.shape[:2]
    n_cols = F.unfold(noisy_p, patch, stride=stride).view(b, c, patch * patch, -1)
    p_cols = F.unfold(pilot_p, patch, stride=stride).view(b, c, patch * patch, -1)
    n_coef = torch.einsum("ij,bcjl->bcil", basis, n_cols)
    p_energy = torch.einsum("ij,bcjl->bcil", basis, p_cols).square()
    gain = p_energy / (p_energy + sigma**2)
    filtered = torch.einsum("ji,bcjl->bcil", basis, gain * n_coef)
    weight = 1.0 / (sigma**2 * gain.square().sum(2, keepdim=True) + 1e-12)  # trust sparse (flat) patches more
    num = F.fold((filtered * weight).flatten(1, 2), size, patch, stride=stride)
    den = F.fold(weight.expand_as(filtered).flatten(1, 2), size, patch, stride=stride)
    return (num / den)[..., pad : size[0] - pad, pad : size[1] - pad]


def wiener_refine(noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, patch: int = 8, stride: int = 1) -> torch.Tensor:
    """Wiener-filter ``noisy`` patch by patch in the DCT domain with the spectrum of ``pilot`` as the signal.

    Args:
        noisy: observation with white Gaussian noise of std ``sigma``, ``(B, C, H, W)`` or ``(B, C, H, W, D)``
            (3D is filtered slice by slice along the last axis).
        pilot: an estimate of the clean image, same shape.
        sigma: the noise std.
        patch: side of the square patches.
        stride: step between patches; 1 is best, larger is faster.
    """
    if sigma <= 0:
        return noisy.clone()
    if noisy.ndim == 4:
        return _refine_2d(noisy, pilot, sigma, patch, stride)
    out = torch.empty_like(noisy)
    for k in range(0, noisy.shape[-1], _SLICES_PER_CHUNK):  # chunks of slices bound the patch matrices' memory
        part = slice(k, k + _SLICES_PER_CHUNK)
        n, p = noisy[..., part].movedim(-1, 1), pilot[..., part].movedim(-1, 1)  # (B, D', C, H, W)
        refined = _refine_2d(n.flatten(0, 1), p.flatten(0, 1), sigma, patch, stride)
        out[..., part] = refined.view(n.shape).movedim(1, -1)
    return out

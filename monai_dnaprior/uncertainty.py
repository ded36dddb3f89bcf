"""The per-voxel uncertainty map: the expected error of the returned image, in its intensity units.

The returned image is the last collaborative Wiener pass's output. Given its pilot that pass is linear in the
observation, so its error per voxel is known in closed form up to the clean signal: the residual noise variance
``sum (B A)^2 gain^2 variance`` plus the squared bias ``(B^T (gain - 1) X A)^2``, with the pilot's coefficients
standing in for the clean ``X`` (:func:`monai_dnaprior.wiener.collaborative_wiener` with ``return_variance``).
That map ranks the voxels well, but it is short in scale: the pilot shares the observation's noise (the gains keep
more of it than a pilot independent of the noise would) and is smoother than the truth (the bias is read low).

Its scale is therefore set by a global Monte-Carlo SURE of the whole refinement (Ramani, Blu and Unser, 2008): an
unbiased estimate of the refinement's mean squared error, needing no clean image, from one more run of the passes
on the observation plus a small noise-like perturbation ``b``:

    MSE = |f(y) - y|^2 / N - sigma^2 + 2 b . (f(y + eps b) - f(y)) / (eps N)

(coloured noise: ``b`` drawn with the noise's spectrum, so that the last term is ``tr(C J) / N``). The map is
multiplied by ``MSE / mean(map)``: the closed form decides where the error is, SURE how large it is on average.
The pilot (network fit or blurred observation) is held fixed, so what the fit itself contributes is not in the
divergence; the Wiener passes dominate it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_dnaprior.noise.spectrum import NoiseSpectrum
from monai_dnaprior.wiener import WienerPass, wiener_refine

__all__ = ["refine_with_error", "sure_mse"]

SURE_EPSILON = 0.1  # the perturbation's std relative to the noise's (block matching is piecewise: not too small)
SCALE_RANGE = (0.25, 16.0)  # the SURE rescaling of the closed-form variance is kept within this (a safeguard)


def _noise_like(shape: Sequence[int], sigma: float, spectrum: NoiseSpectrum | None, generator: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """A draw of the noise: white of std ``sigma`` or, with a coloured ``spectrum``, correlated with it."""
    b = torch.randn(tuple(shape), generator=generator).to(device)
    if spectrum is None or spectrum.is_white:
        return sigma * b
    dims = tuple(range(-spectrum.spatial_dims, 0))
    psd = spectrum.psd(shape[-spectrum.spatial_dims:], device)
    return sigma * torch.fft.ifftn(torch.fft.fftn(b, dim=dims, norm="ortho") * psd.sqrt(), dim=dims,
                                   norm="ortho").real


def sure_mse(
    noisy: torch.Tensor, pilot: torch.Tensor, refined: torch.Tensor, sigma: float, passes: Sequence[WienerPass],
    spectrum: NoiseSpectrum | None = None, seed: int = 0,
) -> torch.Tensor:
    """Monte-Carlo SURE of the refinement's mean squared error per channel of ``(B, C, *spatial)``: ``(B, C)``."""
    generator = torch.Generator().manual_seed(seed)
    b = _noise_like(noisy.shape, sigma, spectrum, generator, noisy.device)
    eps = SURE_EPSILON
    perturbed = wiener_refine(noisy + eps * b, pilot, sigma, passes, spectrum)
    dims = tuple(range(2, noisy.ndim))
    divergence = (b * (perturbed - refined)).mean(dims) / eps
    return (refined - noisy).square().mean(dims) - sigma**2 + 2 * divergence


def refine_with_error(
    noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, passes: Sequence[WienerPass],
    spectrum: NoiseSpectrum | None = None, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`wiener_refine` that also returns the expected squared error of its result per voxel, same shape.

    The closed-form error of the last pass (noise variance plus squared bias), scaled per channel so that its mean
    is the Monte-Carlo SURE of the refinement's mean squared error (see the module's description).
    """
    refined, variance = wiener_refine(noisy, pilot, sigma, passes, spectrum, return_variance=True)
    if sigma <= 0 or not passes:
        return refined, variance
    mse = sure_mse(noisy, pilot, refined, sigma, passes, spectrum, seed)
    dims = tuple(range(2, noisy.ndim))
    scale = (mse / variance.mean(dims).clamp_min(1e-20)).clamp(*SCALE_RANGE)
    return refined, variance * scale.view(*scale.shape, *[1] * len(dims))


def to_image_domain(model, refined: torch.Tensor, std: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The fit-domain error std ``std`` of ``refined`` mapped through the noise model's inverse by its local slope
    (delta method: ``|d inverse / dx| std``), in the [0, 1]-normalised image domain.

    The slope is a central difference with both sides inverted together, so that an inverse with a global factor
    (speckle keeps the mean intensity) gives both the same factor.
    """
    step = 1e-3 * std.clamp_min(1e-6)
    both = model.inverse(torch.stack([refined - step, refined + step]), y)
    return ((both[1] - both[0]).abs() / 2) * (std / step)

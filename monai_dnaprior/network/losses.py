"""Loss terms of the DNA-Prior objective: spectral fidelity and total variation."""

from __future__ import annotations


import torch
from torch import nn

__all__ = ["SpectralFidelity", "total_variation", "radial_frequency", "spatial_fft"]


def spatial_fft(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Orthonormal FFT over the last ``spatial_dims`` dimensions, always in float32 or wider."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return torch.fft.fftn(x, dim=tuple(range(-spatial_dims, 0)), norm="ortho")


def radial_frequency(shape: tuple[int, ...], device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised radial frequency of every FFT bin, 0 at DC and 1 at the Nyquist corner along each axis.

    Args:
        shape: spatial shape of the FFT grid.
        device: where to build the grid.
    """
    axes = [torch.fft.fftfreq(n, device=device) * 2.0 for n in shape]  # in [-1, 1)
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.sqrt(sum(g**2 for g in grids) / len(shape))


class SpectralFidelity(nn.Module):
    """Fidelity between two images measured on their orthonormal Fourier spectra.

    The complex squared error splits exactly into an amplitude and a phase part:

        |X - Y|^2 = (|X| - |Y|)^2 + 2 |X| |Y| (1 - cos(dphi))

    so ``amplitude_weight = phase_weight = 1`` with ``frequency_power = 0`` is, by Parseval, the pixel MSE.
    Other weights trade the two parts; ``frequency_power > 0`` weights bin ``k`` by ``(1 + |k|)^-p``, which
    trusts the low frequencies (where the signal lives) more than the high ones (where white noise dominates).

    With ``noise_psd``, the noise's relative power spectrum ``S(k)`` (mean 1), every bin is weighted by
    ``1 / S(k)``: the exact Gaussian log-likelihood of stationary coloured noise (up to a constant), the
    fidelity whitened. A flat ``S`` gives the pixel MSE again.

    Args:
        spatial_dims: number of trailing spatial dimensions of the inputs.
        amplitude_weight: weight of the amplitude term.
        phase_weight: weight of the phase term.
        frequency_power: exponent ``p`` of the radial weighting; 0 disables it.
        noise_psd: relative noise power spectrum on the inputs' FFT grid (unshifted, mean 1); None: white.
        eps: stabiliser of the phase cosine.
    """

    def __init__(
        self,
        spatial_dims: int,
        amplitude_weight: float = 1.0,
        phase_weight: float = 1.0,
        frequency_power: float = 0.0,
        noise_psd: torch.Tensor | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.amplitude_weight = amplitude_weight
        self.phase_weight = phase_weight
        self.frequency_power = frequency_power
        self.eps = eps
        self.whitening = None if noise_psd is None else 1.0 / noise_psd
        self._weight: torch.Tensor | None = None

    def _frequency_weight(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor | None:
        if self.frequency_power == 0:
            return None
        if self._weight is None or self._weight.shape != shape or self._weight.device != device:
            w = (1.0 + radial_frequency(shape, device)) ** (-self.frequency_power)
            self._weight = w / w.mean()  # mean weight 1 keeps the scale of the loss
        return self._weight

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean spectral error of ``prediction`` against ``target`` (same shape, channel-first with batch)."""
        x = spatial_fft(prediction, self.spatial_dims)
        y = spatial_fft(target, self.spatial_dims)
        weight = self._frequency_weight(tuple(x.shape[-self.spatial_dims :]), x.device)
        if self.amplitude_weight == self.phase_weight:
            error = self.amplitude_weight * (x - y).abs().square()  # the exact sum of both terms, cheaper
        else:
            ax, ay = x.abs(), y.abs()
            cos_dphi = (x * y.conj()).real / (ax * ay + self.eps)
            error = self.amplitude_weight * (ax - ay).square() + self.phase_weight * 2 * ax * ay * (1 - cos_dphi)
        if weight is not None:
            error = error * weight
        if self.whitening is not None:
            error = error * self.whitening.to(error.device)
        return error.mean()


def total_variation(x: torch.Tensor, spatial_dims: int, eps: float = 1e-3, reduction: str = "mean") -> torch.Tensor:
    """Isotropic smoothed total variation ``sum sqrt(|grad x|^2 + eps^2) - eps`` over the trailing spatial dims.

    Forward differences with a replicated border (zero difference past the last voxel), so a constant image
    has exactly zero TV and a unit step across ``n`` rows has TV ``n * (sqrt(1 + eps^2) - eps)``.

    Args:
        x: tensor whose last ``spatial_dims`` dimensions are spatial.
        spatial_dims: 2 or 3.
        eps: smoothing of the gradient magnitude at zero.
        reduction: ``"mean"`` over all voxels or ``"sum"``.
    """
    squared = torch.zeros_like(x)
    for dim in range(-spatial_dims, 0):
        diff = torch.diff(x, dim=dim)
        pad = [0, 0] * (-dim - 1) + [0, 1]  # pad the end of ``dim`` with one zero difference
        squared = squared + nn.functional.pad(diff, pad).square()
    tv = torch.sqrt(squared + eps**2) - eps
    if reduction == "sum":
        return tv.sum()
    if reduction == "mean":
        return tv.mean()
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")

"""Noise-level estimation and the noise models: how each scanner's noise is made Gaussian-like for the fit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "NOISE_MODELS",
    "NoiseModel",
    "estimate_log_noise_level",
    "estimate_noise_level",
    "estimate_poisson_gain",
    "haar_finest_detail",
    "rician_mean",
    "get_noise_model",
]

_MAD_TO_SIGMA = 0.6744897501960817  # median(|N(0, 1)|)


def haar_finest_detail(x: torch.Tensor, spatial_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Finest-scale orthonormal Haar coefficients of ``x``: the all-high-pass detail and the low-pass mean.

    Returns:
        ``(detail, mean)``, one value per ``2^spatial_dims`` block: the diagonal (HH or HHH) coefficient,
        whose standard deviation is the white-noise sigma, and the block's mean intensity.
    """
    for dim in range(-spatial_dims, 0):  # crop to even sizes
        x = x.narrow(dim, 0, (x.shape[dim] // 2) * 2)
    detail, mean = x, x
    for dim in range(-spatial_dims, 0):
        even_d, odd_d = detail.unfold(dim, 2, 2).unbind(-1)
        detail = (even_d - odd_d) / math.sqrt(2.0)
        even_m, odd_m = mean.unfold(dim, 2, 2).unbind(-1)
        mean = (even_m + odd_m) / 2.0
    return detail, mean


def estimate_noise_level(x: torch.Tensor, spatial_dims: int) -> float:
    """Standard deviation of additive white Gaussian noise in ``x`` by the wavelet MAD (Donoho & Johnstone).

    ``sigma = median(|HH|) / 0.6745`` over the finest diagonal Haar coefficients, pooled over channels.
    Images smaller than two voxels along a spatial axis give 0.
    """
    if any(s < 2 for s in x.shape[-spatial_dims:]):
        return 0.0
    detail, _ = haar_finest_detail(x.float(), spatial_dims)
    return float(detail.abs().median()) / _MAD_TO_SIGMA


def estimate_log_noise_level(y: torch.Tensor, spatial_dims: int, floor: float = 0.05) -> float:
    """Std of ``log n`` for multiplicative noise ``y = x n``: the wavelet MAD of ``log(y + offset)`` over the blocks
    whose mean intensity is above ``floor`` (the dark background, where speckle vanishes, would bias it to 0)."""
    if any(s < 2 for s in y.shape[-spatial_dims:]):
        return 0.0
    detail, _ = haar_finest_detail(torch.log(y.float().clamp_min(0) + _SPECKLE_OFFSET), spatial_dims)
    _, mean = haar_finest_detail(y.float(), spatial_dims)
    signal = detail[mean > floor]
    if signal.numel() < 8:
        return estimate_noise_level(torch.log(y.clamp_min(0) + _SPECKLE_OFFSET), spatial_dims)
    return float(signal.abs().median()) / _MAD_TO_SIGMA


def estimate_poisson_gain(x: torch.Tensor, spatial_dims: int, bins: int = 16) -> float:
    """Gain ``a`` of scaled Poisson noise, ``var(y) = a * E[y]``, from the Haar detail energy against local mean.

    Blocks are binned by mean intensity; in each bin the robust variance ``(median |d| / 0.6745)^2`` is taken,
    and ``a`` is the least-squares slope through the origin of those variances against the bin means.
    """
    if any(s < 2 for s in x.shape[-spatial_dims:]):
        return 0.0
    detail, mean = haar_finest_detail(x.float(), spatial_dims)
    detail, mean = detail.flatten(), mean.flatten().clamp_min(0)
    bins = min(bins, mean.numel() // 8)  # at least 8 blocks per bin
    if bins < 1:
        return 0.0
    order = torch.argsort(mean)
    means, variances = [], []
    for chunk in torch.tensor_split(order, bins):
        if chunk.numel() < 8:
            continue
        means.append(mean[chunk].mean())
        variances.append((detail[chunk].abs().median() / _MAD_TO_SIGMA) ** 2)
    m, v = torch.stack(means), torch.stack(variances)
    return float((m * v).sum() / (m.square().sum() + 1e-12))


def rician_mean(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exact mean of a Rician magnitude with underlying signal ``|x|`` and per-component noise ``sigma``.

    ``E[y] = sigma sqrt(pi/2) [(1 + 2u) I0e(u) + 2u I1e(u)]`` with ``u = x^2 / (4 sigma^2)``; differentiable.
    """
    if sigma <= 0:
        return x.abs()
    u = x.square() / (4 * sigma**2)
    mean = sigma * math.sqrt(math.pi / 2) * ((1 + 2 * u) * torch.special.i0e(u) + 2 * u * torch.special.i1e(u))
    # far from the noise floor the series is numerically flat; the asymptote x + sigma^2 / (2x) is exact there
    large = u > 400
    return torch.where(large, x.abs() + sigma**2 / (2 * x.abs().clamp_min(1e-12)), mean)


_SPECKLE_OFFSET = 0.01  # log(y + offset) keeps dark voxels finite


@dataclass(frozen=True)
class NoiseModel:
    """Maps an image in [0, 1] into the fit domain, where the noise is close to white and Gaussian, and back.

    The fit domain is scaled so that the image range [0, 1] stays about [0, 1] whatever the model.

    Attributes:
        name: one of :data:`NOISE_MODELS`.
        level: the noise parameter in the [0, 1] image domain: sigma (gaussian, rician), the gain ``a``
            (poisson) or the sigma of ``log n`` (speckle).
    """

    name: str
    level: float

    def _span(self) -> tuple[float, float]:
        """The fit-domain values of the image values 0 and 1."""
        if self.name == "poisson":
            return 2.0 * math.sqrt(0.375), 2.0 * math.sqrt(1.0 / self.level + 0.375)
        if self.name == "speckle":
            return math.log(_SPECKLE_OFFSET), math.log(1.0 + _SPECKLE_OFFSET)
        return 0.0, 1.0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """The observation in the fit domain."""
        lo, hi = self._span()
        if self.name == "poisson":  # Anscombe: 2 sqrt(y / a + 3/8) has unit variance
            y = 2.0 * torch.sqrt((y / self.level).clamp_min(0) + 0.375)
        elif self.name == "speckle":  # log turns multiplicative noise additive
            y = torch.log(y.clamp_min(0) + _SPECKLE_OFFSET)
        return (y - lo) / (hi - lo)

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        """The expected observation, in the fit domain, of a clean estimate ``x`` there (Rician: its mean)."""
        if self.name == "rician":
            return rician_mean(x, self.level)
        return x

    def inverse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The clean estimate in the [0, 1] image domain from the fit's output ``x`` and the observation ``y``."""
        lo, hi = self._span()
        x = x * (hi - lo) + lo
        if self.name == "poisson":  # closed-form approximation of the exact unbiased inverse (Makitalo & Foi)
            x = x.clamp_min(1.0)
            counts = x.square() / 4 + math.sqrt(1.5) / (4 * x) - 11 / (8 * x.square()) + 5 * math.sqrt(1.5) / (8 * x**3)
            return (counts - 0.125).clamp_min(0) * self.level
        if self.name == "speckle":  # undo the log's bias: unit-mean speckle keeps the mean intensity
            x = (torch.exp(x) - _SPECKLE_OFFSET).clamp_min(0)
            return x * (y.mean() / x.mean().clamp_min(1e-12))
        if self.name == "rician":
            return x.abs()
        return x

    @property
    def fit_sigma(self) -> float:
        """Standard deviation of the noise in the fit domain."""
        lo, hi = self._span()
        return (1.0 if self.name == "poisson" else self.level) / (hi - lo)


NOISE_MODELS = ("gaussian", "poisson", "rician", "speckle")


def get_noise_model(name: str, y: torch.Tensor, spatial_dims: int, level: float | None = None) -> NoiseModel:
    """The noise model ``name`` with its level given, or estimated from the [0, 1]-normalised image ``y``.

    - gaussian: ``y = x + n``, ``n ~ N(0, sigma^2)``; level is sigma.
    - poisson: ``y = a Poisson(x / a)``, photon counting (low-dose CT); level is the gain ``a``.
    - rician: ``y = |x + n1 + i n2|``, MRI magnitude; level is the sigma of each component, estimated from
      the wavelet MAD, which background-dominated images make close to the true sigma.
    - speckle: ``y = x n`` with unit-mean multiplicative ``n`` (ultrasound); level is the sigma of ``log n``.
    """
    if level is None:
        if name == "poisson":
            level = estimate_poisson_gain(y, spatial_dims)
        elif name == "speckle":
            level = estimate_log_noise_level(y, spatial_dims)
        else:
            level = estimate_noise_level(y, spatial_dims)
    if name == "poisson":
        level = max(level, 1e-6)
    return NoiseModel(name, float(level))

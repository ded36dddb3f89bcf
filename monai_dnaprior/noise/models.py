"""The noise models: how each scanner's noise is made Gaussian-like for the fit, and mapped back."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from monai_dnaprior.noise.estimation import (
    box_mean,
    estimate_log_noise_level,
    estimate_noise_level,
    estimate_poisson_gain,
    estimate_rician_sigma,
)

__all__ = ["FLOOR_TOLERANCE", "NOISE_MODELS", "SPECKLE_OFFSET", "NoiseModel", "get_noise_model", "rician_mean"]

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


# The Rician noise floor is known only as well as the noise level: a background's mean within this share above it is
# taken as at the floor (the EPI volume inverted with the true sigma rather than the estimate: 0.46 dB below BM4D
# without it, 0.10 with it)
FLOOR_TOLERANCE = 0.02
SPECKLE_OFFSET = 0.01  # log(y + offset) keeps dark voxels finite


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
            return math.log(SPECKLE_OFFSET), math.log(1.0 + SPECKLE_OFFSET)
        return 0.0, 1.0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """The observation in the fit domain."""
        lo, hi = self._span()
        if self.name == "poisson":  # Anscombe: 2 sqrt(y / a + 3/8) has unit variance
            y = 2.0 * torch.sqrt((y / self.level).clamp_min(0) + 0.375)
        elif self.name == "speckle":  # log turns multiplicative noise additive
            y = torch.log(y.clamp_min(0) + SPECKLE_OFFSET)
        return (y - lo) / (hi - lo)

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        """The expected observation, in the fit domain, of a clean estimate ``x`` there (Rician: its mean)."""
        if self.name == "rician":
            return rician_mean(x, self.level)
        return x

    def unobserve(self, mean: torch.Tensor, steps: int = 40) -> torch.Tensor:
        """The clean fit-domain image whose expected observation is ``mean``: :meth:`observe` inverted (Rician:
        by bisection, the mean rising with ``|x|``; a mean below the noise floor's gives 0)."""
        if self.name != "rician":
            return mean
        low, high = torch.zeros_like(mean), mean.abs() + 1.0
        for _ in range(steps):
            mid = (low + high) / 2
            below = self.observe(mid) < mean
            low, high = torch.where(below, mid, low), torch.where(below, high, mid)
        return (low + high) / 2

    def noise_floor(self, like: torch.Tensor) -> torch.Tensor:
        """The expected fit-domain observation of no signal, ``observe(0)`` (Rician: the Rayleigh mean; 0 for the
        other models), as a scalar tensor of ``like``'s dtype and device."""
        return self.observe(torch.zeros((), dtype=like.dtype, device=like.device))

    def no_signal(self, mean: torch.Tensor, size: int = 15) -> torch.Tensor:
        """Where the estimated observation mean ``mean`` (``(C, *spatial)``, fit domain) says there is no signal:
        Rician, the voxels whose neighbourhood (a box of side ``size``) has a mean at most the noise floor
        ``observe(0)``, give or take :data:`FLOOR_TOLERANCE`. Every Rician mean is above the floor, so only a
        background of pure noise, its fluctuations averaged out over the box, falls there; a voxel's own mean
        straddles the floor, where the inverse's slope is infinite (measured on the EPI volume with Rician noise:
        +0.44 dB; the 2D dev slices -0.04 to 0 dB). All False for the other models."""
        if self.name != "rician":
            return torch.zeros_like(mean, dtype=torch.bool)
        return box_mean(mean, mean.ndim - 1, size) <= (1 + FLOOR_TOLERANCE) * self.noise_floor(mean)

    def inverse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The clean estimate in the [0, 1] image domain from the fit's output ``x`` and the observation ``y``."""
        lo, hi = self._span()
        x = x * (hi - lo) + lo
        if self.name == "poisson":  # closed-form approximation of the exact unbiased inverse (Makitalo & Foi)
            x = x.clamp_min(1.0)
            counts = x.square() / 4 + math.sqrt(1.5) / (4 * x) - 11 / (8 * x.square()) + 5 * math.sqrt(1.5) / (8 * x**3)
            return (counts - 0.125).clamp_min(0) * self.level
        if self.name == "speckle":  # undo the log's bias: unit-mean speckle keeps the mean intensity
            x = (torch.exp(x) - SPECKLE_OFFSET).clamp_min(0)
            return x * (y.mean() / x.mean().clamp_min(1e-12))
        if self.name == "rician":
            return x.abs()
        return x

    @property
    def min_level(self) -> float:
        """The level at or below which the image is taken as free of noise (the Poisson gain is kept at 1e-6)."""
        return 1e-6 if self.name == "poisson" else 0.0

    @property
    def fit_changes_filter(self) -> bool:
        """Whether a network's fit changes the filter's result: only where the observation's mean is not the clean
        image (Rician: the fit's exact likelihood corrects the magnitude's bias)."""
        return self.name == "rician"

    @property
    def is_magnitude(self) -> bool:
        """Whether the clean image is a magnitude (Rician): a network's output is taken as ``|output|``."""
        return self.name == "rician"

    def clean_estimate(
        self, mean: torch.Tensor, fitted: torch.Tensor | None = None, variance: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The clean fit-domain image from an estimate ``mean`` of the observation's mean: by inverting the mean
        (:meth:`unobserve`), or by a network fit's own step where there is one (``fitted + mean - observe(fitted)``:
        the fit knows the bias of its expected observation). A background whose neighbourhood's mean is at the noise
        floor (:meth:`no_signal`) is 0, its mean returned as the floor and its ``variance`` as 0: the rule's claim is
        that no signal is there.

        Returns:
            ``(clean, mean, variance)`` with the background rule applied to all three.
        """
        no_signal = self.no_signal(mean)
        mean = torch.where(no_signal, self.noise_floor(mean), mean)
        clean = self.unobserve(mean) if fitted is None else fitted + mean - self.observe(fitted)
        clean = clean.masked_fill(no_signal, 0.0)
        return clean, mean, None if variance is None else variance.masked_fill(no_signal, 0.0)

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
    - rician: ``y = |x + n1 + i n2|``, MRI magnitude; level is the sigma of each component, estimated over the
      bright blocks, where Rician noise is close to Gaussian (the Rayleigh background would pull it low).
    - speckle: ``y = x n`` with unit-mean multiplicative ``n`` (ultrasound); level is the sigma of ``log n``.
    """
    if level is None:
        if name == "poisson":
            level = estimate_poisson_gain(y, spatial_dims)
        elif name == "speckle":
            level = estimate_log_noise_level(y, spatial_dims, SPECKLE_OFFSET)
        elif name == "rician":
            level = estimate_rician_sigma(y, spatial_dims)
        else:
            level = estimate_noise_level(y, spatial_dims)
    if name == "poisson":
        level = max(level, 1e-6)
    return NoiseModel(name, float(level))

"""The noise models, one class each: how a scanner's noise is made close to white and Gaussian for the fit (a
variance-stabilising transform), what the observation's mean is, and how the clean estimate is mapped back."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from monai.utils import look_up_option

from monai_dnaprior.noise.estimation import (
    box_mean,
    estimate_log_noise_level,
    estimate_noise_level,
    estimate_poisson_gain,
    local_median,
)
from monai_dnaprior.noise.rayleigh import RAYLEIGH_MEAN, estimate_rician_sigma, rician_sigmas
from monai_dnaprior.noise.spectrum import NoiseSpectrum
from monai_dnaprior.settings import NoiseModelName

__all__ = ["FLOOR_CONFIDENCE", "FLOOR_TOLERANCE", "NOISE_MODELS", "NOISE_MODEL_CLASSES", "SPECKLE_OFFSET",
           "GaussianNoise", "NoiseModel", "PoissonNoise", "RicianNoise", "SpeckleNoise", "get_noise_model",
           "noise_model_class", "rician_mean"]

# The Rician noise floor is known only as well as the noise level: a background's mean within this share above it is
# taken as at the floor ...
FLOOR_TOLERANCE = 0.02
# ... or within this many standard errors of a box of pure noise's mean (a one-sided test at 5 %), where that is more:
# a 15-voxel box's mean of white noise spreads 3.5 % in 2D (a 5.7 % tolerance), 0.9 % in 3D (under the 2 %); of
# correlated noise, as its spectrum says (under a Hann k-space window 1.9x as much)
FLOOR_CONFIDENCE = 1.645
_RAYLEIGH_SPREAD = math.sqrt(4 / math.pi - 1)  # a Rayleigh's std over its mean
_INVERSE_TABLE = 4097  # entries of the Rician mean's table that its inverse reads
SPECKLE_OFFSET = 0.01  # log(y + offset) keeps dark voxels finite


def rician_mean(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exact mean of a Rician magnitude with underlying signal ``|x|`` and per-component noise ``sigma``.

    ``E[y] = sigma sqrt(pi/2) [(1 + 2u) I0e(u) + 2u I1e(u)]`` with ``u = x^2 / (4 sigma^2)``; differentiable.
    """
    if sigma <= 0:
        return x.abs()
    u = x.square() / (4 * sigma**2)
    mean = sigma * RAYLEIGH_MEAN * ((1 + 2 * u) * torch.special.i0e(u) + 2 * u * torch.special.i1e(u))
    # far from the noise floor the series is numerically flat; the asymptote x + sigma^2 / (2x) is exact there
    large = u > 400
    return torch.where(large, x.abs() + sigma**2 / (2 * x.abs().clamp_min(1e-12)), mean)


@dataclass(frozen=True)
class NoiseModel:
    """A noise model with its level: maps an image in [0, 1] into the fit domain, where the noise is close to white
    and Gaussian, and back. The base class is the identity, additive noise whose mean is the clean image; the
    subclasses override what differs.

    The fit domain is the variance-stabilised image scaled so that the image range [0, 1] stays [0, 1]
    (:attr:`span`).

    Attributes:
        level: the noise parameter in the [0, 1] image domain (see each subclass).
        name: the model's :class:`~monai_dnaprior.settings.NoiseModelName`.
        additive: the noise is added to the signal (before a magnitude, for Rician), not signal-dependent: its
            level may vary along slices and a given power spectrum describes it.
        mean_is_clean: the observation's mean is the clean image (not for a magnitude: its mean is biased up).
        is_magnitude: the clean image is a magnitude: a network's output is taken as ``|output|``.
        min_level: the level at or below which the image is taken as free of noise; a level is kept at it or above.
        colour_above_darkest: where above 0, a blind colour must also be found above this share of the local means
            (:func:`~monai_dnaprior.noise.spectrum.confirm_colour`).
    """

    name: ClassVar[NoiseModelName]
    additive: ClassVar[bool] = True
    mean_is_clean: ClassVar[bool] = True
    is_magnitude: ClassVar[bool] = False
    min_level: ClassVar[float] = 0.0
    colour_above_darkest: ClassVar[float] = 0.0

    level: float

    @staticmethod
    def named(name: str, level: float) -> NoiseModel:
        """The model called ``name`` (a :class:`~monai_dnaprior.settings.NoiseModelName` other than ``auto``)."""
        return noise_model_class(name)(level)

    @classmethod
    def estimate_level(cls, y: torch.Tensor, spatial_dims: int) -> float:
        """The level estimated from the [0, 1]-normalised image ``y`` (``(C, *spatial)``)."""
        raise NotImplementedError(f"{cls.__name__} has no level estimate.")

    @classmethod
    def from_image(cls, y: torch.Tensor, spatial_dims: int, level: float | None = None) -> NoiseModel:
        """This model with ``level``, or with the level estimated from ``y`` (:meth:`estimate_level`); kept at
        :attr:`min_level` or above."""
        if level is None:
            level = cls.estimate_level(y, spatial_dims)
        return cls(float(max(level, cls.min_level)))

    def with_level(self, level: float) -> NoiseModel:
        """This model with another level (read elsewhere than :meth:`from_image` reads it)."""
        return replace(self, level=level)

    @property
    def span(self) -> tuple[float, float]:
        """The variance-stabilised values of the image values 0 and 1, which the fit domain scales to 0 and 1."""
        return 0.0, 1.0

    @property
    def stabilised_sigma(self) -> float:
        """Standard deviation of the noise after the variance-stabilising transform."""
        return self.level

    @property
    def fit_sigma(self) -> float:
        """Standard deviation of the noise in the fit domain."""
        lo, hi = self.span
        return self.stabilised_sigma / (hi - lo)

    @property
    def fit_changes_filter(self) -> bool:
        """Whether a network's fit changes the filter's result: only where the observation's mean is not the clean
        image (Rician: the fit's exact likelihood corrects the magnitude's bias)."""
        return not self.mean_is_clean

    def stabilise(self, y: torch.Tensor) -> torch.Tensor:
        """The variance-stabilising transform of the image ``y``."""
        return y

    def unstabilise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The clean image from its stabilised estimate ``x`` (the observation ``y`` where the inverse needs it)."""
        return x

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """The observation in the fit domain."""
        lo, hi = self.span
        return (self.stabilise(y) - lo) / (hi - lo)

    def inverse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The clean estimate in the [0, 1] image domain from the fit's output ``x`` and the observation ``y``."""
        lo, hi = self.span
        return self.unstabilise(x * (hi - lo) + lo, y)

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        """The expected observation, in the fit domain, of a clean estimate ``x`` there."""
        return x

    def unobserve(self, mean: torch.Tensor) -> torch.Tensor:
        """The clean fit-domain image whose expected observation is ``mean``: :meth:`observe` inverted."""
        return mean

    def noise_floor(self, like: torch.Tensor) -> torch.Tensor:
        """The expected fit-domain observation of no signal, ``observe(0)``, as a scalar tensor of ``like``'s dtype
        and device."""
        return self.observe(torch.zeros((), dtype=like.dtype, device=like.device))

    def no_signal(self, mean: torch.Tensor, size: int = 15, spectrum: NoiseSpectrum | None = None) -> torch.Tensor:
        """Where the estimated observation mean ``mean`` (``(C, *spatial)``, fit domain) says there is no signal (a
        box of side ``size`` around each voxel decides; ``spectrum`` the noise's correlation, white where None):
        nowhere, unless the floor is above 0."""
        return torch.zeros_like(mean, dtype=torch.bool)

    def clean_estimate(
        self,
        mean: torch.Tensor,
        fitted: torch.Tensor | None = None,
        variance: torch.Tensor | None = None,
        spectrum: NoiseSpectrum | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The clean fit-domain image from an estimate ``mean`` of the observation's mean: by inverting the mean
        (:meth:`unobserve`), or by a network fit's own step where there is one (``fitted + mean - observe(fitted)``:
        the fit knows the bias of its expected observation). Where there is no signal (:meth:`no_signal`, with the
        noise's correlation ``spectrum``) the clean image and its ``variance`` are 0 and the mean is the noise floor.

        Returns:
            ``(clean, mean, variance)`` with the background rule applied to all three.
        """
        no_signal = self.no_signal(mean, spectrum=spectrum)
        mean = torch.where(no_signal, self.noise_floor(mean), mean)
        clean = self.unobserve(mean) if fitted is None else fitted + mean - self.observe(fitted)
        clean = clean.masked_fill(no_signal, 0.0)
        return clean, mean, None if variance is None else variance.masked_fill(no_signal, 0.0)


@dataclass(frozen=True)
class GaussianNoise(NoiseModel):
    """Additive white Gaussian noise, ``y = x + n``, ``n ~ N(0, sigma^2)``; the level is sigma, estimated by the
    wavelet MAD (:func:`~monai_dnaprior.noise.estimation.estimate_noise_level`). The fit domain is the image."""

    name = NoiseModelName.GAUSSIAN

    @classmethod
    def estimate_level(cls, y: torch.Tensor, spatial_dims: int) -> float:
        return estimate_noise_level(y, spatial_dims)


@dataclass(frozen=True)
class PoissonNoise(NoiseModel):
    """Scaled Poisson noise of photon counting (low-dose CT), ``y = a Poisson(x / a)``; the level is the gain ``a``
    (:func:`~monai_dnaprior.noise.estimation.estimate_poisson_gain`), kept at 1e-6 or above.

    Stabilised by the Anscombe transform ``2 sqrt(y / a + 3/8)``, of unit variance, and mapped back by the closed-form
    approximation of its exact unbiased inverse (Makitalo & Foi).
    """

    name = NoiseModelName.POISSON
    additive = False
    min_level = 1e-6

    @classmethod
    def estimate_level(cls, y: torch.Tensor, spatial_dims: int) -> float:
        return estimate_poisson_gain(y, spatial_dims)

    @property
    def span(self) -> tuple[float, float]:
        return 2.0 * math.sqrt(0.375), 2.0 * math.sqrt(1.0 / self.level + 0.375)

    @property
    def stabilised_sigma(self) -> float:
        return 1.0

    def stabilise(self, y: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sqrt((y / self.level).clamp_min(0) + 0.375)

    def unstabilise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.clamp_min(1.0)
        counts = x.square() / 4 + math.sqrt(1.5) / (4 * x) - 11 / (8 * x.square()) + 5 * math.sqrt(1.5) / (8 * x**3)
        return (counts - 0.125).clamp_min(0) * self.level


@dataclass(frozen=True)
class RicianNoise(NoiseModel):
    """Rician noise of an MRI magnitude, ``y = |x + n1 + i n2|``, ``n1, n2 ~ N(0, sigma^2)``; the level is sigma,
    read from a Rayleigh background or the bright blocks (:func:`~monai_dnaprior.noise.rayleigh.estimate_rician_sigma`).

    The fit domain is the image, but its mean is biased up (:func:`rician_mean`), most near the noise floor
    ``sigma sqrt(pi / 2)``: the clean estimate inverts the mean, and a background of pure noise is 0. The inverse's
    slope is infinite at the floor: applied voxel by voxel to a denoised image it would multiply the filter's residual
    error there by that slope (in a diffusion series, CSF at b = 1000 lies about two sigmas above the floor, and the
    amplified error reads as a false anisotropy). So the bias is read at the median of each voxel's ``3^d``
    neighbourhood (a median keeps a tissue's edge, where a smoothing would carry its level into a background beside
    it) and subtracted, the estimate's own variation around that level kept: ``clean = unobserve(s) + (m - s)``,
    ``s`` the local median of the estimate ``m``. Where sigma is read from a background, the mean is inverted with
    that background's unbiased reading (:attr:`floor_level`), the filter run with the level.
    """

    name = NoiseModelName.RICIAN
    mean_is_clean = False
    is_magnitude = True

    floor_level: float | None = None
    """The sigma of the mean and its inverse where it is read apart from the level the filter is run with: the
    background's without its selection's bias (:func:`~monai_dnaprior.noise.rayleigh.rician_sigmas`), which returns
    an exact-zero background as 0 where the biased reading leaves it just above the floor."""

    @classmethod
    def estimate_level(cls, y: torch.Tensor, spatial_dims: int) -> float:
        return estimate_rician_sigma(y, spatial_dims)

    @classmethod
    def from_image(cls, y: torch.Tensor, spatial_dims: int, level: float | None = None) -> RicianNoise:
        """The level given, or as :func:`~monai_dnaprior.noise.rayleigh.estimate_rician_sigma` reads it; where that
        is a background of pure noise, the floor's sigma too (:func:`~monai_dnaprior.noise.rayleigh.rician_sigmas`)."""
        if level is not None:
            return super().from_image(y, spatial_dims, level)
        level, floor = rician_sigmas(y, spatial_dims)
        return cls(float(max(level, cls.min_level)), None if floor is None else float(max(floor, cls.min_level)))

    def with_level(self, level: float) -> RicianNoise:
        return replace(self, level=level, floor_level=None)

    @property
    def sigma(self) -> float:
        """The per-component sigma of the Rician mean and its inverse (the floor's, where read apart)."""
        return self.level if self.floor_level is None else self.floor_level

    def unstabilise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.abs()

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        return rician_mean(x, self.sigma)

    def unobserve(self, mean: torch.Tensor) -> torch.Tensor:
        """:meth:`observe` inverted, the mean rising with ``|x|``; a mean below the floor gives 0.

        Read from a table of the mean at ``sigma t^2 40``, ``t`` on 4097 even steps from 0 to 1 (dense near the
        floor), ``x^2`` interpolated linearly in the mean (near the floor the mean rises as ``x^2``, far above it
        ``x^2 = m^2 - sigma^2``: both nearly linear); beyond ``40 sigma`` the asymptote ``m = x + sigma^2 / (2x)``
        solved for ``x``. Within about ``1e-6 sigma`` of the exact inverse, at a table lookup's cost (a bisection
        took 40 evaluations of the mean)."""
        sigma = self.sigma
        if sigma <= 0:
            return mean.clamp_min(0)
        grid = sigma * 40.0 * torch.linspace(0, 1, _INVERSE_TABLE, dtype=torch.float64, device=mean.device).square()
        table = rician_mean(grid, sigma)
        m = mean.double()
        index = torch.searchsorted(table, m.contiguous()).clamp(1, _INVERSE_TABLE - 1)
        lo, hi = table[index - 1], table[index]
        share = ((m - lo) / (hi - lo)).clamp(0, 1)
        squared = grid[index - 1].square() + share * (grid[index].square() - grid[index - 1].square())
        far = (m + (m.square() - 2 * sigma**2).clamp_min(0).sqrt()) / 2  # beyond the table: the asymptote
        clean = torch.where(m > table[-1], far, squared.sqrt())
        return clean.masked_fill(m <= table[0], 0.0).to(mean.dtype)

    def no_signal(self, mean: torch.Tensor, size: int = 15, spectrum: NoiseSpectrum | None = None) -> torch.Tensor:
        """The voxels whose neighbourhood (a box of side ``size``) has a mean not above the noise floor: within
        :data:`FLOOR_TOLERANCE` of it, or :data:`FLOOR_CONFIDENCE` standard errors of a pure-noise box's mean where
        that is more (a box of a filtered Rayleigh background spreads about as the noise's own box mean). The
        standard error is that of the box's voxels correlated as the magnitude of noise whose components correlate
        as ``spectrum`` (:meth:`~monai_dnaprior.noise.spectrum.NoiseSpectrum.box_mean_spread`; independent where
        None): a low-pass noise's box means spread 1.7-2.1x more under a k-space window. Every Rician mean is above
        the floor, so only a background of pure noise, its fluctuations averaged out over the box, falls there; a
        voxel's own mean straddles the floor, where the inverse's slope is infinite."""
        spatial_dims = mean.ndim - 1
        box = [min(size, n) for n in mean.shape[1:]]
        spread = _RAYLEIGH_SPREAD / math.sqrt(math.prod(box))
        if spectrum is not None and spectrum.spatial_dims == spatial_dims:
            spread *= spectrum.box_mean_spread(box, squared=True)
        tolerance = max(FLOOR_TOLERANCE, FLOOR_CONFIDENCE * spread)
        return box_mean(mean, spatial_dims, size) <= (1 + tolerance) * self.noise_floor(mean)

    def clean_estimate(
        self,
        mean: torch.Tensor,
        fitted: torch.Tensor | None = None,
        variance: torch.Tensor | None = None,
        spectrum: NoiseSpectrum | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The clean image with the bias read at the local median of ``mean`` ``(C, *spatial)`` (a fit's own step
        where there is one, :meth:`NoiseModel.clean_estimate`); 0 where the median or the mean holds no signal
        (:meth:`no_signal`, with the noise's correlation ``spectrum``).

        Returns:
            ``(clean, median, variance)``: ``median`` the mean whose inverse is the clean level (the noise floor in
            the background), ``variance`` 0 in the background.
        """
        if fitted is not None:
            return super().clean_estimate(mean, fitted, variance, spectrum)
        median = local_median(mean)
        background = self.no_signal(median, spectrum=spectrum) | self.no_signal(mean, spectrum=spectrum)
        clean = (self.unobserve(median) + mean - median).clamp_min(0).masked_fill(background, 0.0)
        median = torch.where(background, self.noise_floor(median), median)
        return clean, median, None if variance is None else variance.masked_fill(background, 0.0)


@dataclass(frozen=True)
class SpeckleNoise(NoiseModel):
    """Multiplicative speckle (ultrasound), ``y = x n`` with unit-mean ``n``; the level is the sigma of ``log n``
    (:func:`~monai_dnaprior.noise.estimation.estimate_log_noise_level`).

    Stabilised by ``log(y + 0.01)``, which makes the noise additive; mapped back by ``exp``, rescaled to the
    observation's mean intensity (unit-mean speckle keeps it), which undoes the log's bias.
    """

    name = NoiseModelName.SPECKLE
    additive = False
    # a scan's own noise floor in air is signal that the log magnifies, and where it is correlated its flattest
    # patches read colour that is not the speckle's (dev slices with a correlated floor under white speckle: +0.75 to
    # +1.04 dB; correlated speckle itself stays coloured)
    colour_above_darkest = 0.5

    @classmethod
    def estimate_level(cls, y: torch.Tensor, spatial_dims: int) -> float:
        return estimate_log_noise_level(y, spatial_dims, SPECKLE_OFFSET)

    @property
    def span(self) -> tuple[float, float]:
        return math.log(SPECKLE_OFFSET), math.log(1.0 + SPECKLE_OFFSET)

    def stabilise(self, y: torch.Tensor) -> torch.Tensor:
        return torch.log(y.clamp_min(0) + SPECKLE_OFFSET)

    def unstabilise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = (torch.exp(x) - SPECKLE_OFFSET).clamp_min(0)
        return x * (y.mean() / x.mean().clamp_min(1e-12))


NOISE_MODEL_CLASSES: dict[NoiseModelName, type[NoiseModel]] = {
    model.name: model for model in (GaussianNoise, PoissonNoise, RicianNoise, SpeckleNoise)
}
NOISE_MODELS = tuple(NOISE_MODEL_CLASSES)  # their names


def noise_model_class(name: str) -> type[NoiseModel]:
    """The class of the noise model ``name`` (a :class:`~monai_dnaprior.settings.NoiseModelName` other than
    ``auto``)."""
    return look_up_option(name, NOISE_MODEL_CLASSES)


def get_noise_model(name: str, y: torch.Tensor, spatial_dims: int, level: float | None = None) -> NoiseModel:
    """The noise model ``name`` with its level given, or estimated from the [0, 1]-normalised image ``y``
    (:meth:`NoiseModel.from_image`)."""
    return noise_model_class(name).from_image(y, spatial_dims, level)

"""The noise field: one value, estimated from the image alone, that says everything the fit and the refinement
need to know about the noise: its model (and so its signal dependence), level, spectrum and variation along slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from monai_dnaprior.noise.estimation import (
    binned_variance,
    blocks_to_voxels,
    box_mean,
    estimate_noise_level,
    finest_scale_quietness,
    haar_blocks,
    rician_background_sigma,
    robust_sigma,
    slice_noise_scale,
)
from monai_dnaprior.noise.models import NoiseModel, get_noise_model
from monai_dnaprior.noise.spectrum import NoiseSpectrum, estimate_noise_spectrum, spectrum_from_psd

__all__ = ["UPPER_BOUND_SHARE", "NoiseField", "detect_noise_model", "estimate_noise_field"]

_RAYLEIGH_MEAN_TO_STD = math.sqrt(math.pi / 2) / math.sqrt(2 - math.pi / 2)  # 1.91: a Rayleigh's mean / std
_RAYLEIGH_STD = math.sqrt(2 - math.pi / 2)  # 0.655: a Rayleigh's std per unit sigma
_SCALED_MODELS = ("gaussian", "rician")  # models whose noise scales with the image: per-slice levels apply
# The quietest tenth of the finest scale below this share of its median level: the finest scale is mostly signal
_SIGNAL_DOMINATED = 0.8  # (noisy dev scans: 0.85-1.01; a sharp real EPI with little noise: 0.76)
# Where the level is only a bound, this share of it is used: too high a level smooths real detail away, too low
# only leaves noise (the real EPI: 1.7x its noise removes -36 % of the noise power, half of it still +4 %)
UPPER_BOUND_SHARE = 0.5
# Flat patches holding more than this many times the finest scale's noise variance: strongly coloured noise (a Hann
# k-space window: 7.9; the anatomy's texture under white Rician noise: up to 1.4)
_STRONGLY_COLOURED = 2.0
# The darkest blocks are Rayleigh where their mean over their std is within these multiples of a Rayleigh's 1.91,
# and their std over the bright blocks' within these multiples of a Rayleigh's 0.655 (texture only adds to the
# bright blocks' std). Over 24 noise draws of each dev scan, Rician reads 0.69-1.18 and 0.63-1.21 (124 of 126
# inside; 117 in the former +-20 % and +-25 %), Poisson at most 0.75 and 0.51, Gaussian and speckle further out; the
# real EPI frame, its background masked to 0, reads 1.27 and 1.24 (its darkest noisy blocks are tissue edges)
_RAYLEIGH_RATIO = (0.7, 1.2)
_DARK_TO_BRIGHT = (0.65, 1.25)
_REPEATS = 0.8  # channels whose differences' finest scale holds less than this of their own repeat one image


@dataclass(frozen=True)
class NoiseField:
    """What the noise is, in the fit domain of the image it was estimated on.

    Attributes:
        model: the noise model with its level (see :class:`NoiseModel`).
        spectrum: the noise's correlation (white: a single 1).
        slice_scale: relative noise std of each slice along ``slice_axis`` (3D), or None where it is even.
        slice_axis: the spatial axis ``slice_scale`` runs along.
        estimated: whether the level was estimated (or given).
        upper_bound: signal detail fills most of the finest scale, so the noise is at most the quietest windows'
            level and may be much lower: :data:`UPPER_BOUND_SHARE` of that bound is used, and the spectrum is
            taken white.
        from_repeats: level and spectrum come from the differences of channels that repeat one image.
    """

    model: NoiseModel
    spectrum: NoiseSpectrum
    slice_scale: torch.Tensor | None = None
    slice_axis: int = -1
    estimated: bool = True
    upper_bound: bool = False
    from_repeats: bool = False

    @property
    def is_white(self) -> bool:
        return self.spectrum.is_white

    def describe(self) -> str:
        """One line for the log: model, level, colour and variation along slices."""
        how = "half its upper bound: the finest scale is mostly signal" if self.upper_bound else "estimated"
        how = "from the differences of repeated channels" if self.from_repeats else how
        text = f"{self.model.name} noise, level {self.model.level:.4g} ({how if self.estimated else 'given'})"
        text += ", white" if self.is_white else f", coloured (largest correlation {self.spectrum.max_abs_correlation:.2f})"
        if self.slice_scale is not None:
            text += (f", level varies along the slices ({float(self.slice_scale.min()):.2f}-"
                     f"{float(self.slice_scale.max()):.2f} of its median): per-slice levels")
        return text

    def slice_scale_map(self, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
        """``slice_scale`` broadcastable against a ``(C, *spatial)`` image, or None."""
        if self.slice_scale is None:
            return None
        view = [1] * len(shape)
        view[1 + self.slice_axis % 3] = -1
        return self.slice_scale.to(device).view(view)


def detect_noise_model(y: torch.Tensor, spatial_dims: int) -> str:
    """The noise model the data allow, from the image as it came (the rules are scale-free).

    - ``rician``: a non-negative image whose darkest blocks are Rayleigh (mean about 1.9 times their std, and
      their std about 0.66 times that of the bright blocks): an MRI magnitude with a background of pure noise.
      Where the noise is coloured (a k-space window), the finest scale sees only part of it and the test reads the
      darkest blocks' own voxels against the flat patches' noise instead (:func:`_coloured_rayleigh`);
    - ``poisson``/``speckle``: a non-negative image whose noise variance grows with the local mean over its
      brighter half, in proportion to it (counts) or to its square (multiplicative);
    - ``gaussian`` otherwise.
    """
    if float(y.min()) < -1e-6 * float(y.abs().max()) or any(s < 2 for s in y.shape[-spatial_dims:]):
        return "gaussian"
    detail, mean, noisy = haar_blocks(y, spatial_dims, exclude_clipped=False)
    detail, mean = detail[noisy], mean[noisy]
    if detail.numel() < 256:
        return "gaussian"
    order = torch.argsort(mean)
    dark, bright = order[: order.numel() // 10], order[-order.numel() // 2:]
    dark_std, bright_std = robust_sigma(detail[dark]), robust_sigma(detail[bright])
    if dark_std > 0 and bright_std > 0:
        ratio = float(mean[dark].mean()) / dark_std
        spread = dark_std / bright_std / _RAYLEIGH_STD
        if _within(ratio / _RAYLEIGH_MEAN_TO_STD, _RAYLEIGH_RATIO) and _within(spread, _DARK_TO_BRIGHT):
            return "rician"
    if _coloured_rayleigh(y, spatial_dims):
        return "rician"
    m, v = binned_variance(y, spatial_dims)
    keep = (m >= m.median()) & (m > 0) & (v > 0)
    if int(keep.sum()) < 4 or float(m[keep].max()) < 1.5 * float(m[keep].min()):
        return "gaussian"
    slope = float(torch.linalg.lstsq(
        torch.stack([m[keep].log(), torch.ones(int(keep.sum()))], 1).double(), v[keep].log()[:, None].double()
    ).solution[0])
    if slope > 1.6:
        return "speckle"
    if slope > 0.6:
        return "poisson"
    return "gaussian"


def _within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] < value < bounds[1]


def _flat_patch_spectrum(x: torch.Tensor, spatial_dims: int) -> tuple[NoiseSpectrum, float]:
    """The noise's spectrum and variance from the flattest patches where the noise is, above the darkest quarter (a
    magnitude's dark background is Rayleigh, not Gaussian), or anywhere the noise is where too few patches lie
    there."""
    noisy = _where_the_noise_is(x, spatial_dims)
    spectrum, variance = estimate_noise_spectrum(x, spatial_dims, mask=noisy & _above_darkest(x, spatial_dims))
    if variance == 0:
        spectrum, variance = estimate_noise_spectrum(x, spatial_dims, mask=noisy)
    return spectrum, variance


def _strongly_coloured(spectrum: NoiseSpectrum, variance: float, finest_level: float) -> bool:
    """Whether the flattest patches hold more than :data:`_STRONGLY_COLOURED` times the noise variance the finest
    scale sees: noise filtered to a low pass (a k-space window), beyond any texture's weak colour."""
    return not spectrum.is_white and variance > _STRONGLY_COLOURED * finest_level**2


def _darkest_blocks(y: torch.Tensor, spatial_dims: int, block: int = 8) -> tuple[float, float] | None:
    """Mean and voxel std over the darkest tenth of the ``block``-sided blocks all of whose voxels carry
    noise; None with too few such blocks. Their voxels' own spread, not the finest scale's, which sees a low-pass
    noise only in part."""
    side = [min(block, n) for n in y.shape[-spatial_dims:]]
    pool = torch.nn.functional.avg_pool2d if spatial_dims == 2 else torch.nn.functional.avg_pool3d
    shape = (-1, 1, *y.shape[-spatial_dims:])
    noisy = blocks_to_voxels(haar_blocks(y, spatial_dims, exclude_clipped=False)[2], y.shape[-spatial_dims:])
    mean = pool(y.float().reshape(shape), side)
    square = pool(y.float().square().reshape(shape), side)
    full = pool(noisy.reshape(shape), side) == 1.0
    mean, square = mean[full], square[full]
    if mean.numel() < 32:
        return None
    dark = torch.argsort(mean)[: max(8, mean.numel() // 10)]
    n = math.prod(side)
    std = float((square[dark] - mean[dark].square()).clamp_min(0).mean() * n / (n - 1)) ** 0.5
    return float(mean[dark].mean()), std


def _coloured_rayleigh(y: torch.Tensor, spatial_dims: int) -> bool:
    """Whether strongly coloured noise (:func:`_strongly_coloured`) has a Rayleigh background: in the darkest blocks
    (:func:`_darkest_blocks`) the mean is about 1.9 times the voxels' std, and that std is no more than the flat
    patches' noise std (a Rayleigh's is 0.66 of it; on a small image the flattest patches lie in the background
    itself)."""
    dark = _darkest_blocks(y, spatial_dims)
    if dark is None or dark[1] <= 0 or abs(dark[0] / dark[1] / _RAYLEIGH_MEAN_TO_STD - 1) >= 0.2:
        return False
    spectrum, variance = _flat_patch_spectrum(y, spatial_dims)
    if not _strongly_coloured(spectrum, variance, estimate_noise_level(y, spatial_dims)):
        return False
    return 0.6 * _RAYLEIGH_STD < dark[1] / math.sqrt(variance) < 1.2


def _above_darkest(x: torch.Tensor, spatial_dims: int, share: float = 0.25, size: int = 9) -> torch.Tensor:
    """Voxels whose local mean (a ``size`` box) is above the darkest ``share`` of local means."""
    local = box_mean(x.float(), spatial_dims, size)
    flat = local.flatten()
    flat = flat[:: max(1, flat.numel() // (1 << 20))]  # a strided sample is as good a quantile
    return local > torch.quantile(flat, share)


def _where_the_noise_is(x: torch.Tensor, spatial_dims: int, size: int = 8) -> torch.Tensor:
    """Voxels whose neighbourhood (``size`` blocks a side) carries at least half the image's finest-scale noise: a
    noise-free region's flat patches say nothing of the noise's spectrum."""
    if any(n < 2 for n in x.shape[-spatial_dims:]):
        return torch.ones_like(x, dtype=torch.bool)
    detail, _, _ = haar_blocks(x, spatial_dims)
    carries = box_mean(detail.abs(), spatial_dims, size) >= 0.5 * detail.abs().median()
    return blocks_to_voxels(carries, x.shape[-spatial_dims:], replicate=True).bool()


def _level_may_be_signal(model: NoiseModel, y: torch.Tensor, spatial_dims: int, level: float | None) -> bool:
    """Whether the level was read where signal detail may fill the finest scale: always for Gaussian noise; for
    Rician noise where it was estimated without a background of pure noise (the bright blocks, as on a masked or
    skull-stripped magnitude). A Rayleigh background's own quiet windows would read as a signal-filled finest scale,
    but sigma read there is the noise's alone."""
    if model.name == "gaussian":
        return True
    return model.name == "rician" and level is None and rician_background_sigma(y, spatial_dims) is None


def _repeat_noise(x: torch.Tensor, spatial_dims: int, own: float) -> torch.Tensor | None:
    """The differences of consecutive channels over sqrt(2) where the channels repeat one image (an fMRI series,
    repeated averages): the same noise as one channel's, with the signal cancelled, so its finest scale holds less
    than :data:`_REPEATS` of the channels' own. None for one channel, or channels that differ (DWI b-values,
    modalities), or that are exact copies. ``own``: the channels' own level."""
    if x.shape[0] < 2:
        return None
    differences = (x[1:] - x[:-1]) / math.sqrt(2.0)
    left = estimate_noise_level(differences, spatial_dims)
    return differences if 0 < left < _REPEATS * own else None


def estimate_noise_field(
    y: torch.Tensor,
    spatial_dims: int,
    noise_model: str,
    level: float | None = None,
    psd: torch.Tensor | None = None,
    slice_axis: int = -1,
) -> tuple[NoiseField, torch.Tensor]:
    """Estimate the noise field of ``y`` (``(C, *spatial)``, normalised to about [0, 1]) and its fit-domain target.

    The model's level comes from the image (or ``level``); additive noise in channels that repeat one image (a
    series of frames) from their differences, where the signal cancels. In 3D the level is checked slice by
    slice, and where it varies the target is divided by each slice's relative level (Gaussian and Rician noise
    scale with it), so the rest sees even noise. The spectrum is estimated on that target, in the fit domain (after
    Anscombe or log). Coloured noise takes its level from the spectrum's flat patches (the wavelet MAD sees only its
    high-frequency part). Rician noise is taken white unless strongly coloured (a k-space window) or its ``psd`` is
    given. A finest scale full of signal gives a white spectrum and half its level's bound (``upper_bound``). A given
    ``psd`` (normalised image units, orthonormal FFT convention) fixes spectrum and level.

    Returns:
        ``(field, target)``: the field, and the observation in the fit domain divided by the per-slice levels.
    """
    model = get_noise_model(noise_model, y, spatial_dims, level)
    target = model.forward(y)
    scale = None
    if spatial_dims == 3 and level is None and psd is None and noise_model in _SCALED_MODELS:
        scale = slice_noise_scale(target, slice_axis)
    field = NoiseField(model, NoiseSpectrum.white(spatial_dims), scale, slice_axis, level is None and psd is None)
    if scale is not None:
        target = target / field.slice_scale_map(target.shape, target.device)
        model = get_noise_model(noise_model, y / field.slice_scale_map(y.shape, y.device), spatial_dims)
    if psd is not None:
        spectrum, variance = spectrum_from_psd(psd.to(torch.float64).cpu())
        return NoiseField(NoiseModel(model.name, math.sqrt(variance) if level is None else level), spectrum,
                          None, slice_axis, False), target
    if model.name in ("poisson", "speckle"):
        spectrum, _ = estimate_noise_spectrum(target, spatial_dims)
        return NoiseField(model, spectrum, scale, slice_axis, level is None), target
    repeats = _repeat_noise(target, spatial_dims, model.level) if model.name == "gaussian" and level is None else None
    if repeats is not None:  # repeated frames: their differences are the noise, the signal gone
        spectrum, variance = estimate_noise_spectrum(repeats, spatial_dims, share=0.5)
        level = math.sqrt(variance) if not spectrum.is_white else estimate_noise_level(repeats, spatial_dims)
        return NoiseField(NoiseModel(model.name, level), spectrum, scale, slice_axis, True, from_repeats=True), target
    signal_filled = finest_scale_quietness(target, spatial_dims) < _SIGNAL_DOMINATED
    if signal_filled and _level_may_be_signal(model, y, spatial_dims, level):
        # the flattest patches are signal too: no spectrum from them, and the level is below the quiet windows'
        white = NoiseSpectrum.white(spatial_dims)
        if level is not None:
            return NoiseField(model, white, scale, slice_axis, False), target
        bound = model.level  # Gaussian: this bound already; Rician: the bright blocks' MAD, which the anatomy fills
        if model.name == "rician":
            bound = min(bound, estimate_noise_level(target, spatial_dims))
        model = NoiseModel(model.name, UPPER_BOUND_SHARE * bound)
        return NoiseField(model, white, scale, slice_axis, True, upper_bound=True), target
    spectrum, variance = _flat_patch_spectrum(target, spatial_dims)
    if model.name == "rician":
        # white unless strongly coloured (a k-space window): a magnitude is Gaussian only where the signal is well
        # above the noise, and there the anatomy's texture reads as a weak colour (the EPI volume: 0.14, which cost
        # 0.8 dB)
        if not _strongly_coloured(spectrum, variance, model.level):
            return NoiseField(model, NoiseSpectrum.white(spatial_dims), scale, slice_axis, level is None), target
        coloured = NoiseModel(model.name, model.level if level is not None else math.sqrt(variance))
        return NoiseField(coloured, spectrum, scale, slice_axis, level is None), target
    if not spectrum.is_white and variance < 0.5 * model.level**2:
        # the flattest patches hold less than the finest scale's noise alone: they are not where the noise is
        # (noise that varies across the image, or a noise-free region), so they say nothing of its spectrum
        spectrum = NoiseSpectrum.white(spatial_dims)
    if not spectrum.is_white and level is None:
        model = NoiseModel(model.name, math.sqrt(variance))
    return NoiseField(model, spectrum, scale, slice_axis, level is None), target

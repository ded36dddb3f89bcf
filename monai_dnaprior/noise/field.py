"""The noise field: one value, estimated from the image alone, that says everything the fit and the refinement
need to know about the noise: its model (and so its signal dependence), level, spectrum and variation along slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from monai_dnaprior.noise.estimation import estimate_noise_level, finest_scale_quietness, slice_noise_scale, too_thin
from monai_dnaprior.noise.given_map import GivenMap
from monai_dnaprior.noise.level_map import LevelMap, estimate_level_map
from monai_dnaprior.noise.models import NoiseModel, get_noise_model, noise_model_class
from monai_dnaprior.noise.rayleigh import (
    RAYLEIGH_STD,
    coloured_background,
    has_rayleigh_background,
    rayleigh_block_sigma,
    rician_background_sigma,
)
from monai_dnaprior.noise.spectrum import (
    DARKEST_SHARE,
    NoiseSpectrum,
    confirm_colour,
    estimate_noise_spectrum,
    flat_patch_spectrum,
    flattest_patch_bias,
    spectrum_from_psd,
    strongly_coloured,
)
from monai_dnaprior.validation import check_additive_noise

__all__ = ["UPPER_BOUND_SHARE", "NoiseField", "estimate_noise_field", "estimate_stationary_field"]

# The quietest windows' level below this share of the finest scale's median level: signal detail fills most of the
# finest scale (noise alone spreads evenly over it, about 1)
_SIGNAL_DOMINATED = 0.8
# Where the level is only a bound, this share of it is used: too high a level smooths real detail away, too low
# only leaves noise
UPPER_BOUND_SHARE = 0.5
# Below this quietness the finest scale is signal, whose windows' levels follow the anatomy: no map is read (a 5x
# coil falloff on the dev slices reads 0.69-0.80, a sharp scan's texture 0.44-0.46)
_MAP_QUIETNESS = 0.55
_MAGNITUDE_SNR = 3.0  # a magnitude's windows darker than this many noise stds are left out of its map (Rayleigh)
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
        level_map: the noise's relative std as a function of position (read: :mod:`.level_map`; given:
            :mod:`.given_map`), or None where it is even; ``model.level`` is then the level where the map reads 1.
    """

    model: NoiseModel
    spectrum: NoiseSpectrum
    slice_scale: torch.Tensor | None = None
    slice_axis: int = -1
    estimated: bool = True
    upper_bound: bool = False
    from_repeats: bool = False
    level_map: LevelMap | GivenMap | None = None

    @property
    def is_white(self) -> bool:
        return self.spectrum.is_white

    def describe(self) -> str:
        """One line for the log: model, level, colour and variation along slices."""
        how = "half its upper bound: the finest scale is mostly signal" if self.upper_bound else "estimated"
        how = "from the differences of repeated channels" if self.from_repeats else how
        text = f"{self.model.name} noise, level {self.model.level:.4g} ({how if self.estimated else 'given'})"
        colour = f"coloured (largest correlation {self.spectrum.max_abs_correlation:.2f})"
        text += ", white" if self.is_white else f", {colour}"
        if self.level_map is not None:
            low, high, peak = self.level_map.summary()
            given = " (given map)" if self.level_map.given else ""
            text += (f", level varies across the image{given}: {low:.2f}-{high:.2f}x (highest at {peak} of each axis)")
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

    def scale_map(self, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
        """The noise's relative std (the level map times the per-slice levels) broadcastable against a
        ``(C, *spatial)`` image, or None where the noise is even."""
        scale = self.slice_scale_map(shape, device)
        if self.level_map is not None:
            grid = self.level_map.on_grid(tuple(shape[1:]), device)
            scale = grid if scale is None else scale * grid
        return scale


def _level_may_be_signal(model: NoiseModel, y: torch.Tensor, spatial_dims: int, level: float | None) -> bool:
    """Whether the level of an additive ``model`` was read where signal detail may fill the finest scale: always
    for Gaussian noise; for a magnitude (Rician) where it was estimated without a background of pure noise (the
    bright blocks, as on a masked or skull-stripped magnitude), found neither by one sigma's floor nor block by block
    whatever its level. A Rayleigh background's own quiet windows would read as a signal-filled finest scale, but
    the noise there is the noise's alone; so do the quiet side's windows under a coil's falloff, whose background has
    no one floor."""
    if not model.is_magnitude:
        return True
    return (level is None and rician_background_sigma(y, spatial_dims) is None
            and not has_rayleigh_background(y, spatial_dims))


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
    given_map: GivenMap | None = None,
) -> tuple[NoiseField, torch.Tensor]:
    """Estimate the noise field of ``y`` (``(C, *spatial)``, normalised to about [0, 1]) and its fit-domain target.

    A ``given_map`` (additive noise: :mod:`.given_map`) is used as it is, in place of a map read from the image.
    Additive noise (Gaussian, Rician) whose level is not given may vary across the image: its map ``g``
    (:func:`~monai_dnaprior.noise.level_map.estimate_level_map`, on the bright windows of a magnitude) divides the
    observation, whose noise is then stationary, and the rest of the field is estimated on ``y / g``
    (:func:`estimate_stationary_field`); the target returned is the observation's, divided by ``g``. A map after
    which the finest scale reads as mostly signal, where one level did not, is dropped (it is not the noise's: a
    g-factor map's seams, say, that the smooth fit cannot follow), and none is read where signal fills the finest
    scale or where a magnitude has no background of pure noise (found block by block, whatever its level), nor where
    a magnitude's noise reads coloured (a k-space window's low pass: the finest scale the map's windows read holds
    little of it, and the anatomy's edges set their levels). A mapped magnitude's sigma is read on ``y / g`` from
    that background's blocks (:func:`~monai_dnaprior.noise.rayleigh.rayleigh_block_sigma`) where its noise reads white.

    Returns:
        ``(field, target)``: the field, and the observation in the fit domain divided by the noise's relative std.
    """
    kind = noise_model_class(noise_model)
    level_map = given_map
    if given_map is not None:
        check_additive_noise("noise_map", noise_model)
    if level_map is None and level is None and psd is None and kind.additive and not too_thin(y, spatial_dims):
        level_map = _read_level_map(y, spatial_dims, kind)
    if level_map is None:
        return estimate_stationary_field(y, spatial_dims, noise_model, level, psd, slice_axis)
    stationary = None  # read once: a magnitude's, and where the map leaves the noise unmeasurable
    # a magnitude's noise found coloured is a low pass (a k-space window): none is in a read map
    if kind.is_magnitude and given_map is None:
        stationary = estimate_stationary_field(y, spatial_dims, noise_model, level, psd, slice_axis)
        if not stationary[0].is_white:
            return stationary
    divided = y / level_map.on_grid(tuple(y.shape[1:]), y.device)
    # a magnitude's sigma from its background's blocks: one floor's search drifts to the quiet part of a background
    # that the estimated map leaves uneven (a given map leaves it even, and the floor's search reads less of the
    # faint anatomy those blocks hold); the blocks' test is for white noise, so coloured noise keeps the floor's
    read = kind.is_magnitude and level is None and given_map is None
    base = rayleigh_block_sigma(divided, spatial_dims) if read else None
    field, target = estimate_stationary_field(divided, spatial_dims, noise_model, level if base is None else base, psd,
                                              slice_axis)
    if base is not None and field.is_white:
        field = replace(field, estimated=True)
    elif base is not None:
        field, target = estimate_stationary_field(divided, spatial_dims, noise_model, level, psd, slice_axis)
    # a read map that left the noise less measurable than one level does is not the noise's
    if field.upper_bound and given_map is None:
        stationary = stationary or estimate_stationary_field(y, spatial_dims, noise_model, level, psd, slice_axis)
        if not stationary[0].upper_bound:
            return stationary
    return replace(field, level_map=level_map), target


def _read_level_map(y: torch.Tensor, spatial_dims: int, kind: type[NoiseModel]) -> LevelMap | None:
    """The noise map of additive noise (whose fit domain is the image itself), or None where it cannot be read: signal
    fills the finest scale, or a magnitude has no background of pure noise (its bright windows would read a masked
    scan's anatomy); a magnitude's windows darker than :data:`_MAGNITUDE_SNR` noise stds are left out. The background
    is found block by block whatever its level (:func:`~monai_dnaprior.noise.rayleigh.has_rayleigh_background`): one
    sigma's floor finds none under a coil's falloff."""
    if finest_scale_quietness(y, spatial_dims) < _MAP_QUIETNESS:
        return None
    floor = None
    if kind.is_magnitude:
        if not has_rayleigh_background(y, spatial_dims):
            return None
        floor = _MAGNITUDE_SNR * kind.estimate_level(y, spatial_dims)
    return estimate_level_map(y, spatial_dims, floor)


def _magnitude_spectrum(y: torch.Tensor, spatial_dims: int, level: float) -> tuple[NoiseSpectrum, float]:
    """A magnitude's noise spectrum and variance (``level``: the model's sigma). White unless strongly coloured (a
    k-space window): its noise is Gaussian only where the signal is well above it, and there the anatomy's texture
    reads as a weak colour. Strongly coloured, with a background of pure noise
    (:func:`~monai_dnaprior.noise.rayleigh.coloured_background`): the lower of two variances that signal only
    raises, the flattest patches' freed of their selection's low bias (:func:`flattest_patch_bias`) and the
    background's; without one, the flattest patches' as read (there the anatomy in them offsets that bias). The
    flattest patches are read outside a background wider than the darkest share they leave out (:data:`DARKEST_SHARE`)
    where they read a strong colour there too: the background's own are Rayleigh, whose spread reads a low level (a
    small head in a wide field of view).

    Where too few patches lie outside the background to read (a small masked slice), the flattest patches are the
    background's own, Rayleigh, whose spread is :data:`RAYLEIGH_STD` sigma: read strongly coloured, their variance is
    divided by its square; read weakly coloured (their Rayleigh spread hides the colour, and the bias is then taken
    as none), the background alone says whether the noise is strongly coloured, and its variance."""
    spectrum, variance = flat_patch_spectrum(y, spatial_dims, curvature=False)
    background = None if spectrum.is_white else coloured_background(y, spatial_dims)
    outside = None if background is None else estimate_noise_spectrum(y, spatial_dims, mask=~background.voxels)
    in_background = outside is not None and outside[1] == 0
    if not strongly_coloured(spectrum, variance, level):
        if in_background and strongly_coloured(spectrum, background.sigma**2, level):
            return spectrum, background.sigma**2
        return NoiseSpectrum.white(spatial_dims), level**2
    if background is not None:
        wide = float(background.voxels.float().mean()) > DARKEST_SHARE  # the flattest patches may lie in it
        if wide and not in_background and strongly_coloured(*outside, level):
            spectrum, variance = outside
        unbiased = variance / flattest_patch_bias(spectrum, y.shape[-spatial_dims:])
        variance = min(unbiased / (RAYLEIGH_STD**2 if in_background else 1.0), background.sigma**2)
    return spectrum, variance


def estimate_stationary_field(
    y: torch.Tensor,
    spatial_dims: int,
    noise_model: str,
    level: float | None = None,
    psd: torch.Tensor | None = None,
    slice_axis: int = -1,
) -> tuple[NoiseField, torch.Tensor]:
    """Estimate the noise field of ``y`` (``(C, *spatial)``, normalised to about [0, 1]) and its fit-domain target.

    The model's level comes from the image (or ``level``); additive Gaussian noise in channels that repeat one image
    (a series of frames) from their differences, where the signal cancels. In 3D the level of additive noise is
    checked slice by slice, and where it varies the target is divided by each slice's relative level, so the rest
    sees even noise. The spectrum is estimated on that target, in the fit domain (after Anscombe or log). Coloured
    noise takes its level from the spectrum's flat patches (the wavelet MAD sees only its high-frequency part; a
    low-pass Gaussian noise's freed of their selection bias where they are pure noise, :func:`flat_patch_spectrum`). A
    magnitude's noise (Rician) is taken white unless strongly coloured (a k-space window) or its ``psd`` is given: it
    is Gaussian only where the signal is well above it, and there the anatomy's texture reads as a weak colour. A
    finest scale full of signal gives a white spectrum and half its level's bound (``upper_bound``). A given ``psd``
    (normalised image units, orthonormal FFT convention) fixes spectrum and level.

    Returns:
        ``(field, target)``: the field, and the observation in the fit domain divided by the per-slice levels.
    """
    model = get_noise_model(noise_model, y, spatial_dims, level)
    target = model.forward(y)
    scale = None
    if spatial_dims == 3 and level is None and psd is None and model.additive:
        scale = slice_noise_scale(target, slice_axis)
    field = NoiseField(model, NoiseSpectrum.white(spatial_dims), scale, slice_axis, level is None and psd is None)
    if scale is not None:
        target = target / field.slice_scale_map(target.shape, target.device)
        model = model.from_image(y / field.slice_scale_map(y.shape, y.device), spatial_dims)
    if psd is not None:
        spectrum, variance = spectrum_from_psd(psd.to(torch.float64).cpu())
        given = model.with_level(math.sqrt(variance) if level is None else level)
        return NoiseField(given, spectrum, None, slice_axis, False), target
    if not model.additive:  # stabilised counts or speckle: colour only where the test finds it
        spectrum = confirm_colour(estimate_noise_spectrum(target, spatial_dims)[0], target, spatial_dims,
                                  above_darkest=model.colour_above_darkest)
        return NoiseField(model, spectrum, scale, slice_axis, level is None), target
    repeats = _repeat_noise(target, spatial_dims, model.level) if not model.is_magnitude and level is None else None
    if repeats is not None:  # repeated frames: their differences are the noise, the signal gone
        spectrum, variance = estimate_noise_spectrum(repeats, spatial_dims, share=0.5)
        level = math.sqrt(variance) if not spectrum.is_white else estimate_noise_level(repeats, spatial_dims)
        return NoiseField(model.with_level(level), spectrum, scale, slice_axis, True, from_repeats=True), target
    signal_filled = finest_scale_quietness(target, spatial_dims) < _SIGNAL_DOMINATED
    if signal_filled and _level_may_be_signal(model, y, spatial_dims, level):
        # the flattest patches are signal too: no spectrum from them, and the level is below the quiet windows'
        white = NoiseSpectrum.white(spatial_dims)
        if level is not None:
            return NoiseField(model, white, scale, slice_axis, False), target
        bound = model.level  # Gaussian: this bound already; Rician: the bright blocks' MAD, which the anatomy fills
        if model.is_magnitude:
            bound = min(bound, estimate_noise_level(target, spatial_dims))
        return NoiseField(model.with_level(UPPER_BOUND_SHARE * bound), white, scale, slice_axis, True,
                          upper_bound=True), target
    if model.is_magnitude:
        spectrum, variance = _magnitude_spectrum(target, spatial_dims, model.level)
        if level is None and not spectrum.is_white:
            model = model.with_level(math.sqrt(variance))
        return NoiseField(model, spectrum, scale, slice_axis, level is None), target
    spectrum, variance = flat_patch_spectrum(target, spatial_dims, finest_level=model.level)
    if not spectrum.is_white and variance < 0.5 * model.level**2:
        # the flattest patches hold less than the finest scale's noise alone: they are not where the noise is
        # (noise that varies across the image, or a noise-free region), so they say nothing of its spectrum
        spectrum = NoiseSpectrum.white(spatial_dims)
    if not spectrum.is_white and level is None:
        model = model.with_level(math.sqrt(variance))
    return NoiseField(model, spectrum, scale, slice_axis, level is None), target

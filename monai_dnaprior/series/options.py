"""When a channel-first image is denoised as a series (its channels repeats, directions or time points of one
anatomy), and the checks of the ``series`` setting."""

from __future__ import annotations

import math
import warnings

from monai.utils import look_up_option

from monai_dnaprior.settings import Preset, Prior

__all__ = ["SERIES_MIN_CHANNELS", "SMALL_SERIES_VALUES", "WIDE_SIDE", "check_series", "mppca_step", "patch_sides",
           "series_refusal", "use_series"]

SERIES_MIN_CHANNELS = 8
"""``series=None`` takes an image with at least this many channels as a series. Measured on the first 4, 6, 8, 12
volumes of the DWI-like series (``docs/series.md``): the series path beats the per-volume path from 4 on (+4.2 to
+7.2 dB); 8 keeps multi-contrast images (T1, T2, FLAIR, PD: a few channels that are not repeats) on the per-image
path. Eight or more unrelated images as channels are taken as a series too: pass ``series=False`` there."""

SMALL_SERIES_VALUES = 2**18
"""A series with at most this many values (volumes x voxels) has MP-PCA's patches at every voxel in every preset
(else every 2 voxels, but in ``quality``): on the dev series every voxel is better (DWI-like +0.06 dB, fMRI-like
+0.06 dB) and costs 6x MP-PCA's time, about 2 s more for the whole series mode at this size on one CPU thread."""

BASE_SIDE = {2: 8, 3: 5}  # patch side of the local PCA: 8x8 in 2D, 5x5x5 in 3D (MP-PCA's usual 5x5x5)
WIDE_SIDE = {2: 12, 3: 7}  # the wider patch ``quality`` weighs against it by SURE (about 2.5x the voxels)
MAX_SIDE = 12


def check_series(series: object) -> None:
    """``series`` is True, False or None (decide from the image).

    Raises:
        TypeError: anything else (a string such as ``"auto"``: pass None).
    """
    if series is not None and not isinstance(series, bool):
        raise TypeError(f"series must be True (the channels are repeats of one anatomy: denoise them together), "
                        f"False (each channel on its own) or None (decide from the channel count), got {series!r}.")


def patch_sides(shape: tuple[int, ...], channels: int, wide: bool = False) -> tuple[int, ...]:
    """The local PCA's patch sides for a series of ``channels`` volumes of spatial ``shape``: the base side (or the
    wide one), grown until a patch has more voxels than the series has volumes (MP-PCA needs more samples than
    dimensions), each side at most the image's."""
    side = (WIDE_SIDE if wide else BASE_SIDE)[len(shape)]
    while True:
        sides = tuple(min(side, s) for s in shape)
        if math.prod(sides) > channels or side >= MAX_SIDE or sides == tuple(shape):
            return sides
        side += 1


def mppca_step(shape: tuple[int, ...], preset: str) -> int:
    """MP-PCA's patch step for a series of ``shape`` ``(C, *spatial)`` in ``preset``: 1 (every voxel) in ``quality``
    or where the series holds at most :data:`SMALL_SERIES_VALUES` values, else 2 (an eighth of the patches in 3D,
    0.06 dB less on the DWI-like series)."""
    if look_up_option(preset, Preset) == Preset.QUALITY or math.prod(shape) <= SMALL_SERIES_VALUES:
        return 1
    return 2


def series_refusal(shape: tuple[int, ...], has_psd: bool, prior: str, has_map: bool = False) -> str | None:
    """Why an image of ``shape`` ``(C, *spatial)`` cannot be denoised as a series with these settings, or None."""
    channels, spatial = shape[0], tuple(shape[1:])
    if channels < 2:
        return f"it has {channels} channel; a series needs its repeats as channels (C, H, W[, D]) with C >= 2"
    if has_psd:
        return "a given noise_psd describes one image's noise; the series estimates its own"
    if has_map:
        return "a given noise_map describes one image's noise; the series estimates its own"
    if prior not in (Prior.AUTO, Prior.FILTER):
        return (f"prior={str(prior)!r} fits the single-image network; the series mode takes prior='auto' (its own "
                "network, weighed by SURE) or prior='filter' (MP-PCA and the series Wiener pass, no network)")
    voxels = math.prod(patch_sides(spatial, channels))
    if voxels <= channels:
        return f"its patches hold {voxels} voxels, fewer than its {channels} channels (too small an image)"
    return None


def use_series(series: bool | None, shape: tuple[int, ...], has_psd: bool, prior: str, has_map: bool = False) -> bool:
    """Whether to denoise ``(C, *spatial)`` as a series: as asked, or for None where it has at least
    :data:`SERIES_MIN_CHANNELS` channels and nothing refuses it (a warning says why where something does).

    Raises:
        ValueError: ``series=True`` where it cannot be done, saying why and what to pass.
    """
    check_series(series)
    if series is False:
        return False
    refusal = series_refusal(tuple(shape), has_psd, prior, has_map)
    if series is None:
        if refusal is not None and shape[0] >= SERIES_MIN_CHANNELS:
            warnings.warn(f"DNA-Prior: {shape[0]} channels would be denoised together as a series (series=None), but "
                          f"{refusal}, so each group of channels is denoised on its own (on a diffusion series several "
                          "dB worse than the series mode). Pass series=False if the channels are different images, "
                          "or leave out what refuses the series mode.", stacklevel=3)
        return refusal is None and shape[0] >= SERIES_MIN_CHANNELS
    if refusal is not None:
        raise ValueError(f"series=True cannot denoise this image as a series: {refusal}. Pass series=False (each "
                         "channel on its own) or series=None (decide from the image).")
    return True

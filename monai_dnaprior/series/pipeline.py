"""Denoise a series: the channels of ``(C, *spatial)`` are C noisy volumes (or frames) of one anatomy.

1. The noise model is chosen and its level read over the whole series (:mod:`monai_dnaprior.noise`); the series goes
   into the model's fit domain (Poisson: Anscombe, speckle: log; Gaussian and Rician as they are).
2. MP-PCA (:mod:`~monai_dnaprior.series.mppca`): local PCA across the volumes, the noise components cut at the
   Marchenko-Pastur edge, the kept ones shrunk; it also maps the noise variance. In ``quality`` its patch size is
   the base one or a wider one, whichever SURE prefers (:mod:`~monai_dnaprior.series.patch_choice`).
3. The series Wiener pass (:mod:`~monai_dnaprior.series.wiener`): space and volumes in one transform, shrunk with the
   MP-PCA estimate as the pilot, and again with the average of MP-PCA and a network fitted to predict each volume
   from the others (:mod:`~monai_dnaprior.series.network`) as the pilot; the two blended with the weight SURE
   chooses (:mod:`~monai_dnaprior.series.blend`). Without the network (``prior="filter"``) the first pass is the
   estimate.
4. Back through the model: the Rician mean inverted (the magnitude's bias removed, read at the estimate's local
   median: :class:`~monai_dnaprior.noise.models.RicianNoise`) with the sigma MP-PCA measured where the series is
   bright (the Rician estimate of a single image reads it 25 % high on a series with no background of pure noise),
   the Anscombe or log inverse. With the uncertainty map, the Wiener passes' closed-form error goes the same way.

Deterministic: the network's fit and SURE's probe are seeded.
"""

from __future__ import annotations

import logging

import torch
from monai.utils import look_up_option

from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.noise import choose_noise_model, get_noise_model
from monai_dnaprior.progress import ProgressTracker
from monai_dnaprior.series.blend import network_blend
from monai_dnaprior.series.mppca import mppca
from monai_dnaprior.series.options import mppca_step, patch_sides
from monai_dnaprior.series.patch_choice import choose_patch_sides
from monai_dnaprior.series.wiener import series_wiener
from monai_dnaprior.settings import NoiseModelName, Preset
from monai_dnaprior.uncertainty import clean_error, to_image_domain

__all__ = ["WIENER_SIDE", "WIENER_STEP", "denoise_series"]

logger = logging.getLogger("monai_dnaprior")

WIENER_SIDE, WIENER_STEP = 4, 2  # the Wiener pass's patches: 4 px a side (5: +0.08 dB for 2x the time)
_SHARES = (0.05, 0.1, 0.85)  # noise model, MP-PCA, network and Wiener passes: the shares of the time (progress)


def _series_sigma(pilot: torch.Tensor, variance: torch.Tensor) -> float:
    """One noise sigma for the series from MP-PCA's variance map: its median where the series' mean is well above
    the noise (3 sigma), where a magnitude's noise is still Gaussian (a Rician background reads low)."""
    sigma = variance.clamp_min(0).sqrt()
    bright = pilot.mean(0) > 3 * sigma.median()
    return float((sigma[bright] if int(bright.sum()) >= 64 else sigma).median())


def denoise_series(
    x: torch.Tensor, noise_model: str, noise_level: float | None, tracker: ProgressTracker, with_network: bool = True,
    with_map: bool = False, preset: str = Preset.DEFAULT,
) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """Denoise the series ``x`` ``(C, *spatial)`` (float32, any range) with the network blended in where
    ``with_network`` and MP-PCA's patch step set by ``preset`` and the series' size
    (:func:`~monai_dnaprior.series.options.mppca_step`); returns the series, its uncertainty map where ``with_map``
    (the expected error per voxel, root mean square, in ``x``'s units: the Wiener passes' closed-form error through
    the noise model's inverse, as :mod:`monai_dnaprior.uncertainty` makes a single image's) and what was found."""
    spatial_dims = x.ndim - 1
    units = [share * x.numel() for share in _SHARES]
    window = IntensityWindow.from_image(x)
    if window.is_degenerate:
        tracker.advance(x.numel())
        return x.clone(), _no_error(x, with_map), {"noise_model": str(noise_model), "noise_level": 0.0,
                                                   "prior": "none", "series": True}
    with tracker.span(units[0]):
        chosen = choose_noise_model(noise_model, x, spatial_dims)
        window = IntensityWindow.from_image(x, zero_based=chosen != NoiseModelName.GAUSSIAN)
        y = window.normalize(x)
        model = get_noise_model(chosen, y, spatial_dims, noise_level)
    info = {"noise_model": str(chosen), "asked_noise_model": str(noise_model), "noise_level": model.level,
            "prior": "series" if with_network else "series filter", "series": True, "iterations": 0}
    if model.level <= model.min_level:
        tracker.advance(units[1] + units[2])
        return x.clone(), _no_error(x, with_map), {**info, "prior": "none"}
    target = model.forward(y)
    sides = patch_sides(tuple(x.shape[1:]), x.shape[0])
    step = mppca_step(tuple(x.shape), preset)
    wiener_sides = tuple(min(WIENER_SIDE, s) for s in x.shape[1:])
    with tracker.span(units[1]):
        wide = patch_sides(tuple(x.shape[1:]), x.shape[0], wide=True)
        if look_up_option(preset, Preset) == Preset.QUALITY and wide != sides:  # SURE weighs the wider patch
            sides, risks, (pilot, variance) = choose_patch_sides(
                target, [sides, wide], lambda t, s: mppca(t, s, step),
                lambda t, p, v: series_wiener(t, p, v, wiener_sides, WIENER_STEP))
            info["patch_risks"] = [round(r, 6) for r in risks]
        else:
            pilot, variance = mppca(target, sides, step)
    with tracker.span(units[2]):
        if with_network:
            estimate, error, found = network_blend(
                target, pilot, variance, lambda t: mppca(t, sides, step),
                lambda t, p, v, e: series_wiener(t, p, v, wiener_sides, WIENER_STEP, e), with_error=with_map)
            info.update(found)
        else:
            passed = series_wiener(target, pilot, variance, wiener_sides, WIENER_STEP, with_map)
            estimate, error = passed if with_map else (passed, None)
    sigma = _series_sigma(pilot, variance)
    if noise_level is None and model.additive:  # the level the series' own redundancy measures (Gaussian, Rician)
        model = type(model)(sigma)
        info["noise_level"] = sigma
    clean, level, error = model.clean_estimate(estimate, variance=error)
    spread = None
    if with_map:  # the fit domain's error through the Rician inverse (at its level), then the model's inverse
        spread = to_image_domain(model, clean, clean_error(model, level, clean, error, False), y)
        spread = spread * (window.high - window.low)
    info.update(patch=sides, mppca_step=step, mppca_sigma=sigma)
    logger.info("DNA-Prior series: %d volumes, %s noise (level %.3g), MP-PCA %s patches, the series Wiener pass "
                "(%s)", x.shape[0], chosen, model.level, "x".join(map(str, sides)),
                f"network weight {info['network_weight']:.2f}" if with_network else "no network: prior='filter'")
    return window.restore(model.inverse(clean, y)), spread, info


def _no_error(x: torch.Tensor, with_map: bool) -> torch.Tensor | None:
    """The map of a series returned as it came: no error is claimed (as for a single image)."""
    return torch.zeros_like(x) if with_map else None

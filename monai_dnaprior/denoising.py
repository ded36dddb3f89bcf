"""Denoise one channel-first image: shapes, channel groups, the intensity window, and what the log and warnings say.

The policy lives in its rooms: the noise field and the model's choice in :mod:`monai_dnaprior.noise`, the filter in
:mod:`monai_dnaprior.filters`, the network in :mod:`monai_dnaprior.network`, the expected error in
:mod:`monai_dnaprior.uncertainty`. Plain torch: nothing here knows about MONAI dictionaries or metadata.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.config import NdarrayOrTensor

from monai_dnaprior.devices import resolve_device, with_cpu_threads
from monai_dnaprior.filters.pipeline import filter_observation
from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.network.volume import fit_network
from monai_dnaprior.noise import UPPER_BOUND_SHARE, choose_noise_model, estimate_noise_field, haar_blocks
from monai_dnaprior.noise.given_map import GivenMap
from monai_dnaprior.progress import ProgressTracker
from monai_dnaprior.series import denoise_series, use_series
from monai_dnaprior.settings import (
    FilterConfig,
    NetworkConfig,
    NoiseModelName,
    Preset,
    Prior,
    preset_settings,
    resolve_prior,
)
from monai_dnaprior.uncertainty import clean_error, to_image_domain
from monai_dnaprior.validation import check_additive_noise, check_image, check_noise_map, check_option, check_options

__all__ = ["CHANNEL_GROUP", "DenoiseResult", "denoise"]

logger = logging.getLogger("monai_dnaprior")

CHANNEL_GROUP = 4  # channels that share one noise field and one filter call (a 4D series: time points in groups)
_ESTIMATE_SHARE = 0.1  # the share of a call's time the noise field takes, for the progress reported


@dataclass
class DenoiseResult:
    """A denoised image (float32, input's intensity range, on the input's device) and what was done.

    Attributes:
        image: the denoised image, same shape as the input.
        uncertainty: per-voxel expected error of ``image`` (root mean square, in its intensity units; see
            :mod:`monai_dnaprior.uncertainty`), or None where it was not asked for.
        info: noise model, level and colour found, the prior used, network iterations, seconds and device.
    """

    image: torch.Tensor
    uncertainty: torch.Tensor | None
    info: dict = field(default_factory=dict)


@with_cpu_threads
def denoise(
    img: NdarrayOrTensor,
    noise_model: str = NoiseModelName.AUTO,
    noise_level: float | None = None,
    *,
    noise_psd: torch.Tensor | None = None,
    noise_map: NdarrayOrTensor | None = None,
    prior: str = Prior.AUTO,
    preset: str = Preset.DEFAULT,
    filter_config: FilterConfig | None = None,
    network_config: NetworkConfig | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    slice_axis: int = -1,
    uncertainty: bool = False,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    series: bool | None = None,
) -> DenoiseResult:
    """Denoise a channel-first ``(C, H, W)`` or ``(C, H, W, D)`` image with the noise field estimated from it.

    Spatial axes of size 1 do not count (a depth-1 DICOM slice ``(1, H, W, 1)`` is a 2D image). Channels are
    denoised in groups of at most :data:`CHANNEL_GROUP`, each with its own noise field. A non-negative image (a
    magnitude, counts) gives a non-negative result: its clean image is non-negative, and a voxel estimated below 0 is
    nearer to it at 0 (a Gaussian model's estimate dips below 0 in a dark background).

    Args:
        img: the noisy image, a torch tensor or a numpy array (the result is a tensor); any real dtype. It is never
            modified.
        noise_model: ``"auto"`` (chosen from the data, :func:`monai_dnaprior.noise.choose_noise_model`) or one of
            :class:`~monai_dnaprior.settings.NoiseModelName`.
        noise_level: the noise parameter in units of the image normalised to [0, 1]; estimated when None.
        noise_psd: the noise power spectrum, if known: ``E|fftn(noise, norm="ortho")|^2`` over the spatial axes
            (unshifted; its mean is the noise variance), in the image's own intensity units. Additive noise only.
        noise_map: the noise's relative std at every voxel where it is known (a parallel-imaging g-factor map, a CT
            tube-current modulation's): the image's spatial shape, positive; taken relative to its median, so
            ``noise_level`` is the level where it is 1. The image is divided by it, the rest of the noise field is
            estimated on that, and the result is multiplied back; no map is then read from the image. Additive noise
            only (Gaussian or Rician), one image (not a series).
        prior: what makes the estimate (:class:`~monai_dnaprior.settings.Prior`).
        preset: ``fast``, ``default`` or ``quality`` (:data:`~monai_dnaprior.settings.PRESETS`).
        filter_config: the filter's settings in place of the preset's.
        network_config: the network's settings in place of the preset's; only where a network is fitted.
        seed: seeds the network, its input code and perturbations (the filter has no randomness).
        device: CUDA when available and None, else CPU.
        slice_axis: spatial axis (0, 1, 2 or negative) along which a volume's noise level is checked slice by slice,
            and that a network's slice fits step along.
        uncertainty: also compute the per-voxel uncertainty map (:attr:`DenoiseResult.uncertainty`; more time).
        name: what to call the image in the log and in warnings (a file name).
        progress: called as ``progress(done, total)`` in voxels as the work goes on.
        series: True: the channels are repeats of one anatomy (diffusion directions, time points), denoised together
            (:mod:`monai_dnaprior.series`; with ``prior="auto"`` its network is blended in by SURE, with
            ``prior="filter"`` it is left out); False: channel groups, each with its own noise field; None: a series
            where there are at least :data:`~monai_dnaprior.series.SERIES_MIN_CHANNELS` channels, ``prior`` is
            ``auto`` or ``filter``, and no ``noise_psd`` is given.

    Raises:
        ValueError: a bad image or setting, ``network_config`` where no network is fitted, or ``series=True`` where
            the image cannot be denoised as a series.
    """
    if isinstance(img, np.ndarray) and img.dtype.kind in "biufc":  # numeric: the checks below name what is wrong
        img = torch.as_tensor(img)
    check_image(img)
    check_options(noise_level=noise_level, seed=seed, device=device, slice_axis=slice_axis)
    noise_model = check_option("noise_model", noise_model, NoiseModelName)
    asked_prior = check_option("prior", prior, Prior)
    run_prior = resolve_prior(asked_prior)
    for given, what in ((noise_psd, "noise_psd"), (noise_map, "noise_map")):
        if given is not None:
            check_additive_noise(what, noise_model)
    map_values = None if noise_map is None else check_noise_map(noise_map, tuple(img.shape))
    if network_config is not None and run_prior == Prior.FILTER:
        raise ValueError(f"network_config acts only where a network is fitted, and prior={str(prior)!r} fits none; "
                         "pass prior='network' (the network alone) or prior='network+filter', or leave it out.")
    preset_filter, preset_network = preset_settings(preset, prior=run_prior)  # the fit alone has its own budget
    settings = _Settings(run_prior, filter_config or preset_filter, network_config or preset_network, seed, slice_axis)
    run_device = resolve_device(device)
    start = time.perf_counter()
    kept = [d for d in range(1, img.ndim) if img.shape[d] > 1]
    kept = sorted(kept + [d for d in range(1, img.ndim) if d not in kept][: max(0, 2 - len(kept))])
    axis = (slice_axis % 3) + 1 if img.ndim == 4 else None
    settings.slice_axis = kept.index(axis) - len(kept) if axis in kept else -1
    x = img.detach().to(run_device, torch.float32).reshape(img.shape[0], *[img.shape[d] for d in kept])
    psd = None if noise_psd is None else torch.as_tensor(noise_psd, dtype=torch.float64).reshape(x.shape[1:])
    given_map = None if map_values is None else GivenMap.relative(map_values.reshape(x.shape[1:]).to(run_device))
    groups = torch.split(torch.arange(x.shape[0]), CHANNEL_GROUP)
    tracker = ProgressTracker(progress, x.numel())
    if use_series(series, tuple(x.shape), noise_psd is not None, asked_prior, given_map is not None):
        with_network = asked_prior == Prior.AUTO  # prior="filter": MP-PCA and the series Wiener pass alone
        image, error_map, info = denoise_series(
            x, noise_model, noise_level, tracker, with_network, uncertainty, preset)
        info.update(device=str(run_device), seconds=time.perf_counter() - start)
        logger.info("DNA-Prior%s: series of %d, %s in %.1f s on %s", _named(name), x.shape[0], info["prior"],
                    info["seconds"], run_device)
        error_map = None if error_map is None else error_map.reshape(img.shape).to(img.device)
        return DenoiseResult(_keep_sign(image, x).reshape(img.shape).to(img.device), error_map, info)
    results = [_denoise_group(x[g], noise_model, noise_level, psd, given_map, settings, name, tracker, uncertainty)
               for g in groups]
    image = _keep_sign(torch.cat([r[0] for r in results]), x).reshape(img.shape).to(img.device)
    error_map = torch.cat([r[1] for r in results]).reshape(img.shape).to(img.device) if uncertainty else None
    info = dict(results[0][2])
    if len(results) > 1:
        info["groups"] = [r[2] for r in results]
    info.update(device=str(run_device), seconds=time.perf_counter() - start,
                iterations=sum(r[2]["iterations"] for r in results))
    logger.info("DNA-Prior%s: %s in %.1f s on %s", _named(name), _what_ran(info), info["seconds"], run_device)
    return DenoiseResult(image, error_map, info)


@dataclass
class _Settings:
    """The settings of one :func:`denoise` call, resolved."""

    prior: Prior
    filter: FilterConfig
    network: NetworkConfig
    seed: int
    slice_axis: int


def _keep_sign(image: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``image`` clamped at 0 where the input ``x`` has no negative value."""
    return image.clamp_min(0) if float(x.min()) >= 0 else image


def _named(name: str | None) -> str:
    return f" [{name}]" if name else ""


def _what_ran(info: dict) -> str:
    if info.get("prior") in (Prior.NETWORK, Prior.NETWORK_FILTER):
        return f"{info['prior']}, {info['iterations']} network iterations"
    return str(info.get("prior", "nothing to denoise"))


def _denoise_group(
    x: torch.Tensor, noise_model: str, noise_level: float | None, psd: torch.Tensor | None,
    given_map: GivenMap | None, settings: _Settings, name: str | None, tracker: ProgressTracker, with_map: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """Denoise ``(C, *spatial)`` channels that share one noise field (and make their uncertainty map where
    ``with_map``)."""
    spatial_dims = x.ndim - 1
    unchanged = x.clone(), torch.zeros_like(x) if with_map else None
    if IntensityWindow.from_image(x).is_degenerate:  # constant image: nothing to denoise
        tracker.advance(x.numel())
        return *unchanged, {"noise_model": noise_model, "asked_noise_model": noise_model, "noise_level": 0.0,
                            "coloured": False, "iterations": 0, "prior": "none"}
    with tracker.span(_ESTIMATE_SHARE * x.numel()):
        chosen = choose_noise_model(noise_model, x, spatial_dims, psd is not None or given_map is not None)
        window = IntensityWindow.from_image(x, zero_based=chosen != NoiseModelName.GAUSSIAN)
        y = window.normalize(x)
        scaled_psd = None if psd is None else psd / (window.high - window.low) ** 2
        field, target = estimate_noise_field(y, spatial_dims, chosen, noise_level, scaled_psd, settings.slice_axis,
                                             given_map)
    model = field.model
    info: dict = {"noise_model": str(chosen), "asked_noise_model": str(noise_model), "noise_level": model.level,
                  "coloured": not field.is_white, "slice_levels": field.slice_scale is not None,
                  "level_upper_bound": field.upper_bound, "iterations": 0}
    if field.level_map is not None:  # the level varies across the image: the map's range and where it peaks
        low, high, peak = field.level_map.summary()
        info.update(noise_map_range=(low, high), noise_map_peak=peak, noise_map_given=field.level_map.given)
    remaining = (1 - _ESTIMATE_SHARE) * x.numel()
    if model.level <= model.min_level:
        _warn_no_noise(name, x, spatial_dims)
        tracker.advance(remaining)
        return *unchanged, {**info, "prior": "none"}
    logger.info("DNA-Prior%s: %s%s", _named(name), "auto: " if noise_model == NoiseModelName.AUTO else "",
                field.describe())
    if field.upper_bound:
        warnings.warn(
            f"DNA-Prior{_named(name)}: signal detail fills most of the image's finest scale (a sharp scan with little "
            f"noise), so its noise cannot be measured from it: it is at most {model.level / UPPER_BOUND_SHARE:.3g}, "
            f"and {model.level:.3g} is used. If the noise is known (say from the difference of two repeated frames, "
            "std / sqrt(2)), pass noise_level=... (units of the image normalised to [0, 1]), or pass the repeated "
            "frames together as channels.",
            stacklevel=3,
        )
    prior = settings.prior
    if prior == Prior.NETWORK_FILTER and not model.fit_changes_filter:
        warnings.warn(f"DNA-Prior{_named(name)}: prior='network+filter' changes only a Rician result (the fit corrects "
                      f"the magnitude's bias); this image's noise is {model.name}, so only the filter runs.",
                      stacklevel=3)
        prior = Prior.FILTER
    info["prior"] = str(prior)
    scale = field.scale_map(target.shape, target.device)
    fitted = spread = None
    if prior in (Prior.NETWORK, Prior.NETWORK_FILTER):
        share = remaining if prior == Prior.NETWORK else remaining / 2
        fitted, spread, iterations, mode = fit_network(target, field, settings.network, settings.seed,
                                                       settings.slice_axis, tracker, share)
        info.update(iterations=iterations, volume_mode=mode)
        remaining -= share
    if prior == Prior.NETWORK:
        refined = fitted
    else:
        origin = model.forward(window.normalize(torch.zeros((), device=x.device)))  # the input's own 0
        origin = origin if scale is None else origin / scale
        filtered = filter_observation(target[None] - origin, field, settings.filter, with_map, tracker, remaining,
                                      given_psd=psd is not None)
        if filtered.piecewise_constant:
            info["piecewise_constant"] = True
            logger.info("DNA-Prior%s: piecewise constant (the Haar wavelet cuts the Wiener pass's risk by over a "
                        "tenth): the NL-Bayes step and the combinations of patches are left out", _named(name))
        mean = filtered.mean[0] + origin
        # the background rule's standard error follows the spectrum read from the image; a given PSD of a magnitude
        # (a residual's) holds the Rician bias too, whose pattern reads as a far stronger correlation than the noise's
        refined, mean, variance = model.clean_estimate(mean, fitted,
                                                       None if filtered.variance is None else filtered.variance[0],
                                                       field.spectrum if psd is None else None)
        if variance is not None:  # the filter's expected squared error, mapped to the clean estimate
            spread = clean_error(model, mean, refined, variance, fitted is not None)
    if scale is not None:
        refined, spread = refined * scale, None if spread is None else spread * scale
    restored = window.restore(model.inverse(refined, y))
    if not with_map:
        return restored, None, info
    return restored, to_image_domain(model, refined, spread, y) * (window.high - window.low), info


def _warn_no_noise(name: str | None, x: torch.Tensor, spatial_dims: int) -> None:
    """Say that a non-constant image was found free of noise, what was seen, and how to go on."""
    if any(s < 2 for s in x.shape[1:]):
        found = "too thin for a noise estimate"
    else:
        _, _, noisy = haar_blocks(x, spatial_dims)
        found = f"{100 * (1 - float(noisy.float().mean())):.0f}% of its 2x2 blocks are constant or clipped"
    warnings.warn(
        f"DNA-Prior{_named(name)}: the estimated noise level is 0 on a non-constant image ({found}), so it is "
        "returned unchanged. If it is noisy, pass the noise level (noise_level=..., in units of the image "
        "normalised to [0, 1]) or check that the input is the raw scan.",
        stacklevel=3,
    )

"""Denoise one channel-first image: normalise, pick the noise model, fit (2D, 3D or slice by slice), map back.

Plain torch: nothing here knows about MONAI dictionaries or metadata.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from monai.networks.layers import GaussianFilter

from monai_dnaprior.devices import resolve_device, with_cpu_threads
from monai_dnaprior.fit import FitConfig, PriorState, fit_prior
from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.noise import (
    NOISE_MODELS,
    UPPER_BOUND_SHARE,
    NoiseField,
    detect_noise_model,
    estimate_noise_field,
    estimate_noise_spectrum,
    get_noise_model,
    haar_blocks,
)
from monai_dnaprior.nl_bayes import BayesPass, bayes_refine, bayes_variance
from monai_dnaprior.uncertainty import averaged_error, clean_error, to_image_domain
from monai_dnaprior.validation import check_choice, check_image
from monai_dnaprior.wiener import WienerPass, wiener_refine

__all__ = ["CHANNEL_GROUP", "NETWORK_PILOT_MODELS", "NOISE_MODEL_CHOICES", "PILOTS", "VOLUME_MODES", "DenoiseResult",
           "bayes_pass", "denoise"]

logger = logging.getLogger("monai_dnaprior")

VOLUME_MODES = ("auto", "slices", "volume")
NOISE_MODEL_CHOICES = ("auto", *NOISE_MODELS)

_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class DenoiseResult:
    """A denoised image (float32, input's intensity range, on the input's device) and what the fit did.

    Attributes:
        image: the denoised image, same shape as the input.
        uncertainty: per-voxel expected error of ``image`` (root mean square, in its intensity units): the
            refinement's residual noise plus squared bias, mapped through the noise model's inverse (see
            :mod:`monai_dnaprior.uncertainty`); the fit's spread where there is no refinement. None where it was
            not asked for.
        info: noise model, estimated level and colour, iterations, seconds, device and volume mode.
    """

    image: torch.Tensor
    uncertainty: torch.Tensor | None
    info: dict = field(default_factory=dict)


@with_cpu_threads
def denoise(
    img: torch.Tensor,
    noise_model: str = "auto",
    noise_level: float | None = None,
    config: FitConfig | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    volume_mode: str = "auto",
    slice_axis: int = -1,
    noise_psd: torch.Tensor | None = None,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    uncertainty: bool = True,
) -> DenoiseResult:
    """Denoise a channel-first ``(C, H, W)`` or ``(C, H, W, D)`` image with the DNA-Prior test-time fit.

    Spatial axes of size 1 do not count (a depth-1 DICOM slice ``(1, H, W, 1)`` is a 2D image). Channels are
    denoised in groups of at most :data:`CHANNEL_GROUP`, each with its own noise field.

    Args:
        img: the noisy image; any real dtype. It is never modified.
        noise_model: ``"auto"`` (chosen from the data: see :func:`monai_dnaprior.noise.detect_noise_model`),
            ``"gaussian"``, ``"poisson"``, ``"rician"`` or ``"speckle"`` (see
            :func:`monai_dnaprior.noise.get_noise_model` for what each assumes).
        noise_level: the noise parameter in units of the normalised [0, 1] image; estimated when None.
        config: the fit's settings; :class:`FitConfig` defaults when None.
        seed: seeds the network, its input code and perturbations: same seed, same output on the same device.
        device: where to fit; CUDA when available and None, else CPU.
        volume_mode: for 3D images where a network is fitted, ``"volume"`` (one 3D fit), ``"slices"`` (2D fits
            along ``slice_axis``, each warm-started from its neighbour) or ``"auto"`` (slices).
        slice_axis: spatial axis (0, 1, 2 or negative) that ``"slices"`` steps along.
        noise_psd: the noise power spectrum, if known: ``E|fftn(noise, norm="ortho")|^2`` over the spatial axes
            (unshifted; its mean is the noise variance), in the image's own intensity units. Additive noise only.
        name: what to call the image in the log and in warnings (a file name).
        progress: called as ``progress(done, total)`` in voxels as the work goes on.
        uncertainty: also compute the per-voxel uncertainty map (:attr:`DenoiseResult.uncertainty`); with it a
            2D image takes about 1.5x the time, a volume 1.2-1.5x (``benchmarks/results/uncertainty``).
    """
    check_image(img)
    check_choice("noise_model", noise_model, NOISE_MODEL_CHOICES)
    check_choice("volume_mode", volume_mode, VOLUME_MODES)
    if noise_psd is not None and noise_model in ("poisson", "speckle"):
        raise ValueError(f"noise_psd describes additive noise; use noise_model='gaussian' or 'rician', not {noise_model!r}.")
    config = config or FitConfig()
    run_device = resolve_device(device)
    start = time.perf_counter()
    kept = [d for d in range(1, img.ndim) if img.shape[d] > 1]
    kept = sorted(kept + [d for d in range(1, img.ndim) if d not in kept][: max(0, 2 - len(kept))])
    axis = (slice_axis % 3) + 1 if img.ndim == 4 else None
    slice_axis = kept.index(axis) - len(kept) if axis in kept else -1
    x = img.detach().to(run_device, torch.float32).reshape(img.shape[0], *[img.shape[d] for d in kept])
    psd = None if noise_psd is None else torch.as_tensor(noise_psd, dtype=torch.float64).reshape(x.shape[1:])
    groups = torch.split(torch.arange(x.shape[0]), CHANNEL_GROUP)
    tracker = _Progress(progress, x.numel())
    results = [
        _denoise_group(x[g], noise_model, noise_level, config, seed, volume_mode, slice_axis, psd, name, tracker,
                       uncertainty)
        for g in groups
    ]
    image = torch.cat([r[0] for r in results]).reshape(img.shape).to(img.device)
    error_map = torch.cat([r[1] for r in results]).reshape(img.shape).to(img.device) if uncertainty else None
    info = dict(results[0][2])
    if len(results) > 1:
        info["groups"] = [r[2] for r in results]
    info.update(device=str(run_device), seconds=time.perf_counter() - start,
                iterations=sum(r[2]["iterations"] for r in results))
    logger.info("DNA-Prior%s: %d iterations in %.1f s on %s", _named(name), info["iterations"], info["seconds"],
                run_device)
    return DenoiseResult(image, error_map, info)


CHANNEL_GROUP = 4  # channels fitted together by one network (a 4D series: time points in groups)


class _Progress:
    """Counts the voxels done and reports them to ``callback(done, total)``."""

    def __init__(self, callback: Callable[[int, int], None] | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def advance(self, voxels: int) -> None:
        self.done += voxels
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total)


def _named(name: str | None) -> str:
    return f" [{name}]" if name else ""


def _resolve_model(noise_model: str, x: torch.Tensor, spatial_dims: int, has_psd: bool) -> str:
    """The model to use: the one asked for, or for ``"auto"`` the one the data allow. Signal-dependent noise whose
    variance-stabilised form is still coloured, and any noise with a given spectrum, is taken as additive (Gaussian),
    except a Rician magnitude (a Rayleigh background)."""
    if noise_model != "auto":
        return noise_model
    detected = detect_noise_model(x, spatial_dims)
    if detected == "rician" or (detected == "gaussian" and not has_psd):
        return detected
    if has_psd:
        return "gaussian"
    window = IntensityWindow.from_image(x, zero_based=True)
    stabilised = get_noise_model(detected, window.normalize(x), spatial_dims).forward(window.normalize(x))
    return detected if estimate_noise_spectrum(stabilised, spatial_dims)[0].is_white else "gaussian"


def _denoise_group(
    x: torch.Tensor,
    noise_model: str,
    noise_level: float | None,
    config: FitConfig,
    seed: int,
    volume_mode: str,
    slice_axis: int,
    psd: torch.Tensor | None,
    name: str | None,
    tracker: _Progress,
    with_map: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """Denoise ``(C, *spatial)`` channels that share one noise field and one fit (and make their uncertainty map
    where ``with_map``)."""
    spatial_dims = x.ndim - 1
    if IntensityWindow.from_image(x).is_degenerate:  # constant image: nothing to denoise
        tracker.advance(x.numel())
        info = {"noise_model": noise_model, "asked_noise_model": noise_model, "noise_level": 0.0, "coloured": False,
                "iterations": 0, "volume_mode": "none", "pilot": "none"}
        return x.clone(), torch.zeros_like(x) if with_map else None, info
    chosen = _resolve_model(noise_model, x, spatial_dims, psd is not None)
    window = IntensityWindow.from_image(x, zero_based=chosen != "gaussian")
    info: dict = {"noise_model": chosen, "asked_noise_model": noise_model}
    y = window.normalize(x)
    scaled_psd = None if psd is None else psd / (window.high - window.low) ** 2
    field, target = estimate_noise_field(y, spatial_dims, chosen, noise_level, scaled_psd, slice_axis)
    model = field.model
    info.update(noise_level=model.level, coloured=not field.is_white, slice_levels=field.slice_scale is not None,
                level_upper_bound=field.upper_bound)
    if model.level <= (1e-6 if model.name == "poisson" else 0.0):  # (the Poisson gain is kept at 1e-6 or above)
        _warn_no_noise(name, x, spatial_dims)
        tracker.advance(x.numel())
        info.update(iterations=0, volume_mode="none")
        return x.clone(), torch.zeros_like(x) if with_map else None, info
    logger.info("DNA-Prior%s: %s%s", _named(name), "auto: " if noise_model == "auto" else "", field.describe())
    if field.upper_bound:
        warnings.warn(
            f"DNA-Prior{_named(name)}: signal detail fills most of the image's finest scale (a sharp scan with little "
            f"noise), so its noise cannot be measured from it: it is at most {model.level / UPPER_BOUND_SHARE:.3g}, "
            f"and {model.level:.3g} is used. If the noise is known (say from the difference of two repeated frames, "
            "std / sqrt(2)), pass noise_level=... (units of the image normalised to [0, 1]), or pass the repeated "
            "frames together as channels.",
            stacklevel=3,
        )
    mode = "2d" if spatial_dims == 2 else ("slices" if volume_mode == "auto" else volume_mode)
    if config.pilot == "network" and not _uses_network(config, field):
        warnings.warn(f"DNA-Prior{_named(name)}: pilot='network' changes only a Rician result (the fit corrects the "
                      f"magnitude's bias); this image's noise is {model.name}, so no network is fitted.", stacklevel=3)
    if _uses_network(config, field):
        if mode == "volume" and not _volume_fits(target.shape, config, x.device):
            warnings.warn("The volume is too large to fit as a whole on this device; fitting it slice by slice.")
            mode = "slices"
        fitted, spread, iterations = _fit_with_fallback(target, field, config, seed, mode, slice_axis, tracker)
    else:
        fitted, spread, iterations = None, torch.zeros_like(target), 0
        tracker.advance(target.numel() // 2)
    scale = field.slice_scale_map(target.shape, target.device)
    origin = model.forward(window.normalize(torch.zeros((), device=x.device)))  # the input's own 0
    refined, mean, error = _refine(target, fitted, field, config, origin if scale is None else origin / scale,
                                   with_map)
    tracker.advance(target.numel() - target.numel() // 2)  # the refinement: the other half of the work
    info.update(iterations=iterations, volume_mode=mode, pilot="network" if fitted is not None else "thresholded")
    if error is not None:  # the refinement's expected squared error (see monai_dnaprior.uncertainty)
        spread = clean_error(model, mean, refined, error, fitted is not None)
    if scale is not None:
        refined, spread = refined * scale, spread * scale
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


def _fit_with_fallback(
    target: torch.Tensor, field: NoiseField, config: FitConfig, seed: int, mode: str, slice_axis: int,
    tracker: _Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fit on the target's device; on a CUDA out-of-memory, retry slice by slice, then on the CPU."""
    tracker = tracker or _Progress(None, 0)
    try:
        return _fit(target, field, config, seed, mode, slice_axis, tracker)
    except _OUT_OF_MEMORY:
        if target.device.type != "cuda":
            raise
        torch.cuda.empty_cache()
        if mode == "volume":
            warnings.warn("CUDA ran out of memory fitting the whole volume; fitting it slice by slice instead.")
            return _fit_with_fallback(target, field, config, seed, "slices", slice_axis, tracker)
        warnings.warn("CUDA ran out of memory; fitting on the CPU instead (slower).")
        fitted, spread, iterations = _fit(target.cpu(), field, config, seed, mode, slice_axis, tracker)
        return fitted.to(target.device), spread.to(target.device), iterations


NETWORK_PILOT_MODELS = ("rician",)  # models whose result the network's fit changes: it corrects the observation's bias
PILOTS = ("auto", "thresholded", "network")


def _uses_network(config: FitConfig, field: NoiseField) -> bool:
    """Whether the network is fitted: where asked (``pilot="network"``) and the observation's mean is not the clean
    image (Rician: the fit's exact likelihood corrects the bias), or where nothing else denoises (``wiener_patch``
    0). ``"auto"`` fits none: against inverting the Rician mean the fit added +0.01 dB on the five Rician dev slices
    and lost 0.20 dB on the volume, for 5-21x the time (``benchmarks/results``)."""
    check_choice("pilot", config.pilot, PILOTS)
    if config.wiener_patch <= 0:
        return True
    return config.pilot == "network" and field.model.name in NETWORK_PILOT_MODELS


def _whitening(field: NoiseField, shape: Sequence[int], device: torch.device, axis: int | None = None):
    """The relative noise spectrum on an FFT grid of ``shape`` (None for white noise); ``axis``: a slice across it."""
    if field.is_white:
        return None
    spectrum = field.spectrum if axis is None else field.spectrum.section(axis)
    return spectrum.psd(shape, device)


def _fit(
    target: torch.Tensor, field: NoiseField, config: FitConfig, seed: int, mode: str, slice_axis: int,
    tracker: _Progress,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Returns the fitted image and its output std, both ``(C, *spatial)`` in the fit domain, and the iterations."""
    model = field.model
    if mode != "slices":
        psd = _whitening(field, target.shape[1:], target.device)
        result = fit_prior(target[None], model, config, seed, noise_psd=psd)
        tracker.advance(target.numel() // 2)
        return result.image[0], result.uncertainty[0], result.iterations
    axis = 1 + (slice_axis % 3)
    fitted, spread = torch.empty_like(target), torch.empty_like(target)
    plane = [s for d, s in enumerate(target.shape[1:], start=1) if d != axis]
    psd = _whitening(field, plane, target.device, axis - 1)
    state: PriorState | None = None
    iterations = 0
    for k in range(target.shape[axis]):
        result = fit_prior(target.select(axis, k)[None], model, config, seed, warm_start=state, noise_psd=psd)
        fitted.select(axis, k).copy_(result.image[0])
        spread.select(axis, k).copy_(result.uncertainty[0])
        state, iterations = result.state, iterations + result.iterations
        tracker.advance(target.select(axis, k).numel() // 2)
    return fitted, spread, iterations


def refinement_passes(config: FitConfig, spatial_dims: int = 2, coloured: bool = False) -> list[WienerPass]:
    """The refinement's passes; square patches in 2D, cubes searched across slices in 3D; none where
    ``wiener_patch`` is 0.

    White noise (or noise a transform stabilised): a hard-thresholding pass makes the first pilot (BM3D's first
    stage), then ``config.wiener_passes`` block-matching Wiener passes. Coloured noise: the first pilot is the
    observation blurred (by ``config.code_blur``) and nothing is matched on the observation itself, whose noise
    has a texture of its own that matching would follow; a local DCT pass, then ``config.coloured_passes``
    block-matching passes.
    """
    if config.wiener_patch <= 0:
        return []
    if spatial_dims == 2:
        patch, depth, depth_radius = config.wiener_patch, 1, 0
        radius, threshold_radius = config.match_radius, config.threshold_radius
    else:
        patch, depth, depth_radius = config.volume_patch, config.volume_patch, config.volume_depth_radius
        radius = threshold_radius = config.volume_radius
    shape = dict(patch=patch, step=config.match_step, depth=depth)
    matched = WienerPass(group=config.match_group, radius=radius, depth_radius=depth_radius, **shape)
    if coloured:
        return [WienerPass(patch=patch, depth=depth)] + [matched] * config.coloured_passes
    thresholded = WienerPass(group=config.match_group, radius=threshold_radius, depth_radius=depth_radius,
                             threshold=config.threshold, **shape)
    return [thresholded] + [matched] * config.wiener_passes


def bayes_pass(config: FitConfig, passes: Sequence[WienerPass], spatial_dims: int = 2) -> BayesPass | None:
    """The NL-Bayes step of the refinement, or None: in 2D, after at least two passes, where ``config.bayes_patch``
    is set (measured on the 2D dev scans: with white noise averaged with the Wiener pass, +0.07 to +0.20 dB on
    average per noise, ``benchmarks/nl_bayes.py``; with coloured noise in place of the Wiener passes' result, +0.05
    to +0.48 dB; in 3D it added nothing)."""
    if config.bayes_patch <= 0 or spatial_dims != 2 or len(passes) < 2:
        return None
    return BayesPass(patch=config.bayes_patch)


def _refine(
    target: torch.Tensor, fitted: torch.Tensor | None, field: NoiseField, config: FitConfig,
    origin: float | torch.Tensor, with_error: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The refinement of the observation: the clean estimate, the estimated observation mean it came from, and the
    latter's expected squared error per voxel (both None without refinement, the error None unless
    ``with_error``; see :mod:`monai_dnaprior.uncertainty`).

    The passes estimate the observation's mean ``m``; it is mapped to the clean image by the fit's own step where
    there is a fit (``fitted + m - observe(fitted)``: the fit knows the bias of its expected observation), else by
    inverting the model's mean (Rician; every other model's mean is the clean image); a Rician background, whose
    neighbourhood's mean is at the noise floor, is 0 (:meth:`NoiseModel.no_signal`), its mean returned as the floor
    with no error: the rule's claim is that no signal is there. The filter runs with
    ``origin``, the fit-domain value of the input's own zero, at zero: the shrinkage pulls towards zero, and the
    input's zero (an MRI background, say) is a level that means "no signal", where the percentile window's lower
    end is not. Coloured noise gives every patch coefficient its own noise variance. In 2D an NL-Bayes step follows
    (:func:`bayes_pass`): with white noise piloted by the thresholding pass and averaged with the Wiener result;
    with coloured noise, whose correlation it takes exactly, piloted by the Wiener result in its place. The
    expected error is the Wiener pass's; with white noise in 2D, that of the average of the Wiener pass's and the
    NL-Bayes model's of the result (:func:`~monai_dnaprior.nl_bayes.bayes_variance`; coloured: the Wiener pass's,
    the step's is not modelled).
    """
    passes = refinement_passes(config, target.ndim - 1, coloured=not field.is_white)
    if not passes:
        return fitted, None, None
    model = field.model
    spectrum = None if field.is_white else field.spectrum
    shifted = target[None] - origin
    pilot = shifted if field.is_white else GaussianFilter(target.ndim - 1, config.code_blur).to(target.device)(shifted)
    bayes = bayes_pass(config, passes, target.ndim - 1)
    if bayes is None or not field.is_white:
        filtered = wiener_refine(shifted, pilot, model.fit_sigma, passes, spectrum, return_variance=with_error)
        mean, variance = filtered if with_error else (filtered, None)
        if bayes is not None:  # coloured: the step, piloted by the Wiener passes' result, takes its place
            mean = bayes_refine(shifted, mean, model.fit_sigma, bayes, spectrum)
    else:
        basic = wiener_refine(shifted, pilot, model.fit_sigma, passes[:1])
        filtered = wiener_refine(shifted, basic, model.fit_sigma, passes[1:], return_variance=with_error)
        mean, variance = filtered if with_error else (filtered, None)
        mean = 0.5 * (mean + bayes_refine(shifted, basic, model.fit_sigma, bayes))
        if with_error:
            variance = averaged_error(variance, bayes_variance(mean, model.fit_sigma, bayes))
    mean = mean[0] + origin
    no_signal = model.no_signal(mean)
    mean = torch.where(no_signal, model.noise_floor(mean), mean)  # the floor, whose clean value is 0
    clean = model.unobserve(mean) if fitted is None else fitted + mean - model.observe(fitted)
    clean = clean.masked_fill(no_signal, 0.0)
    return clean, mean, None if variance is None else variance[0].masked_fill(no_signal, 0.0)


def _volume_fits(shape: torch.Size, config: FitConfig, device: torch.device) -> bool:
    """Whether a whole-volume fit of a ``(C, H, W, D)`` image (its activations, roughly bounded) fits in the
    device's free memory."""
    voxels = 1
    for s in shape[1:]:
        voxels *= s + 16
    per_voxel = 4 * 3 * (config.code_channels + 8 * config.channels[0] + 2 * config.skip_channels)
    needed = voxels * per_voxel
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return needed < 0.8 * free



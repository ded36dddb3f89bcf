"""Denoise one channel-first image: normalise, pick the noise model, fit (2D, 3D or slice by slice), map back.

Plain torch: nothing here knows about MONAI dictionaries or metadata.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field

import torch

from monai_dnaprior.devices import resolve_device, with_cpu_threads
from monai_dnaprior.fit import FitConfig, PriorState, fit_prior
from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.noise import NOISE_MODELS, NoiseModel, get_noise_model
from monai_dnaprior.validation import check_choice, check_image
from monai_dnaprior.wiener import WienerPass, wiener_refine

__all__ = ["VOLUME_MODES", "DenoiseResult", "denoise"]

logger = logging.getLogger("monai_dnaprior")

VOLUME_MODES = ("auto", "slices", "volume")

_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class DenoiseResult:
    """A denoised image (float32, input's intensity range, on the input's device) and what the fit did.

    Attributes:
        image: the denoised image, same shape as the input.
        uncertainty: per-voxel std of the fit's outputs around their average, in intensity units.
        info: noise model, estimated level, iterations, seconds, device and volume mode.
    """

    image: torch.Tensor
    uncertainty: torch.Tensor
    info: dict = field(default_factory=dict)


@with_cpu_threads
def denoise(
    img: torch.Tensor,
    noise_model: str = "gaussian",
    noise_level: float | None = None,
    config: FitConfig | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    volume_mode: str = "auto",
    slice_axis: int = -1,
) -> DenoiseResult:
    """Denoise a channel-first ``(C, H, W)`` or ``(C, H, W, D)`` image with the DNA-Prior test-time fit.

    Args:
        img: the noisy image; any real dtype. It is never modified.
        noise_model: one of ``"gaussian"``, ``"poisson"``, ``"rician"``, ``"speckle"``
            (see :func:`monai_dnaprior.noise.get_noise_model` for what each assumes).
        noise_level: the noise parameter in units of the normalised [0, 1] image; estimated when None.
        config: the fit's settings; :class:`FitConfig` defaults when None.
        seed: seeds the network, its input code and perturbations: same seed, same output on the same device.
        device: where to fit; CUDA when available and None, else CPU.
        volume_mode: for 3D images, ``"volume"`` (one 3D fit), ``"slices"`` (2D fits along ``slice_axis``,
            each warm-started from its neighbour) or ``"auto"`` (slices).
        slice_axis: spatial axis (0, 1, 2 or negative) that ``"slices"`` steps along.
    """
    check_image(img)
    check_choice("noise_model", noise_model, NOISE_MODELS)
    check_choice("volume_mode", volume_mode, VOLUME_MODES)
    config = config or FitConfig()
    spatial_dims = img.ndim - 1
    run_device = resolve_device(device)
    start = time.perf_counter()
    x = img.detach().to(run_device, torch.float32)
    window = IntensityWindow.from_image(x, zero_based=noise_model != "gaussian")
    info: dict = {"noise_model": noise_model, "device": str(run_device)}
    if window.is_degenerate:  # constant image: nothing to denoise
        info.update(noise_level=0.0, iterations=0, seconds=time.perf_counter() - start, volume_mode="none")
        return DenoiseResult(img.detach().to(torch.float32).clone(), torch.zeros_like(img, dtype=torch.float32), info)
    y = window.normalize(x)
    model = get_noise_model(noise_model, y, spatial_dims, noise_level)
    logger.info("DNA-Prior: %s noise, level %.4g (%s)", noise_model, model.level,
                "given" if noise_level is not None else "estimated from the image")
    target = model.forward(y)
    mode = "2d" if spatial_dims == 2 else ("slices" if volume_mode == "auto" else volume_mode)
    if mode == "volume" and not _volume_fits(target.shape, config, run_device):
        warnings.warn("The volume is too large to fit as a whole on this device; fitting it slice by slice.")
        mode = "slices"
    fitted, spread, iterations = _fit_with_fallback(target, model, config, seed, mode, slice_axis)
    origin = float(model.forward(window.normalize(torch.zeros((), device=run_device))))  # the input's own 0
    refined = _refine(target, fitted, model, config, origin)
    restored = window.restore(model.inverse(refined, y))
    upper = window.restore(model.inverse(refined + spread, y))
    uncertainty = (upper - restored).abs()
    info.update(noise_level=model.level, iterations=iterations, seconds=time.perf_counter() - start, volume_mode=mode)
    logger.info("DNA-Prior: %d iterations in %.1f s on %s", iterations, info["seconds"], run_device)
    return DenoiseResult(restored.to(img.device), uncertainty.to(img.device), info)


def _fit_with_fallback(
    target: torch.Tensor, model: NoiseModel, config: FitConfig, seed: int, mode: str, slice_axis: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fit on the target's device; on a CUDA out-of-memory, retry slice by slice, then on the CPU."""
    try:
        return _fit(target, model, config, seed, mode, slice_axis)
    except _OUT_OF_MEMORY:
        if target.device.type != "cuda":
            raise
        torch.cuda.empty_cache()
        if mode == "volume":
            warnings.warn("CUDA ran out of memory fitting the whole volume; fitting it slice by slice instead.")
            return _fit_with_fallback(target, model, config, seed, "slices", slice_axis)
        warnings.warn("CUDA ran out of memory; fitting on the CPU instead (slower).")
        fitted, spread, iterations = _fit(target.cpu(), model, config, seed, mode, slice_axis)
        return fitted.to(target.device), spread.to(target.device), iterations


def _fit(
    target: torch.Tensor, model: NoiseModel, config: FitConfig, seed: int, mode: str, slice_axis: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Returns the fitted image and its output std, both ``(C, *spatial)`` in the fit domain, and the iterations."""
    if mode != "slices":
        result = fit_prior(target[None], model, config, seed)
        return result.image[0], result.uncertainty[0], result.iterations
    axis = 1 + (slice_axis % 3)
    fitted, spread = torch.empty_like(target), torch.empty_like(target)
    state: PriorState | None = None
    iterations = 0
    for k in range(target.shape[axis]):
        result = fit_prior(target.select(axis, k)[None], model, config, seed, warm_start=state)
        fitted.select(axis, k).copy_(result.image[0])
        spread.select(axis, k).copy_(result.uncertainty[0])
        state, iterations = result.state, iterations + result.iterations
    return fitted, spread, iterations


def wiener_passes(config: FitConfig, spatial_dims: int = 2) -> list[WienerPass]:
    """The refinement's passes: one local DCT pass, then ``config.wiener_passes`` block-matching passes; square
    patches in 2D, cubes searched across slices in 3D."""
    if config.wiener_patch <= 0:
        return []
    if spatial_dims == 2:
        patch, radius, depth, depth_radius = config.wiener_patch, config.match_radius, 1, 0
    else:
        patch, radius = config.volume_patch, config.volume_radius
        depth, depth_radius = config.volume_patch, config.volume_depth_radius
    local = WienerPass(patch, group=1, step=config.wiener_stride, depth=depth)
    matched = WienerPass(patch, config.match_group, radius, config.match_step, depth, depth_radius)
    return [local] + [matched] * config.wiener_passes


def _refine(target: torch.Tensor, fitted: torch.Tensor, model: NoiseModel, config: FitConfig, origin: float) -> torch.Tensor:
    """Wiener refinement of the observation with the fit's expected observation as the first pilot.

    The filtered observation minus the expected one is the detail the fit missed; it is added to the fit. Where the
    observation is the fit plus noise (all models but Rician) this is simply the filtered observation. The filter
    runs with ``origin``, the fit-domain value of the input's own zero, at zero: the shrinkage pulls towards zero, and
    the input's zero (an MRI background, say) is a level that means "no signal", where the percentile window's
    lower end is not.
    """
    passes = wiener_passes(config, target.ndim - 1)
    if not passes:
        return fitted
    expected = model.observe(fitted)
    refined = wiener_refine(target[None] - origin, expected[None] - origin, model.fit_sigma, passes)
    return fitted + (refined[0] + origin - expected)


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



"""The network fit of a whole image: one fit in 2D; in 3D one volume fit or warm-started slice fits; on a CUDA
out-of-memory, slice by slice, then on the CPU."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch

from monai_dnaprior.network.fit import PriorState, fit_prior
from monai_dnaprior.noise.field import NoiseField
from monai_dnaprior.progress import ProgressTracker, sub_span
from monai_dnaprior.settings import NetworkConfig, VolumeMode

__all__ = ["NetworkFit", "fit_network", "volume_fits"]

_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class NetworkFit(NamedTuple):
    """The fitted image and its output std, both ``(C, *spatial)`` in the fit domain, the iterations run, and how it
    was fitted (``"2d"``, ``"volume"`` or ``"slices"``)."""

    image: torch.Tensor
    spread: torch.Tensor
    iterations: int
    mode: str


def fit_network(
    target: torch.Tensor, field: NoiseField, config: NetworkConfig, seed: int, slice_axis: int = -1,
    tracker: ProgressTracker | None = None, units: float = 0.0,
) -> NetworkFit:
    """Fit the network to ``target`` (``(C, *spatial)``, fit domain) on its device, whitened by the field's spectrum;
    a 3D image as ``config.volume_mode`` says. ``tracker`` gets ``units`` of progress as the fit goes on."""
    tracker = tracker or ProgressTracker(None, 0)
    if target.ndim == 3:
        mode = "2d"
    else:
        mode = VolumeMode.SLICES if config.volume_mode == VolumeMode.AUTO else str(config.volume_mode)
        if mode == VolumeMode.VOLUME and not volume_fits(target.shape, config, target.device):
            warnings.warn("The volume is too large to fit as a whole on this device; fitting it slice by slice.")
            mode = VolumeMode.SLICES
    with tracker.span(units):
        return _fit_with_fallback(target, field, config, seed, str(mode), slice_axis)


def _fit_with_fallback(
    target: torch.Tensor, field: NoiseField, config: NetworkConfig, seed: int, mode: str, slice_axis: int
) -> NetworkFit:
    """Fit on the target's device; on a CUDA out-of-memory, retry slice by slice, then on the CPU."""
    try:
        return _fit(target, field, config, seed, mode, slice_axis)
    except _OUT_OF_MEMORY:
        if target.device.type != "cuda":
            raise
        torch.cuda.empty_cache()
        if mode == VolumeMode.VOLUME:
            warnings.warn("CUDA ran out of memory fitting the whole volume; fitting it slice by slice instead.")
            return _fit_with_fallback(target, field, config, seed, VolumeMode.SLICES, slice_axis)
        warnings.warn("CUDA ran out of memory; fitting on the CPU instead (slower).")
        image, spread, iterations, mode = _fit(target.cpu(), field, config, seed, mode, slice_axis)
        return NetworkFit(image.to(target.device), spread.to(target.device), iterations, mode)


def _whitening(field: NoiseField, shape: Sequence[int], device: torch.device, axis: int | None = None):
    """The relative noise spectrum on an FFT grid of ``shape`` (None for white noise); ``axis``: a slice across it."""
    if field.is_white:
        return None
    spectrum = field.spectrum if axis is None else field.spectrum.section(axis)
    return spectrum.psd(shape, device)


def _fit(
    target: torch.Tensor, field: NoiseField, config: NetworkConfig, seed: int, mode: str, slice_axis: int
) -> NetworkFit:
    model = field.model
    if mode != VolumeMode.SLICES:
        psd = _whitening(field, target.shape[1:], target.device)
        result = fit_prior(target[None], model, config, seed, noise_psd=psd)
        return NetworkFit(result.image[0], result.uncertainty[0], result.iterations, mode)
    axis = 1 + (slice_axis % 3)
    fitted, spread = torch.empty_like(target), torch.empty_like(target)
    plane = [s for d, s in enumerate(target.shape[1:], start=1) if d != axis]
    psd = _whitening(field, plane, target.device, axis - 1)
    state: PriorState | None = None
    iterations, depth = 0, target.shape[axis]
    for k in range(depth):
        with sub_span(k / depth, (k + 1) / depth):
            result = fit_prior(target.select(axis, k)[None], model, config, seed, warm_start=state, noise_psd=psd)
        fitted.select(axis, k).copy_(result.image[0])
        spread.select(axis, k).copy_(result.uncertainty[0])
        state, iterations = result.state, iterations + result.iterations
    return NetworkFit(fitted, spread, iterations, str(VolumeMode.SLICES))


def volume_fits(shape: torch.Size, config: NetworkConfig, device: torch.device) -> bool:
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

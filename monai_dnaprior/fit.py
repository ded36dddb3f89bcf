"""The test-time fit: one untrained network fitted to one observation under the dual-domain objective."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from monai.networks.layers import GaussianFilter

from monai_dnaprior.losses import SpectralFidelity, total_variation
from monai_dnaprior.networks import DIPHourglass
from monai_dnaprior.noise import NoiseModel
from monai_dnaprior.stopping import OutputAverager

__all__ = ["FitConfig", "FitResult", "PriorState", "fit_prior"]

_BACKTRACK_WARMUP = 50  # the loss of a fresh network may jump in its first steps; that is no divergence


@dataclass(frozen=True)
class FitConfig:
    """Everything that shapes one fit. Plain values only, so it pickles and hashes.

    Attributes:
        max_iters: hard cap on iterations; the automatic stop can end the fit before (after ``min_iters``).
        min_iters: iterations before the automatic stop may end the fit.
        patience: iterations without a new output-variance minimum before the fit stops.
        lr: Adam learning rate.
        code_channels: channels of the fixed random input code.
        channels: feature channels per level of the hourglass, finest first.
        skip_channels: channels of each skip branch.
        code_noise: std of the perturbation added to the code at every iteration.
        ema_decay: weight of the past in the output average.
        tv_scale: TV weight per unit of noise sigma (in the fit domain, normalised to [0, 1]).
        amplitude_weight: weight of the spectral amplitude term.
        phase_weight: weight of the spectral phase term.
        frequency_power: exponent of the radial frequency weighting of the spectral fidelity.
        backtrack_factor: a loss above this multiple of the best loss so far restores the last good state.
        warm_iters_fraction: share of ``max_iters`` (and of the patience) given to a warm-started fit.
        code_blur: the code's first channels hold the observation blurred by a Gaussian of this std (pixels),
            which starts the fit from the image's coarse structure (far fewer iterations); 0 gives the plain
            random code of the original Deep Image Prior. Also the blur of the first pilot for coloured noise.
        min_change: the fit is done when its average moves less than this share of the noise sigma (RMS)
            over 50 iterations.
        wiener_patch: square patch side of the refinement of 2D images; 0 disables the refinement (2D and 3D),
            and the network's fit is then the result.
        wiener_passes: block-matching (collaborative) Wiener passes after the thresholding pass, each with the last
            result as its pilot. More than one reads the signal lower each time (measured: one is best).
        coloured_passes: block-matching Wiener passes for coloured noise, after a local one, from the blurred
            observation (see :func:`monai_dnaprior.engine.refinement_passes`).
        threshold: the hard-thresholding pass that makes the refinement's first pilot zeroes every coefficient
            below this many noise stds (BM3D's 2.7).
        threshold_radius: its search radius in 2D, in pixels (3D: ``volume_radius``).
        match_group: patches per block-matching group.
        match_radius: search radius of the block matching in 2D, in pixels.
        match_step: step between the block matching's reference patches (in-plane).
        bayes_patch: patch side of the NL-Bayes step (:mod:`monai_dnaprior.nl_bayes`) whose result is averaged
            with the Wiener pass's, for white (or stabilised) noise in 2D; its groups are matched on the
            thresholding pass's result. 0 disables it (coloured noise and 3D never run it).
        volume_patch: cube side of the refinement's patches in 3D.
        volume_radius: in-plane search radius of the block matching in 3D.
        volume_depth_radius: search radius along the last axis in 3D.
        pilot: ``"network"`` fits the network where it changes the result (Rician: its fit corrects the
            magnitude's bias, in place of inverting the Rician mean); ``"thresholded"`` and ``"auto"`` (the
            measured best) fit none: the hard-thresholded observation is the refinement's only pilot.
    """

    max_iters: int = 150
    min_iters: int = 100
    patience: int = 150
    lr: float = 0.01
    code_channels: int = 8
    channels: tuple[int, ...] = (16, 32, 64, 64)
    skip_channels: int = 4
    code_noise: float = 1.0 / 30
    ema_decay: float = 0.99
    tv_scale: float = 0.15
    amplitude_weight: float = 1.0
    phase_weight: float = 1.0
    frequency_power: float = 0.0
    backtrack_factor: float = 3.0
    warm_iters_fraction: float = 0.1
    code_blur: float = 2.0
    min_change: float = 0.02
    wiener_patch: int = 8
    wiener_passes: int = 1
    coloured_passes: int = 4
    match_group: int = 16
    match_radius: int = 8
    threshold: float = 2.7
    threshold_radius: int = 19
    match_step: int = 3
    bayes_patch: int = 7
    volume_patch: int = 4
    volume_radius: int = 5
    volume_depth_radius: int = 2
    pilot: str = "auto"


@dataclass
class PriorState:
    """What a neighbouring fit can start from: the network's weights and the random code."""

    network: dict[str, torch.Tensor]
    code: torch.Tensor


@dataclass
class FitResult:
    """The outcome of one fit, in the fit domain."""

    image: torch.Tensor
    uncertainty: torch.Tensor
    iterations: int
    state: PriorState
    history: list[float] = field(default_factory=list)


def _build_network(config: FitConfig, spatial_dims: int, out_channels: int, seed: int, device: torch.device) -> DIPHourglass:
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's global RNG
        torch.manual_seed(seed)
        net = DIPHourglass(spatial_dims, config.code_channels, out_channels, config.channels, config.skip_channels)
    return net.to(device)


def _blurred_code(target: torch.Tensor, sigma: float, shape: tuple[int, ...]) -> torch.Tensor:
    """The observation blurred by a Gaussian of std ``sigma`` pixels, replicate-padded to the code's ``shape``."""
    blurred = GaussianFilter(target.ndim - 2, sigma).to(target.device)(target)
    pad = [p for size, full in zip(reversed(target.shape[2:]), reversed(shape)) for p in (0, full - size)]
    return torch.nn.functional.pad(blurred, pad, mode="replicate")


def fit_prior(
    target: torch.Tensor,
    noise_model: NoiseModel,
    config: FitConfig,
    seed: int = 0,
    warm_start: PriorState | None = None,
    monitor: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    noise_psd: torch.Tensor | None = None,
) -> FitResult:
    """Fit a fresh (or warm-started) hourglass to ``target`` and return the averaged output.

    Args:
        target: observation in the fit domain, ``(B, C, *spatial)``, already on the device to fit on.
        noise_model: maps the network's output to the expected observation and gives the noise sigma.
        config: the fit's settings.
        seed: seeds the network's weights, the code and the code perturbations.
        warm_start: weights and code of a fit on a similar image (a neighbouring slice), to start from.
        monitor: called as ``monitor(iteration, raw_output, averaged_output)``, for diagnostics.
        noise_psd: the noise's relative power spectrum on the target's spatial FFT grid (mean 1): the fidelity is
            whitened by it (coloured noise); None for white noise.
    """
    with torch.inference_mode(False):  # callers may run under inference_mode; the fit needs autograd
        return _fit(target.clone(), noise_model, config, seed, warm_start, monitor, noise_psd)


def _fit(
    target: torch.Tensor,
    noise_model: NoiseModel,
    config: FitConfig,
    seed: int,
    warm_start: PriorState | None,
    monitor: Callable[[int, torch.Tensor, torch.Tensor], None] | None,
    noise_psd: torch.Tensor | None = None,
) -> FitResult:
    device, spatial_dims = target.device, target.ndim - 2
    generator = torch.Generator(device=device).manual_seed(seed)
    net = _build_network(config, spatial_dims, target.shape[1], seed, device)
    shape = (target.shape[0], config.code_channels, *net.padded_shape(target.shape[2:]))
    if warm_start is not None:
        net.load_state_dict(warm_start.network)
        code = warm_start.code.to(device).clone()
    else:
        code = torch.rand(shape, generator=generator, device=device) * 0.1
    if config.code_blur > 0:  # this image's own coarse structure, also when the rest is a neighbour's code
        code[:, : target.shape[1]] = _blurred_code(target, config.code_blur, shape[2:])
    fraction = 1.0 if warm_start is None else config.warm_iters_fraction
    max_iters = max(1, math.ceil(config.max_iters * fraction))
    averager = OutputAverager(
        config.ema_decay,
        max(1, math.ceil(config.patience * fraction)),
        math.ceil(config.min_iters * fraction),
        min_change=config.min_change * noise_model.fit_sigma,
    )
    fidelity = SpectralFidelity(
        spatial_dims, config.amplitude_weight, config.phase_weight, config.frequency_power, noise_psd
    )
    tv_weight = config.tv_scale * noise_model.fit_sigma
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    out_shape = target.shape[2:]
    good_state = (copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()))
    best_loss, good_loss, history = float("inf"), float("inf"), []
    with torch.enable_grad():
        for it in range(max_iters):
            noisy_code = code + config.code_noise * torch.randn(code.shape, generator=generator, device=device)
            output = net(noisy_code, out_shape)
            if noise_model.name == "rician":
                output = output.abs()
            loss = fidelity(noise_model.observe(output), target)
            if tv_weight > 0:
                loss = loss + tv_weight * total_variation(output, spatial_dims)
            value = float(loss.detach())
            jumped = it >= _BACKTRACK_WARMUP and value > config.backtrack_factor * best_loss
            if not math.isfinite(value) or jumped:
                net.load_state_dict(good_state[0])  # backtrack: restore the last good state, then go gentler
                optimizer.load_state_dict(good_state[1])
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
                best_loss = good_loss  # compare with the state restored, not the best ever seen
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(value)
            if value < best_loss:
                best_loss = value
            if it % 50 == 0:
                good_state = (copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()))
                good_loss = value
            averager.update(output)
            if monitor is not None:
                monitor(it, output.detach(), averager.mean)
            if averager.should_stop():
                break
    image, uncertainty = averager.result()
    state = PriorState({k: v.detach().clone() for k, v in net.state_dict().items()}, code)
    return FitResult(image, uncertainty, averager.iteration, state, history)

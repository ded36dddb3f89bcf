"""The test-time fit: one untrained network fitted to one observation under the dual-domain objective."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from monai.networks.layers import GaussianFilter

from monai_dnaprior.network.losses import SpectralFidelity, total_variation
from monai_dnaprior.network.hourglass import DIPHourglass
from monai_dnaprior.noise import NoiseModel
from monai_dnaprior.progress import report_share
from monai_dnaprior.settings import NetworkConfig
from monai_dnaprior.network.stopping import OutputAverager

__all__ = ["FitResult", "PriorState", "fit_prior"]

_BACKTRACK_WARMUP = 50  # the loss of a fresh network may jump in its first steps; that is no divergence


@dataclass
class PriorState:
    """What a neighbouring fit can start from: the network's weights and the random code."""

    network: dict[str, torch.Tensor]
    code: torch.Tensor


@dataclass
class FitResult:
    """The outcome of one fit, in the fit domain: the averaged output and its spread, the iterations run, the state a
    neighbour starts from, the loss per iteration, and the iteration whose average was returned (the last
    output-variance minimum with ``keep_best``, else the last)."""

    image: torch.Tensor
    uncertainty: torch.Tensor
    iterations: int
    state: PriorState
    history: list[float] = field(default_factory=list)
    returned_iteration: int = 0


def _build_network(config: NetworkConfig, spatial_dims: int, out_channels: int, seed: int, device: torch.device) -> DIPHourglass:
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
    config: NetworkConfig,
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
    config: NetworkConfig,
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
        keep_best=config.keep_best,
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
            if noise_model.is_magnitude:
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
            report_share((it + 1) / max_iters)
            if monitor is not None:
                monitor(it, output.detach(), averager.mean)
            if averager.should_stop():
                break
    image, uncertainty = averager.result()
    state = PriorState({k: v.detach().clone() for k, v in net.state_dict().items()}, code)
    return FitResult(image, uncertainty, averager.iteration, state, history, averager.result_iteration)

"""The series Wiener pass with the network in its pilot, blended with the classical pass by SURE.

Two estimates of the series (in the noise model's fit domain): the Wiener pass piloted by MP-PCA (the classical
path) and the same pass piloted by the average of MP-PCA and the network's prediction of each volume from the others
(:mod:`~monai_dnaprior.series.network`: its errors are independent of the volume's own noise at the voxel, unlike
MP-PCA's). The output is ``(1 - w) classical + w guided`` with ``w`` the weight SURE chooses
(:mod:`~monai_dnaprior.series.sure`): MP-PCA, the network's prediction and both Wiener passes rerun, with the fitted
network, on the series plus a small random probe for the divergence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from monai_dnaprior.progress import sub_span
from monai_dnaprior.series.network import SeriesNetConfig, VolumePredictor
from monai_dnaprior.series.sure import rademacher, sure_blend_weight, weighted_divergence

__all__ = ["PROBE_SCALE", "network_blend"]

PROBE_SCALE = 0.1  # the probe's step, of the median noise sigma (MC-SURE's epsilon)
_SHARES = (0.45, 0.2, 0.35)  # the fit, the two passes, the probe's rerun: the shares of the time


def network_blend(
    target: torch.Tensor,
    pilot: torch.Tensor,
    variance: torch.Tensor,
    classical: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    wiener: Callable[..., torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    config: SeriesNetConfig | None = None,
    with_error: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """The blend of the two Wiener passes of ``target`` ``(C, *spatial)``, its expected squared error (where
    ``with_error``, else None: the passes' errors blended as fully correlated) and what was found.

    Args:
        target: the series in the fit domain.
        pilot, variance: MP-PCA's estimate and noise variance map of ``target``.
        classical: MP-PCA, ``series -> (estimate, variance)`` (rerun on the probed series).
        wiener: the Wiener pass, ``(series, pilot, variance, with_error) -> estimate`` (and its error with
            ``with_error``: :func:`~monai_dnaprior.series.wiener.series_wiener`).
        config: the network's size and fit.
        with_error: also the expected squared error.
    """
    config = config or SeriesNetConfig()
    with sub_span(0.0, _SHARES[0]):
        predictor = VolumePredictor(config).fit(target)
    with sub_span(_SHARES[0], _SHARES[0] + _SHARES[1]):
        guess = predictor(target)
        passes = [wiener(target, guide, variance, with_error) for guide in (pilot, 0.5 * (pilot + guess))]
        (first, first_error), (second, second_error) = passes if with_error else [(p, None) for p in passes]
    with sub_span(_SHARES[0] + _SHARES[1], 1.0):
        probe = rademacher(target, config.seed + 1)
        eps = PROBE_SCALE * float(variance.clamp_min(0).sqrt().median().clamp_min(1e-6))
        probed = target + eps * probe
        probed_pilot, probed_variance = classical(probed)
        first_probed = wiener(probed, probed_pilot, probed_variance, False)
        second_probed = wiener(probed, 0.5 * (probed_pilot + predictor(probed)), probed_variance, False)
    divergences = [weighted_divergence(a, b, probe, eps, variance)
                   for a, b in ((first, first_probed), (second, second_probed))]
    weight = sure_blend_weight(target, first, second, *divergences)
    estimate = first + weight * (second - first)
    error = None
    if with_error:
        error = ((1 - weight) * first_error.clamp_min(0).sqrt() + weight * second_error.clamp_min(0).sqrt()).square()
    return estimate, error, {"network_weight": round(weight, 4)}

"""MP-PCA's patch size chosen by SURE (the ``quality`` preset).

A series whose signal is a few components shared far across the volume (an fMRI series: a drift, a physiological
rhythm, a block response) is better served by a wide patch, whose many voxels pin those components down; a series
whose components change from place to place (a diffusion series' fibre directions) by a narrow one. Each candidate
runs the classical path (MP-PCA, then the series Wiener pass piloted by it) on the series and on the series plus a
+-1 probe, and the one with the lowest Stein's unbiased risk estimate (:mod:`~monai_dnaprior.series.sure`, against
one noise map for all) is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from monai_dnaprior.series.blend import PROBE_SCALE
from monai_dnaprior.series.sure import rademacher, weighted_divergence

__all__ = ["choose_patch_sides"]

Classical = Callable[[torch.Tensor, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]]


def choose_patch_sides(
    target: torch.Tensor,
    candidates: Sequence[tuple[int, ...]],
    classical: Classical,
    wiener: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    seed: int = 0,
) -> tuple[tuple[int, ...], list[float], tuple[torch.Tensor, torch.Tensor]]:
    """The candidate patch sides whose classical path has the lowest SURE on ``target`` ``(C, *spatial)``, each
    candidate's SURE less the constant it shares with the others (``sum sigma_i^2``; the first candidate's noise map
    stands for all), and the chosen candidate's MP-PCA ``(estimate, noise variance map)``.

    Args:
        target: the series in the noise model's fit domain.
        candidates: patch sides to weigh.
        classical: MP-PCA, ``(series, sides) -> (estimate, noise variance map)``.
        wiener: the series Wiener pass, ``(series, pilot, variance) -> estimate``.
        seed: the probe's seed.
    """
    probe = rademacher(target, seed)
    variance = eps = None
    risks, pilots = [], []
    for sides in candidates:
        pilot, noise = classical(target, sides)
        pilots.append((pilot, noise))
        if variance is None:
            variance = noise
            eps = PROBE_SCALE * float(variance.clamp_min(0).sqrt().median().clamp_min(1e-6))
        estimate = wiener(target, pilot, noise)
        probed = target + eps * probe
        perturbed = wiener(probed, *classical(probed, sides))
        divergence = weighted_divergence(estimate, perturbed, probe, eps, variance)
        risks.append(float((estimate.double() - target.double()).square().sum()) + 2.0 * divergence)
    best = min(range(len(candidates)), key=risks.__getitem__)
    return tuple(candidates[best]), risks, pilots[best]

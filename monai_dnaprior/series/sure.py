"""Two estimates of a series blended with the weight that Stein's unbiased risk estimate (SURE) chooses.

For a series ``t`` with independent noise of variance ``sigma_i^2`` at the entry i and an estimate ``g(t)``,
``SURE = ||g - t||^2 + 2 sum_i sigma_i^2 dg_i/dt_i - sum_i sigma_i^2`` is an unbiased estimate of ``||g - clean||^2``.
The divergence is read by Monte Carlo (Ramani, Blu and Unser 2008): ``g`` rerun on ``t + eps b`` with ``b`` a random
+-1 probe, ``sum_i sigma_i^2 b_i (g_i(t + eps b) - g_i(t)) / eps``. SURE of the blend ``(1 - w) a + w b`` is a
quadratic in ``w``; its minimum over ``[0, 1]`` is the weight.
"""

from __future__ import annotations

import torch

__all__ = ["rademacher", "sure_blend_weight", "weighted_divergence"]


def rademacher(like: torch.Tensor, seed: int) -> torch.Tensor:
    """A +-1 probe of ``like``'s shape, dtype and device, the same for a seed."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, like.shape, generator=generator) * 2 - 1).to(like.device, like.dtype)


def weighted_divergence(estimate: torch.Tensor, perturbed: torch.Tensor, probe: torch.Tensor, eps: float,
                        variance: torch.Tensor) -> float:
    """``sum_i sigma_i^2 dg_i/dt_i`` from ``g(t)`` (``estimate``) and ``g(t + eps probe)`` (``perturbed``), the
    noise ``variance`` ``(*spatial)`` shared by the volumes."""
    change = (perturbed.double() - estimate.double()) * probe.double()
    return float((change * variance.clamp_min(0).double()[None]).sum()) / eps


def sure_blend_weight(target: torch.Tensor, first: torch.Tensor, second: torch.Tensor, first_divergence: float,
                      second_divergence: float) -> float:
    """The weight w in [0, 1] of ``second`` in ``(1 - w) first + w second`` that minimises SURE, given each
    estimate's weighted divergence (:func:`weighted_divergence`)."""
    residual = first.double() - target.double()
    step = second.double() - first.double()
    curvature = float(step.square().sum())
    if curvature <= 0.0:
        return 0.0
    slope = float((residual * step).sum()) + second_divergence - first_divergence
    return min(max(-slope / curvature, 0.0), 1.0)

"""A noise map the user gives: the noise's relative standard deviation voxel by voxel, known from the acquisition.

A parallel-imaging reconstruction can export its g-factor map (or it follows from the coil sensitivities and the
acceleration), and a CT system's tube-current modulation and bowtie fix where its noise is higher. Given such a map
``g``, the noise is ``n(x) = g(x) n0(x)`` with ``n0`` stationary, as for a map read from the image
(:mod:`.level_map`): the observation is divided by ``g``, the rest of the field (level, spectrum, the Rician sigma and
background rule) is estimated on ``y / g``, and the result and its uncertainty map are multiplied back. The map's
scale does not matter: it is taken relative to its median, so a given ``noise_level`` is the level where it is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

__all__ = ["GivenMap"]


@dataclass
class GivenMap:
    """The given map on the image's voxel grid (spatial shape, float32, median 1)."""

    values: torch.Tensor
    given: ClassVar[bool] = True

    @classmethod
    def relative(cls, noise_map: torch.Tensor) -> GivenMap:
        """``noise_map`` (positive, finite; checked by :func:`~monai_dnaprior.validation.check_noise_map`) over its
        median."""
        values = noise_map.detach().float()
        return cls(values / values.flatten().median())

    def summary(self) -> tuple[float, float, tuple[float, ...]]:
        """The map's least and greatest value, and where it peaks as a share (0-1) of each axis."""
        peak = torch.unravel_index(self.values.argmax(), self.values.shape)
        share = tuple(round(float(p) / max(1, n - 1), 2) for p, n in zip(peak, self.values.shape))
        return float(self.values.min()), float(self.values.max()), share

    def on_grid(self, shape: tuple[int, ...], device: torch.device | str | None = None) -> torch.Tensor:
        """``g`` with a leading channel axis of 1, on the image's grid of spatial ``shape``."""
        if tuple(shape) != tuple(self.values.shape):
            raise ValueError(f"The noise map has spatial shape {tuple(self.values.shape)}, the image {tuple(shape)}.")
        return self.values.to(device)[None]

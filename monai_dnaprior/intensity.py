"""Robust intensity normalisation to the fit's working range, and the way back."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.transforms.utils_pytorch_numpy_unification import percentile

__all__ = ["IntensityWindow"]

_MAX_QUANTILE_SAMPLES = 1 << 22  # a strided sample is as good as every voxel, and bounds the percentile's cost


@dataclass(frozen=True)
class IntensityWindow:
    """An affine map of intensities ``[low, high] -> [0, 1]``, taken from robust percentiles of an image."""

    low: float
    high: float

    @classmethod
    def from_image(cls, img: torch.Tensor, lower: float = 0.5, upper: float = 99.5, zero_based: bool = False) -> IntensityWindow:
        """Window from the ``lower`` and ``upper`` percentiles of ``img``.

        Args:
            img: the image.
            lower: lower percentile; ignored when ``zero_based``.
            upper: upper percentile.
            zero_based: keep zero at zero (``low = min(0, min(img))``), as noise whose variance depends on the
                absolute intensity (Poisson, speckle, Rician) needs.
        """
        flat = img.detach().float().flatten()
        if flat.numel() > _MAX_QUANTILE_SAMPLES:
            flat = flat[:: flat.numel() // _MAX_QUANTILE_SAMPLES + 1]
        q = percentile(flat, [lower, upper])  # MONAI's: torch.quantile, or numpy beyond torch's size limit
        low = min(0.0, float(flat.min())) if zero_based else float(q[0])
        high = float(q[1])
        if high <= low:  # (near) constant percentiles: fall back to the full range
            low, high = float(flat.min()), float(flat.max())
        return cls(low, high)

    @property
    def is_degenerate(self) -> bool:
        """Whether the image is constant, so there is nothing to denoise."""
        return self.high <= self.low

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        return (img - self.low) / (self.high - self.low)

    def restore(self, img: torch.Tensor) -> torch.Tensor:
        return img * (self.high - self.low) + self.low

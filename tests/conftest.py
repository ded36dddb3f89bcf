"""Shared fixtures of the monai_dnaprior unit tests: input types, phantoms, PSNR and small fit settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_dnaprior import FitConfig

# The test images are tiny (at most 32x32 or 16x16x6): a second intra-op thread buys nothing there, and on a
# shared 2-core machine OpenMP threads that spin-wait for each other make the fits 10-30x slower.
torch.set_num_threads(1)


def _as_metatensor(x: np.ndarray) -> MetaTensor:
    affine = torch.diag(torch.tensor([0.7, 1.3, 2.0, 1.0], dtype=torch.float64))
    return MetaTensor(torch.as_tensor(x), affine=affine, meta={"filename_or_obj": "phantom.nii.gz"})


# Like MONAI's TEST_NDARRAYS: every transform test runs on numpy, torch and MetaTensor inputs.
ARRAY_TYPES = {"numpy": np.asarray, "torch": torch.as_tensor, "metatensor": _as_metatensor}


@pytest.fixture(params=list(ARRAY_TYPES), ids=list(ARRAY_TYPES))
def array_type(request):
    """``(name, converter)``: the converter turns a numpy array into the input type under test."""
    return request.param, ARRAY_TYPES[request.param]


def make_phantom(shape: tuple[int, ...], low: float = 0.1) -> np.ndarray:
    """A smooth image of three Gaussian blobs in ``[low, 1]``, shape ``shape`` (no channel), float32."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    img = np.zeros(shape)
    for centre, radius, amplitude in [((-0.3, 0.2, 0.0), 0.5, 0.8), ((0.4, -0.3, 0.2), 0.35, 0.5),
                                      ((0.0, 0.0, 0.0), 0.8, 0.3)]:
        img += amplitude * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / radius**2)
    return (low + (1 - low) * img / img.max()).astype(np.float32)


def psnr(x, clean, data_range: float = 1.0) -> float:
    """PSNR in dB of ``x`` against ``clean`` (numpy or torch)."""
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    clean = np.asarray(clean.detach().cpu() if isinstance(clean, torch.Tensor) else clean, dtype=np.float64)
    return float(10 * np.log10(data_range**2 / np.mean((x - clean) ** 2)))


def small_config(iters: int = 60, **overrides) -> FitConfig:
    """A two-level network that runs exactly ``iters`` iterations (no automatic stop before) and, with no
    refinement after it, makes the result: the fit under test whatever the noise model."""
    settings = {"max_iters": iters, "min_iters": iters, "patience": iters, "channels": (8, 16), "pilot": "network",
                "wiener_patch": 0}
    settings.update(overrides)
    return FitConfig(**settings)

"""Small helpers the tutorials share: where the real scans are, the network's iteration override, noise, PSNR,
saving figures.

Run a tutorial from anywhere (``python tutorials/01_quickstart.py``) or open it as a notebook from this folder:
either way this module is importable.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

ITERS_ENV = "DNAPRIOR_TUTORIAL_ITERS"


def repo_root() -> Path:
    """The repository holding ``tutorials/``."""
    return Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The project's real scans: ``<repo>/../shared/data``."""
    return repo_root().parent / "shared" / "data"


def scan_path(name: str = "mri_sagittal_2d.nii.gz") -> Path:
    """A real scan from the shared data; the bundle's sample MR slice when the shared data is not there."""
    path = shared_data_dir() / name
    if path.exists():
        return path
    fallback = repo_root() / "bundle" / "sample_data" / "mr_small_2d.nii.gz"
    print(f"{path} not found; using {fallback} instead.")
    return fallback


def max_iters(default: int | None = None) -> int | None:
    """``DNAPRIOR_TUTORIAL_ITERS`` when set (quick smoke runs), else ``default`` (None: the preset's own budget).

    For ``max_iters=`` of a transform that fits a network (``prior="network"`` or ``"network+filter"``): the filter
    prior has no iterations, and refuses the setting.
    """
    value = os.environ.get(ITERS_ENV)
    return int(value) if value else default


def add_noise(clean: torch.Tensor, noise: str, level: float, seed: int = 0) -> torch.Tensor:
    """``clean`` (intensities in [0, 1]) with synthetic noise of a fixed seed, same type and metadata.

    gaussian: ``x + N(0, level^2)``; poisson: ``Poisson(x * level) / level`` (``level`` = peak photon count);
    rician: ``|x + n1 + i n2|`` with ``n ~ N(0, level^2)`` (MRI magnitude); speckle: ``x * Gamma(level, 1/level)``
    (``level`` = looks, ultrasound).
    """
    rng = np.random.default_rng(seed)
    x = clean.detach().cpu().numpy().astype(np.float64)
    if noise == "gaussian":
        y = x + level * rng.standard_normal(x.shape)
    elif noise == "poisson":
        y = rng.poisson(np.clip(x, 0, None) * level) / level
    elif noise == "rician":
        y = np.hypot(x + level * rng.standard_normal(x.shape), level * rng.standard_normal(x.shape))
    elif noise == "speckle":
        y = x * rng.gamma(level, 1.0 / level, x.shape)
    else:
        raise ValueError(f"unknown noise {noise!r}")
    noisy = clean.clone()  # keeps a MetaTensor's affine and metadata
    noisy[:] = torch.as_tensor(y, dtype=clean.dtype)
    return noisy


def psnr(clean: torch.Tensor, x: torch.Tensor) -> float:
    """PSNR in dB over the clean image's intensity range."""
    clean, x = torch.as_tensor(clean).float(), torch.as_tensor(x).float()
    data_range = float(clean.max() - clean.min())
    mse = float(torch.mean((clean - x) ** 2))
    return 10.0 * np.log10(data_range**2 / mse)


def view(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """A displayable 2D array from a channel-first ``(1, x, y)`` image as MONAI loads it (rows = y)."""
    a = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    return np.squeeze(a).T


def save_figure(fig, name: str) -> Path:
    """Save ``fig`` as ``name`` in the current working directory and say where."""
    path = Path.cwd() / name
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"saved {path}")
    return path

"""Shared fixtures of the monai_dnaprior unit tests: input types, phantoms, noise, PSNR, and small network settings.

The default path (``prior="auto"``: the collaborative filter) needs no settings and runs in tens of milliseconds on
the tiny images here, so the tests call it as a user does. The network path has its own small settings,
:func:`small_network`, passed with ``prior="network"`` (the network alone) or ``"network+filter"``.
"""

from __future__ import annotations

import os

import torch

# The test images are tiny (at most 32x32 or 16x16x6): a second intra-op thread buys nothing there, and on a
# shared 2-core machine OpenMP threads that spin-wait for each other make the fits 10-30x slower. Set before
# monai_dnaprior is imported, so that one thread is both the count at import and the user's choice (the env var).
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from monai.data import MetaTensor  # noqa: E402

from monai_dnaprior import NetworkConfig, NoiseModelName  # noqa: E402

# The noise models a user can name (``auto`` picks one of them).
NOISE_MODEL_NAMES = [str(m) for m in NoiseModelName if m != NoiseModelName.AUTO]


def _as_metatensor(x: np.ndarray) -> MetaTensor:
    affine = torch.diag(torch.tensor([0.7, 1.3, 2.0, 1.0], dtype=torch.float64))
    return MetaTensor(torch.as_tensor(x), affine=affine, meta={"filename_or_obj": "phantom.nii.gz"})


# Like MONAI's TEST_NDARRAYS: every transform test runs on numpy, torch and MetaTensor inputs.
ARRAY_TYPES = {"numpy": np.asarray, "torch": torch.as_tensor, "metatensor": _as_metatensor}


@pytest.fixture(params=list(ARRAY_TYPES), ids=list(ARRAY_TYPES))
def array_type(request):
    """``(name, converter)``: the converter turns a numpy array into the input type under test."""
    return request.param, ARRAY_TYPES[request.param]


def as_numpy(x) -> np.ndarray:
    """Any array or tensor (MetaTensor too) as a numpy array."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def make_phantom(shape: tuple[int, ...], low: float = 0.1) -> np.ndarray:
    """A smooth image of three Gaussian blobs in ``[low, 1]``, shape ``shape`` (no channel), float32."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    img = np.zeros(shape)
    for centre, radius, amplitude in [((-0.3, 0.2, 0.0), 0.5, 0.8), ((0.4, -0.3, 0.2), 0.35, 0.5),
                                      ((0.0, 0.0, 0.0), 0.8, 0.3)]:
        img += amplitude * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / radius**2)
    return (low + (1 - low) * img / img.max()).astype(np.float32)


def sample_slice() -> np.ndarray:
    """The 64x64 MR slice that ships with the bundle (``bundle/sample_data/mr_small_2d.nii.gz``), scaled to [0, 1]."""
    import nibabel as nib

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundle", "sample_data",
                        "mr_small_2d.nii.gz")
    x = np.asarray(nib.load(path).dataobj, dtype=np.float64).squeeze()
    return (x - x.min()) / (x.max() - x.min())


def noisy_phantom(shape: tuple[int, ...], sigma: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, noisy)``, channel-first ``(1, *shape)`` float32: the phantom and it with white Gaussian noise."""
    clean = make_phantom(shape)[None]
    rng = np.random.default_rng(seed)
    return clean, (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)


def synthesise(noise_model: str, clean: np.ndarray, rng: np.random.Generator, level: float = 0.1) -> np.ndarray:
    """``clean`` (in about [0, 1]) under ``noise_model`` noise: Gaussian and Rician of std ``level``, Poisson of
    gain ``level / 5``, speckle of 4 looks. Float32."""
    if noise_model == "gaussian":
        noisy = clean + level * rng.standard_normal(clean.shape)
    elif noise_model == "poisson":
        gain = level / 5
        noisy = gain * rng.poisson(clean / gain)
    elif noise_model == "rician":
        noisy = np.abs(clean + level * rng.standard_normal(clean.shape) + 1j * level * rng.standard_normal(clean.shape))
    elif noise_model == "speckle":  # unit-mean gamma, 4 looks
        noisy = clean * rng.gamma(4.0, 0.25, clean.shape)
    else:
        raise ValueError(noise_model)
    return noisy.astype(np.float32)


def make_series(channels: int, shape: tuple[int, ...], sigma: float = 0.05, seed: int = 0):
    """A DWI-like series ``(channels, *shape)``: three tissues, each with its own decay across the volumes, and it
    with white Gaussian noise: ``(clean, noisy)`` torch tensors."""
    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = sum(c.square() for c in grids).sqrt()
    tissues = [(radius < 0.5).float(), ((radius >= 0.5) & (radius < 0.9)).float(), 0.3 * (radius >= 0.9).float()]
    decay = torch.rand(3, channels, generator=g) * torch.tensor([[0.3], [1.0], [2.0]])
    clean = sum(t[None] * torch.exp(-d).reshape(-1, *[1] * len(shape)) for t, d in zip(tissues, decay))
    return clean, clean + sigma * torch.randn(clean.shape, generator=g)


def hann_kspace_window(shape: tuple[int, ...]) -> torch.Tensor:
    """A separable periodic Hann window on the unshifted FFT grid of ``shape`` (float64): k-space apodisation."""
    return torch.outer(*(torch.fft.ifftshift(torch.hann_window(n, periodic=True, dtype=torch.float64)) for n in shape))


def psnr(x, clean, data_range: float = 1.0) -> float:
    """PSNR in dB of ``x`` against ``clean`` (numpy or torch)."""
    x = np.asarray(as_numpy(x), dtype=np.float64)
    clean = np.asarray(as_numpy(clean), dtype=np.float64)
    return float(10 * np.log10(data_range**2 / np.mean((x - clean) ** 2)))


def small_network(iters: int = 60, **overrides) -> NetworkConfig:
    """A two-level network that runs exactly ``iters`` iterations (no automatic stop before): the network path's
    settings, for ``denoise(..., prior="network", network_config=small_network())``."""
    settings = {"max_iters": iters, "min_iters": iters, "patience": iters, "channels": (8, 16)}
    settings.update(overrides)
    return NetworkConfig(**settings)


@pytest.fixture(scope="module")
def noisy_2d():
    """``(clean, noisy)``: a 32x32 phantom with white Gaussian noise (see :func:`noisy_phantom`)."""
    return noisy_phantom((32, 32))


@pytest.fixture(scope="module")
def noisy_3d():
    """``(clean, noisy)``: a 16x16x6 phantom with white Gaussian noise."""
    return noisy_phantom((16, 16, 6))

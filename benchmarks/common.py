"""Shared pieces of the benchmarks: real scans, noise with fixed seeds, metrics, the peer methods, tables.

Both ``run.py`` (quality) and ``speed.py`` (time and memory) import this module; run them as scripts
(``python benchmarks/run.py``) so that ``benchmarks/`` is on the import path.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Every noise model with its strength, on a clean image scaled to [0, 1] (so "of the range").
NOISE_PARAMS: dict[str, float] = {
    "gaussian": 0.1,  # sigma of y = x + n
    "poisson": 30.0,  # peak photon count: y = Poisson(x * peak) / peak
    "rician": 0.08,  # sigma of each component: y = |x + n1 + i n2|
    "speckle": 8.0,  # looks L: y = x * Gamma(L, 1 / L), unit mean
}
NOISE_DESCRIPTIONS: dict[str, str] = {
    "gaussian": "y = x + N(0, 0.1^2)",
    "poisson": "y = Poisson(30 x) / 30 (peak 30 photons)",
    "rician": "y = |x + n1 + i n2|, n1, n2 ~ N(0, 0.08^2)",
    "speckle": "y = x * Gamma(L=8, 1/L) (unit-mean, 8 looks)",
}
NOISES: tuple[str, ...] = tuple(NOISE_PARAMS)

QUICK_CASE = "mri_sagittal_2d"
VOLUME_CASE = "epi_volume_3d"
PYDICOM_CASES: dict[str, str] = {"ct_small_2d": "CT_small.dcm"}  # MR_small.dcm is already mr_small_2d


# ----------------------------------------------------------------------------------------------- real scans


@dataclass(frozen=True)
class Scan:
    """A real scan used as the clean reference: float32, scaled to [0, 1], 2D or 3D.

    Arrays are indexed ``(x, y[, z])`` with ``y`` running down the image, as ITK (and MONAI's ``LoadImage``) give.
    """

    name: str
    image: np.ndarray
    source: str

    @property
    def is_volume(self) -> bool:
        return self.image.ndim == 3

    @property
    def shape_str(self) -> str:
        return "x".join(str(s) for s in self.image.shape)


def repo_root() -> Path:
    """The repository holding ``benchmarks/``."""
    return Path(__file__).resolve().parents[1]


# Benchmark the package of this checkout, not whichever one is installed (an editable install may point elsewhere).
if str(repo_root()) not in sys.path:
    sys.path.insert(0, str(repo_root()))


def default_data_dir() -> Path:
    """``shared/data`` next to the repository (``<repo>/../shared/data``)."""
    return repo_root().parent / "shared" / "data"


def to_unit_range(a: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] as float32."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected region of a boolean ``mask`` (``mask`` itself where it has one region or none)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    return labels == (1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1)))))


def load_nifti_scan(path: Path) -> Scan:
    """A NIfTI scan from ``path``, named after the file."""
    import nibabel as nib

    image = np.squeeze(np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32)))
    name = path.name.removesuffix(".gz").removesuffix(".nii")
    return Scan(name, to_unit_range(image), f"shared/data/{path.name}")


def load_pydicom_scan(name: str, filename: str) -> Scan:
    """A real scan shipped inside pydicom's test data (local files only, never downloaded)."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file(filename))
    image = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    return Scan(name, to_unit_range(image.T), f"pydicom.data {filename}")  # (rows, cols) -> (x, y)


def load_nibabel_volume() -> Scan:
    """nibabel's real EPI volume ``example4d.nii.gz``, first time point: 128x96x24, x and y flipped (RAS to LPS)."""
    import nibabel as nib
    from nibabel.testing import data_path

    image = np.asarray(nib.load(os.path.join(data_path, "example4d.nii.gz")).dataobj[..., 0], dtype=np.float32)
    image = np.ascontiguousarray(image[::-1, ::-1])
    return Scan(VOLUME_CASE, to_unit_range(image), "nibabel.testing example4d.nii.gz, t=0")


def load_scans(data_dir: Path, names: Sequence[str] | None = None, filters: Sequence[str] | None = None) -> list[Scan]:
    """The benchmark scans: the shared data, pydicom's CT and nibabel's volume.

    Args:
        data_dir: folder of the shared NIfTI scans.
        names: keep exactly these names (in this order) when given.
        filters: keep names containing any of these substrings when given.
    """
    loaders: dict[str, Callable[[], Scan]] = {
        p.name.removesuffix(".gz").removesuffix(".nii"): (lambda p=p: load_nifti_scan(p))
        for p in sorted(Path(data_dir).glob("*.nii.gz"))
    }
    loaders.update({n: (lambda n=n, f=f: load_pydicom_scan(n, f)) for n, f in PYDICOM_CASES.items()})
    loaders[VOLUME_CASE] = load_nibabel_volume
    if names is not None:
        missing = [n for n in names if n not in loaders]
        if missing:
            raise SystemExit(f"Scans not found: {missing} (data dir {data_dir}); known: {sorted(loaders)}.")
        keys = list(names)
    else:
        keys = list(loaders)
    if filters:
        keys = [k for k in keys if any(f in k for f in filters)]
    if not keys:
        raise SystemExit(f"No scan matches {list(filters or [])}; known: {sorted(loaders)}.")
    return [loaders[k]() for k in keys]


# ----------------------------------------------------------------------------------------------------- noise


def noise_seed(case: str, noise: str, base: int = 0) -> int:
    """A fixed seed per (scan, noise): reproducible, and independent across cases."""
    return (zlib.crc32(f"{case}/{noise}".encode()) + base) % 2**32


def add_noise(clean: np.ndarray, noise: str, seed: int, param: float | None = None) -> np.ndarray:
    """``clean`` (in [0, 1]) corrupted by ``noise`` at the strength ``param`` (default :data:`NOISE_PARAMS`'s), as
    float32."""
    rng = np.random.default_rng(seed)
    p = NOISE_PARAMS[noise] if param is None else param
    x = clean.astype(np.float64)
    scale = float(x.max() - x.min())
    if noise == "gaussian":
        y = x + p * scale * rng.standard_normal(x.shape)
    elif noise == "poisson":
        y = rng.poisson(np.clip(x, 0, None) * p) / p
    elif noise == "rician":
        y = np.hypot(x + p * scale * rng.standard_normal(x.shape), p * scale * rng.standard_normal(x.shape))
    elif noise == "speckle":
        y = x * rng.gamma(p, 1.0 / p, x.shape)
    else:
        raise ValueError(f"Unknown noise {noise!r}; choose from {NOISES}.")
    return y.astype(np.float32)


# --------------------------------------------------------------------------------------------------- metrics


def data_range(clean: np.ndarray) -> float:
    return float(clean.max() - clean.min())


def psnr(clean: np.ndarray, x: np.ndarray) -> float:
    """PSNR in dB with ``data_range = clean.max() - clean.min()``."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(clean, x.astype(clean.dtype), data_range=data_range(clean)))


def ssim(clean: np.ndarray, x: np.ndarray) -> float:
    """SSIM (2D or 3D) with ``data_range = clean.max() - clean.min()``."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(clean, x.astype(clean.dtype), data_range=data_range(clean)))


def otsu_dice(clean: np.ndarray, x: np.ndarray, classes: int = 3) -> float:
    """Downstream check: multi-Otsu thresholds of ``clean`` applied to both; mean Dice over foreground classes."""
    from skimage.filters import threshold_multiotsu

    thresholds = threshold_multiotsu(clean, classes=classes)
    ref, seg = np.digitize(clean, thresholds), np.digitize(x, thresholds)
    dices = []
    for c in range(1, classes):
        a, b = ref == c, seg == c
        denom = a.sum() + b.sum()
        dices.append(2.0 * np.logical_and(a, b).sum() / denom if denom else 1.0)
    return float(np.mean(dices))


# ----------------------------------------------------------------------------------------------------- methods


@dataclass
class MethodRun:
    """One method's output on one noisy image, its wall time, and what it reported (iterations, ...)."""

    output: np.ndarray
    seconds: float
    info: dict = field(default_factory=dict)


Denoiser = Callable[[np.ndarray], MethodRun]


def timed(fn: Callable[[np.ndarray], np.ndarray]) -> Denoiser:
    """Wrap ``fn(noisy) -> denoised`` into a :data:`Denoiser` that measures the whole call."""

    def run(noisy: np.ndarray) -> MethodRun:
        start = time.perf_counter()
        out = fn(noisy)
        return MethodRun(np.asarray(out, dtype=np.float32), time.perf_counter() - start)

    return run


def estimated_sigma(noisy: np.ndarray) -> float:
    """Gaussian noise sigma by scikit-image's wavelet estimate, as a user would take it."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(noisy))


def bm3d_denoise(noisy: np.ndarray) -> np.ndarray:
    """BM3D with the estimated sigma; a volume slice by slice along its last axis."""
    import bm3d

    sigma = estimated_sigma(noisy)
    if noisy.ndim == 2:
        return bm3d.bm3d(noisy, sigma_psd=sigma)
    return np.stack([bm3d.bm3d(noisy[..., k], sigma_psd=sigma) for k in range(noisy.shape[-1])], axis=-1)


def bm4d_denoise(noisy: np.ndarray) -> np.ndarray:
    """BM4D with the estimated sigma."""
    import bm4d

    return bm4d.bm4d(noisy, sigma_psd=estimated_sigma(noisy))


def tv_denoise(noisy: np.ndarray) -> np.ndarray:
    """Chambolle TV with weight = estimated sigma."""
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(noisy, weight=estimated_sigma(noisy))


def nlm_denoise(noisy: np.ndarray) -> np.ndarray:
    """Fast NL-means, h = 0.8 sigma (estimated), scikit-image's documented 5x5 patches within 13x13."""
    from skimage.restoration import denoise_nl_means

    sigma = estimated_sigma(noisy)
    return denoise_nl_means(noisy, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6)


@contextlib.contextmanager
def capture_fit_info() -> Iterator[list[dict]]:
    """Collect the ``info`` of :func:`monai_dnaprior.denoise` (noise model and level found, prior, iterations,
    volume mode) of every transform call inside.

    The transform returns only the image, so the ``denoise`` it calls is wrapped for the duration.
    """
    from monai_dnaprior import transforms

    original, infos = transforms.denoise, []

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        infos.append(dict(result.info))
        return result

    transforms.denoise = recording
    try:
        yield infos
    finally:
        transforms.denoise = original


def fits_network(prior: str = "auto") -> bool:
    """Whether ``prior`` fits a network (``"network"``, ``"network+filter"``): only then do the network's settings
    (``max_iters``, ``seed``, ...) apply, and the transform refuses them elsewhere."""
    from monai_dnaprior.settings import Prior, resolve_prior

    return resolve_prior(prior) != Prior.FILTER


def network_options(prior: str = "auto", **settings: object) -> dict[str, object]:
    """``settings`` (the network's: ``max_iters``, ``seed``, ``volume_mode``, ...) where ``prior`` fits a network,
    else none: a benchmark's ``--max-iters`` and ``--seed`` cap and seed the network rows and leave the filter's
    rows as they are."""
    return {k: v for k, v in settings.items() if v is not None} if fits_network(prior) else {}


def dnaprior_denoiser(
    noise_model: str,
    preset: str = "default",
    max_iters: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    with_channels: Sequence[np.ndarray] = (),
    prior: str = "auto",
    noise_map: np.ndarray | None = None,
    **options: object,
) -> Denoiser:
    """``DNAPriorDenoise`` with the matching noise model, ``prior`` and any further ``options`` of the transform; the
    time is the full transform call on ``noisy[None]``, or on ``noisy`` and ``with_channels`` stacked as channels
    (its first channel kept), given ``noise_map`` where set. ``max_iters`` and ``seed`` act where the prior fits a
    network, and are left out where it does not (the filter has no iterations and no randomness)."""
    from monai_dnaprior import DNAPriorDenoise

    transform = DNAPriorDenoise(noise_model=noise_model, preset=preset, device=device, prior=prior,
                                **network_options(prior, max_iters=max_iters, seed=seed), **options)

    def run(noisy: np.ndarray) -> MethodRun:
        with capture_fit_info() as infos:
            start = time.perf_counter()
            out = transform(np.stack([noisy, *with_channels]) if len(with_channels) else noisy[None],
                            noise_map=noise_map)
            seconds = time.perf_counter() - start
        info = infos[-1] if infos else {}
        return MethodRun(np.asarray(out[0], dtype=np.float32), seconds, info)

    return run


ABLATION = "DNA-Prior, model given, no network"


def refinement_only_denoiser(
    noise_model: str, preset: str = "default", device: str | None = None, **options: object
) -> Denoiser:
    """DNA-Prior with the noise model given and no network (``prior="filter"``): the same noise field,
    normalisation and filter as the network rows, so the difference is what the fit itself adds."""
    return dnaprior_denoiser(noise_model, preset, device=device, prior="filter", **options)


FIT_ALONE = "Ablation: network fit alone (no refinement)"


def fit_alone_denoiser(
    noise_model: str,
    preset: str = "default",
    device: str | None = None,
    max_iters: int | None = None,
    seed: int = 0,
    **options: object,
) -> Denoiser:
    """DNA-Prior's network fit with no filter after it (``prior="network"``: the fit is the result), the preset's
    network capped at ``max_iters`` where given, with ``options`` for :func:`monai_dnaprior.denoise`
    (``noise_psd=...``): what the Deep Image Prior does alone."""
    import torch

    from monai_dnaprior import denoise, preset_settings

    _, network_config = preset_settings(preset, max_iters=max_iters)

    def run(noisy: np.ndarray) -> MethodRun:
        start = time.perf_counter()
        result = denoise(torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32))[None], noise_model,
                         prior="network", preset=preset, network_config=network_config, seed=seed, device=device,
                         **options)
        return MethodRun(result.image[0].cpu().numpy(), time.perf_counter() - start, result.info)

    return run


def warm_up(device: str | None = None) -> None:
    """Import the peers' libraries and denoise one tiny image, so no method's time includes one-time start-up
    costs."""
    import importlib

    for module in ("bm3d", "bm4d", "skimage.restoration"):
        importlib.import_module(module)
    tiny = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    dnaprior_denoiser("gaussian", device=device)(tiny)
    bm3d_denoise(tiny)


PEERS_2D: dict[str, Denoiser] = {
    "BM3D": timed(bm3d_denoise),
    "TV (Chambolle)": timed(tv_denoise),
    "NL-means": timed(nlm_denoise),
}
PEERS_3D: dict[str, Denoiser] = {
    "BM4D": timed(bm4d_denoise),
    "BM3D (slices)": timed(bm3d_denoise),
    "TV (Chambolle)": timed(tv_denoise),
    "NL-means": timed(nlm_denoise),
}


def peers(is_volume: bool) -> dict[str, Denoiser]:
    """The classical peers for a 2D image or a volume, reference first (BM3D in 2D, BM4D in 3D)."""
    return PEERS_3D if is_volume else PEERS_2D


def reference_method(is_volume: bool) -> str:
    """The peer every other method is compared with."""
    return next(iter(peers(is_volume)))


# ----------------------------------------------------------------------------------------------------- output


def fmt(value: float | str | None, digits: int = 2) -> str:
    """A table cell: floats rounded, None as an empty cell."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_sig(value: float | None, digits: int = 3) -> str:
    """A table cell with ``digits`` significant digits (times and ratios span orders of magnitude)."""
    if value is None or not np.isfinite(value):
        return ""
    return f"{value:.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_summary() -> str:
    """One line on where the numbers were measured."""
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, {device}"
    )

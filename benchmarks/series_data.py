"""The series of ``series.py``: a DWI-like and an fMRI-like series simulated from the development EPI volume, and
real series shipped in DIPY and nibabel (read from their package folders, never downloaded).

Simulated series (arrays ``(X, Y, Z, N)``, the clean series known):

- **DWI-like**: frame 0 of nibabel's ``example4d`` (the dev volume ``epi_volume_3d``), cropped to the brain, is the
  b0 signal S0. Its brain (Otsu of S0, holes filled) is split into three intensity classes (3-class multi-Otsu: on
  this T2*-weighted EPI the darkest is white-matter-like, then grey matter, then CSF), each with its own diffusion
  tensor: white matter ``(1.7, 0.35, 0.35) um^2/ms`` along a smooth fibre orientation field, grey matter
  ``(0.9, 0.75, 0.7)``, CSF ``3.0`` isotropic, voxels between classes a partial-volume mix of the classes' signals.
  3 b0 and 24 directions (a Fibonacci half-sphere) at b = 1000 s/mm^2: ``S = S0 exp(-b g^T D g)``. Rician noise,
  independent per volume.
- **fMRI-like**: the same S0 repeated over 40 time points with a slow drift (0.5 %), a global physiological
  oscillation (0.3 %), and a 2 % block activation in a smooth grey-matter blob; Rician noise per frame.

Real series (no clean image):

- DIPY ``small_64D`` (10x10x10, 1 b0 + 64 directions at b = 1000), DIPY ``small_101D`` (6x10x10, its b <= 1600
  volumes: 29), both cut out of the brain (every voxel is the mask), nibabel ``functional.nii`` (17x21x3, 20 frames;
  the mask: temporal mean above half its median).

**Held-out series** (``load_series(heldout=True)``, ``series.py --heldout``; never used to choose anything): the same
two simulations on another anatomy, DIPY's ``S0_10slices`` (a b0 of another scanner and subject, 10 thick slices;
cropped to 84x100x10 around the brain, the brain the slice-wise filled Otsu mask of the smoothed volume at half its
threshold (plain Otsu picks the bright CSF of this T2-weighted b0), scaled so that the brain's median is the dev
series' 0.42: the same signal-to-noise ratio in tissue), and DIPY's real ``small_25`` (10x8x2, 1 b0 + 25 directions
at b = 2000).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DWI_CROP = (slice(33, 97), slice(8, 88), slice(2, 22))  # 64x80x20 of the 128x96x24 EPI: the brain and a margin
FMRI_CROP = (slice(37, 93), slice(14, 78), slice(4, 20))  # 56x64x16
DWI_SIGMA = 0.02  # Rician sigma, of the EPI's range (S0 max 1)
FMRI_SIGMA = 0.015
HELDOUT_CROP = (slice(22, 106), slice(11, 111), slice(0, 10))  # 84x100x10 of DIPY's 128x128x10 S0_10slices
DEV_BRAIN_MEDIAN = 0.42  # the dev EPI's brain median (S0 max 1): the held-out S0 is scaled to it
B_VALUE = 1000.0  # s/mm^2
DIFFUSIVITY = {"wm": (1.7e-3, 0.35e-3, 0.35e-3), "gm": (0.9e-3, 0.75e-3, 0.7e-3), "csf": (3.0e-3, 3.0e-3, 3.0e-3)}


@dataclass
class Series:
    """A series ``(X, Y, Z, N)`` with its brain mask, its b-values and directions (diffusion) and, where simulated,
    its clean series."""

    name: str
    kind: str  # "dwi" or "fmri"
    noisy: np.ndarray
    mask: np.ndarray
    source: str
    clean: np.ndarray | None = None
    bvals: np.ndarray | None = None
    bvecs: np.ndarray | None = None
    notes: dict = field(default_factory=dict)

    @property
    def shape_str(self) -> str:
        return "x".join(str(s) for s in self.noisy.shape)


def brain_mask(s0: np.ndarray) -> np.ndarray:
    """Otsu threshold of ``s0``, holes filled slice by slice, the largest component."""
    from common import largest_component
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    mask = s0 > threshold_otsu(s0)
    mask = ndimage.binary_closing(mask, iterations=1)
    mask = np.stack([ndimage.binary_fill_holes(mask[..., k]) for k in range(mask.shape[-1])], -1)
    return largest_component(mask)


def half_sphere(n: int) -> np.ndarray:
    """``n`` unit vectors spread over a half-sphere (a Fibonacci lattice), ``(n, 3)``."""
    k = np.arange(n) + 0.5
    z = 1.0 - k / n  # (0, 1]: the upper half
    phi = np.pi * (1.0 + 5**0.5) * k
    r = np.sqrt(1.0 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def rician(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``|x + n1 + i n2|``, ``n1, n2 ~ N(0, sigma^2)``, independent per voxel and volume, float32."""
    rng = np.random.default_rng(seed)
    return np.hypot(clean + sigma * rng.standard_normal(clean.shape),
                    sigma * rng.standard_normal(clean.shape)).astype(np.float32)


def _epi_s0(crop: tuple[slice, ...]) -> np.ndarray:
    from common import load_nibabel_volume

    return np.ascontiguousarray(load_nibabel_volume().image[crop], dtype=np.float64)


def _heldout_s0() -> tuple[np.ndarray, np.ndarray]:
    """DIPY's ``S0_10slices`` cropped, its brain mask, scaled to the dev brain median (module docstring)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    s0 = _nifti(_dipy_file("S0_10slices.nii.gz"))[..., 0].astype(np.float64)[HELDOUT_CROP]
    smooth = ndimage.gaussian_filter(s0, (2, 2, 0.5))
    mask = smooth > 0.5 * threshold_otsu(smooth)
    mask = np.stack([ndimage.binary_fill_holes(mask[..., k]) for k in range(mask.shape[-1])], -1)
    return s0 * (DEV_BRAIN_MEDIAN / np.median(s0[mask])), mask


def _anatomy(heldout: bool, crop: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, str, str]:
    """S0, its brain mask, the series' name suffix and the source: the dev EPI's ``crop`` or the held-out b0."""
    if heldout:
        return (*_heldout_s0(), "_heldout", "DIPY S0_10slices (held out), simulated")
    s0 = _epi_s0(crop)
    return s0, brain_mask(s0), "", "nibabel example4d t=0 (dev), simulated"


def _classes(s0: np.ndarray, mask: np.ndarray, width: float = 0.02) -> dict[str, np.ndarray]:
    """Soft memberships of the three intensity classes in the brain (logistic across the multi-Otsu thresholds);
    outside the brain, grey-matter-like tissue."""
    from skimage.filters import threshold_multiotsu

    t1, t2 = threshold_multiotsu(s0[mask], 3)
    up1 = 1.0 / (1.0 + np.exp(-(s0 - t1) / width))
    up2 = 1.0 / (1.0 + np.exp(-(s0 - t2) / width))
    wm, csf = (1 - up1), up2  # grey matter: the rest, up1 * (1 - up2) in the brain
    wm, csf = np.where(mask, wm, 0.0), np.where(mask, csf, 0.0)
    return {"wm": wm, "gm": 1.0 - wm - csf, "csf": csf}


def fibre_field(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth unit fibre orientation per voxel, ``(*shape, 3)``: turning in-plane across the volume and tilting
    through the slices."""
    x, y, z = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    theta = np.pi * (0.9 * x + 0.6 * y)
    tilt = 0.5 * np.sin(2 * np.pi * z) + 0.3 * np.cos(np.pi * x)
    return np.stack([np.cos(theta) * np.cos(tilt), np.sin(theta) * np.cos(tilt), np.sin(tilt)], -1)


def _attenuation(diff: tuple[float, float, float], fibre: np.ndarray, g: np.ndarray, b: float) -> np.ndarray:
    """``exp(-b g^T D g)`` for a cylindrical tensor with eigenvalues ``diff`` along ``fibre``."""
    l1, l2, _ = diff
    cos2 = (fibre @ g) ** 2
    return np.exp(-b * (l2 + (l1 - l2) * cos2))


def simulate_dwi(sigma: float = DWI_SIGMA, n_b0: int = 3, n_dirs: int = 24, seed: int = 2027,
                 heldout: bool = False) -> Series:
    """The DWI-like series (module docstring), on the held-out anatomy where ``heldout``."""
    s0, mask, suffix, source = _anatomy(heldout, DWI_CROP)
    classes = _classes(s0, mask)
    fibre = fibre_field(s0.shape)
    dirs = half_sphere(n_dirs)
    b0_at = np.round(np.linspace(0, n_b0 + n_dirs, n_b0, endpoint=False)).astype(int)  # b0s spread through the series
    bvals, bvecs, dir_iter = [], [], iter(dirs)
    for k in range(n_b0 + n_dirs):
        is_b0 = k in b0_at
        bvals.append(0.0 if is_b0 else B_VALUE)
        bvecs.append(np.zeros(3) if is_b0 else next(dir_iter))
    bvals, bvecs = np.array(bvals), np.array(bvecs)
    volumes = []
    for b, g in zip(bvals, bvecs):
        signal = sum(classes[c] * _attenuation(DIFFUSIVITY[c], fibre, g, b) for c in classes)
        volumes.append(s0 * signal)
    clean = np.stack(volumes, -1).astype(np.float32)
    return Series("dwi_sim" + suffix, "dwi", rician(clean, sigma, seed), mask, source, clean=clean, bvals=bvals,
                  bvecs=bvecs, notes={"sigma": sigma, "b0": n_b0, "directions": n_dirs, "b": B_VALUE})


def simulate_fmri(sigma: float = FMRI_SIGMA, frames: int = 40, seed: int = 2028, heldout: bool = False) -> Series:
    """The fMRI-like series (module docstring), on the held-out anatomy where ``heldout``."""
    s0, mask, suffix, source = _anatomy(heldout, FMRI_CROP)
    gm = _classes(s0, mask)["gm"]
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in s0.shape], indexing="ij")
    blob = np.exp(-((x - 0.3) ** 2 + (y + 0.2) ** 2) / 0.08 - z**2 / 0.5) * gm
    t = np.arange(frames)
    drift = 0.005 * t / frames
    physio = 0.003 * np.sin(2 * np.pi * t / 7.3)
    block = ((t // 8) % 2 == 1).astype(np.float64) * 0.02
    clean = s0[..., None] * (1.0 + drift + physio + blob[..., None] * block)
    clean = clean.astype(np.float32)
    return Series("fmri_sim" + suffix, "fmri", rician(clean, sigma, seed), mask, source, clean=clean,
                  notes={"sigma": sigma, "frames": frames})


def _dipy_file(name: str) -> Path:
    import dipy.data

    return Path(os.path.dirname(dipy.data.__file__)) / "files" / name


def _nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))


def real_dwi(stem: str, max_b: float = 1600.0) -> Series:
    """DIPY's ``small_64D``, ``small_101D`` or ``small_25`` (its volumes with b <= ``max_b``: DTI's range)."""
    data = _nifti(_dipy_file(stem + (".nii" if stem == "small_64D" else ".nii.gz")))
    bvals = np.loadtxt(_dipy_file(stem + ".bval"))
    bvecs = np.loadtxt(_dipy_file(stem + ".bvec"))
    bvecs = bvecs.T if bvecs.shape[0] == 3 else bvecs
    keep = bvals <= max_b
    data, bvals, bvecs = data[..., keep], bvals[keep], bvecs[keep]
    mask = np.ones(data.shape[:3], dtype=bool)  # cut out of the brain: every voxel is tissue (b0 >= 61)
    return Series(stem.lower(), "dwi", data, mask, f"DIPY data/files/{stem}", bvals=bvals, bvecs=bvecs,
                  notes={"volumes": int(keep.sum())})


def real_fmri() -> Series:
    """nibabel's ``tests/data/functional.nii``: 17x21x3, 20 frames."""
    from nibabel.testing import data_path

    data = _nifti(Path(data_path) / "functional.nii")
    mean = data.mean(-1)
    return Series("functional", "fmri", data, mean > 0.5 * np.median(mean), "nibabel tests/data/functional.nii")


def load_series(names: list[str] | None = None, heldout: bool = False) -> list[Series]:
    """The benchmark's series, in order: ``dwi_sim``, ``fmri_sim``, ``small_64d``, ``small_101d``, ``functional``;
    where ``heldout``, the held-out ones: ``dwi_sim_heldout``, ``fmri_sim_heldout``, ``small_25``."""
    if heldout:
        loaders = {"dwi_sim_heldout": lambda: simulate_dwi(heldout=True),
                   "fmri_sim_heldout": lambda: simulate_fmri(heldout=True),
                   "small_25": lambda: real_dwi("small_25", max_b=2000.0)}  # one shell at b = 2000
    else:
        loaders = {"dwi_sim": simulate_dwi, "fmri_sim": simulate_fmri, "small_64d": lambda: real_dwi("small_64D"),
                   "small_101d": lambda: real_dwi("small_101D"), "functional": real_fmri}
    keys = [k for k in loaders if names is None or any(n in k for n in names)]
    return [loaders[k]() for k in keys]

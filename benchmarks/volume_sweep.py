"""Sweep of the 3D filter's settings against BM4D, in the same process, on DEVELOPMENT volumes only.

Volumes: the EPI volume (nibabel ``example4d``, frame 0, 128x96x24), the b0 volume of DIPY's ``small_64D.nii``
(10x10x10) and two crops of it (rows 2-7: 6x10x10; slices 3-5: 10x10x3), each scaled to [0, 1]. Noise: white
Gaussian sigma 0.05 (``g05``) and 0.1 (``g10``), Rician sigma 0.08 (``r08``), one fixed seed per volume and noise.
Sigma given to both (Rician: BM4D, then the Rician mean inverted with it), or with ``--blind`` found by each (BM4D:
scikit-image's sigma, the bright-block sigma for Rician). Each variant is a name and a JSON dict of
``preset_settings`` overrides (``"preset"`` picks the preset, ``default`` otherwise):

    python benchmarks/volume_sweep.py --vols epi,s64 base='{"ridge_volume_patch": 0}' default='{}'
    python benchmarks/volume_sweep.py --blind --vols epi quality='{"preset": "quality"}'

Prints, per case and variant, the PSNR and Dice differences to BM4D and the time over BM4D's (BM4D timed once per
volume, on its first noise). The held-out volumes (``benchmarks/heldout.py``) are not offered: never tune on them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anchors
import numpy as np
import torch
from common import load_nibabel_volume, noise_seed, otsu_dice, psnr, to_unit_range

from monai_dnaprior import denoise, preset_settings
from monai_dnaprior.intensity import IntensityWindow

NOISES = {"g05": ("gaussian", 0.05), "g10": ("gaussian", 0.1), "r08": ("rician", 0.08)}


def small_64d_b0() -> np.ndarray:
    """The lowest-b volume of DIPY's ``small_64D.nii`` (10x10x10), scaled to [0, 1]."""
    import dipy
    import nibabel as nib

    folder = Path(dipy.__file__).parent / "data" / "files"
    image = np.asarray(nib.load(folder / "small_64D.nii").dataobj, dtype=np.float32)
    return to_unit_range(image[..., int(np.argmin(np.load(folder / "small_64D.bvals.npy")))])


VOLUMES = {
    "epi": lambda: load_nibabel_volume().image,
    "s64": small_64d_b0,
    "s64crop": lambda: np.ascontiguousarray(small_64d_b0()[2:8]),
    "s64thin": lambda: np.ascontiguousarray(small_64d_b0()[:, :, 3:6]),
}


def add_noise(clean: np.ndarray, kind: str, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    return np.hypot(clean + sigma * rng.standard_normal(clean.shape),
                    sigma * rng.standard_normal(clean.shape)).astype(np.float32)


def bm4d(noisy: np.ndarray, kind: str, sigma: float, blind: bool) -> np.ndarray:
    if blind:
        return anchors.gaussian_pipeline(noisy) if kind == "gaussian" else anchors.rician_bm_pipeline(noisy)
    out = anchors.bm_denoise(noisy, sigma)
    return out if kind == "gaussian" else anchors.rician_mean_inverse(out, sigma)


def dnaprior(noisy: np.ndarray, kind: str, sigma: float, blind: bool, overrides: dict) -> np.ndarray:
    overrides = dict(overrides)
    config, _ = preset_settings(overrides.pop("preset", "default"), **overrides)
    if blind:
        return np.asarray(denoise(noisy[None], filter_config=config).image)[0]
    window = IntensityWindow.from_image(torch.from_numpy(noisy)[None], zero_based=kind != "gaussian")
    level = sigma / float(window.high - window.low)  # the package's levels are in its window's units
    return np.asarray(denoise(noisy[None], kind, level, filter_config=config).image)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blind", action="store_true", help="noise model and level found by each method")
    parser.add_argument("--vols", default="epi", help=f"comma-separated, of {sorted(VOLUMES)}")
    parser.add_argument("--noises", default="g05,g10,r08", help=f"comma-separated, of {sorted(NOISES)}")
    parser.add_argument("variants", nargs="+", help="NAME=JSON overrides")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = {v.split("=", 1)[0]: json.loads(v.split("=", 1)[1]) for v in args.variants}
    rows = []
    for volume in args.vols.split(","):
        clean, bm_seconds = VOLUMES[volume](), None
        for noise in args.noises.split(","):
            kind, sigma = NOISES[noise]
            noisy = add_noise(clean, kind, sigma, noise_seed(volume, noise))
            start = time.perf_counter()
            reference = bm4d(noisy, kind, sigma, args.blind)
            bm_seconds = bm_seconds or time.perf_counter() - start
            ref_psnr, ref_dice = psnr(clean, reference), otsu_dice(clean, reference)
            for name, overrides in variants.items():
                start = time.perf_counter()
                out = dnaprior(noisy, kind, sigma, args.blind, overrides)
                ratio = (time.perf_counter() - start) / bm_seconds
                rows.append((name, psnr(clean, out) - ref_psnr, otsu_dice(clean, out) - ref_dice, ratio))
                print(f"{volume} {noise} {name}: {rows[-1][1]:+.3f} dB, Dice {rows[-1][2]:+.4f}, {ratio:.3f}x BM4D "
                      f"(BM4D {ref_psnr:.2f} dB)", flush=True)
    for name in variants:
        mine = [r for r in rows if r[0] == name]
        print(f"{name}: mean {np.mean([r[1] for r in mine]):+.3f} dB, worst {min(r[1] for r in mine):+.3f}, "
              f"Dice {np.mean([r[2] for r in mine]):+.4f}, time {np.mean([r[3] for r in mine]):.3f}x")


if __name__ == "__main__":
    main()

"""Small slices: white noise on a small slice filled by anatomy must read white, coloured noise coloured.

    python benchmarks/small_slices.py --out bench_small            # dev and held-out: about 10 min on 1 thread
    python benchmarks/small_slices.py --quick --out /tmp/small     # one scan per group, one draw: about 1 min

Every 2D scan, dev (:func:`common.load_scans`) and held out (:func:`heldout.load_heldout`, never tuned on), is made
small five ways: cut to 64 and 100 px squares at its centre and at its corner, and area-averaged to 64 and 100 px on
its shorter side (sizes it is not larger than are left out); with the whole scan where it is small itself (at most
:data:`WHOLE` px on its shorter side), up to seven images, each scaled to [0, 1]. A small slice cut inside the body
has no background of pure noise: its flattest patches are anatomy, the case the colour test
(:func:`monai_dnaprior.noise.spectrum.colour_test`) must not read as colour.

- **white**: white Gaussian noise of sigma 0.02, 0.05 and 0.1 of the range (``--draws`` draws): ``DNAPriorDenoise()``
  (the default, noise model found blind) against BM3D given the true sigma, in the same process, and whether the
  package read the noise as coloured (``info["coloured"]``: a false colour);
- **coloured**: the same levels of resampled (1.67x), Gaussian-filtered (0.6 voxels) and Hann k-space noise
  (:data:`colour_test.COLOURED`): whether the noise field (Gaussian model) reads it as coloured.

Writes ``small_slices.md`` and ``small_slices.csv``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

import anchors
from colour_test import COLOURED, _flags
from common import (default_data_dir, dnaprior_denoiser, load_scans, machine_summary, markdown_table, noise_seed, psnr,
                    to_unit_range)
from heldout import load_heldout


SIGMAS = (0.02, 0.05, 0.1)
SIDES = (64, 100)
WHOLE = 128  # a scan this small (its shorter side) is a small slice whole too
NOISES = ("resampled 1.67x", "gaussian-filtered 0.6", "hann k-space")


def small_slices(name: str, image: np.ndarray) -> dict[str, np.ndarray]:
    """``image`` whole (where it is small itself), and cut to squares at its centre and corner and area-averaged to
    each of :data:`SIDES`; a cut that holds one value (a corner of a masked scan's zeros) is left out: it has no
    anatomy and no PSNR."""
    out = {name: to_unit_range(image)} if min(image.shape) <= WHOLE else {}
    for side in SIDES:
        if min(image.shape) <= side:
            continue
        r, c = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        out[f"{name}_centre{side}"] = to_unit_range(image[r:r + side, c:c + side])
        if np.ptp(image[:side, :side]) > 0:
            out[f"{name}_corner{side}"] = to_unit_range(image[:side, :side])
        size = tuple(round(s * side / min(image.shape)) for s in image.shape)
        area = torch.nn.functional.interpolate(torch.from_numpy(np.asarray(image, np.float64))[None, None], size=size,
                                               mode="area")
        out[f"{name}_area{side}"] = to_unit_range(area[0, 0].numpy())
    return out


def run_group(group: str, images: dict[str, np.ndarray], draws: int) -> list[dict[str, object]]:
    """Every white and coloured case of ``group``'s images: one row each."""
    dna = dnaprior_denoiser("auto")
    rows: list[dict[str, object]] = []
    for name, clean in images.items():
        for sigma in SIGMAS:
            for draw in range(draws):
                rng = np.random.default_rng([noise_seed(name, "small_slices"), int(1000 * sigma), draw])
                noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
                run = dna(noisy)
                reference = anchors.bm_denoise(noisy, sigma)
                rows.append({"group": group, "image": name, "shape": "x".join(map(str, clean.shape)), "noise": "white",
                             "sigma": sigma, "draw": draw, "coloured": bool(run.info.get("coloured")),
                             "dna_psnr": round(psnr(clean, run.output), 3),
                             "bm3d_psnr": round(psnr(clean, reference), 3)})
                for noise in NOISES:
                    shaped = COLOURED[noise](clean.shape, rng)
                    noisy = clean + sigma * shaped / shaped.std()
                    rows.append({"group": group, "image": name, "shape": "x".join(map(str, clean.shape)),
                                 "noise": noise, "sigma": sigma, "draw": draw, "coloured": _flags(noisy)[1],
                                 "dna_psnr": "", "bm3d_psnr": ""})
            print(f"{group} {name} sigma {sigma}: done", flush=True)
    return rows


def summary(rows: list[dict[str, object]]) -> list[str]:
    table = []
    for group in ("dev", "held-out"):
        white = [r for r in rows if r["group"] == group and r["noise"] == "white"]
        if not white:
            continue
        gaps = np.array([float(r["dna_psnr"]) - float(r["bm3d_psnr"]) for r in white])
        false = [r for r in white if r["coloured"]]
        worst = white[int(gaps.argmin())]
        table.append([group, "white", len(white), f"{len(false)} ({100 * len(false) / len(white):.1f} %)",
                      f"{gaps.mean():+.2f}", f"{gaps.min():+.2f} ({worst['image']}, {worst['sigma']})"])
        for noise in NOISES:
            cases = [r for r in rows if r["group"] == group and r["noise"] == noise]
            found = sum(bool(r["coloured"]) for r in cases)
            table.append([group, noise, len(cases), f"{found} detected ({100 * found / max(len(cases), 1):.0f} %)",
                          "", ""])
    return markdown_table(["group", "noise", "cases", "read as coloured", "DNA-Prior - BM3D given sigma, mean (dB)",
                           "worst (dB)"], table).splitlines()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_small"), help="output folder")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder of the shared NIfTI scans")
    p.add_argument("--draws", type=int, default=2, help="noise draws per image and level")
    p.add_argument("--quick", action="store_true", help="one scan per group, one draw (a smoke test)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    draws = 1 if args.quick else args.draws
    groups = {"dev": [s for s in load_scans(args.data_dir) if s.image.ndim == 2],
              "held-out": [s for s in load_heldout() if s.image.ndim == 2]}
    rows: list[dict[str, object]] = []
    for group, scans in groups.items():
        images: dict[str, np.ndarray] = {}
        for scan in scans[:1] if args.quick else scans:
            images.update(small_slices(scan.name, scan.image))
        rows += run_group(group, images, draws)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "small_slices.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    false = [r for r in rows if r["noise"] == "white" and r["coloured"]]
    lines = ["# Small slices: white noise must read white, coloured noise coloured", "",
             f"`python benchmarks/small_slices.py{' --quick' if args.quick else ''} --draws {draws}`. "
             f"{machine_summary()}. Total {(time.time() - start) / 60:.1f} min.", "",
             "Each 2D scan whole, cut to 64 and 100 px squares at its centre and corner, and area-averaged to 64 and "
             "100 px; white Gaussian noise (DNA-Prior's default, blind, against BM3D given the true sigma) and "
             "coloured noise (the noise field's colour flag) at sigma " + ", ".join(f"{s:g}" for s in SIGMAS) +
             " of the range. Held-out scans are reported, never tuned on.", "", *summary(rows), "",
             "## White noise read as coloured", "",
             markdown_table(["group", "image", "shape", "sigma", "draw", "DNA-Prior (dB)", "BM3D given sigma (dB)"],
                            [[r["group"], r["image"], r["shape"], r["sigma"], r["draw"], r["dna_psnr"], r["bm3d_psnr"]]
                             for r in false]), ""]
    (args.out / "small_slices.md").write_text("\n".join(lines))
    print(f"Wrote {args.out / 'small_slices.md'} in {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()

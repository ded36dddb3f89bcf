"""The noise map's false-alarm rate: stationary noise on clean anatomy must give no map.

    python benchmarks/false_maps.py --out bench_false_maps            # 6 draws: about 1 min on 1 thread
    python benchmarks/false_maps.py --draws 1 --out /tmp/fm            # smoke test, under a minute

Every dev scan (``common.load_scans``) and every held-out scan (``heldout.load_heldout``, never used for tuning) gets
stationary white Gaussian and Rician noise of sigma 0.02, 0.03, 0.05, 0.08 and 0.1 of the range (``--draws`` draws
each, fixed seeds), is windowed as :func:`monai_dnaprior.denoise` windows it, and its noise field is estimated
(:func:`monai_dnaprior.noise.estimate_noise_field`, the model named). A field with a level map is a false alarm; its
range is listed. Only the estimate runs (no denoising): what a false map costs is in ``docs/noise.md``. The power of
the same estimate (maps found where the noise varies) is ``nonstationary.py``'s. Writes ``false_maps.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import add_noise, default_data_dir, load_scans, machine_summary, markdown_table
from heldout import load_heldout, package_state

from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.noise import estimate_noise_field

SIGMAS = (0.02, 0.03, 0.05, 0.08, 0.1)
NOISES = ("gaussian", "rician")


def false_map(clean: np.ndarray, noise: str, sigma: float, seed: int) -> tuple[float, float] | None:
    """The range of the map read from ``clean`` with stationary ``noise``, or None where none is read."""
    y = torch.from_numpy(add_noise(clean, noise, seed, sigma))[None]
    window = IntensityWindow.from_image(y, zero_based=noise != "gaussian")
    field, _ = estimate_noise_field(window.normalize(y), clean.ndim, noise)
    return None if field.level_map is None else field.level_map.summary()[:2]


def run(groups: dict[str, list], draws: int) -> tuple[list[list[object]], list[list[object]]]:
    """Per group and noise: cases and false maps; and every false map found."""
    counts, found = [], []
    for group, scans in groups.items():
        for noise in NOISES:
            cases = alarms = 0
            for scan in scans:
                for sigma in SIGMAS:
                    for draw in range(draws):
                        cases += 1
                        read = false_map(scan.image, noise, sigma, 100 + draw)
                        if read is not None:
                            alarms += 1
                            found.append([group, scan.name, scan.shape_str, noise, sigma, draw,
                                          f"{read[0]:.2f}-{read[1]:.2f}"])
            counts.append([group, noise, cases, f"{alarms} ({100 * alarms / max(cases, 1):.1f} %)"])
            print(f"{group} {noise}: {alarms} false maps of {cases}", flush=True)
    return counts, found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench_false_maps"), help="output folder")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder of the shared NIfTI scans")
    p.add_argument("--draws", type=int, default=6, help="noise draws per scan, noise and sigma")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    counts, found = run({"dev": load_scans(args.data_dir), "held-out": load_heldout()}, args.draws)
    args.out.mkdir(parents=True, exist_ok=True)
    text = [
        "# The noise map's false alarms: stationary noise on clean anatomy",
        "",
        f"{package_state()}. {machine_summary()}. Total {(time.perf_counter() - start) / 60:.1f} min.",
        "",
        f"Sigma {', '.join(map(str, SIGMAS))} of the range, {args.draws} draws each (seeds 100 on); the noise field "
        "estimated with the model named. Dev scans decided the rules; held-out scans were never tuned on.",
        "",
        markdown_table(["group", "noise", "cases", "false maps"], counts),
        "",
        "## Every false map",
        "",
        markdown_table(["group", "scan", "size", "noise", "sigma", "draw", "map range"], found) if found else "None.",
        "",
    ]
    (args.out / "false_maps.md").write_text("\n".join(text))
    print(f"Wrote {args.out / 'false_maps.md'}")


if __name__ == "__main__":
    main()

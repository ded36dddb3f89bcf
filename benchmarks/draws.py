"""Robustness over noise draws: DNA-Prior as it comes against the best classical pipeline on several independent
noise draws of every case, where ``run.py`` takes one.

    python benchmarks/draws.py --out bench_draws                  # 4 draws a slice, 2 of the volume: ~10 min
    python benchmarks/draws.py --cases mr_small --draws 2 --out /tmp/d

One draw can flatter or wrong a method: the noise level read from it, and the noise model found, vary from draw to
draw. Draw ``k`` uses the seed ``noise_seed(scan, noise, 1000 k)``: draw 0 is ``run.py``'s noisy image. The best
classical pipeline of each draw is the best by PSNR of naive BM3D/BM4D and the anchors (``run.py``'s TV and NL-means
are never the best there). Writes ``draws.md`` and ``draws.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from common import (
    NOISE_DESCRIPTIONS,
    NOISES,
    add_noise,
    default_data_dir,
    dnaprior_denoiser,
    load_scans,
    machine_summary,
    markdown_table,
    noise_seed,
    psnr,
    warm_up,
)
from run import expert_methods

DRAW_SEED_STEP = 1000


@dataclass
class Draw:
    """DNA-Prior against the best classical pipeline on one noise draw of one case."""

    case: str
    noise: str
    draw: int
    dna_psnr: float
    best_classical: str
    best_psnr: float
    model_found: str

    @property
    def delta(self) -> float:
        return self.dna_psnr - self.best_psnr


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_draws"), help="output folder (default ./bench_draws)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder of real scans (shared/data)")
    p.add_argument("--cases", default=None, help="comma-separated substrings of the scan names to keep")
    p.add_argument("--noises", default=",".join(NOISES), help="comma-separated noise models")
    p.add_argument("--draws", type=int, default=4, help="noise draws per slice (default 4)")
    p.add_argument("--volume-draws", type=int, default=2, help="noise draws per volume (default 2: BM4D is slow)")
    p.add_argument("--preset", default="default", help="DNA-Prior preset")
    p.add_argument("--device", default=None, help="torch device for DNA-Prior (default: CUDA when present)")
    return p.parse_args(argv)


def run_draws(args: argparse.Namespace) -> list[Draw]:
    """Every case's draws: DNA-Prior (``noise_model="auto"``) and the classical pipelines on each."""
    dna = dnaprior_denoiser("auto", preset=args.preset, device=args.device)
    filters = args.cases.split(",") if args.cases else None
    draws = []
    for scan in load_scans(args.data_dir, None, filters):
        for noise in args.noises.split(","):
            classical = expert_methods(noise, scan.is_volume)
            for k in range(args.volume_draws if scan.is_volume else args.draws):
                noisy = add_noise(scan.image, noise, noise_seed(scan.name, noise, DRAW_SEED_STEP * k))
                scores = {name: psnr(scan.image, method(noisy).output) for name, method in classical.items()}
                best = max(scores, key=scores.get)
                run = dna(noisy)
                draws.append(Draw(scan.name, noise, k, psnr(scan.image, run.output), best, scores[best],
                                  str(run.info.get("noise_model", "?"))))
                print(f"  {scan.name} / {noise} / draw {k}: {draws[-1].delta:+.2f} dB ({draws[-1].model_found})",
                      file=sys.stderr, flush=True)
    return draws


def case_table(draws: list[Draw]) -> str:
    """One row per case: the difference on every draw, its mean and worst, and the noise model found."""
    rows = []
    for case, noise in dict.fromkeys((d.case, d.noise) for d in draws):
        mine = [d for d in draws if (d.case, d.noise) == (case, noise)]
        deltas = [d.delta for d in mine]
        right = sum(d.model_found == noise for d in mine)
        rows.append([case, noise, " ".join(f"{x:+.2f}" for x in deltas), f"{np.mean(deltas):+.2f}",
                     f"{min(deltas):+.2f}", f"{right}/{len(mine)}" + ("" if right == len(mine) else " (" + ", ".join(
                         sorted({d.model_found for d in mine if d.model_found != noise})) + ")")])
    return markdown_table(["case", "noise", "Δ per draw (dB)", "mean", "worst", "model found right"], rows)


def summary_table(draws: list[Draw]) -> str:
    """Per noise model and overall: mean difference, the draw's result against draw 0's, and the share within
    0.2 dB."""
    rows = []
    for noise in [*dict.fromkeys(d.noise for d in draws), None]:
        mine = [d for d in draws if noise is None or d.noise == noise]
        deltas = np.array([d.delta for d in mine])
        first = np.array([d.delta for d in mine if d.draw == 0])
        rows.append([noise or "**all**", f"{deltas.mean():+.2f}", f"{first.mean():+.2f}", f"{deltas.min():+.2f}",
                     f"{int((deltas >= -0.2).sum())}/{len(deltas)}",
                     f"{sum(d.model_found == d.noise for d in mine)}/{len(mine)}"])
    return markdown_table(["noise", "Δ mean, all draws", "Δ mean, draw 0 (run.py)", "worst", "draws within 0.2 dB",
                           "model found right"], rows)


def write(draws: list[Draw], args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "draws.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*asdict(draws[0]), "delta"])
        writer.writeheader()
        for d in draws:
            writer.writerow({**asdict(d), "delta": d.delta})
    noises = "; ".join(f"{n}: {NOISE_DESCRIPTIONS[n]}" for n in dict.fromkeys(d.noise for d in draws))
    text = (
        "# Robustness over noise draws\n\n"
        f"DNA-Prior preset `{args.preset}`, `noise_model=\"auto\"`; {machine_summary()}.\n"
        f"Noise: {noises}. {args.draws} draws a slice, {args.volume_draws} of the volume; draw 0 is `run.py`'s.\n"
        "Δ: DNA-Prior's PSNR minus the best classical pipeline's on the same draw (naive BM3D/BM4D, anchors).\n\n"
        f"{summary_table(draws)}\n\n{case_table(draws)}\n"
    )
    (args.out / "draws.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warm_up(args.device)
    write(run_draws(args), args)


if __name__ == "__main__":
    main()

"""Quality benchmark: DNA-Prior against BM3D/BM4D, TV and NL-means on real scans under every noise model.

    python benchmarks/run.py --quick --out bench_quick   # one scan, Gaussian noise: a minute or two on CPU
    python benchmarks/run.py --out bench_full            # every scan and noise model, 2D and a volume

Writes ``results.md``, ``results.csv``, ``fig_<case>.png`` and ``psnr_vs_time.png`` into ``--out`` and prints
the Markdown table. The clean reference is the real scan itself (scaled to [0, 1]); noise is added with a
fixed seed per (scan, noise).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from common import (
    ABLATION,
    NOISE_DESCRIPTIONS,
    NOISES,
    QUICK_CASE,
    Denoiser,
    MethodRun,
    Scan,
    add_noise,
    default_data_dir,
    dnaprior_denoiser,
    fmt,
    fmt_sig,
    load_scans,
    machine_summary,
    markdown_table,
    noise_seed,
    otsu_dice,
    peers,
    psnr,
    reference_method,
    refinement_only_denoiser,
    ssim,
    warm_up,
)
from plots import case_figure, psnr_time_figure

DNA = "DNA-Prior"


@dataclass
class Row:
    """One line of the results: a method on one noisy scan."""

    case: str
    shape: str
    noise: str
    method: str
    psnr: float
    ssim: float
    seconds: float
    dice: float
    reference: str
    dpsnr_vs_ref: float | None = None
    time_vs_ref: float | None = None
    iterations: int | None = None
    noise_level: float | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"only {QUICK_CASE} with Gaussian noise")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder (default ./bench_out)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder of the shared NIfTI scans")
    p.add_argument("--max-iters", type=int, default=None, help="cap DNA-Prior's iterations (smoke tests only)")
    p.add_argument("--preset", default="default", choices=("fast", "default", "quality"), help="DNA-Prior preset")
    p.add_argument("--cases", default=None, help="comma-separated substrings of the scan names to keep")
    p.add_argument("--noises", default=None, help=f"comma-separated noise models (default: all of {', '.join(NOISES)})")
    p.add_argument("--device", default=None, help="device of DNA-Prior (default: CUDA when available, else CPU)")
    p.add_argument("--seed", type=int, default=0, help="DNA-Prior's seed (the noise seeds are fixed per case)")
    return p.parse_args(argv)


def select(args: argparse.Namespace) -> tuple[list[Scan], list[str]]:
    """The scans and noise models this run covers."""
    filters = args.cases.split(",") if args.cases else None
    names = [QUICK_CASE] if args.quick else None
    noises = args.noises.split(",") if args.noises else (["gaussian"] if args.quick else list(NOISES))
    unknown = set(noises) - set(NOISES)
    if unknown:
        raise SystemExit(f"Unknown noise models {sorted(unknown)}; choose from {NOISES}.")
    return load_scans(args.data_dir, names, filters), noises


def methods_for(scan: Scan, noise: str, args: argparse.Namespace) -> dict[str, Denoiser]:
    """DNA-Prior with the matching noise model, then the peers (reference first)."""
    dna = dnaprior_denoiser(noise, preset=args.preset, max_iters=args.max_iters, device=args.device, seed=args.seed)
    ablation = refinement_only_denoiser(noise, preset=args.preset, device=args.device)
    return {DNA: dna, **peers(scan.is_volume), ABLATION: ablation}


def score(scan: Scan, noise: str, method: str, run: MethodRun) -> Row:
    """The metrics of one output against the clean scan."""
    clean = scan.image
    return Row(
        scan.name, scan.shape_str, noise, method, psnr(clean, run.output), ssim(clean, run.output), run.seconds,
        otsu_dice(clean, run.output), reference_method(scan.is_volume),
        iterations=run.info.get("iterations"), noise_level=run.info.get("noise_level"),
    )


def add_ratios(rows: list[Row]) -> None:
    """Fill each row's PSNR difference and time ratio to the reference peer of its case and noise."""
    refs = {(r.case, r.noise): r for r in rows if r.method == r.reference}
    for r in rows:
        ref = refs.get((r.case, r.noise))
        if ref is None or r.method == "noisy":
            continue
        r.dpsnr_vs_ref = r.psnr - ref.psnr
        r.time_vs_ref = r.seconds / ref.seconds if ref.seconds > 0 else None


def evaluate_case(scan: Scan, noise: str, args: argparse.Namespace) -> tuple[list[Row], dict[str, np.ndarray]]:
    """Every method on one noisy scan; returns the rows and the images the figure shows."""
    noisy = add_noise(scan.image, noise, noise_seed(scan.name, noise))
    rows = [score(scan, noise, "noisy", MethodRun(noisy, 0.0))]
    shown = {"noisy": noisy}
    for name, denoiser in methods_for(scan, noise, args).items():
        print(f"  {scan.name} / {noise} / {name} ...", end="", file=sys.stderr, flush=True)
        run = denoiser(noisy)
        rows.append(score(scan, noise, name, run))
        print(f" {rows[-1].psnr:.2f} dB in {run.seconds:.1f} s", file=sys.stderr, flush=True)
        if name in (DNA, reference_method(scan.is_volume)):
            shown[name] = run.output
    return rows, shown


TABLE_HEADERS = [
    "case", "size", "noise", "method", "PSNR (dB)", "SSIM", "seconds", "ΔPSNR vs ref (dB)", "time / ref",
    "Otsu Dice", "iters",
]


def table(rows: list[Row]) -> str:
    """The per-row results as Markdown."""
    cells = [
        [r.case, r.shape, r.noise, r.method, fmt(r.psnr), fmt(r.ssim, 3), fmt_sig(r.seconds), fmt(r.dpsnr_vs_ref, 2),
         fmt_sig(r.time_vs_ref), fmt(r.dice, 3), fmt(r.iterations)]
        for r in rows
    ]
    return markdown_table(TABLE_HEADERS, cells)


def summary(rows: list[Row]) -> str:
    """Per method: mean PSNR difference to the reference (per noise model and overall), geometric-mean time
    ratio, and how often it beats the reference."""
    compared = [r for r in rows if r.dpsnr_vs_ref is not None and r.method != r.reference]
    noises = list(dict.fromkeys(r.noise for r in compared))
    cells = []
    for method in dict.fromkeys(r.method for r in compared):
        sel = [r for r in compared if r.method == method]
        by_noise = [[r.dpsnr_vs_ref for r in sel if r.noise == n] for n in noises]
        per_noise = [fmt(float(np.mean(d))) if d else "" for d in by_noise]
        ratios = [r.time_vs_ref for r in sel if r.time_vs_ref]
        geo = float(np.exp(np.mean(np.log(ratios)))) if ratios else None
        wins = sum(r.dpsnr_vs_ref > 0 for r in sel)
        cells.append([method, len(sel), *per_noise, fmt(float(np.mean([r.dpsnr_vs_ref for r in sel]))),
                      fmt(float(np.mean([r.ssim for r in sel])), 3), fmt_sig(geo), f"{wins}/{len(sel)}"])
    headers = ["method", "cases", *[f"ΔPSNR {n}" for n in noises], "ΔPSNR all (dB)", "mean SSIM",
               "time / ref (geo. mean)", "beats ref"]
    return markdown_table(headers, cells)


def write_csv(path: Path, rows: list[Row]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def write_markdown(path: Path, rows: list[Row], noises: list[str], args: argparse.Namespace, seconds: float) -> None:
    noise_lines = "\n".join(f"- {n}: {NOISE_DESCRIPTIONS[n]}" for n in noises)
    figures = "\n\n".join(f"![{c}](fig_{c}.png)" for c in dict.fromkeys(r.case for r in rows))
    text = f"""# DNA-Prior quality benchmark

Mode: {"quick" if args.quick else "full"}; DNA-Prior preset `{args.preset}`,
max_iters {args.max_iters or "the preset's"}, seed {args.seed}, device {args.device or "auto"}.
Machine: {machine_summary()}. Total {seconds / 60:.1f} min.

Clean reference: each real scan scaled to [0, 1] (a real scan carries its own noise, so PSNR is against it).
PSNR and SSIM with data_range = clean.max() - clean.min(). Noise, fixed seed per (scan, noise):
{noise_lines}

Methods: DNA-Prior = `DNAPriorDenoise(noise_model=<the matching model>, preset=...)`, time = the whole transform
call (volumes: the default slice mode). Peers with the noise sigma estimated by `skimage.restoration.estimate_sigma`:
BM3D (`bm3d.bm3d`), BM4D (`bm4d.bm4d`, volumes), BM3D slice by slice (volumes), TV (`denoise_tv_chambolle`,
weight = sigma), NL-means (`denoise_nl_means`, fast mode, h = 0.8 sigma, 5x5 patches, distance 6).
For Poisson, Rician and speckle noise the peers run as users would run them, plainly on the noisy image with the
estimated sigma (no variance-stabilising transform), while DNA-Prior uses its matching noise model: keep that in
mind when reading those rows. The reference ("ref") is BM3D for 2D scans and BM4D for volumes.
Otsu Dice: multi-Otsu thresholds (3 classes) of the clean scan applied to the clean and to each output; mean
Dice over the two foreground classes against the clean segmentation.

Scans: every NIfTI of the shared data, pydicom's `CT_small.dcm` (`ct_small_2d`; its `MR_small.dcm` is already
`mr_small_2d`) and nibabel's `example4d.nii.gz` (first time point, `epi_volume_3d`).

## Summary

Mean over scans of the PSNR difference to the reference (dB; positive = better than BM3D/BM4D).

{summary(rows)}

## All results

{table(rows)}

## Figures

![PSNR against time](psnr_vs_time.png)

{figures}
"""
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scans, noises = select(args)
    warm_up(args.device)
    start, rows = time.perf_counter(), []
    for scan in scans:
        shown, psnrs = {}, {}
        for noise in noises:
            case_rows, images = evaluate_case(scan, noise, args)
            rows += case_rows
            shown[noise] = images
            psnrs[noise] = {r.method: r.psnr for r in case_rows}
        case_figure(args.out / f"fig_{scan.name}.png", scan.name, scan.image, shown, psnrs)
        add_ratios(rows)
        write_csv(args.out / "results.csv", rows)  # after every scan, so a long run leaves partial results
    psnr_time_figure(args.out / "psnr_vs_time.png", [asdict(r) for r in rows])
    write_markdown(args.out / "results.md", rows, noises, args, time.perf_counter() - start)
    print(summary(rows) + "\n\n" + table(rows))
    print(f"\nWrote {args.out}/results.md, results.csv, fig_*.png, psnr_vs_time.png", file=sys.stderr)


if __name__ == "__main__":
    main()

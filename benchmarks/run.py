"""Quality benchmark: DNA-Prior against the classical pipelines experts run (BM3D/BM4D with the matching
variance-stabilising transform, DIPY NL-means), naive BM3D/BM4D, TV and NL-means, on real scans under every noise model.

    python benchmarks/run.py --quick --out bench_quick   # one scan, Gaussian noise: a minute or two on CPU
    python benchmarks/run.py --out bench_full            # every scan and noise model, 2D and a volume

Writes ``results.md``, ``results.csv``, ``fig_<case>.png`` and ``psnr_vs_time.png`` into ``--out`` and prints
the Markdown table. The clean reference is the real scan itself (scaled to [0, 1]); noise is added with a
fixed seed per (scan, noise). The reference of each case is the best (highest PSNR) classical method of the run.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import anchors
import numpy as np
from common import (
    ABLATION,
    NOISE_DESCRIPTIONS,
    NOISE_PARAMS,
    NOISES,
    QUICK_CASE,
    Denoiser,
    MethodRun,
    Scan,
    add_noise,
    bm3d_denoise,
    default_data_dir,
    dnaprior_denoiser,
    fmt,
    fmt_sig,
    load_scans,
    machine_summary,
    markdown_table,
    noise_seed,
    otsu_dice,
    nlm_denoise,
    psnr,
    refinement_only_denoiser,
    ssim,
    timed,
    tv_denoise,
    warm_up,
)
from plots import case_figure, psnr_time_figure

DNA = "DNA-Prior"
NETWORK = "DNA-Prior, network fit (model given)"
NETWORK_MODELS = ("rician",)  # where the fit changes the result (it corrects the observation's bias)
NOT_CLASSICAL = (DNA, NETWORK, ABLATION, "noisy")


def naive_name(is_volume: bool) -> str:
    """The plain BM3D/BM4D row: white-noise sigma estimated on the noisy image, no variance-stabilising transform."""
    return f"{'BM4D' if is_volume else 'BM3D'} (white, no VST)"


def anchor_methods(noise: str, is_volume: bool) -> dict[str, Denoiser]:
    """The classical pipelines an expert runs for ``noise`` (:mod:`anchors`), BM3D in 2D and BM4D in 3D.

    For white Gaussian noise the naive row is the expert pipeline, so there is no extra anchor.
    """
    bm = "BM4D" if is_volume else "BM3D"
    if noise == "poisson":
        gain = 1.0 / NOISE_PARAMS["poisson"]  # y = gain * Poisson(x / gain), the gain known
        return {f"{bm} + Anscombe (gain known)": timed(lambda y: anchors.poisson_pipeline(y, gain))}
    if noise == "rician":
        return {
            f"{bm} + Rician mean inverse": timed(anchors.rician_bm_pipeline),
            "DIPY NL-means (Rician)": timed(lambda y: anchors.dipy_nlmeans(y, anchors.bright_block_sigma(y))),
        }
    if noise == "speckle":
        return {f"{bm} + log (bias corrected)": timed(anchors.speckle_pipeline)}
    return {}


def expert_methods(noise: str, is_volume: bool) -> dict[str, Denoiser]:
    """Naive BM3D/BM4D and the anchors for ``noise``: the candidates for the best classical pipeline."""
    return {naive_name(is_volume): timed(anchors.gaussian_pipeline), **anchor_methods(noise, is_volume)}


def classical_methods(noise: str, is_volume: bool) -> dict[str, Denoiser]:
    """Naive BM3D/BM4D, the anchors for ``noise``, BM3D slice by slice (volumes), TV and NL-means."""
    methods = expert_methods(noise, is_volume)
    if is_volume:
        methods["BM3D slices (white, no VST)"] = timed(bm3d_denoise)
    return {**methods, "TV (Chambolle)": timed(tv_denoise), "NL-means": timed(nlm_denoise)}


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
    reference: str = ""
    dpsnr_vs_ref: float | None = None
    time_vs_ref: float | None = None
    iterations: int | None = None
    noise_level: float | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"only {QUICK_CASE} with Gaussian noise")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder (default ./bench_out)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder of the shared NIfTI scans")
    p.add_argument("--max-iters", type=int, default=None,
                   help="cap the network's iterations where one is fitted (smoke tests only)")
    p.add_argument("--preset", default="default", choices=("fast", "default", "quality"), help="DNA-Prior preset")
    p.add_argument("--cases", default=None, help="comma-separated substrings of the scan names to keep")
    p.add_argument("--noises", default=None, help=f"comma-separated noise models (default: all of {', '.join(NOISES)})")
    p.add_argument("--device", default=None, help="device of DNA-Prior (default: CUDA when available, else CPU)")
    p.add_argument("--seed", type=int, default=0,
                   help="the network's seed where one is fitted (the noise seeds are fixed per case)")
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
    """DNA-Prior as it comes (``noise_model="auto"``, ``prior="auto"``), the classical methods, DNA-Prior with the
    matching noise model given and no network (the ablation), and where the fit changes the result (Rician) with
    the network's fit guiding the filter (``prior="network+filter"``; ``--max-iters`` and ``--seed`` act on it)."""
    dna = dnaprior_denoiser("auto", preset=args.preset, device=args.device)
    ablation = refinement_only_denoiser(noise, preset=args.preset, device=args.device)
    methods = {DNA: dna, **classical_methods(noise, scan.is_volume), ABLATION: ablation}
    if noise in NETWORK_MODELS:
        methods[NETWORK] = dnaprior_denoiser(noise, preset=args.preset, max_iters=args.max_iters, device=args.device,
                                             seed=args.seed, prior="network+filter")
    return methods


def score(scan: Scan, noise: str, method: str, run: MethodRun) -> Row:
    """The metrics of one output against the clean scan."""
    clean = scan.image
    return Row(
        scan.name, scan.shape_str, noise, method, psnr(clean, run.output), ssim(clean, run.output), run.seconds,
        otsu_dice(clean, run.output), iterations=run.info.get("iterations"), noise_level=run.info.get("noise_level"),
    )


def add_ratios(rows: list[Row]) -> None:
    """Name each (case, noise)'s reference, its best classical method by PSNR, and fill every row's PSNR difference
    and time ratio to it."""
    refs: dict[tuple[str, str], Row] = {}
    for r in rows:
        best = refs.get((r.case, r.noise))
        if r.method not in NOT_CLASSICAL and (best is None or r.psnr > best.psnr):
            refs[(r.case, r.noise)] = r
    for r in rows:
        ref = refs.get((r.case, r.noise))
        if ref is None:
            continue
        r.reference = ref.method
        if r.method == "noisy":
            continue
        r.dpsnr_vs_ref = r.psnr - ref.psnr
        r.time_vs_ref = r.seconds / ref.seconds if ref.seconds > 0 else None


def evaluate_case(scan: Scan, noise: str, args: argparse.Namespace) -> tuple[list[Row], dict[str, np.ndarray]]:
    """Every method on one noisy scan; returns the rows and the images the figure shows."""
    noisy = add_noise(scan.image, noise, noise_seed(scan.name, noise))
    rows = [score(scan, noise, "noisy", MethodRun(noisy, 0.0))]
    outputs = {"noisy": noisy}
    for name, denoiser in methods_for(scan, noise, args).items():
        print(f"  {scan.name} / {noise} / {name} ...", end="", file=sys.stderr, flush=True)
        run = denoiser(noisy)
        rows.append(score(scan, noise, name, run))
        outputs[name] = run.output
        print(f" {rows[-1].psnr:.2f} dB in {run.seconds:.1f} s", file=sys.stderr, flush=True)
    add_ratios(rows)
    ref = rows[0].reference
    return rows, {"noisy": noisy, DNA: outputs[DNA], f"ref: {ref}": outputs[ref]}


TABLE_HEADERS = [
    "case", "size", "noise", "method", "PSNR (dB)", "SSIM", "seconds", "ΔPSNR vs ref (dB)", "time / ref",
    "Otsu Dice", "iters", "ref (best classical)",
]


def table(rows: list[Row]) -> str:
    """The per-row results as Markdown."""
    cells = [
        [r.case, r.shape, r.noise, r.method, fmt(r.psnr), fmt(r.ssim, 3), fmt_sig(r.seconds), fmt(r.dpsnr_vs_ref, 2),
         fmt_sig(r.time_vs_ref), fmt(r.dice, 3), fmt(r.iterations), r.reference]
        for r in rows
    ]
    return markdown_table(TABLE_HEADERS, cells)


def anchor_check(rows: list[Row]) -> str:
    """Each anchor's PSNR gain over naive BM3D/BM4D on the same noisy scan (positive = the anchor earns its place)."""
    naive = {(r.case, r.noise): r for r in rows if r.method.endswith("(white, no VST)") and "slices" not in r.method}
    anchor_names = {n for noise in NOISES for v in (False, True) for n in anchor_methods(noise, v)}
    cells = [
        [r.case, r.noise, r.method, fmt(r.psnr), fmt(naive[(r.case, r.noise)].psnr),
         fmt(r.psnr - naive[(r.case, r.noise)].psnr)]
        for r in rows if r.method in anchor_names and (r.case, r.noise) in naive
    ]
    headers = ["case", "noise", "anchor", "PSNR (dB)", "naive PSNR (dB)", "anchor - naive (dB)"]
    return markdown_table(headers, cells) if cells else "(no anchor rows in this run)"


def summary(rows: list[Row]) -> str:
    """Per method: mean PSNR difference to the reference (per noise model and overall), geometric-mean time
    ratio, and how often it beats the reference."""
    compared = [r for r in rows if r.dpsnr_vs_ref is not None]
    noises = list(dict.fromkeys(r.noise for r in compared))
    cells = []
    for method in dict.fromkeys(r.method for r in compared):
        sel = [r for r in compared if r.method == method]
        by_noise = [[r.dpsnr_vs_ref for r in sel if r.noise == n] for n in noises]
        per_noise = [fmt(float(np.mean(d))) if d else "" for d in by_noise]
        ratios = [r.time_vs_ref for r in sel if r.time_vs_ref]
        geo = float(np.exp(np.mean(np.log(ratios)))) if ratios else None
        wins = sum(r.dpsnr_vs_ref >= 0 for r in sel)
        cells.append([method, len(sel), *per_noise, fmt(float(np.mean([r.dpsnr_vs_ref for r in sel]))),
                      fmt(float(np.mean([r.ssim for r in sel])), 3), fmt_sig(geo), f"{wins}/{len(sel)}"])
    headers = ["method", "cases", *[f"ΔPSNR {n}" for n in noises], "ΔPSNR all (dB)", "mean SSIM",
               "time / ref (geo. mean)", "matches or beats ref"]
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
network max_iters {args.max_iters or "the preset's"}, network seed {args.seed}, device {args.device or "auto"}.
Machine: {machine_summary()}. Total {seconds / 60:.1f} min.

Clean reference: each real scan scaled to [0, 1] (a real scan carries its own noise, so PSNR is against it).
PSNR and SSIM with data_range = clean.max() - clean.min(). Noise, fixed seed per (scan, noise):
{noise_lines}

Methods: DNA-Prior = `DNAPriorDenoise(preset=...)` as it comes (noise model chosen from the image, `prior="auto"`:
the filter), time = the whole transform call. Network row (Rician): `prior="network+filter"`, the network's fit
guiding the filter (volumes: the default slice mode); max_iters and seed act on it only.
Classical pipelines, as experts run them (`benchmarks/anchors.py`):
- Poisson, `y = a Poisson(x / a)` with the gain `a` known: generalized Anscombe `2 sqrt(y / a + 3/8)`, BM3D/BM4D with
  sigma 1, the closed-form unbiased inverse (Makitalo & Foi 2011), times `a`.
- Rician: BM3D/BM4D on the magnitude with sigma = Haar-MAD over the bright 2x2(x2) blocks (mean above 3 sigma and
  in the top half), then the Rician mean `sigma sqrt(pi/2) L_1/2(-x^2 / 2 sigma^2)` inverted by a lookup table;
  and DIPY `nlmeans(rician=True)` (blockwise, its defaults) with the same bright-block sigma.
- Speckle: log (floored at 1e-3 of the max), BM3D/BM4D with the log-domain sigma from the bright blocks, the bias
  `digamma(L) - log(L)` of the L that sigma implies removed, exp.
- Gaussian: BM3D/BM4D with sigma by `skimage.restoration.estimate_sigma`.
Naive rows, for every noise: BM3D/BM4D (white, no VST) with the scikit-image sigma on the noisy image; volumes also
BM3D slice by slice; TV (`denoise_tv_chambolle`, weight = sigma) and NL-means (`denoise_nl_means`, fast mode,
h = 0.8 sigma, 5x5 patches, distance 6). The reference ("ref") of each (scan, noise) is the best classical method
of the run by PSNR (named in the last column of the full table); the ablation and DNA-Prior never are.
Otsu Dice: multi-Otsu thresholds (3 classes) of the clean scan applied to the clean and to each output; mean
Dice over the two foreground classes against the clean segmentation.

Scans: every NIfTI of the shared data, pydicom's `CT_small.dcm` (`ct_small_2d`; its `MR_small.dcm` is already
`mr_small_2d`) and nibabel's `example4d.nii.gz` (first time point, `epi_volume_3d`).

## Summary

Mean over scans of the PSNR difference to the reference, the best classical method of each case (dB; positive = better).

{summary(rows)}

## Anchors against naive BM3D/BM4D

{anchor_check(rows)}

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
            psnrs[noise] = {r.method: r.psnr for r in case_rows} | {f"ref: {r.method}": r.psnr for r in case_rows}
        case_figure(args.out / f"fig_{scan.name}.png", scan.name, scan.image, shown, psnrs)
        add_ratios(rows)
        write_csv(args.out / "results.csv", rows)  # after every scan, so a long run leaves partial results
    psnr_time_figure(args.out / "psnr_vs_time.png", [asdict(r) for r in rows])
    write_markdown(args.out / "results.md", rows, noises, args, time.perf_counter() - start)
    print(summary(rows) + "\n\n" + table(rows))
    print(f"\nWrote {args.out}/results.md, results.csv, fig_*.png, psnr_vs_time.png", file=sys.stderr)


if __name__ == "__main__":
    main()

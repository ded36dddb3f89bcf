"""The presets side by side against the best classical pipeline of each case, with their times (issue 28).

    python benchmarks/ceiling.py --out bench_ceiling                 # dev scans, every noise model, three presets
    python benchmarks/ceiling.py --heldout --out bench_ceiling_ho    # the held-out scans (benchmarks/heldout.py)
    python benchmarks/ceiling.py --quick --out bench_ceiling_quick   # two dev slices, Gaussian noise

Every case: a real scan (dev: ``common.load_scans``; ``--heldout``: ``heldout.load_heldout``, never used for tuning)
with one noise model of ``common.NOISE_PARAMS`` (fixed seed per scan and noise). Peers: the pipelines an expert runs
for that noise (``run.expert_methods``: BM3D/BM4D with sigma estimated, and with the matching variance-stabilising
transform or the Rician mean inverted; DIPY NL-means for Rician), the best of them by PSNR being the case's
reference. DNA-Prior as it comes (``DNAPriorDenoise(preset=...)``, noise model found blind) in each preset, its
PSNR difference to the reference and its time over the reference's time. No public LIChI, NL-Ridge or WNNM installs
from PyPI, so none runs as a peer here. Writes ``ceiling.md`` and ``ceiling.csv`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from common import (
    NOISES,
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
    psnr,
    warm_up,
)
from heldout import load_heldout, package_state
from run import expert_methods

PRESETS = ("fast", "default", "quality")
FAILURES: list[str] = []  # methods that raised, reported in ceiling.md
QUICK = ("mr_small_2d", "ct_small_2d")
TARGETS = {"quality": (0.25, -0.05, None), "default": (0.10, None, 1.5)}  # mean gain, worst case, time ratio


@dataclass
class Row:
    """One method on one noisy scan."""

    case: str
    shape: str
    noise: str
    method: str
    psnr: float
    seconds: float
    dice: float
    reference: str = ""
    dpsnr: float | None = None
    time_ratio: float | None = None


def evaluate(scan, noise: str, presets: list[str]) -> list[Row]:
    """The classical pipelines and DNA-Prior's presets on one noisy scan, each row against the best pipeline."""
    noisy = add_noise(scan.image, noise, noise_seed(scan.name, noise))
    methods = dict(expert_methods(noise, scan.is_volume))
    methods.update({f"DNA-Prior {p}": dnaprior_denoiser("auto", preset=p) for p in presets})
    rows = []
    for name, method in methods.items():
        print(f"  {scan.name} / {noise} / {name} ...", end="", file=sys.stderr, flush=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run = method(noisy)
        except Exception as error:  # noqa: BLE001 (a benchmark reports a failing method and goes on)
            print(f" failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            FAILURES.append(f"{scan.name} / {noise} / {name}: {type(error).__name__}: {error}")
            continue
        rows.append(Row(scan.name, scan.shape_str, noise, name, psnr(scan.image, run.output), run.seconds,
                        otsu_dice(scan.image, run.output)))
        print(f" {rows[-1].psnr:.2f} dB in {run.seconds:.2f} s", file=sys.stderr, flush=True)
    ref = max((r for r in rows if not r.method.startswith("DNA-Prior")), key=lambda r: r.psnr)
    for r in rows:
        r.reference, r.dpsnr = ref.method, r.psnr - ref.psnr
        r.time_ratio = r.seconds / ref.seconds if ref.seconds > 0 else None
    return rows


def summary(rows: list[Row], presets: list[str]) -> str:
    """Per preset: mean PSNR difference to the reference per noise model and overall, the worst case, the
    geometric-mean time ratio, and whether the issue's targets are met."""
    noises = list(dict.fromkeys(r.noise for r in rows))
    cells = []
    for p in presets:
        sel = [r for r in rows if r.method == f"DNA-Prior {p}"]
        if not sel:
            continue
        d = [r.dpsnr for r in sel]
        per = [fmt(float(np.mean([r.dpsnr for r in sel if r.noise == n]))) for n in noises]
        geo = float(np.exp(np.mean(np.log([r.time_ratio for r in sel]))))
        worst = min(sel, key=lambda r: r.dpsnr)
        mean_target, worst_target, time_target = TARGETS.get(p, (None, None, None))
        met = []
        if mean_target is not None:
            met.append(f"mean >= +{mean_target}: {'yes' if np.mean(d) >= mean_target else 'no'}")
        if worst_target is not None:
            met.append(f"worst >= {worst_target}: {'yes' if worst.dpsnr >= worst_target else 'no'}")
        if time_target is not None:
            met.append(f"time <= {time_target}x: {'yes' if geo <= time_target else 'no'}")
        cells.append([p, len(sel), *per, fmt(float(np.mean(d))), f"{worst.dpsnr:+.2f} ({worst.case}, {worst.noise})",
                      f"{sum(x >= 0 for x in d)}/{len(d)}", fmt_sig(geo), "; ".join(met)])
    headers = ["preset", "cases", *[f"Δ {n}" for n in noises], "Δ all (dB)", "worst (dB)", "at or above ref",
               "time / ref (geo. mean)", "issue 28 targets"]
    return markdown_table(headers, cells)


def case_table(rows: list[Row], presets: list[str]) -> str:
    """One line per case: the reference's PSNR and time, each preset's difference and time ratio."""
    cells = []
    for key in dict.fromkeys((r.case, r.noise) for r in rows):
        sel = {r.method: r for r in rows if (r.case, r.noise) == key}
        ref = sel[next(iter(sel.values())).reference]
        line = [key[0], ref.shape, key[1], ref.method, fmt(ref.psnr), fmt_sig(ref.seconds)]
        for p in presets:
            r = sel.get(f"DNA-Prior {p}")
            line += [fmt(r.dpsnr, 2) if r else "", fmt_sig(r.time_ratio) if r else ""]
        if "x" in ref.shape and ref.shape.count("x") == 2:  # volumes: the tissue Dice too
            line.append(" / ".join(f"{sel[m].dice:.3f}" for m in [ref.method] + [f"DNA-Prior {p}" for p in presets]
                                   if m in sel))
        else:
            line.append("")
        cells.append(line)
    headers = ["case", "size", "noise", "reference (best classical)", "ref PSNR", "ref s"]
    for p in presets:
        headers += [f"{p} Δ", f"{p} time/ref"]
    return markdown_table(headers + ["Dice ref / presets (3D)"], cells)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_ceiling"))
    p.add_argument("--heldout", action="store_true", help="the held-out scans instead of the dev scans")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)} with Gaussian noise")
    p.add_argument("--cases", default=None, help="comma-separated substrings of the scan names")
    p.add_argument("--noises", default=None, help=f"comma-separated noise models (default: {', '.join(NOISES)})")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    filters = args.cases.split(",") if args.cases else None
    if args.heldout:
        scans = load_heldout(None, filters)
    else:
        scans = load_scans(args.data_dir, list(QUICK) if args.quick else None, filters)
    noises = args.noises.split(",") if args.noises else (["gaussian"] if args.quick else list(NOISES))
    presets = args.presets.split(",")
    warm_up()
    start, rows = time.perf_counter(), []
    for scan in scans:
        for noise in noises:
            rows += evaluate(scan, noise, presets)
            with open(args.out / "ceiling.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
                writer.writeheader()
                writer.writerows(asdict(r) for r in rows)
    text = f"""# The presets against the best classical pipeline ({'held-out' if args.heldout else 'dev'} scans)

`python benchmarks/ceiling.py {' '.join(sys.argv[1:])}`: {package_state()}.
Machine: {machine_summary()}. Total {(time.perf_counter() - start) / 60:.1f} min.
Every case: {__doc__.split("Every case:")[1].split("Writes")[0].strip()}

## Summary

Δ: PSNR difference to the case's best classical pipeline (dB; positive = DNA-Prior better); time / ref: DNA-Prior's
time over that pipeline's.

{summary(rows, presets)}

## Cases

{case_table(rows, presets)}

Failed runs: {"; ".join(FAILURES) if FAILURES else "none"}.
"""
    (args.out / "ceiling.md").write_text(text)
    print(summary(rows, presets) + "\n\n" + case_table(rows, presets))


if __name__ == "__main__":
    main()

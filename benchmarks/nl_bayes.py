"""The NL-Bayes step's worth: every 2D scan x every noise model, the filter with the step and without it.

The default filter (step on) against ``FilterConfig(bayes_patch=0)`` (step off), both with the noise model found
blind.

    python benchmarks/nl_bayes.py --out bench_nlb     # 5 slices x 4 noises x 2 settings, ~1 min on 1 thread
    python benchmarks/nl_bayes.py --cases mr_small --noises gaussian --out /tmp/nlb     # smoke test

Writes ``nl_bayes.md``: PSNR with the step on and off, the difference, and the seconds of each (no uncertainty map).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from common import NOISES, add_noise, default_data_dir, load_scans, noise_seed, psnr

from monai_dnaprior import FilterConfig, denoise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_nlb"))
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--cases", default=None, help="comma-separated substrings of the scan names to keep")
    parser.add_argument("--noises", default=",".join(NOISES), help="comma-separated noise models (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = ["| scan | noise | on dB | off dB | on - off | on s | off s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    noises = args.noises.split(",")
    gains: dict[str, list[float]] = {n: [] for n in noises}
    scans = load_scans(args.data_dir, filters=args.cases.split(",") if args.cases else None)
    for scan in [s for s in scans if not s.is_volume]:
        for noise in noises:
            noisy = torch.tensor(add_noise(scan.image, noise, noise_seed(scan.name, noise)))[None]
            on = denoise(noisy)
            off = denoise(noisy, filter_config=FilterConfig(bayes_patch=0))
            p_on, p_off = psnr(scan.image, on.image[0].numpy()), psnr(scan.image, off.image[0].numpy())
            gains[noise].append(p_on - p_off)
            rows.append(f"| {scan.name} | {noise} | {p_on:.2f} | {p_off:.2f} | {p_on - p_off:+.3f} | "
                        f"{on.info['seconds']:.2f} | {off.info['seconds']:.2f} |")
            print(rows[-1], on.info["noise_model"], flush=True)
    rows += ["", "| noise | mean gain dB |", "| --- | --- |"]
    rows += [f"| {n} | {sum(g) / len(g):+.3f} |" for n, g in gains.items() if g]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nl_bayes.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows[-len(gains) - 2 :]))


if __name__ == "__main__":
    sys.exit(main())

"""The NL-Bayes step's worth: every 2D scan x every noise model, the default (step on) against ``bayes_patch=0``.

    python benchmarks/nl_bayes.py --out bench_nlb     # 5 slices x 4 noises x 2 settings, ~1 min on 1 thread

Writes ``nl_bayes.md``: PSNR with the step on and off, the difference, and the seconds of each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from common import NOISES, add_noise, default_data_dir, load_scans, noise_seed, psnr

from monai_dnaprior import FitConfig, denoise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_nlb"))
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = ["| scan | noise | on dB | off dB | on - off | on s | off s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    gains: dict[str, list[float]] = {n: [] for n in NOISES}
    for scan in [s for s in load_scans(args.data_dir) if not s.is_volume]:
        for noise in NOISES:
            noisy = torch.tensor(add_noise(scan.image, noise, noise_seed(scan.name, noise)))[None]
            on = denoise(noisy, seed=0)
            off = denoise(noisy, seed=0, config=FitConfig(bayes_patch=0))
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

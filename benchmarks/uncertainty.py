"""Does the uncertainty map predict the error? Block RMS of the map vs. of the actual error, per scan and noise model.

For every scan (the 2D dev scans, pydicom's CT, optionally nibabel's EPI volume) and noise model, DNA-Prior's map
``u`` is compared with the actual error ``e = denoised - clean`` over 8x8 blocks (8x8x1 in a volume):

- Spearman: rank correlation between the blocks' ``sqrt(mean u^2)`` and ``sqrt(mean e^2)``;
- calibration: ``sqrt(mean u^2) / RMSE`` over the image (the map's predicted RMSE over the actual; 1 is exact), and
  ``mean(u) / RMSE``;
- a reliability figure: blocks binned by predicted error, mean actual error per bin, against the diagonal;
- with ``--draws N``, the same over N noise draws of every case (seeds ``noise_seed(case, noise, 1000 k)``, as
  ``draws.py``; draw 0 is the main table's): the mean and the lowest Spearman and the mean calibration.

The seconds are the whole transform with the map (``denoise_with_uncertainty``) and without it (``__call__``).

    python benchmarks/uncertainty.py --out benchmarks/results/uncertainty [--pilot network] [--volume] [--draws 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    NOISE_DESCRIPTIONS,
    NOISES,
    VOLUME_CASE,
    add_noise,
    default_data_dir,
    fmt,
    load_scans,
    machine_summary,
    markdown_table,
    noise_seed,
)

BLOCK = 8
TARGET_SPEARMAN = 0.6
TARGET_CALIBRATION = (0.8, 1.25)


def block_rms(sq: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """``sqrt`` of the mean of ``sq`` over non-overlapping ``block`` x ``block`` (x 1) blocks, flattened."""
    h, w = sq.shape[0] // block * block, sq.shape[1] // block * block
    sq = sq[:h, :w]
    shape = (h // block, block, w // block, block) + sq.shape[2:]
    return np.sqrt(sq.reshape(shape).mean((1, 3))).ravel()


def _meets(spearman: float, calibration: float) -> bool:
    return spearman >= TARGET_SPEARMAN and TARGET_CALIBRATION[0] <= calibration <= TARGET_CALIBRATION[1]


def evaluate(clean: np.ndarray, denoised: np.ndarray, unc: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    err2 = (denoised.astype(np.float64) - clean) ** 2
    rmse = float(np.sqrt(err2.mean()))
    pred, actual = block_rms(unc.astype(np.float64) ** 2), block_rms(err2)
    return {
        "rmse": rmse,
        "pred_rmse": float(np.sqrt((unc.astype(np.float64) ** 2).mean())),
        "spearman": float(spearmanr(pred, actual)[0]),
        "calibration": float(np.sqrt((unc.astype(np.float64) ** 2).mean())) / rmse,
        "mean_calibration": float(unc.mean()) / rmse,
        "blocks": (pred, actual),
    }


def reliability_figure(results: list[dict], path: Path, bins: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = sorted({r["noise"] for r in results}, key=list(NOISES).index)
    fig, axes = plt.subplots(1, len(noises), figsize=(4.2 * len(noises), 4), squeeze=False)
    for ax, noise in zip(axes[0], noises):
        top = 0.0
        for r in (r for r in results if r["noise"] == noise):
            pred, actual = r["blocks"]
            edges = np.unique(np.quantile(pred, np.linspace(0, 1, bins + 1)))
            which = np.clip(np.digitize(pred, edges[1:-1]), 0, len(edges) - 2)
            p = [np.sqrt((pred[which == k] ** 2).mean()) for k in range(len(edges) - 1) if (which == k).any()]
            a = [np.sqrt((actual[which == k] ** 2).mean()) for k in range(len(edges) - 1) if (which == k).any()]
            ax.plot(p, a, "o-", ms=3, label=f"{r['case']} (rho {r['spearman']:.2f})")
            top = max(top, max(p), max(a))
        ax.plot([0, top], [0, top], "k--", lw=1, label="ideal")
        ax.set_title(f"{noise}")
        ax.set_xlabel("predicted block RMS error")
        ax.set_ylabel("actual block RMS error")
        ax.legend(fontsize=6)
    fig.suptitle(f"DNA-Prior uncertainty: reliability over {BLOCK}x{BLOCK} blocks (binned by prediction)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "uncertainty")
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--preset", default="default")
    parser.add_argument("--pilot", default=None, help="network, thresholded or auto (the preset's when omitted)")
    parser.add_argument("--max-iters", type=int, default=None)
    parser.add_argument("--noises", nargs="*", default=list(NOISES))
    parser.add_argument("--cases", nargs="*", default=None, help="substrings of the scan names to keep")
    parser.add_argument("--volume", action="store_true", help="also the EPI volume (nibabel example4d, t=0)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--draws", type=int, default=1, help="noise draws per case (the first is the main table's)")
    args = parser.parse_args()

    import torch

    from monai_dnaprior import DNAPriorDenoise

    scans = [s for s in load_scans(args.data, filters=args.cases) if args.volume or s.name != VOLUME_CASE]
    args.out.mkdir(parents=True, exist_ok=True)
    results, rows, draw_rows = [], [], []
    for scan in scans:
        for noise in args.noises:
            transform = DNAPriorDenoise(noise_model=noise, preset=args.preset, max_iters=args.max_iters,
                                        pilot=args.pilot, device=args.device)
            draws, first = [], add_noise(scan.image, noise, noise_seed(scan.name, noise))
            for k in range(args.draws):
                noisy = first if k == 0 else add_noise(scan.image, noise, noise_seed(scan.name, noise, 1000 * k))
                start = time.perf_counter()
                out, unc = transform.denoise_with_uncertainty(noisy[None])
                seconds = time.perf_counter() - start
                out, unc = np.asarray(out[0]), np.asarray(unc[0])
                draws.append(evaluate(scan.image, out, unc) | {"case": scan.name, "noise": noise, "seconds": seconds})
            start = time.perf_counter()
            transform(first[None])
            plain = time.perf_counter() - start
            r = draws[0]
            results.append(r)
            rows.append([scan.name, noise, fmt(r["rmse"], 4), fmt(r["pred_rmse"], 4), fmt(r["spearman"]),
                         fmt(r["calibration"]), fmt(r["mean_calibration"]), fmt(r["seconds"], 1), fmt(plain, 1),
                         "yes" if _meets(r["spearman"], r["calibration"]) else "no"])
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
            if args.draws > 1:
                spearman = [d["spearman"] for d in draws]
                calibration = float(np.mean([d["calibration"] for d in draws]))
                draw_rows.append([scan.name, noise, fmt(float(np.mean(spearman)), 3), fmt(min(spearman)),
                                  fmt(calibration), "yes" if _meets(float(np.mean(spearman)), calibration) else "no"])
    table = markdown_table(["scan", "noise", "RMSE", "predicted RMSE", f"Spearman ({BLOCK}x{BLOCK})",
                            "calibration (RMS)", "calibration (mean)", "seconds", "seconds without the map",
                            "meets targets"], rows)
    figure = args.out / "reliability.png"
    reliability_figure(results, figure)
    text = [
        "# Uncertainty map: predicted vs. actual error",
        "",
        f"DNA-Prior preset `{args.preset}`, pilot `{args.pilot or 'preset default'}`"
        + (f", max_iters {args.max_iters}" if args.max_iters else "") + f"; {machine_summary()}.",
        "Noise: " + "; ".join(f"{n}: {NOISE_DESCRIPTIONS[n]}" for n in args.noises) + ".",
        f"Spearman: blocks' RMS of the map vs. of the actual error over {BLOCK}x{BLOCK} blocks (target >= "
        f"{TARGET_SPEARMAN}). Calibration (RMS): the map's RMS over the actual RMSE (target {TARGET_CALIBRATION[0]}-"
        f"{TARGET_CALIBRATION[1]}); (mean): the map's mean over the RMSE.",
        "",
        table,
        "",
        f"![reliability]({figure.name})",
        "",
    ]
    if draw_rows:
        text += [
            f"Over {args.draws} noise draws of every case (draw 0 is the table above's):",
            "",
            markdown_table(["scan", "noise", "Spearman (mean)", "Spearman (lowest)", "calibration (mean)",
                            "meets targets on average"], draw_rows),
            "",
        ]
    (args.out / "README.md").write_text("\n".join(text))
    print(f"wrote {args.out / 'README.md'} and {figure}")
    del torch


if __name__ == "__main__":
    main()

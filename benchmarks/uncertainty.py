"""Does the uncertainty map predict the error? Block RMS of the map vs. of the actual error, per scan and noise model.

For every scan (the 2D dev scans, pydicom's CT, optionally nibabel's EPI volume) and noise model, DNA-Prior's map
``u`` is compared with the actual error ``e = denoised - clean`` over 8x8 blocks (8x8x1 in a volume):

- Spearman: rank correlation between the blocks' ``sqrt(mean u^2)`` and ``sqrt(mean e^2)``;
- calibration: ``sqrt(mean u^2) / RMSE`` over the image (the map's predicted RMSE over the actual; 1 is exact), and
  ``mean(u) / RMSE``;
- a reliability figure: blocks binned by predicted error, mean actual error per bin, against the diagonal;
- with ``--draws N``, the same over N noise draws of every case (seeds ``noise_seed(case, noise, 1000 k)``, as
  ``draws.py``; draw 0 is the main table's): the mean and the lowest Spearman and the mean calibration; and, with
  N >= 3, what a map could reach: each draw's actual block errors against the expected error, estimated as the
  other draws' RMS (a map that knew the expected error exactly would reach about this, the draw's own noise in
  the error being unpredictable from its expectation), the draw's map against that expected error, and the next
  draw's map against the draw's actual error (a map made the same way, from noise independent of the draw's);
- with ``--coloured``, also the 2D cases of ``coloured.py`` (noise made by the scanner's physics), the noise model
  and spectrum found blind by the transform, as a user gets them.
- with ``--series``, also the simulated series of ``series.py`` (DWI-like, Rician; fMRI-like, Gaussian), denoised as
  a series (the network and SURE's blend included) with the noise model found blind, over 8x8 blocks of every slice
  of every volume; their noise draw is ``series_data``'s own (one).

The seconds are the whole transform with the map (``denoise_with_uncertainty``) and without it (``__call__``).

    python benchmarks/uncertainty.py --out benchmarks/results/uncertainty [--prior network+filter] [--volume]
        [--coloured] [--series] [--draws 8]
    python benchmarks/uncertainty.py --out /tmp/u --cases mr_small --noises gaussian     # smoke test
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
    fits_network,
    fmt,
    load_scans,
    machine_summary,
    markdown_table,
    network_options,
    noise_seed,
)

BLOCK = 8
TARGET_SPEARMAN = 0.6
TARGET_CALIBRATION = (0.8, 1.25)
COLOURED = "coloured"  # the noise column of coloured.py's cases (the transform finds the model and spectrum itself)


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


def reach_spearman(draws: list[dict]) -> tuple[float, float, float]:
    """Mean over draws of Spearman(the draw's actual block errors, the expected error), Spearman(the draw's map, the
    expected error), the expected error of each draw's blocks estimated as the other draws' RMS, and Spearman(the
    next draw's map, the draw's actual block errors): a map made the same way from an independent noise draw."""
    from scipy.stats import spearmanr

    actual = np.stack([d["blocks"][1] for d in draws])
    reached, predicted, independent = [], [], []
    for k, d in enumerate(draws):
        expected = np.sqrt((np.delete(actual, k, axis=0) ** 2).mean(0))
        reached.append(spearmanr(actual[k], expected)[0])
        predicted.append(spearmanr(d["blocks"][0], expected)[0])
        independent.append(spearmanr(draws[(k + 1) % len(draws)]["blocks"][0], actual[k])[0])
    return float(np.mean(reached)), float(np.mean(predicted)), float(np.mean(independent))


def reliability_figure(results: list[dict], path: Path, bins: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = sorted({r["noise"] for r in results}, key=[*NOISES, COLOURED, "series"].index)
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
    parser.add_argument("--prior", default="auto", help="auto (the filter), filter, network or network+filter")
    parser.add_argument("--max-iters", type=int, default=None, help="cap the network's iterations where one is fitted")
    parser.add_argument("--noises", nargs="*", default=list(NOISES))
    parser.add_argument("--cases", nargs="*", default=None, help="substrings of the scan names to keep")
    parser.add_argument("--volume", action="store_true", help="also the EPI volume (nibabel example4d, t=0)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--draws", type=int, default=1, help="noise draws per case (the first is the main table's)")
    parser.add_argument("--coloured", action="store_true",
                        help="also the 2D cases of coloured.py (noise made by the scanner's physics), model found blind")
    parser.add_argument("--series", action="store_true",
                        help="also series.py's simulated series (DWI-like, fMRI-like), denoised as a series")
    args = parser.parse_args()

    import torch

    from monai_dnaprior import DNAPriorDenoise

    scans = [s for s in load_scans(args.data, filters=args.cases) if args.volume or s.name != VOLUME_CASE]
    args.out.mkdir(parents=True, exist_ok=True)
    results, rows, draw_rows = [], [], []

    def run_case(name: str, noise: str, clean: np.ndarray, noisy_draw, transform, draws_of_case: int | None = None,
                 series: bool = False) -> None:
        """Draws ``noisy_draw(k)`` of one case denoised with the map: a row of each table, draw 0 for the figure. A
        ``series`` is channel-first already; its volumes are moved last, so that blocks lie within each slice."""
        draws = []
        batch = (lambda a: a) if series else (lambda a: a[None])
        unbatch = (lambda a: np.moveaxis(np.asarray(a), 0, -1)) if series else (lambda a: np.asarray(a[0]))
        for k in range(draws_of_case or args.draws):
            noisy = noisy_draw(k)
            start = time.perf_counter()
            out, unc = transform.denoise_with_uncertainty(batch(noisy))
            seconds = time.perf_counter() - start
            reference = np.moveaxis(clean, 0, -1) if series else clean
            draws.append(evaluate(reference, unbatch(out), unbatch(unc))
                         | {"case": name, "noise": noise, "seconds": seconds})
        start = time.perf_counter()
        transform(batch(noisy_draw(0)))
        plain = time.perf_counter() - start
        r = draws[0]
        results.append(r)
        rows.append([name, noise, fmt(r["rmse"], 4), fmt(r["pred_rmse"], 4), fmt(r["spearman"]),
                     fmt(r["calibration"]), fmt(r["mean_calibration"]), fmt(r["seconds"], 1), fmt(plain, 1),
                     "yes" if _meets(r["spearman"], r["calibration"]) else "no"])
        print(" | ".join(str(c) for c in rows[-1]), flush=True)
        if len(draws) > 1:
            spearman = [d["spearman"] for d in draws]
            calibration = float(np.mean([d["calibration"] for d in draws]))
            row = [name, noise, fmt(float(np.mean(spearman)), 3), fmt(min(spearman)), fmt(calibration)]
            if args.draws >= 3:
                row += [fmt(v, 3) for v in reach_spearman(draws)]
            draw_rows.append(row + ["yes" if _meets(float(np.mean(spearman)), calibration) else "no"])

    options = dict(preset=args.preset, prior=args.prior, device=args.device,
                   **network_options(args.prior, max_iters=args.max_iters))
    for scan in scans:
        for noise in args.noises:
            run_case(scan.name, noise, scan.image,
                     lambda k, s=scan, n=noise: add_noise(s.image, n, noise_seed(s.name, n, 1000 * k)),
                     DNAPriorDenoise(noise_model=noise, **options))
    if args.coloured:
        from coloured import build_cases

        for case in (c for c in build_cases(args.data, args.cases) if c.reference.ndim == 2):
            run_case(case.name, COLOURED, case.reference,
                     lambda k, c=case: c.simulate(np.random.default_rng(noise_seed(c.name, COLOURED, 1000 * k))),
                     DNAPriorDenoise(**options))
    if args.series:
        from series_data import load_series

        for case in (c for c in load_series(["dwi_sim", "fmri_sim"]) if c.clean is not None):
            noisy = np.ascontiguousarray(np.moveaxis(case.noisy, -1, 0)).astype(np.float32)
            run_case(case.name, "series", np.moveaxis(case.clean, -1, 0), lambda k, n=noisy: n,
                     DNAPriorDenoise(**options), draws_of_case=1, series=True)
    table = markdown_table(["scan", "noise", "RMSE", "predicted RMSE", f"Spearman ({BLOCK}x{BLOCK})",
                            "calibration (RMS)", "calibration (mean)", "seconds", "seconds without the map",
                            "meets targets"], rows)
    figure = args.out / "reliability.png"
    reliability_figure(results, figure)
    text = [
        "# Uncertainty map: predicted vs. actual error",
        "",
        f"DNA-Prior preset `{args.preset}`, prior `{args.prior}`"
        + (f", max_iters {args.max_iters}" if args.max_iters and fits_network(args.prior) else "")
        + f"; {machine_summary()}.",
        "Noise: " + "; ".join(f"{n}: {NOISE_DESCRIPTIONS[n]}" for n in args.noises)
        + ("; coloured: `coloured.py`'s 2D cases (low-dose CT by FBP, apodised k-space MRI magnitude, resampled white"
           " noise; seeds `noise_seed(case, 'coloured', 1000 k)`), the noise model and spectrum found by the"
           " transform itself" if args.coloured else "")
        + ("; series: `series.py`'s simulated series (DWI-like with Rician noise, fMRI-like with Gaussian), one draw,"
           " denoised as a series, the model found blind" if args.series else "") + ".",
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
            f"Over {args.draws} noise draws of every case (draw 0 is the table above's)."
            + (" Expected error vs. actual: each draw's actual block errors against the expected error, estimated as"
               " the other draws' RMS; a map that knew the expected error exactly would reach about this, the rest"
               " of a draw's error being its own noise (estimated from few draws it is noisy itself and reads low)."
               " Map vs. expected error: the draw's map against the same. Another draw's map vs. actual: the next"
               " draw's map against the draw's actual error, a map made the same way from noise independent of the"
               " draw's (information no user has)."
               if args.draws >= 3 else ""),
            "",
            markdown_table(["scan", "noise", "Spearman (mean)", "Spearman (lowest)", "calibration (mean)"]
                           + (["expected error vs. actual", "map vs. expected error",
                              "another draw's map vs. actual"] if args.draws >= 3 else [])
                           + ["meets targets on average"], draw_rows),
            "",
        ]
    (args.out / "README.md").write_text("\n".join(text))
    print(f"wrote {args.out / 'README.md'} and {figure}")
    del torch


if __name__ == "__main__":
    main()

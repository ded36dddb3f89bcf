"""The paper's prior alone: DNA-Prior's ``prior="network"`` against deepinv's Deep Image Prior, BM3D and the default.

    python benchmarks/dip.py --out benchmarks/results/dip           # the 5 dev slices, white Gaussian sigma 0.1
    python benchmarks/dip.py --cases mr_small --out /tmp/dip_quick  # one slice
    python benchmarks/dip.py --heldout --out /tmp/dip_heldout       # the held-out slices, once, as a check

On every 2D development slice (``shared/data`` and pydicom's ``CT_small``; ``--heldout``: the held-out slices of
:mod:`heldout`, never used for tuning), white Gaussian noise of sigma 0.1 of the range (:data:`common.NOISE_PARAMS`,
fixed seed per case), in one process and one run:

- **DNA-Prior, network alone**: ``DNAPriorDenoise(noise_model="gaussian", prior="network")``, the noise level
  estimated, the ``default`` preset's fit alone (:data:`monai_dnaprior.settings.NETWORK_ALONE`: the output-variance
  stop, the average at its minimum);
- **deepinv DIP**: ``deepinv.models.DeepImagePrior`` as its example (``examples/optimization/demo_dip.py``) runs it:
  its recommended ``ConvDecoder`` (7 layers, 64 channels, a 2x2 random input), Adam with lr 1e-2, the MSE of
  ``physics.Denoising``, for ``--dip-iters`` iterations (1200 by default: the example's 100 is for a 32x32 image and
  the class's 2500 over-fits the noise on these slices; 1200 is near its best on the dev traces, docs/network.md),
  seeded by ``torch.manual_seed``;
- **BM3D**: the ``bm3d`` package given the true sigma (:func:`anchors.bm_denoise`);
- **DNA-Prior default**: ``DNAPriorDenoise(noise_model="gaussian")``, the filter.

PSNR against the clean slice (``data_range`` its range), the seconds of each call on this CPU (one thread), and
each method's difference from BM3D. Writes ``dip.md`` and ``dip.csv`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import anchors
import numpy as np
from common import (
    NOISE_PARAMS,
    MethodRun,
    add_noise,
    capture_fit_info,
    default_data_dir,
    load_scans,
    markdown_table,
    noise_seed,
    psnr,
    timed,
)

DEV_2D = ("mr_small_2d", "mri_sagittal_2d", "ratlung_ct_2d", "vw_eye_2d", "ct_small_2d")
NOISE = "gaussian"
METHODS = ("DNA-Prior network alone", "deepinv DIP", "BM3D (sigma known)", "DNA-Prior default")


@dataclass
class Row:
    """One slice: each method's PSNR (dB) and seconds, and the network's iterations."""

    case: str
    shape: str
    noisy: float
    network: float
    network_s: float
    network_iters: int
    deepinv: float
    deepinv_s: float
    bm3d: float
    bm3d_s: float
    default: float
    default_s: float


def network_alone(preset: str, seed: int):
    """DNA-Prior's network alone through the transform, with its info (iterations) captured."""
    from monai_dnaprior import DNAPriorDenoise

    transform = DNAPriorDenoise(noise_model=NOISE, prior="network", preset=preset, seed=seed)

    def run(noisy: np.ndarray) -> MethodRun:
        with capture_fit_info() as infos:
            start = time.perf_counter()
            out = transform(noisy[None])
            seconds = time.perf_counter() - start
        return MethodRun(np.asarray(out[0], dtype=np.float32), seconds, infos[-1] if infos else {})

    return run


def default_filter(noisy: np.ndarray) -> np.ndarray:
    from monai_dnaprior import DNAPriorDenoise

    return np.asarray(DNAPriorDenoise(noise_model=NOISE)(noisy[None])[0])


def deepinv_dip(iterations: int, sigma: float, seed: int):
    """deepinv's ``DeepImagePrior`` as its DIP example builds it (ConvDecoder, 64 channels, 2x2 input, lr 1e-2)."""

    def run(noisy: np.ndarray) -> np.ndarray:
        import deepinv as dinv
        import torch

        torch.manual_seed(seed)
        y = torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32))[None, None]
        channels, in_size = 64, [2, 2]
        backbone = dinv.models.ConvDecoder(img_size=y.shape[1:], in_size=in_size, channels=channels)
        model = dinv.models.DeepImagePrior(backbone, learning_rate=1e-2, iterations=iterations, verbose=False,
                                           img_size=[channels] + in_size)
        physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma=sigma))
        return model(y, physics)[0, 0].detach().numpy()

    return run


def evaluate(name: str, clean: np.ndarray, args: argparse.Namespace) -> Row:
    sigma = NOISE_PARAMS[NOISE] * float(clean.max() - clean.min())
    noisy = add_noise(clean, NOISE, noise_seed(name, NOISE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = network_alone(args.preset, args.seed)(noisy)
        dip = timed(deepinv_dip(args.dip_iters, sigma, args.seed))(noisy) if args.dip_iters else None
        bm3d = timed(lambda y: anchors.bm_denoise(y, sigma))(noisy)
        default = timed(default_filter)(noisy)
    row = Row(name, "x".join(map(str, clean.shape)), psnr(clean, noisy), psnr(clean, net.output), net.seconds,
              int(net.info.get("iterations", 0)), psnr(clean, dip.output) if dip else float("nan"),
              dip.seconds if dip else float("nan"), psnr(clean, bm3d.output),
              bm3d.seconds, psnr(clean, default.output), default.seconds)
    print(f"{name}: network {row.network:.2f} dB ({row.network_s:.0f} s, {row.network_iters} it), deepinv "
          f"{row.deepinv:.2f} ({row.deepinv_s:.0f} s), BM3D {row.bm3d:.2f} ({row.bm3d_s:.1f} s), default "
          f"{row.default:.2f} ({row.default_s:.1f} s)", flush=True)
    return row


def signed(x: float) -> str:
    return f"{x:+.2f}"


def report(rows: list[Row], args: argparse.Namespace, seconds: float) -> str:
    from heldout import package_state
    table = markdown_table(
        ["slice", "size", "noisy", "network alone", "s", "iters", "deepinv DIP", "s", "BM3D", "s", "default", "s"],
        [[r.case, r.shape, f"{r.noisy:.2f}", f"{r.network:.2f}", f"{r.network_s:.0f}", r.network_iters,
          f"{r.deepinv:.2f}", f"{r.deepinv_s:.0f}", f"{r.bm3d:.2f}", f"{r.bm3d_s:.1f}", f"{r.default:.2f}",
          f"{r.default_s:.1f}"] for r in rows],
    )
    diffs = markdown_table(
        ["slice", "network alone - BM3D", "deepinv DIP - BM3D", "default - BM3D", "network alone - deepinv DIP",
         "network alone / deepinv time"],
        [[r.case, signed(r.network - r.bm3d), signed(r.deepinv - r.bm3d), signed(r.default - r.bm3d),
          signed(r.network - r.deepinv), f"{r.network_s / r.deepinv_s:.2f}x"] for r in rows],
    )
    mean = lambda f: float(np.mean([f(r) for r in rows]))  # noqa: E731
    if not args.dip_iters:  # deepinv left out: drop its columns
        table = "\n".join("|".join(c for i, c in enumerate(line.split("|")) if i not in (7, 8))
                           for line in table.splitlines())
        diffs = "\n".join("|".join(c for i, c in enumerate(line.split("|")) if i not in (3, 5, 6))
                           for line in diffs.splitlines())
    summary = (
        f"Mean over {len(rows)} slices: network alone {signed(mean(lambda r: r.network - r.bm3d))} dB from BM3D "
        f"(worst {signed(min(r.network - r.bm3d for r in rows))}), "
        + (f"deepinv DIP {signed(mean(lambda r: r.deepinv - r.bm3d))} dB, " if args.dip_iters else "")
        + f"default {signed(mean(lambda r: r.default - r.bm3d))} dB"
        + (f"; network alone {signed(mean(lambda r: r.network - r.deepinv))} dB from deepinv DIP" if args.dip_iters
           else " (deepinv DIP left out)")
        + f". Seconds per slice: network alone {mean(lambda r: r.network_s):.0f}, "
        + (f"deepinv DIP {mean(lambda r: r.deepinv_s):.0f}, " if args.dip_iters else "")
        + f"BM3D {mean(lambda r: r.bm3d_s):.1f}, default {mean(lambda r: r.default_s):.1f}."
    )
    scans = "held-out slices (`heldout.py`, never used for tuning)" if args.heldout else "2D development slices"
    return "\n".join([
        "# The network alone (`prior=\"network\"`) against deepinv's Deep Image Prior and BM3D",
        "",
        f"White Gaussian noise, sigma {NOISE_PARAMS[NOISE]} of the range (fixed seed per slice), on the {scans}. "
        f"PSNR in dB against the clean slice; seconds of each call on this CPU (one thread, a CPU shared with other "
        f"jobs: compare times within a row). DNA-Prior: `DNAPriorDenoise(noise_model=\"gaussian\", "
        f"prior=\"network\", preset=\"{args.preset}\", seed={args.seed})`, the level estimated; "
        + (f"deepinv: `DeepImagePrior(ConvDecoder(channels=64, in_size=[2, 2]), learning_rate=1e-2, "
           f"iterations={args.dip_iters})` as its DIP example, sigma given; " if args.dip_iters else "")
        + f"BM3D: the `bm3d` package with the true sigma; default: "
        f"`DNAPriorDenoise(noise_model=\"gaussian\")` (the filter). Total {seconds / 60:.1f} min.",
        "",
        f"    python benchmarks/dip.py {' '.join(sys.argv[1:])}",
        "",
        f"Package: {package_state()}.",
        "",
        summary,
        "",
        table,
        "",
        "Differences (dB)" + (" and time ratio:" if args.dip_iters else ":"),
        "",
        diffs,
        "",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for dip.md and dip.csv")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--cases", nargs="*", help="substrings of the slice names")
    parser.add_argument("--heldout", action="store_true", help="the held-out slices instead (a check, once)")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dip-iters", type=int, default=1200, help="deepinv DIP's iterations (0: leave it out)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.heldout:
        from heldout import HELD_OUT, load_heldout

        scans = load_heldout([h.name for h in HELD_OUT if h.name.endswith("_2d")], args.cases)
    else:
        scans = load_scans(args.data_dir, DEV_2D, args.cases)
    start = time.perf_counter()
    rows = [evaluate(s.name, s.image, args) for s in scans]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dip.md").write_text(report(rows, args, time.perf_counter() - start))
    with open(args.out / "dip.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    print(f"wrote {args.out / 'dip.md'}")


if __name__ == "__main__":
    main()

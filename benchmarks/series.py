"""The ``series`` family: 4D series (DWI, fMRI) denoised as a series, against the peers an expert runs on them.

    python benchmarks/series.py --out benchmarks/results/series          # every series, every method
    python benchmarks/series.py --cases dwi_sim --methods mppca series   # a subset (outputs cached under --cache)
    python benchmarks/series.py --heldout --out benchmarks/results/series/heldout   # the held-out series

Series (``series_data.py``): a DWI-like and an fMRI-like series simulated from the dev EPI volume (clean known), and
the real DIPY ``small_64D``, ``small_101D`` and nibabel ``functional.nii`` (no clean image); with ``--heldout``, the
held-out ones, never used to choose anything: the same two simulations on DIPY's ``S0_10slices`` and the real DIPY
``small_25``. Methods, each on the whole series in the same run: the input; DIPY ``patch2self`` with its defaults
(version 3, OLS, fitted on a random count sketch of the voxels: the mean of 10 draws, numpy seeded 0-9, their range
listed under each table; its version 1 over 3x3x3 patches, OLS or ridge, returned every volume with its mean removed
in DIPY 1.12: 15 dB, left out); DIPY ``localpca.mppca`` (Marchenko-Pastur PCA, its defaults; the patch radius 2, or
what a thin axis allows: 1 across 3 slices, 0 across 2); BM4D volume by volume with the Rician pipeline (sigma from
the bright blocks, the Rician mean inverted; ``anchors.rician_bm_pipeline``); DNA-Prior per volume (``series=False``:
the 0.8.0 path, channels in groups of four); DNA-Prior's series mode (``series=True``: MP-PCA, the network fitted to
predict each volume from the others, the series Wiener pass piloted by MP-PCA and by MP-PCA averaged with the
network, blended by SURE) and the same without its network (``dnaprior series, no network``, ``prior="filter"``:
MP-PCA and one Wiener pass, as the 0.8.0 series path, with this version's Rician inverse), and the series mode in
the ``quality`` preset (MP-PCA's patches at every voxel, their size chosen by SURE).

Figures: with a clean series, PSNR over the brain mask (``range = clean.max()``) and, for DWI, the mean absolute error
of DTI's FA and MD (DIPY ``TensorModel``, weighted least squares) against the fit on the clean series, over the brain;
for fMRI the median temporal SNR over the brain. Real DWI has no clean image, and a fit on the noisy data is no
reference: the directions are split in two halves (even and odd, each with the b0s), each half denoised on its own,
and the tensor fitted to one denoised half predicts the *raw* other half; the root mean square of that prediction's
error (both ways) ranks the methods honestly (the other half's noise is independent of what was denoised, so it adds
the same floor to every method). Real fMRI: the median temporal SNR (a smoother series scores higher: read with the
PSNR of the simulated one).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import anchors
import numpy as np
from common import machine_summary, markdown_table
from series_data import Series, load_series

Method = Callable[[Series, np.ndarray], np.ndarray]  # (series, its (X, Y, Z, N) data or half) -> denoised


def _bvals_of(s: Series, data: np.ndarray, bvals: np.ndarray | None) -> np.ndarray:
    return bvals if bvals is not None else np.full(data.shape[-1], 1000.0)  # fMRI: every frame a "DW" volume


def patch2self_default(s: Series, data: np.ndarray, bvals: np.ndarray | None) -> np.ndarray:
    from dipy.denoise.patch2self import patch2self

    return patch2self(data, _bvals_of(s, data, bvals), verbose=False)


def mppca_dipy(s: Series, data: np.ndarray, bvals: np.ndarray | None) -> np.ndarray:
    from dipy.denoise.localpca import mppca

    radius = [min(2, (n - 1) // 2) for n in data.shape[:3]]  # its default 2, or what a thin axis allows (2 slices: 0)
    return mppca(data, patch_radius=np.array(radius), suppress_warning=True)


def bm4d_vst(s: Series, data: np.ndarray, bvals: np.ndarray | None) -> np.ndarray:
    return np.stack([anchors.rician_bm_pipeline(data[..., k]) for k in range(data.shape[-1])], -1)


def dnaprior(series: bool, prior: str = "auto", preset: str = "default"
             ) -> Callable[[Series, np.ndarray, np.ndarray | None], np.ndarray]:
    def run(s: Series, data: np.ndarray, bvals: np.ndarray | None) -> np.ndarray:
        from monai_dnaprior import DNAPriorDenoise

        out = DNAPriorDenoise(series=series, prior=prior, preset=preset)(np.ascontiguousarray(np.moveaxis(data, -1, 0)))
        return np.moveaxis(out, 0, -1)

    return run


METHODS: dict[str, Callable] = {
    "patch2self": patch2self_default,
    "mppca (dipy)": mppca_dipy,
    "bm4d+vst per volume": bm4d_vst,
    "dnaprior per volume": dnaprior(False),
    "dnaprior series": dnaprior(True),
    "dnaprior series, no network": dnaprior(True, prior="filter"),
    "dnaprior series, quality": dnaprior(True, preset="quality"),
}
PEERS = ("patch2self", "mppca (dipy)", "bm4d+vst per volume")
DRAWS = {"patch2self": 10}
"""Methods run more than once, each draw with ``np.random.seed(draw)``: Patch2Self (version 3) fits its regressions on
a random count sketch of the voxels, and its figures move from draw to draw (the real fMRI's tSNR 185-215); its row is
the draws' mean, their range in ``spread``. The other methods are deterministic."""


# ------------------------------------------------------------------------------------------------------ metrics


def psnr_brain(clean: np.ndarray, x: np.ndarray, mask: np.ndarray) -> float:
    mse = float(((x.astype(np.float64) - clean)[mask] ** 2).mean())
    return 10 * np.log10(float(clean.max()) ** 2 / mse)


def tensor_fit(data: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, mask: np.ndarray):
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TensorModel(gtab, fit_method="WLS", return_S0_hat=True).fit(np.maximum(data, 1e-6), mask=mask)


def dti_errors(s: Series, x: np.ndarray, reference) -> tuple[float, float]:
    """Mean |FA - FA_clean| and |MD - MD_clean| (um^2/ms) over the brain."""
    fit = tensor_fit(x, s.bvals, s.bvecs, s.mask)
    fa, md = np.nan_to_num(fit.fa), np.nan_to_num(fit.md)
    fa_ref, md_ref = np.nan_to_num(reference.fa), np.nan_to_num(reference.md)
    return float(np.abs(fa - fa_ref)[s.mask].mean()), float(np.abs(md - md_ref)[s.mask].mean() * 1e3)


def median_tsnr(x: np.ndarray, mask: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(np.median((x.mean(-1) / np.maximum(x.std(-1), 1e-12))[mask]))


def halves(s: Series) -> list[np.ndarray]:
    """Volume indices of the two halves of a real DWI series: the b0s in both, the directions alternately."""
    b0 = np.flatnonzero(s.bvals <= 50)
    dw = np.flatnonzero(s.bvals > 50)
    return [np.sort(np.concatenate([b0, dw[0::2]])), np.sort(np.concatenate([b0, dw[1::2]]))]


def cross_prediction(s: Series, denoised: list[np.ndarray]) -> float:
    """RMS error of the raw DW volumes of each half predicted by the tensor fitted to the other denoised half."""
    from dipy.core.gradients import gradient_table

    errors = []
    parts = halves(s)
    for a, b in ((0, 1), (1, 0)):
        fit = tensor_fit(denoised[a], s.bvals[parts[a]], s.bvecs[parts[a]], s.mask)
        target = parts[b][s.bvals[parts[b]] > 50]
        gtab = gradient_table(s.bvals[target], bvecs=s.bvecs[target], b0_threshold=50)
        pred = fit.predict(gtab, S0=fit.S0_hat)
        errors.append(((pred - s.noisy[..., target])[s.mask] ** 2).ravel())
    return float(np.sqrt(np.concatenate(errors).mean()))


# ----------------------------------------------------------------------------------------------------- running


RAN = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, process {os.getpid()}"  # this run, for the record
UNRECORDED = ("earlier processes of the session, cached before the benchmark recorded its processes (docs/series.md "
              "says which ran together)")


def run_method(s: Series, name: str, cache: Path, fresh: bool) -> tuple[list[list[np.ndarray]], float, str, str]:
    """The method's outputs, one list per draw (:data:`DRAWS`) of the whole series or of its two halves (real DWI),
    the seconds of one draw, the error and the process that ran it, cached under ``cache``."""
    slug = name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "_").replace(",", "")
    key = cache / f"{s.name}__{slug}"
    split = s.clean is None and s.kind == "dwi"
    parts = halves(s) if split else [np.arange(s.noisy.shape[-1])]
    if not fresh and key.with_suffix(".npz").exists():
        z = np.load(key.with_suffix(".npz"))
        ran = str(z["ran"]) if "ran" in z.files else UNRECORDED
        outs = [z[k] for k in sorted(z.files) if k.startswith("out")]
        draws = [outs[i : i + len(parts)] for i in range(0, len(outs), len(parts))]
        return draws, float(z["seconds"]), str(z["error"]), ran
    draws, seconds, error = [], 0.0, ""
    for draw in range(DRAWS.get(name, 1)):
        np.random.seed(draw)  # Patch2Self's count sketch draws from numpy's global generator
        outs = []
        for idx in parts:
            data = np.ascontiguousarray(s.noisy[..., idx])
            bvals = None if s.bvals is None else s.bvals[idx]
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = np.asarray(METHODS[name](s, data, bvals), dtype=np.float32)
            except Exception as e:  # a peer that cannot run on a series is reported, not fatal
                error, out = f"{type(e).__name__}: {e}"[:200], data
            seconds += time.perf_counter() - start
            outs.append(out)
        draws.append(outs)
    seconds /= len(draws)
    cache.mkdir(parents=True, exist_ok=True)
    flat = [o for outs in draws for o in outs]
    np.savez_compressed(key.with_suffix(".npz"), seconds=seconds, error=error, ran=RAN,
                        **{f"out{k:03d}": o for k, o in enumerate(flat)})
    return draws, seconds, error, RAN


def _figures(s: Series, outs: list[np.ndarray], reference) -> dict[str, float]:
    """The series' figures of one output (or its two halves)."""
    row = {}
    if s.clean is not None:
        row["psnr_brain"] = round(psnr_brain(s.clean, outs[0], s.mask), 3)
    if reference is not None:
        row["fa_mae"], row["md_mae"] = (round(v, 5) for v in dti_errors(s, outs[0], reference))
    if s.kind == "fmri":
        row["tsnr"] = round(median_tsnr(outs[0], s.mask), 2)
    if s.clean is None and s.kind == "dwi":
        row["cv_rmse"] = round(cross_prediction(s, outs), 3)
    return row


def evaluate(s: Series, methods: list[str], cache: Path, fresh: bool) -> list[dict]:
    """Each method's figures; a method with several draws gets their mean and, in ``spread``, their range."""
    rows = []
    reference = tensor_fit(s.clean, s.bvals, s.bvecs, s.mask) if s.clean is not None and s.kind == "dwi" else None
    for name in ["input"] + methods:
        if name == "input":
            split = s.clean is None and s.kind == "dwi"
            draws, seconds, error, ran = [[s.noisy[..., i] for i in halves(s)] if split else [s.noisy]], 0.0, "", ""
        else:
            draws, seconds, error, ran = run_method(s, name, cache, fresh)
        row = {"series": s.name, "shape": s.shape_str, "method": name, "seconds": round(seconds, 2), "error": error,
               "ran": ran}
        figures = [_figures(s, outs, reference) for outs in draws]
        row.update({k: round(float(np.mean([f[k] for f in figures])), 5) for k in figures[0]})
        if len(figures) > 1:
            row["spread"] = f"{len(figures)} draws: " + ", ".join(
                f"{k} {min(f[k] for f in figures):.4g} to {max(f[k] for f in figures):.4g}" for k in figures[0])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _best_peer(rows: list[dict], key: str, higher: bool) -> dict | None:
    peers = [r for r in rows if r["method"] in PEERS and key in r and not r["error"]]
    if not peers:
        return None
    return max(peers, key=lambda r: r[key] if higher else -r[key])


def write_results(rows: list[dict], series: list[Series], out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = ["series", "shape", "method", "seconds", "psnr_brain", "fa_mae", "md_mae", "tsnr", "cv_rmse", "spread",
            "error", "ran"]
    with open(out / "series.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    lines = ["# Series (4D) benchmark", "", f"Command: `{command}`", "", f"Machine: {machine_summary()}", "",
             "Each method's output and seconds are cached under `--cache` and reused by later runs (`--fresh NAME` "
             "reruns one); a table may therefore gather methods run in several processes of one session on the "
             "same machine (see `docs/series.md` for which ran together).", "",
             __doc__.split("\n\n", 2)[2].strip(), "", "## Which process ran what", ""]
    runs: dict[str, list[str]] = {}
    for r in rows:
        if r["ran"]:
            runs.setdefault(r["ran"], []).append(f"{r['method']} on {r['series']}")
    lines += [f"- {ran}: {', '.join(done)}" for ran, done in runs.items()]
    lines += ["", "## Series", ""]
    lines += [f"- `{s.name}` ({s.shape_str}): {s.source}; {s.notes}" for s in series]
    metrics = {"psnr_brain": ("PSNR brain (dB)", True), "fa_mae": ("FA MAE", False), "md_mae": ("MD MAE (um^2/ms)", False),
               "tsnr": ("median tSNR", True), "cv_rmse": ("cross-half DTI prediction RMSE", False)}
    for s in series:
        sub = [r for r in rows if r["series"] == s.name]
        present = [k for k in metrics if any(k in r for r in sub)]
        lines += ["", f"## {s.name} ({s.shape_str})", ""]
        table = []
        mp = next((r["seconds"] for r in sub if r["method"] == "mppca (dipy)" and r["seconds"] > 0), None)
        for r in sub:
            ratio = f"{r['seconds'] / mp:.2f}" if mp and r["method"].startswith("dnaprior") else ""
            cells = [r["method"]] + [r.get(k, "") for k in present] + [r["seconds"], ratio]
            for k in present:
                best = _best_peer(sub, k, metrics[k][1])
                if best is not None and r["method"].startswith("dnaprior") and k in r:
                    cells.append(f"{r[k] - best[k]:+.3g} vs {best['method']}")
            table.append(cells + ([f"failed: {r['error']}"] if r["error"] else []))
        width = max(len(c) for c in table)
        heads = ["method"] + [metrics[k][0] for k in present] + ["seconds", "x MP-PCA's seconds"]
        heads += [f"{metrics[k][0]} vs best peer" for k in present][: width - len(heads)]
        heads += [""] * (width - len(heads))
        lines.append(markdown_table(heads, [c + [""] * (width - len(c)) for c in table]))
        spreads = [f"- {r['method']}: the mean of {r['spread']}" for r in sub if "spread" in r]
        lines += ["", *spreads] if spreads else []
    (out / "series.md").write_text("\n".join(lines) + "\n")


def _import_packages() -> None:
    """Import every method's package before anything is timed: a method's seconds are its call, not its package's
    first import (MONAI's, under DNA-Prior, takes about 5 s; until the thirteenth stop it was charged to the first
    DNA-Prior method that ran)."""
    for name in ("bm4d", "dipy.denoise.localpca", "dipy.denoise.patch2self", "monai_dnaprior"):
        importlib.import_module(name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/series")
    parser.add_argument("--cases", nargs="*", default=None, help="substrings of the series names")
    parser.add_argument("--heldout", action="store_true", help="the held-out series (series_data.py)")
    parser.add_argument("--methods", nargs="*", default=None, help="substrings of the method names")
    parser.add_argument("--fresh", nargs="*", default=[], help="substrings of methods to rerun though cached")
    parser.add_argument("--cache", default="/tmp/dnaprior_series_cache", help="where each method's outputs are kept")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    _import_packages()
    methods = [m for m in METHODS if args.methods is None or any(f in m for f in args.methods)]
    out = Path(args.out)
    series = load_series(args.cases, heldout=args.heldout)
    rows = []
    for s in series:
        for m in methods:
            if any(f in m for f in args.fresh):
                run_method(s, m, Path(args.cache), True)
        rows += evaluate(s, methods, Path(args.cache), False)
    write_results(rows, series, out, "python benchmarks/series.py " + shlex.join(sys.argv[1:]))


if __name__ == "__main__":
    main()

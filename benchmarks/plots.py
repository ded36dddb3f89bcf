"""Figures of the quality benchmark: an image grid per scan and PSNR against time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

MARKERS = "osD^vP*Xh<>"


def display_slice(a: np.ndarray) -> np.ndarray:
    """A 2D view of an ``(x, y[, z])`` array: the image, or the middle slice of a volume along its last axis."""
    if a.ndim == 3:
        a = a[..., a.shape[-1] // 2]
    return np.asarray(a).T


def case_figure(
    path: Path,
    case: str,
    clean: np.ndarray,
    rows: Mapping[str, Mapping[str, np.ndarray]],
    psnrs: Mapping[str, Mapping[str, float]],
) -> None:
    """One row per noise: clean, noisy, DNA-Prior, the reference peer, and both |difference to clean| maps.

    Args:
        path: PNG to write.
        case: scan name, for the title.
        clean: the clean scan.
        rows: per noise, ``{"noisy": ..., "DNA-Prior": ..., <reference>: ...}`` (insertion order is kept).
        psnrs: per noise, the PSNR of each of those images.
    """
    ncols = 6
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.6 * ncols, 2.6 * len(rows)), squeeze=False)
    lo, hi = float(clean.min()), float(clean.max())
    for r, (noise, images) in enumerate(rows.items()):
        names = list(images)  # noisy, DNA-Prior, reference
        diff_max = 0.25 * (hi - lo)
        panels = [("clean", clean, False)] + [(n, images[n], False) for n in names]
        panels += [(f"|{n} - clean|", np.abs(images[n] - clean), True) for n in names[1:3]]
        for c, (title, img, is_diff) in enumerate(panels):
            ax = axes[r, c]
            kw = {"cmap": "magma", "vmin": 0, "vmax": diff_max} if is_diff else {"cmap": "gray", "vmin": lo, "vmax": hi}
            ax.imshow(display_slice(img), **kw)
            label = title if is_diff or title == "clean" else f"{title}\n{psnrs[noise][title]:.2f} dB"
            ax.set_title(label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(noise, fontsize=9)
    view = " (middle slice)" if clean.ndim == 3 else ""
    fig.suptitle(f"{case}{view}; difference maps clipped at 25% of the range", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def psnr_time_figure(path: Path, records: Sequence[Mapping[str, object]]) -> None:
    """PSNR (left) and PSNR gain over the noisy input (right) against seconds, log axis, one marker per method."""
    noisy = {(r["case"], r["noise"]): float(r["psnr"]) for r in records if r["method"] == "noisy"}
    methods = list(dict.fromkeys(str(r["method"]) for r in records if r["method"] != "noisy"))
    fig, (ax_abs, ax_gain) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, method in enumerate(methods):
        sel = [r for r in records if r["method"] == method]
        t = [max(float(r["seconds"]), 1e-3) for r in sel]
        p = [float(r["psnr"]) for r in sel]
        g = [float(r["psnr"]) - noisy[(r["case"], r["noise"])] for r in sel]
        style = {"marker": MARKERS[i % len(MARKERS)], "label": method, "alpha": 0.8, "s": 36}
        ax_abs.scatter(t, p, **style)
        ax_gain.scatter(t, g, **style)
    for ax, ylabel in ((ax_abs, "PSNR (dB)"), (ax_gain, "PSNR gain over the noisy input (dB)")):
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image (log)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_gain.legend(fontsize=8, loc="best")
    fig.suptitle("Quality against time, every scan and noise model", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

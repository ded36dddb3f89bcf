"""Held-out scans: real images never used to tune the package, and the white-noise check run on them.

    python benchmarks/heldout.py --list                        # the held-out scans, their sources and sizes
    python benchmarks/heldout.py --white --quick --out bench_white   # two small cases, a smoke test
    python benchmarks/heldout.py --white --out bench_white     # every held-out scan, white Gaussian and Rician noise

The development scans are those of :func:`common.load_scans` (``shared/data/*.nii.gz``, pydicom's ``CT_small``,
frame 0 of nibabel's ``example4d``). The held-out scans are other anatomy from other sources, all shipped inside
installed packages and read from their package folders at run time (nothing is downloaded):

- volumes: DIPY ``aniso_vox.nii.gz`` (b0, 4x4x5 mm voxels), DIPY ``S0_10slices.nii.gz`` (b0, 10 thick slices), the
  lowest-b volume of DIPY ``small_101D`` (b = 15, 6x10x10), nibabel ``tests/data/anatomical.nii`` (an SPM-normalised
  2 mm brain: interpolated anatomy) and frame 0 of nibabel ``tests/data/functional.nii`` (17x21x3);
- slices: DIPY ``t1_coronal_slice.npy`` (T1 brain), pydicom ``J2K_pixelrep_mismatch.dcm`` (CT head, 2x2 block mean),
  pydicom ``examples_overlay.dcm`` (MR abdomen, 2x2 block mean), scikit-image ``phantom.png`` (Shepp-Logan, 2x2 block
  mean), scikit-image ``retina.jpg`` green channel (fundus photograph, 6x6 block mean) and ``microaneurysms.png``.

Block means only shrink the larger images to about 256 pixels a side (and average away some of their own noise and
JPEG blocks); nothing else is done to them. **Clean references**: these real files carry their own small noise (and
JPEG or J2K compression where the source has it); nothing is denoised first: each file, scaled to [0, 1], is the
reference, as for the development scans.

A further **level hold-out**: the 2D development scans under noise levels they were not tuned at (white Gaussian and
Rician sigma 0.05 of the range, where the development runs use 0.1 and 0.08). That holds out the level, not the
anatomy, and is reported apart.

``--white``: white Gaussian and white Rician noise (sigma 0.05 of the range, fixed seeds) on every held-out volume and
slice and on the level hold-out; DNA-Prior's default (``DNAPriorDenoise()``, noise model found blind) against
BM3D (2D) / BM4D (3D) given the true sigma and with sigma estimated (Rician: with the Rician mean inverted, the
bright-block sigma when estimated), whether the package read the noise as coloured (``info["coloured"]``: white
noise read as coloured is a false colour), and on the volumes a tissue Dice (3-class multi-Otsu thresholds of the
clean reference, :func:`common.otsu_dice`). Writes ``white.md`` and ``white.csv`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import anchors
import numpy as np
from common import (
    Denoiser,
    MethodRun,
    Scan,
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
    ssim,
    timed,
    to_unit_range,
    warm_up,
)

DEV_2D = ("mri_sagittal_2d", "ratlung_ct_2d", "vw_eye_2d", "mr_small_2d", "ct_small_2d")
WHITE_SIGMA = 0.05  # of the range, Gaussian sigma and Rician per-component sigma
WHITE_NOISES = ("gaussian", "rician")
QUICK_WHITE = ("microaneurysms_2d", "functional_3d")


# ---------------------------------------------------------------------------------------------- loaders


def block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor`` x ``factor`` blocks of the first two axes (in-plane; a trailing remainder
    dropped, further axes kept)."""
    if factor <= 1:
        return np.asarray(a, dtype=np.float64)
    h, w = (s // factor * factor for s in a.shape[:2])
    a = np.asarray(a[:h, :w], dtype=np.float64)
    return a.reshape(h // factor, factor, w // factor, factor, *a.shape[2:]).mean(axis=(1, 3))


def _dipy_file(name: str) -> Path:
    import dipy.data

    return Path(dipy.data.__file__).parent / "files" / name


def _nibabel_test_file(name: str) -> Path:
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data" / name


def _pydicom_test_file(name: str) -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files" / name


def _skimage_data_file(name: str) -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent / name


def _nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)


def _aniso_vox() -> np.ndarray:
    return _nifti(_dipy_file("aniso_vox.nii.gz"))


def _s0_10slices() -> np.ndarray:
    return _nifti(_dipy_file("S0_10slices.nii.gz"))[..., 0]


def _small_101d_b0() -> np.ndarray:
    bvals = np.loadtxt(_dipy_file("small_101D.bval"))
    return _nifti(_dipy_file("small_101D.nii.gz"))[..., int(np.argmin(bvals))]


def _anatomical() -> np.ndarray:
    return _nifti(_nibabel_test_file("anatomical.nii"))


def _functional0() -> np.ndarray:
    return _nifti(_nibabel_test_file("functional.nii"))[..., 0]


def _t1_coronal() -> np.ndarray:
    return np.load(_dipy_file("t1_coronal_slice.npy")).T  # (rows, cols) -> (x, y)


def _dicom(filename: str, factor: int) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(str(_pydicom_test_file(filename)))
    image = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    return block_mean(image, factor).T


def _skimage_image(filename: str, channel: int | None, factor: int) -> np.ndarray:
    from skimage.io import imread

    image = np.asarray(imread(str(_skimage_data_file(filename))), dtype=np.float64)
    if image.ndim == 3:
        image = image[..., channel if channel is not None else 0]
    return block_mean(image, factor).T


@dataclass(frozen=True)
class HeldOut:
    """A held-out scan: how to load it, its modality (which noise families fit it) and where it comes from."""

    name: str
    load: Callable[[], np.ndarray]
    modality: str  # "mri", "ct", "photo", "phantom"
    source: str
    note: str = ""


HELD_OUT: tuple[HeldOut, ...] = (
    HeldOut("aniso_vox_3d", _aniso_vox, "mri", "DIPY data/files/aniso_vox.nii.gz",
            "b0 volume, 4x4x5 mm (anisotropic) voxels"),
    HeldOut("s0_10slices_3d", _s0_10slices, "mri", "DIPY data/files/S0_10slices.nii.gz", "b0 volume, 10 thick slices"),
    HeldOut("small_101d_b0_3d", _small_101d_b0, "mri", "DIPY data/files/small_101D.nii.gz",
            "lowest-b volume (b = 15), 6x10x10: a tiny crop"),
    HeldOut("anatomical_3d", _anatomical, "mri", "nibabel tests/data/anatomical.nii",
            "SPM-normalised 2 mm brain: interpolated anatomy"),
    HeldOut("functional_3d", _functional0, "mri", "nibabel tests/data/functional.nii", "frame 0, 17x21x3"),
    HeldOut("t1_coronal_2d", _t1_coronal, "mri", "DIPY data/files/t1_coronal_slice.npy", "T1 brain, coronal"),
    HeldOut("ct_head_2d", lambda: _dicom("J2K_pixelrep_mismatch.dcm", 2), "ct",
            "pydicom test_files/J2K_pixelrep_mismatch.dcm", "CT head 512x512, 2x2 block mean"),
    HeldOut("mr_abdomen_2d", lambda: _dicom("examples_overlay.dcm", 2), "mri",
            "pydicom test_files/examples_overlay.dcm",
            "MR abdomen 300x484, 2x2 block mean"),
    HeldOut("shepp_logan_2d", lambda: _skimage_image("phantom.png", 0, 2), "phantom", "scikit-image data/phantom.png",
            "Shepp-Logan phantom 400x400, 2x2 block mean (noise-free, piecewise constant)"),
    HeldOut("retina_2d", lambda: _skimage_image("retina.jpg", 1, 6), "photo", "scikit-image data/retina.jpg",
            "fundus photograph 1411x1411 (JPEG), green channel, 6x6 block mean"),
    HeldOut("microaneurysms_2d", lambda: _skimage_image("microaneurysms.png", None, 1), "photo",
            "scikit-image data/microaneurysms.png", "fundus crop 102x102, native"),
)
HELD_OUT_BY_NAME = {h.name: h for h in HELD_OUT}


def heldout_modality(name: str) -> str:
    """The modality of a held-out or development scan ("mri", "ct", "photo", "phantom")."""
    if name in HELD_OUT_BY_NAME:
        return HELD_OUT_BY_NAME[name].modality
    return {"mri_sagittal_2d": "mri", "mr_small_2d": "mri", "epi_volume_3d": "mri", "ratlung_ct_2d": "ct",
            "ct_small_2d": "ct", "vw_eye_2d": "photo"}.get(name, "other")


def load_heldout(names: list[str] | None = None, filters: list[str] | None = None) -> list[Scan]:
    """The held-out scans as :class:`common.Scan` (float32, scaled to [0, 1]), in :data:`HELD_OUT` order."""
    keep = [h for h in HELD_OUT if (names is None or h.name in names)
            and (not filters or any(f in h.name for f in filters))]
    return [Scan(h.name, to_unit_range(h.load()), h.source) for h in keep]


def load_level_holdout(data_dir: Path, filters: list[str] | None = None) -> list[Scan]:
    """The 2D development scans (a level hold-out: other noise levels than they were tuned at, same anatomy)."""
    names = [n for n in DEV_2D if not filters or any(f in n for f in filters)]
    return load_scans(data_dir, names) if names else []


def heldout_table() -> str:
    """The held-out scans: name, size, modality, source, note."""
    rows = []
    for h in HELD_OUT:
        shape = "x".join(str(s) for s in h.load().shape)
        rows.append([h.name, shape, h.modality, f"`{h.source}`", h.note])
    return markdown_table(["scan", "size", "modality", "source (package folder)", "note"], rows)


# -------------------------------------------------------------------------------------------- white noise


@dataclass
class WhiteRow:
    """DNA-Prior and BM3D/BM4D on one held-out scan under white noise."""

    case: str
    group: str  # "anatomy" (held-out scan) or "level" (a development scan at another level)
    shape: str
    noise: str
    noisy_psnr: float
    dna_psnr: float | None = None
    bm_known_psnr: float | None = None
    bm_est_psnr: float | None = None
    d_vs_known: float | None = None
    d_vs_est: float | None = None
    dna_ssim: float | None = None
    bm_known_ssim: float | None = None
    model_found: str = ""
    level_found: float | None = None
    coloured: bool | None = None
    noise_map_range: str = ""
    dna_seconds: float | None = None
    bm_known_seconds: float | None = None
    bm_est_seconds: float | None = None
    dice_dna: float | None = None
    dice_bm_known: float | None = None
    dice_bm_est: float | None = None
    dice_noisy: float | None = None
    warning: str = ""


def white_noise(clean: np.ndarray, noise: str, sigma: float, seed: int) -> np.ndarray:
    """White Gaussian ``x + sigma n`` or Rician ``|x + sigma (n1 + i n2)|`` noise on ``clean`` in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = clean.astype(np.float64)
    if noise == "gaussian":
        return (x + sigma * rng.standard_normal(x.shape)).astype(np.float32)
    return np.hypot(x + sigma * rng.standard_normal(x.shape), sigma * rng.standard_normal(x.shape)).astype(np.float32)


def bm_white(noise: str, sigma: float | None) -> Callable[[np.ndarray], np.ndarray]:
    """BM3D/BM4D for white ``noise``: ``sigma`` given, or estimated (Gaussian: scikit-image; Rician: bright blocks);
    Rician with its mean inverted with that sigma."""

    def run(y: np.ndarray) -> np.ndarray:
        if noise == "gaussian":
            return anchors.bm_denoise(y, sigma if sigma is not None else anchors.skimage_sigma(y))
        s = sigma if sigma is not None else anchors.bright_block_sigma(y)
        return anchors.rician_mean_inverse(anchors.bm_denoise(y, s), s)

    return run


def run_quietly(denoiser: Denoiser, noisy: np.ndarray, label: str, notes: list[str]) -> tuple[MethodRun | None, str]:
    """One method's run, with the first warning it raised (or None and a note where it failed)."""
    print(f"  {label} ...", end="", file=sys.stderr, flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run = denoiser(noisy)
        except Exception as error:  # noqa: BLE001 (a benchmark reports a failing method and goes on)
            print(f" failed: {error}", file=sys.stderr, flush=True)
            notes.append(f"{label}: failed ({type(error).__name__}: {str(error)[:200]}).")
            return None, ""
    own = [w for w in caught if "DNA-Prior" in str(w.message)]
    print(f" {run.seconds:.1f} s", file=sys.stderr, flush=True)
    return run, (str(own[0].message)[:90] + "...") if own else ""


def safe_ssim(clean: np.ndarray, x: np.ndarray) -> float | None:
    try:
        return ssim(clean, x)
    except ValueError:  # a volume thinner than SSIM's 7-voxel window
        return None


def evaluate_white(scan: Scan, group: str, noise: str, notes: list[str]) -> WhiteRow:
    """DNA-Prior (default) and BM3D/BM4D (sigma known and estimated) on one white-noise draw of ``scan``."""
    clean = scan.image
    noisy = white_noise(clean, noise, WHITE_SIGMA, noise_seed(scan.name, f"white_{noise}"))
    label = f"{scan.name} / {noise}"
    row = WhiteRow(scan.name, group, scan.shape_str, noise, psnr(clean, noisy))
    dna, warning = run_quietly(dnaprior_denoiser("auto"), noisy, f"{label} / DNA-Prior", notes)
    bm = "BM4D" if scan.is_volume else "BM3D"
    known, _ = run_quietly(timed(bm_white(noise, WHITE_SIGMA)), noisy, f"{label} / {bm} sigma known", notes)
    est, _ = run_quietly(timed(bm_white(noise, None)), noisy, f"{label} / {bm} sigma est.", notes)
    if dna is not None:
        info = dna.info
        row.dna_psnr, row.dna_ssim, row.dna_seconds = psnr(clean, dna.output), safe_ssim(clean, dna.output), dna.seconds
        row.model_found, row.level_found = str(info.get("noise_model", "")), info.get("noise_level")
        row.coloured = info.get("coloured")
        row.noise_map_range = fmt_range(info.get("noise_map_range"))
        row.warning = warning
    if known is not None:
        row.bm_known_psnr, row.bm_known_ssim = psnr(clean, known.output), safe_ssim(clean, known.output)
        row.bm_known_seconds = known.seconds
    if est is not None:
        row.bm_est_psnr, row.bm_est_seconds = psnr(clean, est.output), est.seconds
    if row.dna_psnr is not None and row.bm_known_psnr is not None:
        row.d_vs_known = row.dna_psnr - row.bm_known_psnr
    if row.dna_psnr is not None and row.bm_est_psnr is not None:
        row.d_vs_est = row.dna_psnr - row.bm_est_psnr
    if scan.is_volume:
        row.dice_noisy = otsu_dice(clean, noisy)
        row.dice_dna = otsu_dice(clean, dna.output) if dna is not None else None
        row.dice_bm_known = otsu_dice(clean, known.output) if known is not None else None
        row.dice_bm_est = otsu_dice(clean, est.output) if est is not None else None
    return row


def fmt_range(value: object) -> str:
    """A noise-map range as ``lo-hi`` (whatever the package returned, else empty)."""
    if value is None:
        return ""
    try:
        lo, hi = (float(v) for v in value)
        return f"{lo:.3g}-{hi:.3g}"
    except (TypeError, ValueError):
        return str(value)


def white_table(rows: list[WhiteRow]) -> str:
    headers = ["case", "group", "size", "noise", "noisy", "DNA-Prior", "BM3D/4D sigma known", "BM3D/4D sigma est.",
               "Δ vs known", "Δ vs est.", "model found", "level found", "coloured", "noise map range",
               "DNA-Prior s", "BM s (known)", "Dice DNA / BM known / BM est. / noisy", "warning"]
    cells = []
    for r in rows:
        dice = (" / ".join(fmt(v, 3) for v in (r.dice_dna, r.dice_bm_known, r.dice_bm_est, r.dice_noisy))
                if r.dice_noisy is not None else "")
        cells.append([r.case, r.group, r.shape, r.noise, fmt(r.noisy_psnr), fmt(r.dna_psnr), fmt(r.bm_known_psnr),
                      fmt(r.bm_est_psnr), signed(r.d_vs_known), signed(r.d_vs_est), r.model_found,
                      fmt_sig(r.level_found),
                      "" if r.coloured is None else ("**yes**" if r.coloured else "no"), r.noise_map_range,
                      fmt_sig(r.dna_seconds), fmt_sig(r.bm_known_seconds), dice, r.warning])
    return markdown_table(headers, cells)


def signed(value: float | None) -> str:
    """A dB difference with its sign, empty for None."""
    return "" if value is None else f"{value:+.2f}"


def _stats(values: list[float]) -> str:
    return f"{np.mean(values):+.2f} / {np.min(values):+.2f}" if values else ""


def white_summary(rows: list[WhiteRow]) -> str:
    """Per group (held-out anatomy 2D, 3D; level hold-out) and overall: false-coloured rate, Δ PSNR, Dice."""
    groups = {
        "held-out anatomy, 2D": [r for r in rows if r.group == "anatomy" and r.shape.count("x") == 1],
        "held-out anatomy, 3D": [r for r in rows if r.group == "anatomy" and r.shape.count("x") == 2],
        "level hold-out (dev 2D scans, sigma 0.05)": [r for r in rows if r.group == "level"],
        "all": rows,
    }
    cells = []
    for name, sel in groups.items():
        if not sel:
            continue
        ran = [r for r in sel if r.coloured is not None]
        coloured = sum(bool(r.coloured) for r in ran)
        wrong = sum(r.model_found not in ("", r.noise) for r in ran)
        dk = [r.d_vs_known for r in sel if r.d_vs_known is not None]
        de = [r.d_vs_est for r in sel if r.d_vs_est is not None]
        dice = [(r.dice_dna - r.dice_bm_known) for r in sel if r.dice_dna is not None and r.dice_bm_known is not None]
        cells.append([name, len(sel), f"{coloured}/{len(ran)}" + (f" ({coloured / len(ran):.0%})" if ran else ""),
                      f"{wrong}/{len(ran)}", _stats(dk), _stats(de), sum(d >= -0.2 for d in dk),
                      f"{np.mean(dice):+.3f}" if dice else ""])
    headers = ["group", "cases", "read as coloured (false-coloured rate)", "model found wrong",
               "DNA-Prior − BM3D/4D sigma known, mean / min (dB)",
               "DNA-Prior − BM3D/4D sigma est., mean / min (dB)",
               "within 0.2 dB of sigma known or above", "Dice DNA − BM4D known (mean)"]
    return markdown_table(headers, cells)


def write_csv(path: Path, rows: list) -> None:
    """Dataclass rows as CSV."""
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def package_version() -> str:
    import monai_dnaprior

    return getattr(monai_dnaprior, "__version__", "?")


def package_state(note: str | None = None) -> str:
    """Which package ran: version, folder, and its git commit and uncommitted files where it is a checkout."""
    import subprocess

    import monai_dnaprior

    folder = Path(monai_dnaprior.__file__).resolve().parent
    text = f"monai_dnaprior {package_version()} from `{folder.parent}`"
    try:
        git = ["git", "-C", str(folder)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True)
        changed = [line[3:] for line in dirty.stdout.splitlines()]
        text += f", commit {head.stdout.strip()}" + (f", uncommitted: {', '.join(changed)}" if changed else ", clean")
    except (OSError, subprocess.CalledProcessError):
        text += " (not a git checkout)"
    return text + (f"; {note}" if note else "")


def run_white(args: argparse.Namespace) -> None:
    filters = list(QUICK_WHITE) if args.quick else (args.cases.split(",") if args.cases else None)
    scans = [(s, "anatomy") for s in load_heldout(filters=filters)]
    if not args.quick and not args.no_level:
        scans += [(s, "level") for s in load_level_holdout(args.data_dir, filters)]
    if not scans:
        raise SystemExit(f"No scan matches {filters}.")
    noises = WHITE_NOISES if not args.quick else ("gaussian",)
    args.out.mkdir(parents=True, exist_ok=True)
    warm_up()
    start, rows, notes = time.perf_counter(), [], []
    for scan, group in scans:
        for noise in noises:
            rows.append(evaluate_white(scan, group, noise, notes))
            write_csv(args.out / "white.csv", rows)
    seconds = time.perf_counter() - start
    note_lines = "\n".join(f"- {n}" for n in notes) or "- none"
    text = f"""# Held-out scans under white noise: DNA-Prior vs BM3D/BM4D, and the false-coloured rate

{package_state(args.package_note)}. `DNAPriorDenoise()` (noise model found blind, preset `default`). Machine:
{machine_summary()}. Total {seconds / 60:.1f} min.

White Gaussian `y = x + 0.05 n` and white Rician `y = |x + 0.05 (n1 + i n2)|` on each scan scaled to [0, 1] (fixed
seed per scan and noise). The reference is the real file itself (it carries its own small noise; nothing is denoised
first). "anatomy" = held-out scans (`benchmarks/heldout.py --list`); "level" = the 2D development scans at sigma 0.05
(the development runs use 0.1 Gaussian and 0.08 Rician): a level hold-out, not an anatomy hold-out. BM3D (2D) / BM4D
(3D): sigma known (0.05), or estimated (Gaussian: `skimage.restoration.estimate_sigma`; Rician: the bright-block
Haar MAD), Rician with the Rician mean inverted with that sigma. "coloured" = `info["coloured"]` of
`monai_dnaprior.denoise`: the noise is white, so every "yes" is a false colour. "level found" is in the units of the
package's intensity window (not necessarily the [0, 1] range). Dice (volumes): multi-Otsu thresholds (3 classes)
of the clean reference applied to it and to each output, mean Dice of the two upper classes. PSNR over the whole
image, data range of the reference. This run:
`OMP_NUM_THREADS=1 python benchmarks/heldout.py {shlex.join(sys.argv[1:])}`.

Notes:
{note_lines}

## Summary

{white_summary(rows)}

## All cases

{white_table(rows)}
"""
    (args.out / "white.md").write_text(text)
    print(text)
    print(f"\nWrote {args.out}/white.md, white.csv", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="print the held-out scans and exit")
    p.add_argument("--white", action="store_true", help="the white-noise check on every held-out scan")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_WHITE)}, Gaussian noise")
    p.add_argument("--cases", default=None, help="comma-separated substrings of the scan names")
    p.add_argument("--no-level", action="store_true", help="leave out the level hold-out (development 2D scans)")
    p.add_argument("--out", type=Path, default=Path("bench_white"), help="output folder")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder of the shared NIfTI scans")
    p.add_argument("--package-note", default=None, help="a note on the package under test, written into the results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list or not args.white:
        print(heldout_table())
        if not args.white:
            return
    run_white(args)


if __name__ == "__main__":
    main()

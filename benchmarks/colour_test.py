"""The colour test's false-alarm rate and power: white noise on clean anatomy must read white, coloured noise coloured.

    python benchmarks/colour_test.py --out bench_colour           # 8 draws: 4 to 9 min on 1 thread
    python benchmarks/colour_test.py --draws 1 --out /tmp/ct       # smoke test, about 1 min

What it measures (:func:`monai_dnaprior.noise.spectrum.colour_test`, and the noise field's own colour flag,
``estimate_noise_field(..., "gaussian")``, which also needs the flattest patches above the darkest quarter to read as
coloured):

- **false alarms**: clean anatomy with white Gaussian noise (sigma 1 %, 2 %, 3 %, 5 % and 10 % of the range,
  ``--draws`` draws each) called coloured. Group ``smooth`` (the calibration): two smooth phantoms, and every scan
  Gaussian-smoothed (width 1.5 voxels: its own noise mostly gone, its anatomy smooth at the voxel scale) and that
  upsampled 2x by linear interpolation. Group ``as-is``: the scans as they come and upsampled 2x, their own noise
  included. The scans: DIPY's ``aniso_vox``, ``S0_10`` (a b0, 10 slices), ``t1_coronal_slice`` and a slice of
  ``aniso_vox``; nibabel's SPM-normalised ``anatomical.nii``; the dev scans (``../shared/data``, pydicom's CT and the
  EPI volume, frame 0 of nibabel's ``example4d.nii.gz``). A level counts only where it is at least 3 times the image's
  own noise (the wavelet MAD, scaled by the smoothing): below that, the scan's own noise (coloured in CT, and in any
  interpolated image) is part of what is tested;
- **sampling false alarms**: pure white noise of several sizes: the statistic in units of ``1 / sqrt(N)`` (``N``
  independent voxels) and how often it exceeds the test's ``z``;
- **power**: the smooth group with coloured noise (white noise resampled by 1.25x to 3x, Gaussian-filtered, a Hann
  k-space window) at sigma 2 % and 5 %, called coloured.

Writes ``colour_test.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from common import default_data_dir, load_scans

from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.noise import estimate_noise_field
from monai_dnaprior.noise.spectrum import _ANATOMY_RISE, _COLOUR_Z, _NOISE_RISE, _where_the_noise_is, colour_test

SIGMAS = (0.01, 0.02, 0.03, 0.05, 0.1)
# A level counts as white noise on the image where it is at least this many times the image's own noise (the scans
# carry noise of their own, some of it coloured: CT's FBP, interpolation): their sum's correlation is then the own
# noise's times at most 1 / 3^2
_OWN_NOISE = 3.0


def _norm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x - x.min()) / max(float(x.max() - x.min()), 1e-12)


def _upsample(x: np.ndarray, factor: int = 2) -> np.ndarray:
    """Linear interpolation by ``factor`` along the in-plane axes (the first two), cropped back to at most 256."""
    t = torch.from_numpy(x)[None, None]
    mode = "bilinear" if x.ndim == 2 else "trilinear"
    scale = (factor, factor) if x.ndim == 2 else (factor, factor, 1)
    up = torch.nn.functional.interpolate(t, scale_factor=scale, mode=mode, align_corners=False)[0, 0].numpy()
    crop = tuple(slice((s - min(s, 256)) // 2, (s - min(s, 256)) // 2 + min(s, 256)) for s in up.shape)
    return np.ascontiguousarray(up[crop])


def _phantom(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Smooth blobs of several intensities on a dark background: anatomy smooth at the voxel scale."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    x = np.zeros(shape)
    for _ in range(12):
        centre = rng.uniform(-0.6, 0.6, len(shape))
        radii = rng.uniform(0.1, 0.5, len(shape))
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1
        x[inside] = rng.uniform(0.2, 1.0)
    return _norm(gaussian_filter(x, 2.0))


def _smoothed(x: np.ndarray, width: float = 1.5) -> tuple[np.ndarray, float]:
    """``x`` Gaussian-smoothed (its own noise mostly gone, its anatomy smooth at the voxel scale), and the factor its
    own white noise's std is scaled by."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((33,) * x.ndim)
    delta[(16,) * x.ndim] = 1.0
    return gaussian_filter(x, width), float(np.sqrt((gaussian_filter(delta, width) ** 2).sum()))


def anatomy(data_dir: Path) -> dict[str, tuple[str, np.ndarray, float]]:
    """Images by name: ``(group, image in [0, 1], its own noise level)``. Group ``smooth``: clean smooth anatomy
    (phantoms; scans Gaussian-smoothed, their own noise mostly gone; their 2x upsampled twins); ``as-is``: the scans
    as they come, their own noise (the wavelet MAD) included."""
    import nibabel as nib
    from nibabel.testing import data_path

    from monai_dnaprior.noise.estimation import estimate_noise_level

    scans: dict[str, np.ndarray] = {}
    try:
        import dipy.data

        scans["dipy_aniso_vox"] = _norm(nib.load(dipy.data.get_fnames(name="aniso_vox")).get_fdata())
        scans["dipy_s0_10slices"] = _norm(nib.load(dipy.data.get_fnames(name="S0_10")).get_fdata()[..., 0])
        scans["dipy_t1_coronal_2d"] = _norm(np.load(dipy.data.get_fnames(name="t1_coronal_slice")))
        scans["dipy_aniso_vox_slice"] = scans["dipy_aniso_vox"][..., 12]
    except Exception as error:  # noqa: BLE001 - DIPY's data are optional here
        print(f"DIPY data left out: {error}", flush=True)
    anat = _norm(nib.load(os.path.join(data_path, "anatomical.nii")).get_fdata())
    scans["nibabel_anatomical"] = anat
    for scan in load_scans(data_dir):
        scans[scan.name] = _norm(scan.image)
    out: dict[str, tuple[str, np.ndarray, float]] = {
        "phantom_2d": ("smooth", _phantom((160, 160)), 0.0), "phantom_3d": ("smooth", _phantom((64, 64, 32)), 0.0)}
    for name, image in scans.items():
        own = estimate_noise_level(torch.from_numpy(image)[None], image.ndim)
        smooth, gain = _smoothed(image)
        left = own * gain / float(smooth.max() - smooth.min())  # its own noise, in the units of the normalised image
        out[f"{name}_smoothed"] = ("smooth", _norm(smooth), left)
        out[f"{name}_smoothed_up2"] = ("smooth", _norm(_upsample(smooth)), left)
    for name, image in scans.items():
        out[name] = ("as-is", image, estimate_noise_level(torch.from_numpy(image)[None], image.ndim))
        out[f"{name}_up2"] = ("as-is", _upsample(image), out[name][2])
    return out


def _flags(y: np.ndarray) -> tuple[object, bool]:
    """The colour test on ``y`` (normalised to its range, as the denoiser does) and the noise field's colour flag."""
    t = torch.from_numpy(np.asarray(y, dtype=np.float32))[None]
    t = IntensityWindow.from_image(t).normalize(t)
    sd = t.ndim - 1
    test = colour_test(t, sd, mask=_where_the_noise_is(t, sd))
    field, _ = estimate_noise_field(t, sd, "gaussian")
    return test, not field.is_white


def _resampled(shape: tuple[int, ...], factor: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import zoom

    small = rng.standard_normal(tuple(max(4, int(np.ceil(s / factor))) for s in shape))
    out = zoom(small, factor, order=1)
    return out[tuple(slice(0, s) for s in shape)]


def _filtered(shape: tuple[int, ...], width: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(rng.standard_normal(shape), width)


def _hann(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    window = np.ones(shape)
    for axis, n in enumerate(shape):
        w = np.fft.ifftshift(np.hanning(n))
        window = window * np.expand_dims(w, [a for a in range(len(shape)) if a != axis])
    return np.real(np.fft.ifftn(np.fft.fftn(rng.standard_normal(shape)) * window))


COLOURED: dict[str, Callable[[tuple[int, ...], np.random.Generator], np.ndarray]] = {
    "resampled 1.25x": lambda s, r: _resampled(s, 1.25, r),
    "resampled 1.67x": lambda s, r: _resampled(s, 1.67, r),
    "resampled 3x": lambda s, r: _resampled(s, 3.0, r),
    "gaussian-filtered 0.6": lambda s, r: _filtered(s, 0.6, r),
    "gaussian-filtered 1.2": lambda s, r: _filtered(s, 1.2, r),
    "hann k-space": _hann,
}


def _white_sampling(draws: int) -> list[str]:
    """Pure white noise: the statistic in units of 1 / sqrt(N), its quantiles and how often it exceeds z."""
    rows = ["| size | draws | patches read | statistic x sqrt(N): median | 99th percentile | max | "
            f"over z = {_COLOUR_Z:g} |", "| --- | --- | --- | --- | --- | --- | --- |"]
    total, over = 0, 0
    for shape in [(48, 48), (64, 64), (96, 96), (128, 128), (256, 256), (40, 40, 20), (64, 64, 24), (96, 96, 32)]:
        rng = np.random.default_rng(len(shape) * 1000 + shape[0])
        zs, patches = [], 0
        for _ in range(draws):
            test = colour_test(torch.from_numpy(rng.standard_normal(shape).astype(np.float32))[None], len(shape))
            if test is None:
                continue
            zs.append(test.statistic * np.sqrt(test.independent))
            patches = test.patches
        if not zs:
            continue
        z = np.array(zs)
        total += z.size
        over += int((z > _COLOUR_Z).sum())
        rows.append(f"| {'x'.join(map(str, shape))} | {z.size} | {patches} | {np.median(z):.2f} | "
                    f"{np.percentile(z, 99):.2f} | {z.max():.2f} | {(z > _COLOUR_Z).mean():.1%} |")
    rows.append(f"| all | {total} | | | | | {over / max(total, 1):.2%} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_colour"), help="output folder")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder of the shared NIfTI scans")
    p.add_argument("--draws", type=int, default=8, help="noise draws per image and level")
    p.add_argument("--white-draws", type=int, default=40, help="draws of pure white noise per size")
    p.add_argument("--cases", default=None, help="comma-separated substrings of the image names to keep")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    images = anatomy(args.data_dir)
    if args.cases:
        images = {k: v for k, v in images.items() if any(c in k for c in args.cases.split(","))}
    lines = ["# The colour test: false alarms on white noise, detection of coloured noise", "",
             f"{args.draws} draws per image and noise level; sigma in {', '.join(f'{s:g}' for s in SIGMAS)} of the "
             f"range. `test`: `colour_test` alone; `field`: the noise field's colour flag (Gaussian model). "
             f"Anatomy rise limit {_ANATOMY_RISE:g}, z = {_COLOUR_Z:g}; above a rise of {_NOISE_RISE:g} the correlation "
             "must also hold with a quadric removed.", ""]
    lines += ["## False alarms: clean anatomy + white Gaussian noise", "",
              "| image | group | shape | own noise | " + " | ".join(f"sigma {s:g}: test / field" for s in SIGMAS) +
              " | largest statistic (its rise) |", "| --- | --- | --- | --- |" + " --- |" * (len(SIGMAS) + 1)]
    counts: dict[str, list[int]] = {}  # per group and source: tests, test alarms, field alarms
    rises_null: list[float] = []
    for name, (group, clean, own) in images.items():
        cells, worst = [], (0.0, 0.0)
        for si, sigma in enumerate(SIGMAS):
            if sigma < _OWN_NOISE * own:
                cells.append("(own noise)")
                continue
            alarms_test = alarms_field = 0
            for d in range(args.draws):
                rng = np.random.default_rng([si, d, len(name)])
                test, coloured = _flags(clean + sigma * rng.standard_normal(clean.shape))
                hit = test is not None and test.coloured
                alarms_test += hit
                alarms_field += coloured
                if test is not None and test.statistic > test.threshold:
                    rises_null.append(test.rise)
                if test is not None and test.statistic > worst[0]:
                    worst = (test.statistic, test.rise)
            source = "held-out" if name.startswith(("dipy", "nibabel", "phantom")) else "dev"
            tally = counts.setdefault(f"{group}, {source} scans", [0, 0, 0])
            tally[0] += args.draws
            tally[1] += alarms_test
            tally[2] += alarms_field
            cells.append(f"{alarms_test}/{args.draws} / {alarms_field}/{args.draws}")
        lines.append(f"| {name} | {group} | {'x'.join(map(str, clean.shape))} | {own:.4f} | " + " | ".join(cells) +
                     f" | {worst[0]:.2f} ({worst[1]:.2f}) |")
        print(lines[-1], flush=True)
    lines += ["", "| group | images x levels x draws | false alarms: test | false alarms: field |",
              "| --- | --- | --- | --- |"]
    for group, (n, a, f) in sorted(counts.items()):
        if n:
            lines.append(f"| {group} | {n} | {a} ({a / n:.2%}) | {f} ({f / n:.2%}) |")
    n, a, f = (sum(c[i] for c in counts.values()) for i in range(3))
    lines.append(f"| all | {n} | {a} ({a / max(n, 1):.2%}) | {f} ({f / max(n, 1):.2%}) |")
    if rises_null:
        r = np.array(rises_null)
        lines += ["", f"Where the statistic passed its threshold on white noise ({r.size} cases) the rise was: "
                  f"median {np.median(r):.2f}, min {r.min():.2f}, 10th percentile {np.percentile(r, 10):.2f} "
                  f"(above {_ANATOMY_RISE:g}: anatomy, kept white)."]
    lines += ["", "## Sampling false alarms: pure white noise", ""] + _white_sampling(args.white_draws)
    lines += ["", "## Power: clean anatomy + coloured noise (sigma 2 % and 5 % of the range)", "",
              "| noise | cases | detected: test | detected: field | smallest statistic | largest rise |",
              "| --- | --- | --- | --- | --- | --- |"]
    for kind, make in COLOURED.items():
        hits_test = hits_field = cases = 0
        smallest, largest_rise = np.inf, 0.0
        for name, (group, clean, _) in images.items():
            if group != "smooth":
                continue
            for si, sigma in enumerate((0.02, 0.05)):
                rng = np.random.default_rng([si, len(name), len(kind)])
                noise = make(clean.shape, rng)
                test, coloured = _flags(clean + sigma * noise / noise.std())
                if test is None:
                    continue
                cases += 1
                hits_test += test.coloured
                hits_field += coloured
                smallest = min(smallest, test.statistic)
                largest_rise = max(largest_rise, test.rise)
        lines.append(f"| {kind} | {cases} | {hits_test} ({hits_test / max(cases, 1):.0%}) | "
                     f"{hits_field} ({hits_field / max(cases, 1):.0%}) | {smallest:.2f} | {largest_rise:.2f} |")
        print(lines[-1], flush=True)
    lines += ["", f"Total {time.time() - start:.0f} s."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "colour_test.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

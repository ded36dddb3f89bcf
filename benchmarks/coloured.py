"""Coloured and real noise benchmark: noise made by the physics of the scanner, not white noise added to an image.

    python benchmarks/coloured.py --quick --out bench_coloured_quick    # one small MRI case, 16 noise draws
    python benchmarks/coloured.py --out bench_coloured                  # every case, 64 noise draws for the PSDs

Cases, built from the real scans:
- ``lowdose_*``: low-dose CT. The slice scaled to attenuation, ``radon``, Poisson counts at dose ``I0``, ``-log``,
  ``iradon`` (ramp filter): high-pass, streaky, non-stationary noise. Reference: ``iradon`` of the noiseless
  sinogram (same geometry), so only the noise differs.
- ``kspace_*``: MRI. Complex white Gaussian noise added to the (orthonormal) k-space of the slice, a Hann apodisation
  window, inverse FFT, magnitude: low-pass noise, Rician where there is no signal. Reference: the magnitude of the
  windowed noiseless k-space. ``kspace_epi_volume_3d`` does the same in 3D on the first EPI frame (BM4D the oracle).
- ``resampled_*``: a scan with white noise resampled by MONAI ``Spacingd`` to 0.6 of its pixel size (bilinear):
  low-pass noise. Reference: the resampled clean scan. Every 2D MRI and CT slice of the set.
- ``--heldout``: the same physics, at the same doses and strengths, on held-out scans never used for tuning
  (``benchmarks/heldout.py``): low-dose CT of a head and of the Shepp-Logan phantom, k-space MRI of a T1 coronal and
  an abdomen slice and of DIPY's ``S0_10slices`` volume, and the four slices resampled.
- ``--small-masked``: small masked magnitudes: MRI slices brought to about 64 px (block means; a volume's middle
  slice), masked to their tissue (a skull-stripped or scanner-masked scan), under the ``kspace_*`` physics at three
  strengths. Too few patches lie outside their background of pure noise to read the noise from the tissue. Dev: the
  sagittal and 64x64 slices; with ``--heldout``: the T1 coronal and abdomen slices, ``S0_10slices`` and
  ``aniso_vox``.
- ``--wide-masked``: masked magnitudes in a wide field of view: MRI slices (a volume's middle slice) masked to their
  tissue and set in 48 px of zeros a side, under the ``kspace_*`` physics at the same three strengths. Most of the
  flattest patches lie in the background. Dev: the sagittal, rat-lung, CT and eye slices; with ``--heldout``: the
  held-out scans of ``--small-masked``, at their own size.
- ``--wide-resampled``: the ``--wide-masked`` slices (dev, or held out) under the ``resampled_*`` physics instead:
  a scan in a wide field of zeros, white noise, resampled. The flattest patches are the background's pure low-pass
  noise.
- ``epi_two_frames`` (real noise, nothing synthetic): frame 0 of nibabel's ``example4d.nii.gz`` denoised as a volume
  and compared with frame 1 (noise-to-noise); see :func:`noise_power_removed`.

The oracle PSD of each synthetic case is ``E|fftn(noisy - reference, norm="ortho")|^2`` over ``--realisations``
independent draws (unshifted; its mean is the noise variance). Writes ``coloured.md`` and ``coloured.csv``.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import anchors
import numpy as np
import torch
from common import (
    FIT_ALONE,
    Denoiser,
    MethodRun,
    Scan,
    default_data_dir,
    dnaprior_denoiser,
    fit_alone_denoiser,
    fmt,
    fmt_sig,
    largest_component,
    load_scans,
    machine_summary,
    markdown_table,
    noise_seed,
    psnr,
    ssim,
    timed,
    tv_denoise,
    warm_up,
)

if not hasattr(np, "trapz"):  # bm3d's PSD path calls np.trapz, removed in numpy 2
    np.trapz = np.trapezoid

ORACLE = "BM3D (oracle PSD)"
ORACLE_RICIAN = "BM3D (oracle PSD) + Rician mean inverse"
CT_MAX_LINE_INTEGRAL = 4.0  # attenuation scaled so the longest ray through the slice keeps exp(-4) = 1.8% of I0
CT_DOSE = {"ratlung_ct_2d": 2.0e3, "ct_small_2d": 5.0e3}  # I0, incident photons per detector bin
KSPACE_SIGMA = {"mri_sagittal_2d": 0.12, "mr_small_2d": 0.12}  # per real/imag component, of the image range
KSPACE_VOLUME_SIGMA = {"epi_volume_3d": 0.12}  # a 3D k-space window over the EPI volume (no resampled twin: too big)
RESAMPLE_SIGMA, RESAMPLE_PIXDIM = 0.07, 0.6
HELDOUT_CT_DOSE = {"ct_head_2d": 5.0e3, "shepp_logan_2d": 5.0e3}  # held-out scans: chosen before any run, like the dev
HELDOUT_KSPACE_SIGMA = {"t1_coronal_2d": 0.12, "mr_abdomen_2d": 0.12}
HELDOUT_KSPACE_VOLUME_SIGMA = {"s0_10slices_3d": 0.12}
SMALL_SIDE = 64  # --small-masked: the slices' longer side, about
SMALL_MASKED_SIGMAS = (0.06, 0.12, 0.2)
SMALL_MASKED = ("mri_sagittal_2d", "mr_small_2d")
HELDOUT_SMALL_MASKED = ("t1_coronal_2d", "mr_abdomen_2d", "s0_10slices_3d", "aniso_vox_3d")
WIDE_PAD = 48  # --wide-masked: the zeros around the masked slice, px a side
WIDE_MASKED = ("mri_sagittal_2d", "ratlung_ct_2d", "ct_small_2d", "vw_eye_2d")
HELDOUT_WIDE_MASKED = HELDOUT_SMALL_MASKED
QUICK_CASE = "kspace_mr_small_2d"
REAL_CASE = "epi_two_frames"


@dataclass
class Case:
    """A clean reference and a simulator of its noisy observation (one draw per generator)."""

    name: str
    description: str
    reference: np.ndarray
    simulate: Callable[[np.random.Generator], np.ndarray]
    rician: bool = False  # magnitude data: DIPY's NL-means runs with its Rician correction
    component_sigma: float | None = None  # magnitude data: the noise std of each complex component, in the image


@dataclass
class Row:
    """One method on one case (synthetic: PSNR/SSIM against the reference; real: the noise power removed)."""

    case: str
    shape: str
    method: str
    seconds: float
    psnr: float | None = None
    ssim: float | None = None
    dpsnr_vs_oracle: float | None = None
    time_vs_oracle: float | None = None
    noise_removed: float | None = None
    iterations: int | None = None
    noise_level: float | None = None


# --------------------------------------------------------------------------------------------------- cases


def ct_case(scan: Scan, dose: float, n_angles: int = 180) -> Case:
    """Low-dose CT by physics: attenuation, parallel-beam ``radon``, Poisson counts, ``-log``, ramp-filtered FBP."""
    from skimage.transform import iradon, radon

    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    size = max(scan.image.shape)
    crop = tuple(slice(0, s) for s in scan.image.shape)
    image = np.zeros((size, size))
    image[crop] = scan.image
    mu = image * (CT_MAX_LINE_INTEGRAL / radon(image, theta, circle=False).max())
    sinogram = radon(mu, theta, circle=False)

    def fbp(s: np.ndarray) -> np.ndarray:
        return iradon(s, theta, output_size=size, filter_name="ramp", circle=False)[crop].astype(np.float32)

    def simulate(rng: np.random.Generator) -> np.ndarray:
        counts = rng.poisson(dose * np.exp(-sinogram))
        return fbp(-np.log(np.maximum(counts, 1) / dose))

    text = f"CT: Poisson counts, I0 = {dose:.0e}, max line integral {CT_MAX_LINE_INTEGRAL}, {n_angles} angles, FBP ramp"
    return Case(f"lowdose_{scan.name}", text, fbp(sinogram), simulate)


def hann_window(shape: tuple[int, ...]) -> np.ndarray:
    """Separable periodic Hann window, centred on k = 0 in the unshifted FFT layout."""
    from scipy.signal.windows import hann

    w = np.ones(shape)
    for axis, n in enumerate(shape):
        w = w * np.expand_dims(hann(n, sym=False), [a for a in range(len(shape)) if a != axis])
    return np.fft.ifftshift(w)


def kspace_case(scan: Scan, sigma: float) -> Case:
    """MRI by physics: complex white Gaussian noise in orthonormal k-space, Hann apodisation, inverse FFT, magnitude."""
    kspace = np.fft.fftn(scan.image.astype(np.float64), norm="ortho")
    window = hann_window(scan.image.shape)

    def to_image(k: np.ndarray) -> np.ndarray:
        return np.abs(np.fft.ifftn(window * k, norm="ortho")).astype(np.float32)

    def simulate(rng: np.random.Generator) -> np.ndarray:
        noise = sigma * (rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape))
        return to_image(kspace + noise)

    text = f"MRI: complex Gaussian noise in k-space, sigma {sigma} per component, Hann window, magnitude"
    component_sigma = sigma * float(np.sqrt(np.mean(window**2)))  # the window scales each component's noise
    return Case(f"kspace_{scan.name}", text, to_image(kspace), simulate, rician=True, component_sigma=component_sigma)


def resample(image: np.ndarray, pixdim: float) -> np.ndarray:
    """MONAI ``Spacingd`` to ``pixdim`` of the original pixel size, bilinear (identity affine in)."""
    from monai.data import MetaTensor
    from monai.transforms import Spacingd

    spacing = Spacingd(keys="image", pixdim=(pixdim,) * image.ndim, mode="bilinear")
    out = spacing({"image": MetaTensor(np.asarray(image, dtype=np.float32)[None])})["image"]
    return np.asarray(out[0], dtype=np.float32)


def resampled_case(scan: Scan, sigma: float, pixdim: float) -> Case:
    """A white-noise scan resampled to a finer grid: noisy = resample(clean + noise), reference = resample(clean)."""

    def simulate(rng: np.random.Generator) -> np.ndarray:
        return resample(scan.image + sigma * rng.standard_normal(scan.image.shape), pixdim)

    text = f"white Gaussian sigma {sigma}, then MONAI Spacingd pixdim {pixdim} (bilinear)"
    return Case(f"resampled_{scan.name}", text, resample(scan.image, pixdim), simulate)


def _scans(data_dir: Path, names: Sequence[str], heldout: bool) -> dict[str, Scan]:
    """The development scans of ``names`` (or, ``heldout``, the held-out ones) by name."""
    if heldout:
        from heldout import load_heldout

        return {s.name: s for s in load_heldout(list(names))}
    return {s.name: s for s in load_scans(data_dir, list(names))}


def tissue_mask(image: np.ndarray) -> np.ndarray:
    """The largest region above 12 % of the maximum once smoothed (a Gaussian of 2 px), closed and its holes filled."""
    from scipy import ndimage

    mask = largest_component(ndimage.gaussian_filter(image, 2) > 0.12 * image.max())
    return ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=3))


def small_masked_scan(scan: Scan) -> Scan:
    """``scan`` (a volume's middle slice) brought to about :data:`SMALL_SIDE` px by block means, scaled to [0, 1]
    and masked to its tissue (:func:`tissue_mask`)."""
    from heldout import block_mean

    image = scan.image if scan.image.ndim == 2 else scan.image[..., scan.image.shape[-1] // 2]
    image = block_mean(image, max(1, round(max(image.shape) / SMALL_SIDE)))
    image = (image - image.min()) / (image.max() - image.min())
    return Scan(scan.name, (image * tissue_mask(image)).astype(np.float32), scan.source)


def wide_masked_scan(scan: Scan) -> Scan:
    """``scan`` (a volume's middle slice) scaled to [0, 1], masked to its tissue (:func:`tissue_mask`) and set in
    :data:`WIDE_PAD` px of zeros a side: a small head in a wide field of view."""
    image = scan.image if scan.image.ndim == 2 else scan.image[..., scan.image.shape[-1] // 2]
    image = (image - image.min()) / (image.max() - image.min())
    return Scan(scan.name, np.pad(image * tissue_mask(image), WIDE_PAD).astype(np.float32), scan.source)


def kspace_cases(scan: Scan, tag: str) -> list[Case]:
    """``scan`` under the k-space window at each of :data:`SMALL_MASKED_SIGMAS`."""
    cases = []
    for sigma in SMALL_MASKED_SIGMAS:
        case = kspace_case(scan, sigma)
        case.name = f"kspace_{tag}_{scan.name}_{sigma:g}"
        cases.append(case)
    return cases


def resampled_cases(scan: Scan, tag: str) -> list[Case]:
    """``scan`` with white noise, resampled as the ``resampled_*`` cases are."""
    case = resampled_case(scan, RESAMPLE_SIGMA, RESAMPLE_PIXDIM)
    case.name = f"resampled_{tag}_{scan.name}"
    return [case]


# the masked families: how a scan is made one, the case names' tag, the dev and the held-out scans, the physics
MASKED_FAMILIES: dict[str, tuple[Callable[[Scan], Scan], str, Sequence[str], Sequence[str],
                                 Callable[[Scan, str], list[Case]]]] = {
    "small": (small_masked_scan, f"masked{SMALL_SIDE}", SMALL_MASKED, HELDOUT_SMALL_MASKED, kspace_cases),
    "wide": (wide_masked_scan, "wide", WIDE_MASKED, HELDOUT_WIDE_MASKED, kspace_cases),
    "wide_resampled": (wide_masked_scan, "wide", WIDE_MASKED, HELDOUT_WIDE_MASKED, resampled_cases),
}


def build_cases(
    data_dir: Path, filters: list[str] | None, heldout: bool = False, masked: str | None = None
) -> list[Case]:
    """Every synthetic case on the development scans (or, ``heldout``, on the held-out ones), kept when its name
    contains one of ``filters`` (all when None); with ``masked`` (a key of :data:`MASKED_FAMILIES`), that family of
    masked scans under its physics instead."""
    if masked is not None:
        make, tag, dev, held, physics = MASKED_FAMILIES[masked]
        scans = _scans(data_dir, held if heldout else dev, heldout).values()
        cases = [case for scan in scans for case in physics(make(scan), tag)]
        return [c for c in cases if not filters or any(f in c.name for f in filters)]
    if heldout:
        doses, kspace, volumes = HELDOUT_CT_DOSE, HELDOUT_KSPACE_SIGMA, HELDOUT_KSPACE_VOLUME_SIGMA
    else:
        doses, kspace, volumes = CT_DOSE, KSPACE_SIGMA, KSPACE_VOLUME_SIGMA
    scans = _scans(data_dir, [*doses, *kspace, *volumes], heldout)
    builders: dict[str, Callable[[], Case]] = {}
    for name, dose in doses.items():
        builders[f"lowdose_{name}"] = lambda n=name, d=dose: ct_case(scans[n], d)
    for name, sigma in (kspace | volumes).items():
        builders[f"kspace_{name}"] = lambda n=name, s=sigma: kspace_case(scans[n], s)
    for name in list(kspace) + list(doses):
        builders[f"resampled_{name}"] = lambda n=name: resampled_case(scans[n], RESAMPLE_SIGMA, RESAMPLE_PIXDIM)
    return [build() for key, build in builders.items() if not filters or any(f in key for f in filters)]


def oracle_psd(case: Case, seed: int, realisations: int) -> np.ndarray:
    """``E|fftn(noisy - reference, norm="ortho")|^2`` over independent draws: unshifted, mean = noise variance."""
    power = np.zeros(case.reference.shape)
    for r in range(realisations):
        noise = case.simulate(np.random.default_rng([seed, r + 1])) - case.reference
        power += np.abs(np.fft.fftn(noise, norm="ortho")) ** 2
    return power / realisations


# ------------------------------------------------------------------------------------------------- methods


def dna_blind_model() -> tuple[str, str]:
    """DNA-Prior's blind noise model and row label: ``"auto"`` where the package has it, else ``"gaussian"``."""
    from monai_dnaprior import DNAPriorDenoise

    try:
        DNAPriorDenoise(noise_model="auto")
        return "auto", "DNA-Prior (auto)"
    except ValueError:
        return "gaussian", "DNA-Prior (gaussian: no 'auto' in this package)"


def has_noise_psd() -> bool:
    """Whether ``DNAPriorDenoise`` takes ``noise_psd``."""
    from monai_dnaprior import DNAPriorDenoise

    return "noise_psd" in inspect.signature(DNAPriorDenoise).parameters


def methods_for(case: Case, psd: np.ndarray, args: argparse.Namespace) -> tuple[dict[str, Denoiser], list[str]]:
    """Every method on one case, and notes on the rows skipped. ``psd`` is in orthonormal units; the ``bm3d``
    package wants ``E|fft2(noise)|^2`` without normalisation, i.e. ``psd * psd.size`` (white: ``sigma^2 * N``)."""
    model, blind = dna_blind_model()
    dna = dict(preset=args.preset, device=args.device)  # the filter: no network, no iterations, no seed
    methods: dict[str, Denoiser] = {blind: dnaprior_denoiser(model, **dna)}
    notes = []
    if has_noise_psd():
        methods["DNA-Prior (oracle PSD)"] = dnaprior_denoiser("rician" if case.rician else "gaussian", noise_psd=psd,
                                                              **dna)
    else:
        notes.append("DNA-Prior (oracle PSD): skipped, this package's DNAPriorDenoise has no `noise_psd`.")
    sigma = anchors.bright_block_sigma if case.rician else anchors.skimage_sigma
    methods |= {
        ORACLE: timed(lambda y: anchors.bm_denoise(y, psd * psd.size)),
        "BM3D (white, sigma est.)": timed(anchors.gaussian_pipeline),
    }
    if case.component_sigma is not None:  # a magnitude: the expert also inverts the Rician mean, with the true sigma
        methods[ORACLE_RICIAN] = timed(
            lambda y: anchors.rician_mean_inverse(anchors.bm_denoise(y, psd * psd.size), case.component_sigma)
        )
    methods |= {
        "TV (Chambolle)": timed(tv_denoise),
        f"DIPY NL-means{' (Rician)' if case.rician else ''}": timed(
            lambda y: anchors.dipy_nlmeans(y, sigma(y), rician=case.rician)
        ),
        FIT_ALONE: fit_alone_denoiser(model, preset=args.preset, device=args.device, max_iters=args.max_iters,
                                      seed=args.seed),
    }
    return methods, notes


def run_method(name: str, denoiser: Denoiser, noisy: np.ndarray, label: str, notes: list[str]) -> MethodRun | None:
    """One method's run, or None (and a note) when it fails: the package under test may refuse an option."""
    print(f"  {label} / {name} ...", end="", file=sys.stderr, flush=True)
    try:
        run = denoiser(noisy)
    except Exception as error:  # noqa: BLE001 (a benchmark reports a failing method and goes on)
        print(f" failed: {error}", file=sys.stderr, flush=True)
        notes.append(f"{label} / {name}: failed ({type(error).__name__}: {error}).")
        return None
    print(f" {run.seconds:.1f} s", file=sys.stderr, flush=True)
    return run


def evaluate_case(case: Case, args: argparse.Namespace, notes: list[str]) -> tuple[list[Row], dict[str, float]]:
    """Every method on one draw of ``case``; the rows, and the case's noise statistics."""
    seed = noise_seed(case.name, "coloured")
    noisy = case.simulate(np.random.default_rng([seed, 0]))
    psd = oracle_psd(case, seed, args.realisations)
    ref, shape = case.reference, "x".join(map(str, case.reference.shape))
    stats = {"noise std": float(np.sqrt(psd.mean())), "white estimate": anchors.skimage_sigma(noisy),
             "noisy PSNR": psnr(ref, noisy)}
    rows = [Row(case.name, shape, "noisy", 0.0, stats["noisy PSNR"], ssim(ref, noisy))]
    methods, method_notes = methods_for(case, psd, args)
    notes += [f"{case.name}: {n}" for n in method_notes]
    for name, denoiser in methods.items():
        run = run_method(name, denoiser, noisy, case.name, notes)
        if run is not None:
            rows.append(Row(case.name, shape, name, run.seconds, psnr(ref, run.output), ssim(ref, run.output),
                            iterations=run.info.get("iterations"), noise_level=run.info.get("noise_level")))
    oracle = next((r for r in rows if r.method == ORACLE), None)
    for r in rows[1:]:
        if oracle is not None:
            r.dpsnr_vs_oracle = r.psnr - oracle.psnr
            r.time_vs_oracle = r.seconds / oracle.seconds if oracle.seconds > 0 else None
    return rows, stats


# ---------------------------------------------------------------------------------------------- real noise


def epi_frames() -> tuple[np.ndarray, np.ndarray]:
    """Frames 0 and 1 of nibabel's ``example4d.nii.gz``, both scaled by frame 0's range to [0, 1]."""
    import nibabel as nib
    from nibabel.testing import data_path

    data = np.asarray(nib.load(os.path.join(data_path, "example4d.nii.gz")).dataobj, dtype=np.float64)
    f0, f1 = data[..., 0], data[..., 1]
    lo, hi = float(f0.min()), float(f0.max())
    return ((f0 - lo) / (hi - lo)).astype(np.float32), ((f1 - lo) / (hi - lo)).astype(np.float32)


def brain_mask(f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """Otsu threshold of the mean of the two frames."""
    from skimage.filters import threshold_otsu

    mean = (f0 + f1) / 2.0
    return mean > threshold_otsu(mean)


def noise_power_removed(f0: np.ndarray, f1: np.ndarray, denoised: np.ndarray, mask: np.ndarray) -> float:
    """``sum(|f0 - f1|^2 - |D(f0) - f1|^2) / (n sigma^2)`` over ``mask``, ``sigma^2 = mean|f0 - f1|^2 / 2``.

    With independent noise of variance sigma^2 in each frame: 1 = all of frame 0's noise removed (D(f0) = the
    clean brain), 0 = nothing (D(f0) = f0), negative = harm (signal removed or noise added).
    """
    d0, dd = (f0 - f1)[mask], (denoised - f1)[mask]
    sigma2 = float(np.mean(d0.astype(np.float64) ** 2) / 2.0)
    return float((np.sum(d0.astype(np.float64) ** 2) - np.sum(dd.astype(np.float64) ** 2)) / (d0.size * sigma2))


def evaluate_real(args: argparse.Namespace, notes: list[str]) -> tuple[list[Row], float]:
    """DNA-Prior (blind; given the frame difference's sigma; both frames as channels, so it measures the noise by
    their difference itself) and BM4D (sigma estimated; sigma from the frame difference) on frame 0; rows and that
    sigma."""
    from monai_dnaprior.intensity import IntensityWindow

    f0, f1 = epi_frames()
    mask = brain_mask(f0, f1)
    sigma_pair = float(np.std((f0 - f1)[mask]) / np.sqrt(2.0))
    window = IntensityWindow.from_image(torch.from_numpy(f0)[None])  # DNA-Prior's levels are in its window's units
    model, blind = dna_blind_model()
    dna = dict(preset=args.preset, device=args.device)  # the filter: no network, no iterations, no seed
    methods: dict[str, Denoiser] = {
        blind: dnaprior_denoiser(model, **dna),
        "DNA-Prior (sigma from frame difference)": dnaprior_denoiser(
            "gaussian", noise_level=sigma_pair / float(window.high - window.low), **dna),
        "DNA-Prior (frames 0 and 1 as channels: noise from their difference)": dnaprior_denoiser(
            model, with_channels=[f1], **dna),
        "BM4D (sigma est.)": timed(anchors.gaussian_pipeline),
        "BM4D (sigma from frame difference)": timed(lambda y: anchors.bm_denoise(y, sigma_pair)),
    }
    shape = "x".join(map(str, f0.shape))
    rows = [Row(REAL_CASE, shape, "noisy (frame 0)", 0.0, noise_removed=0.0)]
    for name, denoiser in methods.items():
        run = run_method(name, denoiser, f0, REAL_CASE, notes)
        if run is not None:
            rows.append(Row(REAL_CASE, shape, name, run.seconds, noise_removed=noise_power_removed(f0, f1, run.output,
                            mask), iterations=run.info.get("iterations"), noise_level=run.info.get("noise_level")))
    return rows, sigma_pair


# -------------------------------------------------------------------------------------------------- output


def synthetic_table(rows: list[Row]) -> str:
    headers = ["case", "size", "method", "PSNR (dB)", "SSIM", "seconds", "ΔPSNR vs BM3D oracle PSD (dB)",
               "time / oracle", "iters"]
    cells = [[r.case, r.shape, r.method, fmt(r.psnr), fmt(r.ssim, 3), fmt_sig(r.seconds), fmt(r.dpsnr_vs_oracle),
              fmt_sig(r.time_vs_oracle), fmt(r.iterations)] for r in rows]
    return markdown_table(headers, cells)


def summary(rows: list[Row]) -> str:
    """Per method: mean gap to BM3D with the oracle PSD, geometric-mean time ratio, cases within 0.1 dB or above."""
    sel_rows = [r for r in rows if r.dpsnr_vs_oracle is not None and r.method != ORACLE]
    cells = []
    for method in dict.fromkeys(r.method for r in sel_rows):
        sel = [r for r in sel_rows if r.method == method]
        ratios = [r.time_vs_oracle for r in sel if r.time_vs_oracle]
        geo = float(np.exp(np.mean(np.log(ratios)))) if ratios else None
        near = sum(r.dpsnr_vs_oracle >= -0.1 for r in sel)
        cells.append([method, len(sel), fmt(float(np.mean([r.dpsnr_vs_oracle for r in sel]))),
                      fmt(float(np.mean([r.ssim for r in sel])), 3), fmt_sig(geo), f"{near}/{len(sel)}"])
    headers = ["method", "cases", "ΔPSNR vs BM3D oracle PSD (dB, mean)", "mean SSIM", "time / oracle (geo. mean)",
               "within 0.1 dB of the oracle or above"]
    return markdown_table(headers, cells)


def cases_table(cases: list[Case], stats: dict[str, dict[str, float]]) -> str:
    cells = [[c.name, c.description, fmt(stats[c.name]["noise std"], 4), fmt(stats[c.name]["white estimate"], 4),
              fmt(stats[c.name]["noisy PSNR"])] for c in cases if c.name in stats]
    headers = ["case", "noise", "noise std (oracle PSD)", "white sigma estimate (skimage)", "noisy PSNR (dB)"]
    return markdown_table(headers, cells)


def real_table(rows: list[Row]) -> str:
    cells = [[r.method, fmt(r.noise_removed, 3), fmt_sig(r.seconds), fmt(r.iterations)] for r in rows]
    return markdown_table(["method", "noise power removed (1 = all, 0 = none, < 0 harm)", "seconds", "iters"], cells)


def write_csv(path: Path, rows: list[Row]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def write_markdown(path: Path, args: argparse.Namespace, sections: dict[str, str], notes: list[str],
                   seconds: float) -> None:
    note_lines = "\n".join(f"- {n}" for n in notes) or "- none"
    body = "\n\n".join(f"## {title}\n\n{text}" for title, text in sections.items())
    scans = ("**held-out scans** (`--heldout`: never used for tuning, `benchmarks/heldout.py`)" if args.heldout
             else "the development scans")
    if args.masked:
        flag = {"wide_resampled": "wide-resampled"}.get(args.masked, f"{args.masked}-masked")
        what = "masked slices in a wide field, resampled" if args.masked == "wide_resampled" else "masked magnitudes"
        scans = f"{what if args.masked == 'wide_resampled' else args.masked + ' ' + what} (`--{flag}`) of {scans}"
    path.write_text(f"""# DNA-Prior on coloured and real noise: {scans}

DNA-Prior preset `{args.preset}` (`prior="auto"`: the filter); the network fit alone with max_iters
{args.max_iters or "the preset's"}, seed {args.seed}; device {args.device or "auto"}; {args.realisations} noise draws
per oracle PSD. Machine: {machine_summary()}.
Total {seconds / 60:.1f} min.

Synthetic cases: noise made by the physics (CT: Poisson counts, log, FBP; MRI: complex k-space noise, Hann window,
magnitude; resampling: MONAI `Spacingd`). PSNR and SSIM against the noiseless reference of the same pipeline, data
range = reference max - min. Oracle PSD = `E|fftn(noisy - reference, norm="ortho")|^2` (unshifted, mean = noise
variance) over independent draws; `BM3D (oracle PSD)` gets it as `sigma_psd = psd * N` (the `bm3d` package's PSD is
the unnormalised `E|fft2(noise)|^2`: sigma^2 N for white noise) and `DNA-Prior (oracle PSD)` as
`noise_psd = psd` (with `noise_model="rician"` on the MRI magnitudes). On the magnitudes an expert also removes the
Rician bias: `BM3D (oracle PSD) + Rician mean inverse` inverts the Rician mean of BM3D's output with the true
per-component sigma (k-space sigma x the window's RMS). Blind peers: BM3D with the white sigma of `skimage.restoration.estimate_sigma`, TV
(`denoise_tv_chambolle`, weight = that sigma), DIPY `nlmeans` (blockwise; Rician, with the bright-block sigma, on
the MRI magnitude). Reference for the ratios: BM3D with the oracle PSD. Ablation: DNA-Prior's network fit alone
(`prior="network"`: whitened spectral fidelity, no filter after it), what the Deep Image Prior does by itself.

Real noise (`{REAL_CASE}`): frame 0 of nibabel's `example4d.nii.gz` denoised as a volume and compared with frame 1;
noise power removed = `sum(|f0 - f1|^2 - |D(f0) - f1|^2) / (n sigma^2)` over an Otsu brain mask of the frame mean,
`sigma^2 = mean|f0 - f1|^2 / 2` (1 = all of frame 0's noise removed, 0 = nothing, negative = harm). DNA-Prior runs
blind on frame 0 alone, given that sigma, and on both frames as channels (it then measures the noise by their
difference; frame 0's output is scored, and frame 1 enters it only through the noise level and spectrum).

Notes:
{note_lines}

{body}
""")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"only {QUICK_CASE}, 16 noise draws for the PSD")
    p.add_argument("--out", type=Path, default=Path("bench_coloured"), help="output folder")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder of the shared NIfTI scans")
    p.add_argument("--cases", default=None, help=f"comma-separated substrings of the case names ({REAL_CASE}: real)")
    p.add_argument("--max-iters", type=int, default=None,
                   help="cap the network's iterations (the fit-alone row; smoke tests only)")
    p.add_argument("--preset", default="default", choices=("fast", "default", "quality"), help="DNA-Prior preset")
    p.add_argument("--device", default=None, help="device of DNA-Prior (default: CUDA when available, else CPU)")
    p.add_argument("--seed", type=int, default=0,
                   help="the network's seed (the fit-alone row; the noise seeds are fixed per case)")
    p.add_argument("--realisations", type=int, default=None, help="noise draws per oracle PSD (default 64; quick 16)")
    p.add_argument("--heldout", action="store_true",
                   help="the same physics on the held-out scans (never used for tuning); no real-noise case")
    family = p.add_mutually_exclusive_group()
    family.add_argument("--small-masked", action="store_const", dest="masked", const="small",
                        help="small masked magnitudes under a k-space window (dev, or held out with --heldout)")
    family.add_argument("--wide-masked", action="store_const", dest="masked", const="wide",
                        help="masked magnitudes in a wide field of view under a k-space window (dev, or held out)")
    family.add_argument("--wide-resampled", action="store_const", dest="masked", const="wide_resampled",
                        help="masked slices in a wide field of view, white noise, resampled (dev, or held out)")
    args = p.parse_args(argv)
    args.realisations = args.realisations or (16 if args.quick else 64)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    filters = [QUICK_CASE] if args.quick else (args.cases.split(",") if args.cases else None)
    cases = build_cases(args.data_dir, filters, args.heldout, args.masked)
    run_real = not args.quick and not args.heldout and not args.masked and (not filters or any(f in REAL_CASE for f in filters))
    if not cases and not run_real:
        raise SystemExit(f"No case matches {filters}.")
    warm_up(args.device)
    start, rows, stats, notes = time.perf_counter(), [], {}, []
    for case in cases:
        case_rows, stats[case.name] = evaluate_case(case, args, notes)
        rows += case_rows
        write_csv(args.out / "coloured.csv", rows)  # after every case, so a long run leaves partial results
    sections = {}
    if cases:
        sections |= {"Cases": cases_table(cases, stats), "Summary (synthetic cases)": summary(rows),
                     "All results (synthetic cases)": synthetic_table(rows)}
    if run_real:
        real_rows, sigma_pair = evaluate_real(args, notes)
        rows += real_rows
        sections[f"Real noise: {REAL_CASE}"] = (
            f"sigma from the frame difference (std(f0 - f1) / sqrt 2 over the mask): {sigma_pair:.4f} of frame 0's "
            f"range.\n\n{real_table(real_rows)}"
        )
    write_csv(args.out / "coloured.csv", rows)
    write_markdown(args.out / "coloured.md", args, sections, notes, time.perf_counter() - start)
    print("\n\n".join(sections.values()))
    print(f"\nWrote {args.out}/coloured.md, coloured.csv", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Noise whose level varies across the scan: DNA-Prior against BM3D/BM4D given the noise map (the oracle) and the
blind peers an expert runs, on development and held-out scans.

    python benchmarks/nonstationary.py --quick --out bench_ns_quick     # two small cases (< 1 min)
    python benchmarks/nonstationary.py --out bench_ns                   # every case (about 5-8 min on one core)
    python benchmarks/nonstationary.py --families gfactor,ctmod --cases mr_small

Families, each with a known map ``g(x)`` of the noise's relative std (median 1), so the noise std is
``sigma_base * g(x)``:

- ``falloff``: coil falloff after intensity normalisation: Gaussian noise whose std grows 5x from one edge of the
  first axis to the other (``exp(ln 5 * t)``, ``t`` in [0, 1]); also one volume (held-out ``aniso_vox_3d``).
- ``coil``: the same falloff on an MRI magnitude: Rician noise with per-component sigma ``sigma_base * g``.
- ``gfactor``: SENSE: an 8-coil array around the field of view (Biot-Savart-like loop falloff ``(1 + d^2/w^2)^-3/2``
  with a linear phase per coil), undersampled R = 3 along the second axis; the g-factor
  ``g_i = sqrt([(S^H S)^-1]_ii [S^H S]_ii)`` over each aliased set, on an MRI magnitude: Rician noise with per-component
  sigma ``sigma_base * g / median(g)``.
- ``ctmod``: CT with tube-current modulation: Poisson counts whose incident flux varies with the projection angle
  (``exp(a cos 2 theta)``, 3x from AP to lateral) and across the detector (a bowtie: 1 at the centre, 0.25 at the
  edge), ``-log``, FBP (``skimage.transform.radon``/``iradon``, ramp). The map is not known in closed form: the oracle
  map is the per-pixel std over 32 other noise draws (variance smoothed by a Gaussian of 3 px), and the oracle is also
  given the power spectrum of the noise divided by that map (FBP noise is coloured).
- ``band``: a raised band: Gaussian noise 2.5x stronger inside a smooth (Gaussian-profile) band across the image.

Methods, all in the same process on the same draw:

- **oracle**: BM3D (2D) / BM4D (3D) on ``y / g`` with sigma = the base level, multiplied back by ``g``; Rician: the
  Rician mean of that output inverted with the base sigma (:func:`anchors.rician_mean_inverse`), then times ``g``
  (``|x + g s n| / g`` is Rician with ``x / g`` and ``s``); CT: with the noise PSD of ``noise / g`` instead of a sigma.
- **blind peers**, one global level each: BM3D/BM4D with the scikit-image sigma (Rician: with the bright-block sigma
  and the Rician mean inverted, :func:`anchors.rician_bm_pipeline`), DIPY ``nlmeans`` (``rician=True`` on the
  magnitudes) with DIPY's ``estimate_sigma``, TV (``denoise_tv_chambolle``, weight = the scikit-image sigma, as
  :func:`common.tv_denoise`).
- **DNA-Prior**: ``DNAPriorDenoise()`` (noise model found blind) and with the noise model named (``gaussian``;
  ``rician`` for ``coil`` and ``gfactor``). What ``monai_dnaprior.denoise`` reported (``DenoiseResult.info``: model,
  level, coloured, the noise map's range where there is one) is recorded per case.
- **DNA-Prior given the map** (not blind, the expert's use of a known map beside the oracle): the model named and
  the true map passed as ``noise_map`` (``DNAPriorDenoise()(y, noise_map=g)``), the base level and the rest of the
  field estimated on ``y / g``.

PSNR and SSIM over the whole image (data range of the reference). Writes ``nonstationary.md`` and
``nonstationary.csv`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import anchors
import numpy as np
from common import (
    Denoiser,
    Scan,
    default_data_dir,
    dnaprior_denoiser,
    fmt,
    fmt_sig,
    machine_summary,
    markdown_table,
    noise_seed,
    psnr,
    timed,
    tv_denoise,
    warm_up,
)
from heldout import (
    DEV_2D,
    HELD_OUT,
    fmt_range,
    heldout_modality,
    load_heldout,
    load_level_holdout,
    package_state,
    run_quietly,
    safe_ssim,
)

if not hasattr(np, "trapz"):  # bm3d's PSD path calls np.trapz, removed in numpy 2
    np.trapz = np.trapezoid

FAMILIES = ("falloff", "coil", "gfactor", "ctmod", "band")
SIGMA_BASE = {"falloff": 0.05, "coil": 0.04, "band": 0.05, "gfactor": 0.04}  # of the range, at g = 1 (the map's median)
FALLOFF_RATIO = 5.0
BAND_PEAK, BAND_CENTRE, BAND_WIDTH = 2.5, 0.4, 0.07  # peak/outside std ratio; centre and std of the profile (of size)
SENSE_COILS, SENSE_R, SENSE_RADIUS, SENSE_WIDTH = 8, 3, 0.6, 0.35  # coils, acceleration, ring radius, loop size
CT_MAX_LINE_INTEGRAL, CT_ANGLES, CT_TCM_RATIO, CT_BOWTIE_EDGE = 4.0, 180, 3.0, 0.25
# mean incident photons per detector bin at the bowtie's centre, per scan: a noisy PSNR near 27 dB on each
CT_DOSE = {"ratlung_ct_2d": 3.2e3, "ct_small_2d": 9.0e3, "ct_head_2d": 3.7e4, "shepp_logan_2d": 2.3e3}
CT_DOSE_DEFAULT = 1.0e4
CT_MAP_DRAWS, CT_MAP_SMOOTH = 32, 3.0
VOLUME_CASES = {"falloff": ("aniso_vox_3d",)}
QUICK_CASES = ("falloff_mr_small_2d", "band_microaneurysms_2d")
HELD_OUT_2D = tuple(h.name for h in HELD_OUT if h.name.endswith("_2d"))


@dataclass
class Case:
    """One noisy observation with its clean reference and the true map of the noise's relative std."""

    name: str
    family: str
    group: str  # "dev" or "held-out"
    reference: np.ndarray
    noisy: np.ndarray
    gmap: np.ndarray  # relative std, median 1
    sigma_base: float  # noise std (Rician: per component) where g = 1, in the reference's units
    model: str  # "gaussian" or "rician": the model DNA-Prior is given when it is named
    description: str
    psd: np.ndarray | None = None  # ctmod: orthonormal PSD of noise / g (mean = sigma_base^2)

    @property
    def is_volume(self) -> bool:
        return self.reference.ndim == 3

    @property
    def shape(self) -> str:
        return "x".join(str(s) for s in self.reference.shape)


@dataclass
class Row:
    """One method on one case."""

    case: str
    family: str
    group: str
    shape: str
    method: str
    kind: str  # "noisy", "oracle", "blind", "dna" (blind), "given" (DNA-Prior given the true map)
    psnr: float
    ssim: float | None
    seconds: float
    d_vs_oracle: float | None = None
    d_vs_best_blind: float | None = None
    time_vs_oracle: float | None = None
    model_found: str = ""
    level_found: float | None = None
    coloured: bool | None = None
    noise_map_range: str = ""
    info: str = ""
    warning: str = ""


# ----------------------------------------------------------------------------------------------- the maps


def median_one(g: np.ndarray) -> np.ndarray:
    return g / float(np.median(g))


def falloff_map(shape: tuple[int, ...], ratio: float = FALLOFF_RATIO) -> np.ndarray:
    """Std growing ``ratio`` x along the first axis, exponentially (a coil's depth falloff, normalised)."""
    t = np.linspace(0.0, 1.0, shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
    return median_one(np.broadcast_to(np.exp(np.log(ratio) * t), shape).astype(np.float64))


def band_map(shape: tuple[int, ...]) -> np.ndarray:
    """1 outside, ``BAND_PEAK`` at the centre of a Gaussian-profile band across the second axis."""
    n = shape[1]
    d = (np.arange(n) - BAND_CENTRE * (n - 1)) / (BAND_WIDTH * n)
    profile = 1.0 + (BAND_PEAK - 1.0) * np.exp(-0.5 * d**2)
    g = np.broadcast_to(profile.reshape((1, -1) + (1,) * (len(shape) - 2)), shape)
    return median_one(g.astype(np.float64))


def sense_gfactor(shape: tuple[int, int], coils: int = SENSE_COILS, r: int = SENSE_R, radius: float = SENSE_RADIUS,
                  width: float = SENSE_WIDTH) -> np.ndarray:
    """SENSE g-factor of ``coils`` loops on a ring around the field of view, undersampled ``r`` x along axis 1.

    Coordinates are the field of view scaled to [-0.5, 0.5] per axis; each coil has a Biot-Savart-like magnitude
    ``(1 + d^2 / width^2)^-3/2`` and a linear phase along its normal. Axis 1 is padded to a multiple of ``r``; pixel
    ``y`` aliases with ``y + k W/r``: ``g = sqrt(diag((S^H S)^-1) diag(S^H S))`` per aliased set (identity noise
    covariance between coils).
    """
    h, w = shape
    wp = -(-w // r) * r
    u = (np.arange(h) - (h - 1) / 2) / h
    v = (np.arange(wp) - (wp - 1) / 2) / wp
    uu, vv = np.meshgrid(u, v, indexing="ij")
    sens = []
    for k in range(coils):
        a = 2 * np.pi * k / coils + np.pi / coils
        px, py = radius * np.cos(a), radius * np.sin(a)
        magnitude = (1.0 + ((uu - px) ** 2 + (vv - py) ** 2) / width**2) ** -1.5
        phase = np.exp(1j * (a + np.pi * ((uu - px) * np.cos(a) + (vv - py) * np.sin(a))))
        sens.append(magnitude * phase)
    s = np.stack(sens)  # (coils, h, wp)
    step = wp // r
    aliased = np.moveaxis(np.stack([s[:, :, k * step:(k + 1) * step] for k in range(r)], axis=-1), 0, -2)
    gram = np.conj(np.swapaxes(aliased, -1, -2)) @ aliased  # (h, step, r, r)
    inv = np.linalg.inv(gram)
    g = np.sqrt(np.real(np.diagonal(inv, axis1=-2, axis2=-1) * np.diagonal(gram, axis1=-2, axis2=-1)))
    return np.concatenate([g[..., k] for k in range(r)], axis=1)[:, :w]


# ---------------------------------------------------------------------------------------------- the cases


def gaussian_case(scan: Scan, family: str, group: str, gmap: np.ndarray, text: str) -> Case:
    name = f"{family}_{scan.name}"
    sigma = SIGMA_BASE[family]
    rng = np.random.default_rng(noise_seed(name, "nonstationary"))
    noisy = scan.image + sigma * gmap * rng.standard_normal(scan.image.shape)
    return Case(name, family, group, scan.image, noisy.astype(np.float32), gmap, sigma, "gaussian", text)


def falloff_case(scan: Scan, group: str) -> Case:
    return gaussian_case(scan, "falloff", group, falloff_map(scan.image.shape),
                         f"Gaussian, std {SIGMA_BASE['falloff']} x g, g = exp(ln {FALLOFF_RATIO:g} t) along axis 0")


def band_case(scan: Scan, group: str) -> Case:
    return gaussian_case(scan, "band", group, band_map(scan.image.shape),
                         f"Gaussian, std {SIGMA_BASE['band']} x g, g {BAND_PEAK:g}x in a band across axis 1")


def rician_case(scan: Scan, family: str, group: str, gmap: np.ndarray, text: str) -> Case:
    name = f"{family}_{scan.name}"
    sigma = SIGMA_BASE[family]
    rng = np.random.default_rng(noise_seed(name, "nonstationary"))
    x = scan.image.astype(np.float64)
    n1, n2 = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    noisy = np.hypot(x + sigma * gmap * n1, sigma * gmap * n2)
    return Case(name, family, group, scan.image, noisy.astype(np.float32), gmap, sigma, "rician", text)


def gfactor_case(scan: Scan, group: str) -> Case:
    g = sense_gfactor(scan.image.shape)
    text = (f"Rician, sigma {SIGMA_BASE['gfactor']} x g / median(g); SENSE {SENSE_COILS} coils, R = {SENSE_R} along "
            f"axis 1, g {g.min():.2f}-{g.max():.2f} (median {np.median(g):.2f})")
    return rician_case(scan, "gfactor", group, median_one(g), text)


def coil_case(scan: Scan, group: str) -> Case:
    return rician_case(scan, "coil", group, falloff_map(scan.image.shape),
                       f"Rician, sigma {SIGMA_BASE['coil']} x g, g = exp(ln {FALLOFF_RATIO:g} t) along axis 0 (a "
                       "magnitude under a coil's falloff, normalised)")


def ctmod_case(scan: Scan, group: str) -> Case:
    """Low-dose CT with tube-current modulation and a bowtie; the oracle map and PSD from ``CT_MAP_DRAWS`` draws."""
    from scipy.ndimage import gaussian_filter
    from skimage.transform import iradon, radon

    name = f"ctmod_{scan.name}"
    theta = np.linspace(0.0, 180.0, CT_ANGLES, endpoint=False)
    size = max(scan.image.shape)
    crop = tuple(slice(0, s) for s in scan.image.shape)
    image = np.zeros((size, size))
    image[crop] = scan.image
    mu = image * (CT_MAX_LINE_INTEGRAL / radon(image, theta, circle=False).max())
    sinogram = radon(mu, theta, circle=False)  # (detectors, angles)
    t = np.linspace(-1.0, 1.0, sinogram.shape[0])[:, None]
    bell = np.exp(-0.5 * (t / 0.45) ** 2)
    bowtie = CT_BOWTIE_EDGE + (1.0 - CT_BOWTIE_EDGE) * (bell - bell.min()) / (1.0 - bell.min())
    tcm = np.exp(0.5 * np.log(CT_TCM_RATIO) * np.cos(2.0 * np.deg2rad(theta)))[None, :]
    dose = CT_DOSE.get(scan.name, CT_DOSE_DEFAULT)
    flux = dose * bowtie * tcm / float(np.mean(tcm))

    def fbp(s: np.ndarray) -> np.ndarray:
        return iradon(s, theta, output_size=size, filter_name="ramp", circle=False)[crop]

    def simulate(rng: np.random.Generator) -> np.ndarray:
        counts = rng.poisson(flux * np.exp(-sinogram))
        return fbp(-np.log(np.maximum(counts, 1) / flux))

    seed = noise_seed(name, "nonstationary")
    reference = fbp(sinogram)
    noisy = simulate(np.random.default_rng([seed, 0]))
    noises = [simulate(np.random.default_rng([seed, r + 1])) - reference for r in range(CT_MAP_DRAWS)]
    variance = gaussian_filter(np.mean([n**2 for n in noises], axis=0), CT_MAP_SMOOTH, mode="nearest")
    std = np.sqrt(variance)
    sigma = float(np.median(std))
    gmap = std / sigma
    psd = np.mean([np.abs(np.fft.fftn(n / gmap, norm="ortho")) ** 2 for n in noises], axis=0)
    rel = sigma / float(reference.max() - reference.min())
    text = (f"CT: Poisson counts, I0 {dose:.1e} x bowtie (edge {CT_BOWTIE_EDGE}) x TCM ({CT_TCM_RATIO:g}x over "
            f"angle), -log, FBP ramp; map from {CT_MAP_DRAWS} draws (median std {rel:.3f} of the range)")
    return Case(name, "ctmod", group, reference.astype(np.float32), noisy.astype(np.float32), gmap, sigma,
                "gaussian", text, psd=psd)


BUILDERS: dict[str, Callable[[Scan, str], Case]] = {
    "falloff": falloff_case, "coil": coil_case, "gfactor": gfactor_case, "ctmod": ctmod_case, "band": band_case,
}


def family_scans(family: str, dim: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(development, held-out) scan names for ``family`` in 2D, or its held-out volumes (``dim="3d"``)."""
    if dim == "3d":
        return (), VOLUME_CASES.get(family, ())
    wants = {"coil": ("mri",), "gfactor": ("mri",), "ctmod": ("ct", "phantom")}.get(family)
    keep = (lambda n: heldout_modality(n) in wants) if wants else (lambda n: True)
    return tuple(n for n in DEV_2D if keep(n)), tuple(n for n in HELD_OUT_2D if keep(n))


def planned_cases(families: list[str]) -> list[tuple[str, str, str]]:
    """(case name, family, group) for every case of ``families``."""
    plan = []
    for family in families:
        for dim in ("2d", "3d"):
            dev, held = family_scans(family, dim)
            plan += [(f"{family}_{n}", family, "dev") for n in dev]
            plan += [(f"{family}_{n}", family, "held-out") for n in held]
    return plan


# ------------------------------------------------------------------------------------------------- methods


def oracle_name(case: Case) -> str:
    bm = "BM4D" if case.is_volume else "BM3D"
    extra = {"rician": " + Rician mean inverse", "gaussian": ""}[case.model]
    return f"{bm} given the map{' and PSD' if case.psd is not None else ''}{extra} (oracle)"


def oracle(case: Case) -> Callable[[np.ndarray], np.ndarray]:
    """BM3D/BM4D on ``y / g`` with the base sigma (or the PSD of ``noise / g``), times ``g``; Rician: the Rician
    mean inverted with the base sigma before multiplying back."""
    g = case.gmap

    def run(y: np.ndarray) -> np.ndarray:
        z = y / g
        level = case.psd * case.psd.size if case.psd is not None else case.sigma_base
        out = anchors.bm_denoise(z, level)
        if case.model == "rician":
            out = anchors.rician_mean_inverse(out, case.sigma_base)
        return out * g

    return run


def methods_for(case: Case) -> dict[str, tuple[str, Denoiser]]:
    """Every method on ``case``: name -> (kind, denoiser)."""
    bm = "BM4D" if case.is_volume else "BM3D"
    rician = case.model == "rician"
    methods: dict[str, tuple[str, Denoiser]] = {oracle_name(case): ("oracle", timed(oracle(case)))}
    if rician:
        methods[f"{bm} + Rician mean inverse (sigma est.)"] = ("blind", timed(anchors.rician_bm_pipeline))
    else:
        methods[f"{bm} (sigma est.)"] = ("blind", timed(anchors.gaussian_pipeline))
    methods[f"DIPY NL-means{' (Rician)' if rician else ''}"] = (
        "blind", timed(lambda y: anchors.dipy_nlmeans(y, anchors.dipy_sigma(y), rician=rician)))
    methods["TV (Chambolle)"] = ("blind", timed(tv_denoise))
    methods["DNA-Prior (auto)"] = ("dna", dnaprior_denoiser("auto"))
    methods[f"DNA-Prior ({case.model})"] = ("dna", dnaprior_denoiser(case.model))
    methods[f"{GIVEN} ({case.model})"] = ("given", dnaprior_denoiser(case.model, noise_map=case.gmap))
    return methods


GIVEN = "DNA-Prior given the map"  # not blind: the true map passed as ``noise_map``, the rest estimated


INFO_SKIP = ("device", "seconds", "iterations", "asked_noise_model", "prior", "groups", "volume_mode")


def info_text(info: dict) -> str:
    """What the package reported about the noise, compactly (scalars, tuples and short lists only)."""
    parts = []
    for key, value in info.items():
        if key in INFO_SKIP:
            continue
        if isinstance(value, float):
            parts.append(f"{key}={value:.3g}")
        elif isinstance(value, (bool, int, str)) or value is None:
            parts.append(f"{key}={value}")
        elif isinstance(value, (tuple, list)) and len(value) <= 4:
            parts.append(f"{key}=" + "/".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in value))
        else:
            parts.append(f"{key}=<{type(value).__name__}>")
    return ", ".join(parts)


def evaluate(case: Case, notes: list[str]) -> list[Row]:
    ref = case.reference
    rows = [Row(case.name, case.family, case.group, case.shape, "noisy", "noisy", psnr(ref, case.noisy),
                safe_ssim(ref, case.noisy), 0.0)]
    for name, (kind, denoiser) in methods_for(case).items():
        run, warning = run_quietly(denoiser, case.noisy, f"{case.name} / {name}", notes)
        if run is None:
            continue
        row = Row(case.name, case.family, case.group, case.shape, name, kind, psnr(ref, run.output),
                  safe_ssim(ref, run.output), run.seconds)
        if kind in ("dna", "given"):
            info = run.info
            row.model_found, row.level_found = str(info.get("noise_model", "")), info.get("noise_level")
            row.coloured, row.noise_map_range = info.get("coloured"), fmt_range(info.get("noise_map_range"))
            row.info, row.warning = info_text(info), warning
        rows.append(row)
    orc = next((r for r in rows if r.kind == "oracle"), None)
    blind = [r for r in rows if r.kind == "blind"]
    best = max(blind, key=lambda r: r.psnr) if blind else None
    for r in rows[1:]:
        if orc is not None:
            r.d_vs_oracle = r.psnr - orc.psnr
            r.time_vs_oracle = r.seconds / orc.seconds if orc.seconds > 0 else None
        if best is not None:
            r.d_vs_best_blind = r.psnr - best.psnr
    return rows


# -------------------------------------------------------------------------------------------------- output


def delta(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}"


def case_table(cases: list[Case], rows: list[Row]) -> str:
    """One line per case: noisy, oracle, best blind peer, DNA-Prior (auto and named), the gaps and times."""
    cells = []
    for c in cases:
        sel = {r.method: r for r in rows if r.case == c.name}
        orc = next((r for r in sel.values() if r.kind == "oracle"), None)
        blind = [r for r in sel.values() if r.kind == "blind"]
        best = max(blind, key=lambda r: r.psnr) if blind else None
        auto = sel.get("DNA-Prior (auto)")
        named = sel.get(f"DNA-Prior ({c.model})")
        given = sel.get(f"{GIVEN} ({c.model})")
        cells.append([
            c.name, c.group, c.shape, f"{c.gmap.min():.2f}-{c.gmap.max():.2f}", fmt(sel["noisy"].psnr),
            fmt(orc.psnr) if orc else "", f"{fmt(best.psnr)} ({best.method})" if best else "",
            fmt(auto.psnr) if auto else "", fmt(named.psnr) if named else "",
            delta(auto.d_vs_oracle) if auto else "", delta(auto.d_vs_best_blind) if auto else "",
            delta(named.d_vs_oracle) if named else "", delta(named.d_vs_best_blind) if named else "",
            delta(given.d_vs_oracle) if given else "",
            fmt_sig(orc.seconds) if orc else "", fmt_sig(best.seconds) if best else "",
            fmt_sig(auto.seconds) if auto else "",
        ])
    headers = ["case", "group", "size", "g range", "noisy", "oracle", "best blind peer", "DNA-Prior auto",
               "DNA-Prior named", "auto − oracle", "auto − best blind", "named − oracle", "named − best blind",
               "given the map − oracle", "oracle s", "best blind s", "DNA auto s"]
    return markdown_table(headers, cells)


def _mean_min(values: list[float]) -> str:
    return f"{np.mean(values):+.2f} / {np.min(values):+.2f}" if values else ""


def summary_table(cases: list[Case], rows: list[Row]) -> str:
    """Per group (dev 2D, held-out 2D, held-out 3D) and per family: mean / min of the gaps."""
    def dim(c: Case) -> str:
        return "3D" if c.is_volume else "2D"

    keys = list(dict.fromkeys((c.group, dim(c)) for c in cases))
    selections: list[tuple[str, list[Case]]] = []
    for group, d in keys:
        selections.append((f"**{group}, {d}, all families**", [c for c in cases if (c.group, dim(c)) == (group, d)]))
    for family in FAMILIES:
        for group, d in keys:
            sel = [c for c in cases if c.family == family and (c.group, dim(c)) == (group, d)]
            if sel:
                selections.append((f"{family}, {group}, {d}", sel))
    cells = []
    for label, sel in selections:
        names = {c.name for c in sel}
        auto = [r for r in rows if r.case in names and r.method == "DNA-Prior (auto)"]
        named = [r for r in rows if r.case in names and r.kind == "dna" and r.method != "DNA-Prior (auto)"]
        given = [r for r in rows if r.case in names and r.kind == "given"]
        ratios = [r.time_vs_oracle for r in auto if r.time_vs_oracle]
        beats = sum(r.d_vs_best_blind is not None and r.d_vs_best_blind > 0 for r in auto)
        cells.append([
            label, len(sel),
            _mean_min([r.d_vs_oracle for r in auto if r.d_vs_oracle is not None]),
            _mean_min([r.d_vs_best_blind for r in auto if r.d_vs_best_blind is not None]),
            f"{beats}/{len(auto)}",
            _mean_min([r.d_vs_oracle for r in named if r.d_vs_oracle is not None]),
            _mean_min([r.d_vs_best_blind for r in named if r.d_vs_best_blind is not None]),
            _mean_min([r.d_vs_oracle for r in given if r.d_vs_oracle is not None]),
            fmt_sig(float(np.exp(np.mean(np.log(ratios))))) if ratios else "",
        ])
    headers = ["cases", "n", "DNA auto − oracle, mean / min (dB)", "DNA auto − best blind, mean / min (dB)",
               "DNA auto above best blind", "DNA named − oracle, mean / min", "DNA named − best blind, mean / min",
               "DNA given the map − oracle, mean / min", "DNA auto time / oracle (geo. mean)"]
    return markdown_table(headers, cells)


def peers_table(rows: list[Row]) -> str:
    """Per method: mean gap to the oracle, how often it is the best blind peer, geometric-mean time ratio."""
    methods = list(dict.fromkeys(r.method for r in rows if r.kind in ("blind", "dna", "given")))
    cells = []
    for m in methods:
        sel = [r for r in rows if r.method == m]
        ratios = [r.time_vs_oracle for r in sel if r.time_vs_oracle]
        cells.append([m, len(sel), _mean_min([r.d_vs_oracle for r in sel if r.d_vs_oracle is not None]),
                      _mean_min([r.d_vs_best_blind for r in sel if r.d_vs_best_blind is not None]),
                      fmt_sig(float(np.exp(np.mean(np.log(ratios))))) if ratios else ""])
    return markdown_table(["method", "cases", "− oracle, mean / min (dB)", "− best blind, mean / min (dB)",
                           "time / oracle (geo. mean)"], cells)


def info_table(cases: list[Case], rows: list[Row]) -> str:
    """What the package reported per case and DNA-Prior row, against the truth."""
    cells = []
    for c in cases:
        for r in rows:
            if r.case == c.name and r.kind in ("dna", "given"):
                rel = c.sigma_base / float(c.reference.max() - c.reference.min())
                cells.append([c.name, r.method, c.model, f"{rel:.3f}", f"{c.gmap.min():.2f}-{c.gmap.max():.2f}",
                              r.model_found, fmt_sig(r.level_found),
                              "" if r.coloured is None else ("yes" if r.coloured else "no"), r.noise_map_range,
                              r.info, r.warning])
    headers = ["case", "row", "true model", "true base level (of range)", "true g range", "model found",
               "level found", "coloured", "noise map range", "info (all of it)", "warning"]
    return markdown_table(headers, cells)


def all_rows_table(rows: list[Row]) -> str:
    cells = [[r.case, r.method, fmt(r.psnr), fmt(r.ssim, 3), fmt_sig(r.seconds), delta(r.d_vs_oracle),
              delta(r.d_vs_best_blind), fmt_sig(r.time_vs_oracle)] for r in rows]
    headers = ["case", "method", "PSNR", "SSIM", "seconds", "− oracle", "− best blind", "time / oracle"]
    return markdown_table(headers, cells)


def cases_text(cases: list[Case]) -> str:
    cells = [[c.name, c.family, c.group, c.shape, c.description] for c in cases]
    return markdown_table(["case", "family", "group", "size", "noise"], cells)


def write_csv(path: Path, rows: list[Row]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def write_markdown(path: Path, args: argparse.Namespace, cases: list[Case], rows: list[Row], notes: list[str],
                   seconds: float) -> str:
    note_lines = "\n".join(f"- {n}" for n in notes) or "- none"
    text = f"""# Noise that varies across the scan: DNA-Prior vs the oracle given the map and the blind peers

{package_state(args.package_note)}. `DNAPriorDenoise()` (preset `default`, noise model found blind) and with the
model named. Machine: {machine_summary()}. Total {seconds / 60:.1f} min (cases built and every method run).

Each case's noise std is `sigma_base * g(x)` with a known map `g` of median 1 (`ctmod`: measured from
{CT_MAP_DRAWS} other draws). **oracle** = BM3D (2D) / BM4D (3D) on `y / g` with sigma = `sigma_base`, times `g`
(Rician: the Rician mean inverted with `sigma_base` before multiplying back; CT: with the PSD of `noise / g` instead of
a sigma, since FBP noise is coloured). **Blind peers** use one global level: BM3D/BM4D with the scikit-image sigma
(Rician: bright-block sigma, Rician mean inverted), DIPY `nlmeans` (Rician on the magnitudes) with DIPY's
`estimate_sigma`, TV with weight = the scikit-image sigma. "best blind" = the highest PSNR of these per case.
Groups: **dev** = the development scans (`common.load_scans`), **held-out** = scans never used for tuning
(`benchmarks/heldout.py --list`; their own small noise stays in the reference: nothing is denoised first). PSNR and
SSIM over the whole image, data range of the reference. Fixed seed per case. This run:
`OMP_NUM_THREADS=1 python benchmarks/nonstationary.py {shlex.join(sys.argv[1:])}`.

Notes:
{note_lines}

## Summary

{summary_table(cases, rows)}

## Per case

{case_table(cases, rows)}

## Per method (all cases)

{peers_table(rows)}

## What the package reported about the noise

{info_table(cases, rows)}

## Cases

{cases_text(cases)}

## All rows

{all_rows_table(rows)}
"""
    path.write_text(text)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_CASES)} (a smoke test)")
    p.add_argument("--families", default=None, help=f"comma-separated families ({', '.join(FAMILIES)})")
    p.add_argument("--cases", default=None, help="comma-separated substrings of the case names")
    p.add_argument("--groups", default=None, help="dev, held-out or both (default)")
    p.add_argument("--list", action="store_true", help="list the planned cases and exit")
    p.add_argument("--out", type=Path, default=Path("bench_nonstationary"), help="output folder")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder of the shared NIfTI scans")
    p.add_argument("--package-note", default=None, help="a note on the package under test, written into the results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    families = args.families.split(",") if args.families else list(FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"Unknown families {unknown}; choose from {FAMILIES}.")
    plan = planned_cases(families)
    if args.quick:
        plan = [p for p in plan if p[0] in QUICK_CASES]
    if args.cases:
        plan = [p for p in plan if any(f in p[0] for f in args.cases.split(","))]
    if args.groups:
        plan = [p for p in plan if p[2] in args.groups.split(",")]
    if args.list:
        print("\n".join(f"{n}  ({f}, {g})" for n, f, g in plan))
        return
    if not plan:
        raise SystemExit("No case matches the filters.")
    scan_names = {n.split("_", 1)[1] for n, _, _ in plan}
    scans = {s.name: s for s in load_heldout(names=sorted(scan_names))}
    dev_names = [n for n in DEV_2D if n in scan_names]
    if dev_names:
        scans |= {s.name: s for s in load_level_holdout(args.data_dir, dev_names)}
    args.out.mkdir(parents=True, exist_ok=True)
    warm_up()
    start, cases, rows, notes = time.perf_counter(), [], [], []
    for name, family, group in plan:
        print(f"{name}: building ...", file=sys.stderr, flush=True)
        case = BUILDERS[family](scans[name.split("_", 1)[1]], group)
        cases.append(case)
        rows += evaluate(case, notes)
        write_csv(args.out / "nonstationary.csv", rows)  # after every case: a long run leaves partial results
    seconds = time.perf_counter() - start
    text = write_markdown(args.out / "nonstationary.md", args, cases, rows, notes, seconds)
    print(text)
    print(f"\nWrote {args.out}/nonstationary.md, nonstationary.csv in {seconds / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()

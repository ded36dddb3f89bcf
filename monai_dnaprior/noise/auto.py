"""The ``auto`` noise model: the one the data allow, tested on the image as it came (the rules are scale-free)."""

from __future__ import annotations

import math
import warnings

import torch
from monai.utils import look_up_option

from monai_dnaprior.intensity import IntensityWindow
from monai_dnaprior.noise.estimation import (
    blocks_to_voxels,
    finest_scale_quietness_where,
    haar_blocks,
    robust_sigma,
    too_thin,
)
from monai_dnaprior.noise.models import get_noise_model
from monai_dnaprior.noise.rayleigh import (
    RAYLEIGH_MEAN_TO_STD,
    RAYLEIGH_STD,
    coloured_rayleigh_background,
    dark_rayleigh_spread,
    has_rayleigh_background,
)
from monai_dnaprior.noise.spectrum import estimate_noise_spectrum
from monai_dnaprior.settings import NoiseModelName

__all__ = ["choose_noise_model", "detect_noise_model"]

# Fewer finest blocks that carry noise: too few to tell the models apart (a raw integer scan's variance, read from a
# few bins, matches its step times the mean as often as counts do)
_MIN_DETECTION_BLOCKS = 256
# Log variance against log mean (2 for speckle, 1 for counts, 0 for additive noise): speckle above the first (the
# mean of the brighter half's and all bins' slopes), counts above the second (a continuous image, the brighter half:
# the texture of a clean scan alone reaches 0.8 there)
_MULTIPLICATIVE_SLOPE = 1.6
_COUNTING_SLOPE = 0.85
# Between counts and speckle (a mean slope above the first and up to _MULTIPLICATIVE_SLOPE, one slope nearer
# speckle's 2 than counts' 1: :func:`_nearer_speckle`) an additive floor, the scan's own noise, may have flattened the
# darkest bins only, or the texture of weak speckle's anatomy its slope: the variance is read as a floor plus a
# quadratic or a linear growth (:func:`_grows_quadratically`), whichever fits the bins better. A magnitude's variance
# saturates at the bright end (on the dev scans, Rician of sigma 0.1-0.25: its brighter half's slope at most 1.1)
_AMBIGUOUS_SLOPE = 1.2
_FLOORED_BRIGHT_SLOPE = 1.5
# ... unless the dark Rayleigh background's level varies more than this (95th over 5th percentile of its blocks'
# sigma, :func:`~monai_dnaprior.noise.rayleigh.dark_rayleigh_spread`): a magnitude under a coil's falloff, whose
# variance grows with position and so with the mean where the bright tissue lies on the noisy side
_FALLOFF_SPREAD = 2.5
# Counts: every value a whole multiple of one step, at most this many steps over the range, and the noise variance
# the step times the mean within these factors (a photon count's variance is its mean, in units of the step)
_MAX_COUNT_LEVELS = 100_000
_COUNT_GAIN = (0.6, 2.0)
# A Rayleigh background: the darkest tenth's mean over their std within these multiples of a Rayleigh's 1.91, and
# their std within these multiples of a Rayleigh's 0.655 of the brighter blocks' (texture only raises the latter)
_RAYLEIGH_RATIO = (0.7, 1.2)
_DARK_TO_BRIGHT = (0.25, 1.25)
# Dark anatomy with no background: the darkest bin's mean over its std under the first (or under the second with
# its std under _DARK_DROP of the brighter bins'); additive noise that never went negative reads about 2.4 or more
_DARK_SNR = (2.2, 2.8)
_DARK_DROP = 0.9
# ... or, whatever the darkest bin reads, at least this many voxels between 0 and half the darkest bin's noise std in
# an image with no negative value: additive noise puts 0.15 or more below zero for every value it puts there from
# anatomy at 4 stds or less, so 30 such voxels and no negative happen with additive noise at a rate of about 1 %
# (e^-4.5); on the dev volume cut inside the brain (no background), Gaussian noise that left no negative gave at most
# 3, Rician noise whose darkest bin fell in the band 38-85, and a central 58x58x24 crop with a little air 193-498
# with its darkest bin at 2.0-4.1 (over 617 dev scans, variants and offsets with additive noise and no negative, the
# test added no false alarm)
_MISSING_NEGATIVES = 30
_MAX_ZERO_SHARE = 0.01  # more exact zeros among the darkest blocks' voxels: clipping or counts, not a magnitude
# The noise std's growth against the mean's from the dark to the bright blocks (:func:`_std_growth`: 1 for speckle,
# 0.5 for counts) under which the dark blocks are a magnitude's floor: a background, dark anatomy
_MAX_BACKGROUND_GROWTH = 0.75
_MAX_FLOOR_GROWTH = 0.5
# Signal-dependent noise fills the finest scale of its variance-stabilised image: its quietest windows hold at least
# this share of the wavelet MAD (:func:`~monai_dnaprior.noise.estimation.finest_scale_quietness_where`); a clean
# scan's texture, whose variance also grows with the mean, does not
_NOISE_FILLED = 0.85
_LOG_FLOOR = 0.05  # ... read above this block mean of the [0, 1] image, where the log's offset does not flatten it


def detect_noise_model(y: torch.Tensor, spatial_dims: int) -> NoiseModelName:
    """The noise model the data allow, from the image as it came; the tests in this order:

    - ``gaussian``: any negative value (a magnitude, counts and speckle are never negative), or too few blocks that
      carry noise (under 256) to tell the models apart;
    - ``poisson``: counts, every value a whole multiple of one step whose noise variance is that step times the
      mean (:func:`_counting_step`);
    - ``speckle``: the noise variance grows as the square of the local mean (the log-log slope of the binned noise
      variance, the mean of its brighter half's and all bins', above 1.6; :func:`_log_slopes`), or over a floor or
      under texture (:func:`_nearer_speckle`, :func:`_grows_quadratically`) unless the dark background's level
      varies as under a coil's falloff (:data:`_FALLOFF_SPREAD`: then ``rician``);
    - ``rician``: an MRI magnitude whose darkest blocks are a Rayleigh background of pure noise
      (:func:`_rayleigh_background`; where the noise is coloured, a k-space window, the darkest blocks' own voxels
      against the flat patches' noise, :func:`~monai_dnaprior.noise.rayleigh.coloured_rayleigh_background`), unless
      they hold the exact zeros of continuous counts (:func:`_zeros_of_counts`);
    - ``poisson``: a continuous image whose variance grows in proportion to the mean (brighter-half slope above
      0.85);
    - ``rician``: no background, but dark anatomy too near zero for additive noise that never went negative, its
      spread dropping there as a magnitude's does, or voxels near zero whose negative twins are missing
      (:func:`_dark_anatomy_floor`);
    - ``gaussian`` otherwise.

    Counts and speckle come before the Rayleigh background: about 4 counts a voxel, or speckle of about 4 looks, give
    the darkest blocks a Rayleigh's mean over std. Rician noise on anatomy that is nowhere near zero (the darkest
    bin several sigma up) is additive noise there, and is taken as Gaussian: nothing in the image tells them apart.
    """
    return _detect(y, spatial_dims)[0]


def _detect(y: torch.Tensor, spatial_dims: int) -> tuple[NoiseModelName, bool]:
    """:func:`detect_noise_model`'s model, and whether it was read from counts (a lattice of whole steps). Too few
    blocks to tell the models apart give Gaussian, with a warning that says so."""
    if float(y.min()) < -1e-6 * float(y.abs().max()):
        return NoiseModelName.GAUSSIAN, False
    if too_thin(y, spatial_dims):
        _warn_too_small(0)
        return NoiseModelName.GAUSSIAN, False
    detail, mean, noisy = haar_blocks(y, spatial_dims, exclude_clipped=False)
    if int(noisy.sum()) < _MIN_DETECTION_BLOCKS:
        _warn_too_small(int(noisy.sum()))
        return NoiseModelName.GAUSSIAN, False
    if _counting_step(y, spatial_dims) is not None:
        return NoiseModelName.POISSON, True
    m, v = _binned_profile(y, spatial_dims)
    bright, full = _log_slopes(m, v)
    slope = bright if bright is not None else full  # a narrow range: its darkest bins are far from a floor too
    known = [s for s in (bright, full) if s is not None]
    mean_slope = sum(known) / len(known) if known else 0.0
    floored = mean_slope > _AMBIGUOUS_SLOPE and _nearer_speckle(bright, full)
    if mean_slope > _MULTIPLICATIVE_SLOPE:
        return NoiseModelName.SPECKLE, False
    if floored and _grows_quadratically(m, v):  # speckle over a floor, or a magnitude under a coil's falloff
        falloff = dark_rayleigh_spread(y, spatial_dims) > _FALLOFF_SPREAD
        return (NoiseModelName.RICIAN if falloff else NoiseModelName.SPECKLE), False
    zero_share = _dark_zero_share(y, spatial_dims, noisy, mean)
    rayleigh = _rayleigh_background(detail[noisy], mean[noisy]) or coloured_rayleigh_background(y, spatial_dims)
    if rayleigh and not _zeros_of_counts(y, zero_share):
        return NoiseModelName.RICIAN, False
    if slope is not None and slope > _COUNTING_SLOPE:
        return NoiseModelName.POISSON, False
    if _dark_anatomy_floor(y, m, v, zero_share):
        return NoiseModelName.RICIAN, False
    return NoiseModelName.GAUSSIAN, False


def _warn_too_small(blocks: int) -> None:
    warnings.warn(
        f"noise_model='auto': the image has {blocks} finest 2x2(x2) blocks that carry noise, too few (under "
        f"{_MIN_DETECTION_BLOCKS}) to tell the noise models apart, so its noise is taken as Gaussian. If it is an MRI "
        "magnitude, counts or speckle, pass noise_model='rician', 'poisson' or 'speckle'.",
        stacklevel=2,
    )


def _binned_profile(y: torch.Tensor, spatial_dims: int, bins: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust noise variance against local mean (:func:`~monai_dnaprior.noise.estimation.binned_variance`) over the
    blocks that carry noise and touch no clipped value: exact zeros taken by more than 0.2 % of the voxels are a
    mask's or a clip's, not noise (a magnitude and speckle are never exactly 0), and the blocks on their edges hold an
    edge, not noise."""
    detail, mean, noisy = haar_blocks(y, spatial_dims)
    detail, mean = detail[noisy], mean[noisy].clamp_min(0)
    bins = min(bins, mean.numel() // 8)
    if bins < 1:
        return torch.zeros(0), torch.zeros(0)
    chunks = torch.tensor_split(torch.argsort(mean), bins)
    return (torch.stack([mean[c].mean() for c in chunks]).cpu(),
            torch.tensor([robust_sigma(detail[c]) ** 2 for c in chunks]))


def _log_slopes(m: torch.Tensor, v: torch.Tensor) -> tuple[float | None, float | None]:
    """Least-squares slopes of log variance against log mean (2 for speckle, 1 for counts, 0 for additive noise) over
    the brighter half of the intensity bins, and over all of them; each None with fewer than 4 bins or where their
    means span less than a factor 1.5. Over the brighter half a magnitude's floor does not bend it; over all, the
    texture of the brighter anatomy sways it less."""
    known = (m > 0) & (v > 0)
    out = []
    for keep in (known & (m >= m.median()), known):
        if int(keep.sum()) >= 4 and float(m[keep].max()) >= 1.5 * float(m[keep].min()):
            out.append(float(torch.linalg.lstsq(
                torch.stack([m[keep].log(), torch.ones(int(keep.sum()))], 1).double(),
                v[keep].log()[:, None].double(),
            ).solution[0]))
        else:
            out.append(None)
    return out[0], out[1]


def _nearer_speckle(bright: float | None, full: float | None) -> bool:
    """Whether, of two slopes whose mean is ambiguous, one reads nearer speckle's 2 than counts' 1: the brighter
    half's above :data:`_FLOORED_BRIGHT_SLOPE` (a floor flattened the darkest bins only), or all bins' above
    :data:`_MULTIPLICATIVE_SLOPE` (the brighter half's, read over a narrow range, is the noisier of the two), or the
    brighter half too narrow to read. Weak speckle (16-32 looks) on a coarse or thick volume reads all bins' slope at
    1.4-1.6 and no brighter half, or the brighter half's at 1.1-1.4 and all bins' at 1.7-1.8; additive and magnitude
    noise read all bins' at most 1.25 on the development scans and their coarse, thick and cropped variants (counts,
    up to 2.1 at 10 a voxel, are found before by their lattice)."""
    if bright is None:
        return True
    return bright > _FLOORED_BRIGHT_SLOPE or (full is not None and full > _MULTIPLICATIVE_SLOPE)


def _grows_quadratically(m: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the binned noise variance ``v`` against the mean ``m`` is fitted better by a non-negative floor plus
    ``c m^2`` (speckle over a scan's own additive noise) than by a floor plus ``c m`` (counts), by least squares on
    the relative error (each bin's variance is read to about the same share of itself)."""
    known = (m > 0) & (v > 0)
    if int(known.sum()) < 4:
        return False
    m, v = m[known].double(), v[known].double()
    return _floor_fit_error(m.square(), v) < _floor_fit_error(m, v)


def _floor_fit_error(growth: torch.Tensor, v: torch.Tensor) -> float:
    """The relative squared error of ``v ~ a + c growth`` with ``a, c >= 0`` (a negative floor or slope refitted
    without it)."""
    best = float("inf")
    for columns in ((torch.ones_like(v), growth), (growth,), (torch.ones_like(v),)):
        design = torch.stack(columns, 1) / v[:, None]
        coefficients = torch.linalg.lstsq(design, torch.ones_like(v)[:, None]).solution[:, 0]
        if bool((coefficients >= 0).all()):
            best = min(best, float((design @ coefficients - 1).square().sum()))
    return best


def _counting_step(y: torch.Tensor, spatial_dims: int, bins: int = 16) -> float | None:
    """The step ``q`` of photon counts ``y = q k`` (``k`` whole), or None.

    Counts: every value a whole multiple of the smallest gap between two distinct values (at most 100 000 steps over
    the range, fewer distinct values than half the voxels), and the noise variance ``q`` times the mean: the lower
    quartile over the intensity bins of at least one count of their finest-scale variance (the mean square of the
    Haar detail, unbiased for counts) over ``q`` times their mean between 0.6 and 2 (texture only adds to a bin's
    variance), and that variance (the lower 90 % of each bin's squares) rising with the mean where the bins' means,
    the darkest and the brightest left out, span a factor 1.5 or more (Theil-Sen log slope 0.5 or more: a mask's
    edges do not sway it; over a narrower span counts and additive noise of the same variance are alike). An integer
    image whose noise is additive fails: its variance is flat, not the mean. Raw counts only: resampling or
    smoothing leaves no lattice, and such an image takes the continuous tests."""
    values = torch.unique(y.detach().flatten().double().cpu())
    if values.numel() < 3 or values.numel() > y.numel() // 2:
        return None
    gaps = values.diff()
    q = float(gaps[gaps > 1e-9 * float(values.abs().max())].min())
    levels = values / q
    if float(values.abs().max()) / q > _MAX_COUNT_LEVELS or float((levels - levels.round()).abs().max()) > 1e-3:
        return None
    detail, mean, noisy = haar_blocks(y, spatial_dims, exclude_clipped=False)
    detail, mean = detail[noisy].double(), mean[noisy].double()
    chunks = torch.tensor_split(torch.argsort(mean), max(1, min(bins, mean.numel() // 32)))
    m = torch.stack([mean[c].mean() for c in chunks]).cpu()
    v = torch.stack([detail[c].square().mean() for c in chunks]).cpu()
    counted = m >= q
    if int(counted.sum()) < 3:
        return None
    gain = float(torch.quantile(v[counted] / m[counted], 0.25)) / q
    if not _COUNT_GAIN[0] < gain < _COUNT_GAIN[1]:
        return None
    inner = m[counted][1:-1]  # the darkest and brightest bins left out: a mask's edges, a few bright spots
    if inner.numel() >= 3 and float(inner.max()) >= 1.5 * float(inner.min()):
        # the lower 90 % of each bin's squares: a mask's edges, in the darkest bins, left out
        trimmed = torch.stack([_lower_mean(detail[c].square(), 0.9) for c in chunks]).cpu()
        if _theil_sen(m[counted].log(), trimmed[counted].clamp_min(1e-300).log()) < 0.5:
            return None
    return q


def _lower_mean(x: torch.Tensor, share: float) -> torch.Tensor:
    """The mean of the smallest ``share`` of ``x`` (at least one value)."""
    return x.sort().values[: max(1, int(share * x.numel()))].mean()


def _theil_sen(x: torch.Tensor, y: torch.Tensor) -> float:
    """The median of the slopes between every two points: one outlying bin (a mask's edges) sways it little."""
    i, j = torch.triu_indices(x.numel(), x.numel(), 1)
    dx = x[j] - x[i]
    keep = dx.abs() > 1e-12
    return float(((y[j] - y[i])[keep] / dx[keep]).median()) if bool(keep.any()) else 0.0


def _dark_zero_share(y: torch.Tensor, spatial_dims: int, noisy: torch.Tensor, mean: torch.Tensor) -> float:
    """The share of exact zeros among the voxels of the darkest tenth of the blocks that carry noise."""
    dark_blocks = noisy & (mean <= torch.quantile(mean[noisy].float(), 0.1))
    voxels = blocks_to_voxels(dark_blocks, y.shape[-spatial_dims:]).bool()
    return float((y[voxels] == 0).float().mean())


def _zeros_of_counts(y: torch.Tensor, zero_share: float) -> bool:
    """Whether a continuous image (its non-zero values mostly distinct: no lattice) has exact zeros among its darkest
    blocks' voxels (``zero_share``, :func:`_dark_zero_share`, over :data:`_MAX_ZERO_SHARE`): counts rescaled voxel by voxel (a detector's flat-field gain), whose
    low means are often exactly 0, or clipped additive noise; never a magnitude, which is 0 with probability 0 (an
    integer-stored magnitude rounds to 0, but lies on a lattice). Its dark blocks can still read as a Rayleigh
    background: on the dev scans and their variants under counts of 10-100 rescaled by a gain within 5 %, Rician on 28
    of 120 draws (2 with this test), 4-6.5 dB below Poisson named."""
    if zero_share <= _MAX_ZERO_SHARE:
        return False
    nonzero = y[y != 0]
    return torch.unique(nonzero).numel() > nonzero.numel() // 2


def _rayleigh_background(detail: torch.Tensor, mean: torch.Tensor) -> bool:
    """Whether the darkest tenth of the finest Haar blocks (``detail`` and ``mean``, the blocks that carry noise) are
    a Rayleigh background: their mean 0.7 to 1.2 times a Rayleigh's 1.91 times their std; that std 0.25 to 1.25
    times a Rayleigh's 0.655 of the brighter blocks' (the brightest half, or those at three times the darkest
    tenth's mean or above where the background is more than half the image), low as it may be, for the tissue's
    texture and own noise raise only the brighter blocks' std; and from there the std growing much less than the
    mean (:func:`_std_growth` under 0.75), unlike speckle's, which grows as the mean does and whose darkest blocks
    have a Rayleigh's mean over std at about 4 looks."""
    order = torch.argsort(mean)
    dark = order[: order.numel() // 10]
    dark_std, dark_mean = robust_sigma(detail[dark]), float(mean[dark].mean())
    above = mean > 3 * dark_mean
    bright = order[-order.numel() // 2:] if int(above.sum()) * 2 >= order.numel() else above.nonzero()[:, 0]
    if dark_std <= 0 or bright.numel() < 32:
        return False
    bright_std = robust_sigma(detail[bright])
    if bright_std <= 0:
        return False
    ratio = dark_mean / dark_std / RAYLEIGH_MEAN_TO_STD
    spread = dark_std / bright_std / RAYLEIGH_STD
    if not (_RAYLEIGH_RATIO[0] < ratio < _RAYLEIGH_RATIO[1] and _DARK_TO_BRIGHT[0] < spread < _DARK_TO_BRIGHT[1]):
        return False
    return _std_growth(dark_mean, dark_std, float(mean[bright].mean()), bright_std) < _MAX_BACKGROUND_GROWTH


def _std_growth(dark_mean: float, dark_std: float, bright_mean: float, bright_std: float) -> float:
    """How the noise std grows from the dark to the bright blocks against how their mean does: the slope of log std
    against log mean between the two (1 for speckle, whose std is in proportion to the mean, 0.5 for counts; well
    under that for a magnitude, whose std rises only from a Rayleigh's 0.655 of sigma to sigma); inf where the means
    do not differ."""
    if bright_mean <= dark_mean * 1.01 or dark_std <= 0 or bright_std <= 0:
        return float("inf")
    return math.log(bright_std / dark_std) / math.log(bright_mean / dark_mean)


def _dark_anatomy_floor(y: torch.Tensor, m: torch.Tensor, v: torch.Tensor, zero_share: float) -> bool:
    """Whether a non-negative image with no background has a magnitude's floor in its darkest anatomy: the darkest
    intensity bin's mean under 2.2 of its noise std, or under 2.8 with a std under 0.9 of the quietest of the brighter
    half's bins (additive noise that never went negative keeps its darkest anatomy 3 stds or more above zero, and
    its darkest bin, its blocks' noise pulling their means down, reads no lower than about 2.4; a magnitude's spread
    shrinks towards the floor, to 0.655 of sigma at zero signal), or 30 voxels or more between 0 and half that std
    whatever the darkest bin reads (the negatives additive noise would have made there are missing:
    :data:`_MISSING_NEGATIVES`); the std growing little from there to the brighter half (:func:`_std_growth` under
    0.5: speckle's grows in proportion to the mean); and at most 1 % exact zeros among the darkest tenth's voxels
    (``zero_share``: clipped additive noise and counts have them, a magnitude has none)."""
    known = (m > 0) & (v > 0)
    if int(known.sum()) < 8 or not bool(known[0]):
        return False
    dark_std = float(v[0].sqrt())
    brighter = known & (m >= m.median())
    upper_std = float(v[brighter].sqrt().min())  # the quietest of the brighter bins: texture only adds to a bin
    snr = float(m[0]) / dark_std
    near_zero = int(((y > 0) & (y < 0.5 * dark_std)).sum())  # the image has no negative value (the first test)
    if near_zero < _MISSING_NEGATIVES:  # no negatives missing: the darkest bin itself must show the floor
        if snr >= _DARK_SNR[1] or (snr >= _DARK_SNR[0] and dark_std >= _DARK_DROP * upper_std):
            return False
    if _std_growth(float(m[0]), dark_std, float(m[brighter].mean()), upper_std) >= _MAX_FLOOR_GROWTH:
        return False
    return zero_share <= _MAX_ZERO_SHARE


def choose_noise_model(noise_model: str, x: torch.Tensor, spatial_dims: int, has_psd: bool = False) -> NoiseModelName:
    """The model to use: the one asked for, or for ``"auto"`` the one :func:`detect_noise_model` finds, checked on the
    variance-stabilised image. Any noise with a given spectrum or noise map (``has_psd``) is taken as additive
    (Gaussian), except a Rician magnitude. Signal-dependent noise is taken as additive where

    - its stabilised image's finest scale is not filled by noise (the quietest windows under 0.85 of the wavelet
      MAD, read above 0.05 of the [0, 1] image: :func:`~monai_dnaprior.noise.estimation.finest_scale_quietness_where`):
      a clean scan's texture, not noise, grew with the mean;
    - continuous (not counted) Poisson: the flattest patches' spectrum is coloured (a variance that grows in
      proportion to the mean is as often texture as counts). Raw counts (a lattice) are white.

    Speckle so rejected is a magnitude (Rician) where a twentieth of the image's blocks are pure Rayleigh noise, found
    block by block whatever its level (:func:`~monai_dnaprior.noise.rayleigh.has_rayleigh_background`): under a coil's
    falloff the noise variance grows with position, and where the bright anatomy lies on the noisy side the binned
    profile reads that as a growth with the mean.

    Speckle stays speckle where its log holds colour (a scan's own noise under weak speckle): the speckle field reads
    that colour, where additive noise would leave the image nearly untouched (its dark regions' quiet finest scale
    reads as signal; 23.5 dB from a 23.4 dB input, 31.3 dB as speckle, on a dev slice).
    """
    noise_model = look_up_option(noise_model, NoiseModelName)
    if noise_model != NoiseModelName.AUTO:
        return noise_model
    detected, counted = _detect(x, spatial_dims)
    if detected == NoiseModelName.RICIAN or (detected == NoiseModelName.GAUSSIAN and not has_psd):
        return detected
    if has_psd:
        return NoiseModelName.GAUSSIAN
    window = IntensityWindow.from_image(x, zero_based=True)
    y = window.normalize(x)
    stabilised = get_noise_model(detected, y, spatial_dims).forward(y)
    if detected == NoiseModelName.POISSON and not counted:
        # a continuous image whose variance grows with the mean: as often the anatomy's texture as counts
        return detected if estimate_noise_spectrum(stabilised, spatial_dims)[0].is_white else NoiseModelName.GAUSSIAN
    anatomy = haar_blocks(y, spatial_dims)[1] > _LOG_FLOOR  # where the log's offset does not flatten the noise
    if finest_scale_quietness_where(stabilised, spatial_dims, anatomy) < _NOISE_FILLED:
        if detected == NoiseModelName.SPECKLE and has_rayleigh_background(x, spatial_dims):
            return NoiseModelName.RICIAN  # a magnitude under a coil's falloff: its variance grew with position
        return NoiseModelName.GAUSSIAN
    return detected  # raw counts, or speckle: whatever colour the log domain holds, the speckle field reads

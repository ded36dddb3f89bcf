"""The noise power spectrum of stationary coloured noise: estimated blindly, and what follows from it.

Coloured noise (FBP's ramp filter, k-space windows, resampling) is diagonal in the Fourier domain: its power
spectrum ``S(k) = E|F n|_k^2`` (orthonormal FFT) says everything about it. It is kept here as the noise's
correlation over a few lags around zero (``c(0) = 1``): short-range, smooth in frequency, and from it follow the
spectrum on any grid (the fit's whitened fidelity) and the variance of any linear coefficient of a patch (the
Wiener refinement's per-coefficient noise).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from monai_dnaprior.noise.estimation import blocks_to_voxels, box_mean, haar_blocks, too_thin

__all__ = [
    "DARKEST_SHARE",
    "ColourTest",
    "NoiseSpectrum",
    "colour_test",
    "confirm_colour",
    "estimate_noise_spectrum",
    "flat_patch_spectrum",
    "flattest_patch_bias",
    "spectrum_from_psd",
    "strongly_coloured",
]

_WHITE_CORRELATION = 0.1  # |correlation| below this at every lag: white
_PSD_FLOOR = 0.01  # relative spectrum floor: no frequency is trusted infinitely
# Flat patches holding more than this many times the finest scale's noise variance: noise filtered to a low pass (a
# k-space window), beyond the weak colour the anatomy's texture gives white noise
_STRONGLY_COLOURED = 2.0
# The colour test (:func:`colour_test`): the largest neighbour correlation of the flattest detrended patches, beyond
# white noise's own through the same estimator, must exceed this effect size and this many of its sampling std
# under white noise (1 / sqrt of the independent voxels); the flattest patches' power at the lowest frequencies
# (``_RISE_BANDS``: |f|_inf up to 0.08 cycle a voxel) over that at the next (up to 0.14) above this rise is anatomy
_COLOUR_EFFECT = 0.1
_COLOUR_Z = 4.0
# 2.6, from 3: white noise on a dev volume cut to tissue (no background: its flattest patches are anatomy) read
# coloured with a rise of 2.8-3.0, and was filtered at twice its level (-2.5 to -5.3 dB); the dev false alarms of
# ``benchmarks/colour_test.py`` (4 draws) 12 -> 7 of 328, its detection 253 -> 251 of 288 (docs/noise.md)
_ANATOMY_RISE = 2.6
# At most this rise, the flattest patches are noise (a noise's spectrum is as flat at the lowest frequencies: 1.1-1.35
# on the dev masked k-space magnitudes' Rayleigh backgrounds, which now keep the plane in any case), and a plane's
# residual is theirs; above it they may hold anatomy (the dev white-noise false alarms rose 1.56-2.5), whose curvature
# a plane leaves: the correlation must hold with a quadric removed too (``benchmarks/colour_test.py``'s dev false
# alarms 24 -> 8 of 656, docs/noise.md)
_NOISE_RISE = 1.4
_RISE_BANDS = (0.08, 0.14)
DARKEST_SHARE = 0.25  # the darkest share of the image that the flattest patches leave out (a magnitude's background)
_MAX_TEST_PATCHES = 1024  # the flattest share, at most this many: more add time, not precision
_BIAS_GRID = 96  # :func:`flattest_patch_bias`'s simulated grid, at most this many voxels a side
# The flattest patches are pure noise where the flattest half, freed of its selection's bias, reads within this of
# the flattest tenth freed of its own: pure low-pass noise of 128-256 px reads 0.85-1.12 (30 draws; about 3 of its
# sampling stds above 1). On the dev slices resampled with white noise (sigma 0.04-0.1) the CT slice, whose flattest
# patches lie in its air, reads 1.04-1.12; slices whose flattest patches hold anatomy 1.08-3.1 (docs/noise.md)
_PURE_NOISE_SPREAD = 1.2
_FLAT_SHARE, _WIDE_SHARE = 0.1, 0.5  # the flattest tenth the spectrum is read from; the flattest half it is checked on


@dataclass(frozen=True)
class NoiseSpectrum:
    """Correlation of stationary noise over lags ``-L..L`` per spatial axis, ``(2L+1,)*d``, centred, ``c(0) = 1``.

    ``white_below``: the noise counts as white when no neighbour's correlation (lags of at most one voxel per axis)
    reaches it; an estimate from few samples sets it higher, above its own sampling error.
    """

    correlation: torch.Tensor
    white_below: float = _WHITE_CORRELATION

    @classmethod
    def white(cls, spatial_dims: int) -> NoiseSpectrum:
        return cls(torch.ones((1,) * spatial_dims))

    @property
    def spatial_dims(self) -> int:
        return self.correlation.ndim

    @property
    def max_abs_correlation(self) -> float:
        """Largest ``|c(lag)|`` between neighbours (lags of at most one voxel along every axis, not zero)."""
        c = self.correlation
        for dim, n in enumerate(c.shape):
            c = c.narrow(dim, max(0, n // 2 - 1), min(n, 3))
        c = c.abs().flatten().clone()
        c[c.numel() // 2] = 0.0
        return float(c.max()) if c.numel() > 1 else 0.0

    @property
    def is_white(self) -> bool:
        """Whether the noise is uncorrelated between neighbouring voxels (below ``white_below``)."""
        return self.max_abs_correlation < self.white_below

    def section(self, axis: int) -> NoiseSpectrum:
        """The correlation within one slice across spatial ``axis`` (lag 0 along it): the noise of a 2D slice."""
        return NoiseSpectrum(self.correlation.select(axis % self.spatial_dims, self.correlation.shape[axis] // 2))

    def lag_table(self, reach: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """The correlation ``rho(delta)`` for lags ``|delta_d| <= reach_d``, float32, centred on lag 0 (where it is
        1), zero beyond the spectrum's own table."""
        table = self.correlation.to(torch.float64)
        out = torch.zeros([2 * r + 1 for r in reach], dtype=torch.float64)
        src, dst = [], []
        for n, r in zip(table.shape, reach):
            c = n // 2
            lo, hi = max(0, c - r), min(n, c + r + 1)
            src.append(slice(lo, hi))
            dst.append(slice(r - (c - lo), r + (hi - c)))
        out[tuple(dst)] = table[tuple(src)]
        return (out / out[tuple(reach)]).to(device=device, dtype=torch.float32)

    def psd(self, shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """Relative power spectrum on the FFT grid ``shape`` (unshifted, mean 1), floored at 1 % of the mean."""
        grid = torch.zeros(tuple(shape), dtype=torch.float64)
        for index in itertools.product(*[range(n) for n in self.correlation.shape]):
            lag = tuple(int(i - n // 2) % s for i, n, s in zip(index, self.correlation.shape, shape))
            grid[lag] += float(self.correlation[index])
        s = torch.fft.fftn(grid).real.clamp_min(_PSD_FLOOR)
        return (s / s.mean()).to(device=device, dtype=torch.float32)

    def covariance(self, patch: Sequence[int]) -> torch.Tensor:
        """Covariance of the voxels of a row-major flattened patch of shape ``patch`` (relative to the variance)."""
        grid = torch.meshgrid(*[torch.arange(p) for p in patch], indexing="ij")
        coords = torch.stack(grid, -1).reshape(-1, len(patch))
        lag = coords[:, None] - coords[None]
        centre = torch.tensor([n // 2 for n in self.correlation.shape])
        size = torch.tensor(self.correlation.shape)
        index = lag + centre
        inside = ((index >= 0) & (index < size)).all(-1)
        flat = (index.clamp_min(0).minimum(size - 1) * torch.tensor(
            [math.prod(self.correlation.shape[d + 1:]) for d in range(self.spatial_dims)])).sum(-1)
        return torch.where(inside, self.correlation.flatten().to(torch.float64)[flat], 0.0)

    def box_mean_spread(self, box: Sequence[int], squared: bool = False) -> float:
        """How many times a box mean's std is white noise's of the same variance: ``sqrt(sum_lag c(lag) prod_d (1 -
        |lag_d| / box_d))``, the variance of the mean of ``prod(box)`` correlated voxels over that of independent ones.
        ``squared`` takes ``c(lag)^2``: a magnitude's correlation where its components' is ``c`` (a Rayleigh
        background's, about ``0.92 c^2`` and 1 at ``c = 1``). 1 for white noise."""
        c = self.correlation.to(torch.float64)
        c = c.square() if squared else c
        for axis, (n, side) in enumerate(zip(c.shape, box)):
            lag = (torch.arange(n, dtype=torch.float64) - n // 2).abs()
            shape = [1] * c.ndim
            shape[axis] = n
            c = c * (1 - lag / side).clamp_min(0).view(shape)
        return float(c.sum().clamp_min(1e-12)) ** 0.5

    def coefficient_variances(self, basis: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
        """Relative noise variance of each coefficient ``basis @ patch`` (rows of ``basis``): ``diag(B C B^T)``."""
        cov = self.covariance(patch).to(basis.device, torch.float64)
        b = basis.to(torch.float64)
        return ((b @ cov) * b).sum(1).clamp_min(_PSD_FLOOR).to(basis.dtype)

    def coefficient_cross_covariances(self, basis: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, int]:
        """Relative covariance of coefficient ``i`` (a row of ``basis``) between two patches ``delta`` apart, for
        every ``delta`` where it is not zero: ``(2 D + 1,)*d + (coefficients,)`` centred on ``delta = 0``, and ``D``.
        Its value at ``delta = 0`` is :meth:`coefficient_variances`."""
        d = self.spatial_dims
        b = basis.to(torch.float64).reshape(-1, *patch)
        conv = torch.nn.functional.conv2d if d == 2 else torch.nn.functional.conv3d
        lags = [2 * p - 1 for p in patch]  # each basis function's autocorrelation over lags -(p-1)..(p-1)
        auto = torch.zeros(b.shape[0], *lags, dtype=torch.float64)
        for shift in itertools.product(*[range(-(p - 1), p) for p in patch]):
            src = tuple(slice(max(0, -t), p - max(0, t)) for t, p in zip(shift, patch))
            dst = tuple(slice(max(0, t), p - max(0, -t)) for t, p in zip(shift, patch))
            value = (b[(slice(None),) + src] * b[(slice(None),) + dst]).flatten(1).sum(1)
            auto[(slice(None),) + tuple(t + p - 1 for t, p in zip(shift, patch))] = value
        c = self.correlation.to(torch.float64)
        reach = max(max(patch) - 1 + n // 2 for n in c.shape)
        pads = [q for n in reversed(c.shape) for q in (reach + max(patch) - 1 - n // 2,) * 2]
        padded = torch.nn.functional.pad(c[None, None], pads)
        out = conv(padded, auto[:, None])  # out[delta] = sum_tau c(delta + tau) auto_i(tau)
        centre = [(s - 1) // 2 for s in out.shape[2:]]
        window = tuple(slice(m - reach, m + reach + 1) for m in centre)
        table = out[(0, slice(None)) + window]
        return table.movedim(0, -1).to(basis.dtype), reach


def spectrum_from_psd(psd: torch.Tensor, max_lag: int = 6) -> tuple[NoiseSpectrum, float]:
    """The :class:`NoiseSpectrum` and the variance of noise with power spectrum ``psd`` (orthonormal FFT convention,
    ``E|fftn(n, norm="ortho")|^2``, unshifted; its mean is the variance)."""
    autocov = torch.fft.ifftn(psd.to(torch.float64)).real
    variance = float(autocov.flatten()[0])
    if variance <= 0:
        raise ValueError("The noise power spectrum must have a positive mean (the noise variance).")
    lags = [min(max_lag, n // 2) for n in psd.shape]
    index = torch.meshgrid(*[torch.arange(-m, m + 1) % n for m, n in zip(lags, psd.shape)], indexing="ij")
    return NoiseSpectrum((autocov[index] / variance).float()), variance


def _taper(patch: Sequence[int]) -> torch.Tensor:
    """Separable Hann taper with unit mean square."""
    w = torch.ones(())
    for p in patch:
        w = w[..., None] * torch.hann_window(p, periodic=False, dtype=torch.float64)
    return w / w.square().mean().sqrt()


def estimate_noise_spectrum(
    x: torch.Tensor, spatial_dims: int, patch: int = 16, stride: int = 4, share: float = _FLAT_SHARE,
    max_lag: int = 4, min_patches: int = 64, mask: torch.Tensor | None = None, unbiased: bool = False,
) -> tuple[NoiseSpectrum, float]:
    """Blind estimate of the noise's correlation and variance from the flattest patches of the image (Welch).

    Patches in the noisy part of the image (no mask, padding or clipping), their weighted mean removed and Hann
    tapered, are ranked by variance; the flattest ``share`` of them are mostly noise, and the mean of their
    periodograms estimates the noise spectrum (a periodogram over all patches would be dominated by the signal's
    low frequencies). The correlation kept is its inverse FFT over lags ``-max_lag..max_lag``.

    Args:
        x: ``(C, *spatial)``; channels are pooled.
        spatial_dims: 2 or 3.
        patch: patch side (no larger than the image).
        stride: step between patches.
        share: share of the patches, the flattest, that the spectrum is averaged over.
        max_lag: the longest correlation kept per axis.
        min_patches: fewer usable patches than this (a small image) give a white spectrum and variance 0.
        mask: where patches may lie (boolean, like ``x``), besides the noisy part of the image.
        unbiased: read the correlation and variance whose expected periodogram, their mean removed, is nearest to the
            patches' (:func:`_fit_correlation`: right for pure noise), not the periodogram's own inverse with its DC
            taken from its neighbours (a low-pass noise's lowest frequencies go with the mean, but so do the
            anatomy's that the flattest patches keep).

    Returns:
        ``(spectrum, variance)``: the relative spectrum, and the noise variance in the flat patches.
    """
    shape = x.shape[-spatial_dims:]
    sizes = [min(patch, s) for s in shape]
    if min(sizes) < 2 * max_lag + 2:
        return NoiseSpectrum.white(spatial_dims), 0.0
    voxel_noisy = blocks_to_voxels(haar_blocks(x, spatial_dims)[2], shape)  # an odd last row counts as not noisy
    if mask is not None:
        voxel_noisy = voxel_noisy * mask.to(voxel_noisy)
    patches, fractions = x.float(), voxel_noisy
    for dim, p in zip(range(x.ndim - spatial_dims, x.ndim), sizes):  # window axes are appended in order
        patches = patches.unfold(dim, p, min(stride, p))
        fractions = fractions.unfold(dim, p, min(stride, p))
    axes = tuple(range(1, spatial_dims + 1))
    patches = patches.reshape(-1, *sizes)
    patches = patches[(fractions.reshape(-1, *sizes).mean(axes) > 0.95).to(patches.device)].to(torch.float64)
    if patches.shape[0] < min_patches:
        return NoiseSpectrum.white(spatial_dims), 0.0
    count = max(8, int(share * patches.shape[0]))
    taper = _taper(sizes).to(patches.device)
    centred = patches - (patches * taper).sum(axes, keepdim=True) / taper.sum()
    flattest = centred.square().mean(axes).argsort()[:count]
    spectrum = torch.fft.fftn(centred[flattest] * taper, dim=axes, norm="ortho").abs().square().mean(0).cpu()
    if unbiased:
        estimate, variance = _fit_correlation(spectrum, sizes, max_lag)
    else:
        neighbours = torch.stack([spectrum[o] for o in itertools.product((-1, 0, 1), repeat=spatial_dims) if any(o)])
        spectrum[(0,) * spatial_dims] = neighbours.median()  # the mean was removed: take DC from its neighbours
        estimate, variance = spectrum_from_psd(spectrum, max_lag)
    independent = count * math.prod(min(stride, p) for p in sizes)  # overlapping patches share their voxels
    return replace(estimate, white_below=max(_WHITE_CORRELATION, 4.0 / math.sqrt(independent))), variance


def _fit_correlation(periodogram: torch.Tensor, sizes: Sequence[int], max_lag: int) -> tuple[NoiseSpectrum, float]:
    """The stationary noise's correlation over lags ``-max_lag..max_lag`` (none beyond) and variance whose expected
    periodogram under :func:`estimate_noise_spectrum`'s patches (their tapered mean removed, Hann tapered) is nearest
    to ``periodogram`` (least squares). Removing a patch's mean takes a low-pass noise's lowest frequencies with it:
    the periodogram's own inverse read a resampled noise's neighbour correlation 0.55 for 0.61, and 0.0 for 0.12
    two voxels apart."""
    lags = tuple(min(max_lag, (n - 1) // 2) for n in sizes)
    design = _periodogram_design(tuple(sizes), lags)
    count = design.shape[1]
    mirror = torch.arange(count).flip(0)  # c(-lag) = c(lag): each pair is one unknown
    paired = (design + design[:, mirror])[:, : count // 2 + 1]
    paired[:, -1] = design[:, count // 2]
    values = torch.linalg.lstsq(paired, periodogram.flatten().to(torch.float64)[:, None]).solution[:, 0]
    variance = float(values[-1])
    if variance <= 0:
        return NoiseSpectrum.white(len(sizes)), 0.0
    full = torch.cat([values, values[:-1].flip(0)])
    return NoiseSpectrum((full / variance).reshape([2 * m + 1 for m in lags]).float()), variance


@functools.lru_cache(maxsize=8)
def _periodogram_design(sizes: tuple[int, ...], lags: tuple[int, ...]) -> torch.Tensor:
    """The expected periodogram of :func:`_fit_correlation`'s patches per unit correlation at each lag:
    ``(frequencies, lags)``, both row-major over the axes; a tapered, mean-removed patch's ``diag(A E_t A^H)`` summed
    from the products over axes of :func:`_lag_kernels`' four terms."""
    per_axis = [_lag_kernels(n, m) for n, m in zip(sizes, lags)]
    design = torch.zeros(math.prod(2 * m + 1 for m in lags), math.prod(sizes), dtype=torch.float64)
    for term, sign in enumerate((1.0, -1.0, -1.0, 1.0)):
        product = per_axis[0][term]
        for more in per_axis[1:]:
            product = (product[:, None, :, None] * more[term][None, :, None, :]).flatten(0, 1).flatten(1, 2)
        design += sign * product.real
    return design.T.contiguous()


def _lag_kernels(n: int, max_lag: int) -> torch.Tensor:
    """Per lag ``t`` of one axis (``-max_lag..max_lag``) and frequency, the 1D factors of the four terms of a tapered,
    mean-removed patch's expected periodogram, ``diag(A E_t A^H)`` with ``A = F W - F w w^T / sum w`` per axis (``F``
    the orthonormal DFT, ``W = diag(w)`` the Hann taper, ``E_t`` the lag-``t`` shift): complex ``(4, 2 max_lag + 1,
    n)``; over axes each term is the product of its factors, and the periodogram is the first minus the second and
    third plus the fourth."""
    w = _taper([n]).to(torch.complex128)
    f = torch.fft.fft(torch.eye(n, dtype=torch.complex128), dim=0, norm="ortho")
    a, b, total = f * w[None], f @ w, w.sum()
    out = torch.zeros(4, 2 * max_lag + 1, n, dtype=torch.complex128)
    for i, t in enumerate(range(-max_lag, max_lag + 1)):
        shift = torch.diag(torch.ones(n - abs(t), dtype=torch.complex128), -t)  # (p, q) = 1 where p - q = t
        out[0, i] = (a @ shift @ a.conj().T).diagonal()
        out[1, i] = (a @ shift @ w) * b.conj() / total
        out[2, i] = b * (a @ shift.T @ w).conj() / total
        out[3, i] = (w @ shift @ w) * b.abs().square() / total**2
    return out


@dataclass(frozen=True)
class ColourTest:
    """The outcome of :func:`colour_test`.

    Attributes:
        statistic: the largest ``|c(lag) - c_white(lag)|`` between neighbours (lags of at most one voxel per axis):
            the flattest detrended patches' correlation beyond what white noise gives through the same estimator.
        threshold: what ``statistic`` must exceed: the effect size, or :data:`_COLOUR_Z` sampling stds under white
            noise where that is larger (a small image).
        rise: the flattest patches' mean power (over white noise's through the same estimator) at the lowest
            frequencies (``0 < |f|_inf <= 0.08`` cycle a voxel) over that at the next (``0.08 < |f|_inf <= 0.14``).
            A noise spectrum is smooth there (its correlation is a few voxels long); anatomy's power climbs steeply
            towards the lowest frequencies, so a steep rise says the flattest patches hold anatomy.
        patches: how many flattest patches the statistic was read on.
        independent: how many independent voxels they hold (overlapping patches share theirs): the statistic's
            sampling std under white noise is about ``1 / sqrt(independent)``.
        curved: ``statistic`` read on the same patches with a quadric removed instead of a plane: a noise's
            correlation over a few voxels stays, anatomy's curvature at the patch's scale goes (a small slice's
            flattest patches are anatomy, whose plane residual reads as a correlation); ``statistic`` itself where
            the test was asked for the plane alone (a magnitude's).
    """

    statistic: float
    threshold: float
    rise: float
    patches: int
    independent: int
    curved: float

    @property
    def anatomy(self) -> bool:
        """Whether the flattest patches hold anatomy (a steep rise of power to the lowest frequencies)."""
        return self.rise > _ANATOMY_RISE

    @property
    def coloured(self) -> bool:
        """Whether the noise is coloured: a correlation above the threshold, read where no anatomy is; with a quadric
        removed too where the flattest patches' power rises to the lowest frequencies more than a noise's does
        (:data:`_NOISE_RISE`: anatomy may be in them)."""
        read = self.statistic if self.rise <= _NOISE_RISE else min(self.statistic, self.curved)
        return read > self.threshold and not self.anatomy


def _separable_windows(x: torch.Tensor, kernels: Sequence[torch.Tensor], strides: Sequence[int]) -> torch.Tensor:
    """``sum_v x[w + v] prod_i k_i[v_i]`` for every window start ``w`` on the grid of ``strides`` (the windows of
    ``unfold``): ``(C, *windows)`` from ``x`` ``(C, *spatial)`` and one 1D kernel per spatial axis."""
    d = len(kernels)
    conv = torch.nn.functional.conv2d if d == 2 else torch.nn.functional.conv3d
    out = x[:, None]
    for axis, (k, step) in enumerate(zip(kernels, strides)):
        shape, stride = [1] * d, [1] * d
        shape[axis], stride[axis] = k.numel(), step
        out = conv(out, k.to(out).view(1, 1, *shape), stride=stride)
    return out[:, 0]


@functools.lru_cache(maxsize=8)
def _polynomial_detrend(sizes: tuple[int, ...], order: int = 1) -> tuple[list[torch.Tensor], list[list[torch.Tensor]],
                                                                       torch.Tensor, torch.Tensor]:
    """What a polynomial detrend of ``sizes`` patches needs: the 1D tapers (:func:`_taper`'s factors), each basis
    function's 1D factors (``order`` 1: 1 and a ramp per axis, a constant and a plane; ``order`` 2 adds each axis's
    centred square and each pair's product, a quadric), the Gram matrix of the basis weighted by the squared taper,
    and white unit noise's expected periodogram after the detrend and the taper (orthonormal FFT, unshifted):
    ``E|F(t (I - H) n)|^2``, ``H`` the weighted least-squares projection onto the basis."""
    d = len(sizes)
    tapers = [torch.hann_window(p, periodic=False, dtype=torch.float64) for p in sizes]
    tapers = [t / t.square().mean().sqrt() for t in tapers]
    ramps = [torch.linspace(-1.0, 1.0, p, dtype=torch.float64) for p in sizes]
    ones = [torch.ones(p, dtype=torch.float64) for p in sizes]
    terms = [(axis,) for axis in range(d)]
    if order >= 2:
        terms += [(axis, axis) for axis in range(d)] + list(itertools.combinations(range(d), 2))
    factors = [ones]
    for term in terms:
        factors.append([_ramp_power(ramps[i], term.count(i), len(term)) for i in range(d)])
    gram = torch.tensor([[math.prod(float((t.square() * a * b).sum()) for t, a, b in zip(tapers, fa, fb))
                          for fb in factors] for fa in factors], dtype=torch.float64)

    def full(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
        out = torch.ones((), dtype=torch.float64)
        for v in vectors:
            out = out[..., None] * v
        return out

    taper = full(tapers)
    basis = torch.stack([full(f) for f in factors])  # A_j
    dual = torch.einsum("jk,k...->j...", torch.linalg.inv(gram), basis * taper.square())  # B_j: coef_j = <B_j, p>
    axes = tuple(range(1, d + 1))
    ta, tb = torch.fft.fftn(taper * basis, dim=axes), torch.fft.fftn(taper * dual, dim=axes)
    # E[(t r)(t r)^T] = T (I - A^T B)(I - B^T A) T: its circular autocovariance's spectrum, term by term
    bb = dual.flatten(1) @ dual.flatten(1).T
    white = taper.square().sum() - 2 * (ta.conj() * tb).real.sum(0)
    white = white + torch.einsum("jk,j...,k...->...", bb.to(torch.complex128), ta.conj(), ta).real
    return tapers, factors, gram, white / math.prod(sizes)


def _ramp_power(ramp: torch.Tensor, power: int, degree: int) -> torch.Tensor:
    """One axis's factor of a monomial of ``degree``: ``ramp ** power``, a square centred (its mean over [-1, 1]
    taken off) where it is the whole monomial."""
    out = ramp**power
    return out - 1 / 3 if power == 2 and degree == 2 else out


def _neighbour_lags(autocov: torch.Tensor) -> torch.Tensor:
    """The correlation (``autocov`` over its value at lag 0; unshifted) at every lag of at most one voxel per axis,
    lag 0 left out."""
    index = torch.meshgrid(*[torch.tensor([-1, 0, 1]) % n for n in autocov.shape], indexing="ij")
    c = (autocov[index] / autocov.flatten()[0]).flatten()
    return torch.cat([c[: c.numel() // 2], c[c.numel() // 2 + 1:]])


def colour_test(
    x: torch.Tensor, spatial_dims: int, mask: torch.Tensor | None = None, patch: int = 16, stride: int = 4,
    share: float = _FLAT_SHARE, min_patches: int = 64, curvature: bool = True,
) -> ColourTest | None:
    """Whether the noise of ``x`` is coloured, tested where smooth anatomy does not read as colour.

    The patches where the noise is (no mask, padding or clipping; and ``mask``) are detrended: a plane, fitted by
    least squares weighted by the squared Hann taper, is removed, which takes out what is smooth at the patch's scale
    (a gradient of the anatomy, an interpolated intensity ramp) while leaving a noise correlation over a few voxels.
    The flattest ``share`` of them (least tapered residual energy: in an image with a background of pure noise, that
    background) give the mean periodogram and so the correlation at the neighbour lags. White noise passes through
    the same detrend and taper with a small correlation of its own, computed exactly and subtracted. The noise is
    coloured where what is left exceeds both the effect size 0.1 and 4 sampling stds under white noise
    (``4 / sqrt(independent voxels)``, a small image), and the flattest patches' power does not climb steeply to the
    lowest frequencies (:attr:`ColourTest.rise` at most 2.6: a steeper rise is anatomy, in an image with no flat
    background). Where it climbs more than a noise's does (above 1.4) the patches may hold anatomy whose curvature a
    plane leaves, and the correlation must also exceed the threshold with a quadric removed instead
    (:attr:`ColourTest.curved`).

    False alarms, measured by ``benchmarks/colour_test.py`` (white Gaussian noise of 1 % to 10 % of the range, 8
    draws, on clean anatomy: smooth phantoms, scans Gaussian-smoothed and as they come, each also interpolated 2x; a
    level counted where it is at least 3 times the scan's own noise; ``results/colour_test/``): 8 of 1424 images
    called coloured (24 with the plane alone). None of the 768 on held-out scans (DIPY's ``aniso_vox``, ``S0_10`` and
    ``t1_coronal_slice``, nibabel's ``anatomical.nii``) and phantoms; 8 of the 656 on the dev scans, all on the CT
    slice as it comes at sigma 2 % and 3 %, where its own noise (FBP's, coloured; its wavelet MAD underestimates it)
    is still a fifth of the added. On pure white noise the statistic's 99th percentile is about
    ``2 / sqrt(independent)`` (320 images of 8 sizes): the sampling part of the threshold alone never fired. Power:
    85 % to 92 % of the same smooth images with low-pass noise (resampled, Gaussian-filtered, a Hann k-space window)
    read coloured, the same with or without the quadric; the misses are images with no background of pure noise, at
    the lower level, whose flattest patches are anatomy: their noise is taken white. The limits are from the dev
    scans' false alarms, a dev volume cut to tissue and small dev slices (``docs/noise.md``).

    Args:
        x: ``(C, *spatial)``; channels are pooled.
        spatial_dims: 2 or 3.
        mask: where patches may lie (boolean, like ``x``), besides the noisy part of the image.
        patch: patch side (no larger than the image).
        stride: step between patches.
        share: share of the patches, the flattest, the statistic is read on (at least 8 patches, at most 1024).
        min_patches: fewer usable patches than this give no test (None).
        curvature: read :attr:`ColourTest.curved` (else it is the plane's ``statistic``): False for a magnitude,
            whose colour is taken only where strong (:func:`strongly_coloured`), and whose flattest patches, in a
            masked magnitude's Rayleigh background, are noise: on 224 small dev slices with white Rician noise the
            quadric took no colour away, and it took a k-space window's from 2 of 216 dev masked draws.

    Returns:
        The :class:`ColourTest`, or None with too few patches (or a patch side under 6 voxels).
    """
    shape = x.shape[-spatial_dims:]
    sizes = tuple(min(patch, s) for s in shape)
    if min(sizes) < 6:
        return None
    steps = [min(stride, p) for p in sizes]
    tapers, factors, gram, _ = _polynomial_detrend(sizes)
    device = x.device
    gram = gram.to(device)
    noisy = blocks_to_voxels(haar_blocks(x, spatial_dims)[2], shape)
    if mask is not None:
        noisy = noisy * mask.to(noisy)
    boxes = [torch.full((p,), 1.0 / p, dtype=torch.float64) for p in sizes]
    usable = _separable_windows(noisy.double(), boxes, steps) > 0.95
    if int(usable.sum()) < min_patches:
        return None
    y = x.double()
    y = y - y[noisy.bool()].mean() if bool(noisy.any()) else y  # the energies below cancel less for a centred image
    weights = [t.square() for t in tapers]
    moments = torch.stack([_separable_windows(y, [w * a for w, a in zip(weights, f)], steps) for f in factors], -1)
    squares = _separable_windows(y.square(), weights, steps)
    energy = squares - (moments * torch.linalg.solve(gram, moments[..., None])[..., 0]).sum(-1)
    energy = torch.where(usable, energy, torch.inf).flatten()
    count = min(_MAX_TEST_PATCHES, max(8, int(share * int(usable.sum()))))
    flattest = energy.argsort()[:count]
    start = torch.unravel_index(flattest, usable.shape)  # (channel, *window index)
    grids = torch.meshgrid(*[torch.arange(p, device=device) for p in sizes], indexing="ij")
    index = [start[0].view(-1, *([1] * spatial_dims))]
    index += [(start[i + 1] * steps[i]).view(-1, *([1] * spatial_dims)) + grids[i] for i in range(spatial_dims)]
    patches = y[tuple(index)]  # (count, *sizes)
    power, white_power, excess = _detrended_excess(patches, sizes, 1)
    statistic = float(excess.abs().max())
    curved = float(_detrended_excess(patches, sizes, 2)[2].abs().max()) if curvature else statistic
    frequency = torch.stack(torch.meshgrid(*[torch.fft.fftfreq(p, dtype=torch.float64).abs() for p in sizes],
                                           indexing="ij")).amax(0)
    relative = power / white_power.clamp_min(1e-3 * float(white_power.max()))
    low, high = _RISE_BANDS
    lowest, next_ = (frequency > 0) & (frequency <= low), (frequency > low) & (frequency <= high)
    rise = float(relative[lowest].mean() / relative[next_].mean()) if lowest.any() and next_.any() else 1.0
    independent = count * math.prod(steps)
    threshold = max(_COLOUR_EFFECT, _COLOUR_Z / math.sqrt(independent))
    return ColourTest(statistic, threshold, rise, count, independent, curved)


def _detrended_excess(patches: torch.Tensor, sizes: tuple[int, ...], order: int) -> tuple[torch.Tensor, ...]:
    """The mean periodogram of ``patches`` (``(N, *sizes)``) detrended by a polynomial of ``order``
    (:func:`_polynomial_detrend`) and tapered, white unit noise's through the same, and the neighbour lags' correlation
    beyond white noise's."""
    spatial_dims = len(sizes)
    tapers, factors, gram, white = _polynomial_detrend(sizes, order)
    device = patches.device
    full_taper = torch.ones((), dtype=torch.float64)
    for t in tapers:
        full_taper = full_taper[..., None] * t
    basis = torch.stack([math.prod(f[i].view([-1 if j == i else 1 for j in range(spatial_dims)])
                                   for i in range(spatial_dims)) for f in factors])
    full_taper, basis = full_taper.to(device), basis.to(device)
    coef = torch.linalg.solve(gram.to(device), torch.einsum("n...,j...->jn", patches, basis * full_taper.square()))
    residual = patches - torch.einsum("jn,j...->n...", coef, basis)
    axes = tuple(range(1, spatial_dims + 1))
    power = torch.fft.fftn((residual * full_taper).float(), dim=axes, norm="ortho").abs().square().mean(0)
    power = power.cpu().double()
    excess = _neighbour_lags(torch.fft.ifftn(power).real) - _neighbour_lags(torch.fft.ifftn(white).real)
    return power, white, excess


def flat_patch_spectrum(
    x: torch.Tensor, spatial_dims: int, finest_level: float | None = None, curvature: bool = True
) -> tuple[NoiseSpectrum, float]:
    """The noise's spectrum and variance (:func:`estimate_noise_spectrum`) from the flattest patches where the noise
    is, above the darkest quarter (a magnitude's dark background is Rayleigh, not Gaussian), or anywhere the noise
    is where too few patches lie there; white unless :func:`colour_test` also finds the noise coloured, over all of
    the image where the noise is (a background of pure noise included: the patches above the darkest quarter of an
    image with a background are anatomy, whose smooth parts read as colour).

    Given ``finest_level`` (the finest scale's noise std: the caller's noise is Gaussian), a strongly coloured noise's
    variance (:func:`strongly_coloured`: a low pass) is read freed of the flattest patches' selection bias where they
    are pure noise (:func:`_pure_noise_variance`), first above the darkest quarter, then anywhere the noise is (a
    Gaussian background of pure noise may be the darkest quarter), and there its correlation and variance are read
    again without the bias of the patches' mean's removal (:func:`_pure_noise_reading`); where they hold anatomy,
    it offsets that bias and the reading stands. ``curvature``: as :func:`colour_test`'s (False for a magnitude)."""
    noisy = _where_the_noise_is(x, spatial_dims)
    mask = noisy & _above_darkest(x, spatial_dims)
    spectrum, variance = estimate_noise_spectrum(x, spatial_dims, mask=mask)
    if variance == 0:
        mask = noisy
        spectrum, variance = estimate_noise_spectrum(x, spatial_dims, mask=mask)
    spectrum = confirm_colour(spectrum, x, spatial_dims, noisy, curvature=curvature)
    if finest_level is not None and strongly_coloured(spectrum, variance, finest_level):
        shape = x.shape[-spatial_dims:]
        biases = _flattest_patch_biases(spectrum, shape, (_FLAT_SHARE, _WIDE_SHARE))
        for where, read in ((mask, variance),) if mask is noisy else ((mask, variance), (noisy, None)):
            pure = _pure_noise_variance(x, spatial_dims, where, biases, read)
            if pure is not None:
                return _pure_noise_reading(x, spatial_dims, where) or (spectrum, pure)
    return spectrum, variance


def _pure_noise_variance(
    x: torch.Tensor, spatial_dims: int, mask: torch.Tensor, biases: Sequence[float], tenth: float | None = None
) -> float | None:
    """The flattest tenth of the patches of ``mask`` (its variance ``tenth`` where already read) freed of its
    selection bias where they are pure noise, else None: pure noise reads the same variance from the flattest half as
    from the flattest tenth once each is freed of its own bias (``biases``: the tenth's and the half's,
    :func:`flattest_patch_bias`), where anatomy among them raises the half's (:data:`_PURE_NOISE_SPREAD`)."""
    if tenth is None:
        _, tenth = estimate_noise_spectrum(x, spatial_dims, mask=mask)
    if tenth == 0:
        return None
    _, half = estimate_noise_spectrum(x, spatial_dims, share=_WIDE_SHARE, mask=mask)
    tenth = tenth / biases[0]
    return tenth if half / biases[1] < _PURE_NOISE_SPREAD * tenth else None


def _pure_noise_reading(x: torch.Tensor, spatial_dims: int, mask: torch.Tensor) -> tuple[NoiseSpectrum, float] | None:
    """The spectrum and variance of the flattest tenth of the patches of ``mask``, pure noise, read without the bias
    of their mean's removal (:func:`estimate_noise_spectrum`'s ``unbiased``; the variance freed of the selection's
    bias as simulated for that reading), or None where that reading is white. (The flattest half, less selected,
    took in the edges of the anatomy beside the background: a phantom's level 11 % high.)"""
    spectrum, variance = estimate_noise_spectrum(x, spatial_dims, mask=mask, unbiased=True)
    if spectrum.is_white or variance == 0:
        return None
    shape = x.shape[-spatial_dims:]
    return spectrum, variance / _flattest_patch_biases(spectrum, shape, (_FLAT_SHARE,), unbiased=True)[0]


def flattest_patch_bias(spectrum: NoiseSpectrum, shape: Sequence[int], share: float = _FLAT_SHARE) -> float:
    """The flattest ``share`` of the patches' variance (:func:`estimate_noise_spectrum`) over the true one for noise
    of ``spectrum`` alone: selecting the flattest reads low, the more so the fewer independent voxels a patch holds
    (a low-pass noise's). Simulated (a fixed seed) on a grid of the image's ``shape``, at most :data:`_BIAS_GRID` a
    side."""
    return _flattest_patch_biases(spectrum, shape, (share,))[0]


def _flattest_patch_biases(spectrum: NoiseSpectrum, shape: Sequence[int], shares: Sequence[float],
                           unbiased: bool = False) -> list[float]:
    """:func:`flattest_patch_bias` for each of ``shares``, on one simulated noise, read as ``unbiased`` says
    (:func:`estimate_noise_spectrum`)."""
    grid = [min(n, _BIAS_GRID) for n in shape]
    dims = tuple(range(-len(grid), 0))
    white = torch.randn((1, *grid), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.fft.ifftn(torch.fft.fftn(white, dim=dims) * spectrum.psd(grid).double().sqrt(), dim=dims).real
    biases = []
    for share in shares:
        _, variance = estimate_noise_spectrum(noise.float(), len(grid), share=share, unbiased=unbiased)
        biases.append(variance / float(noise.var()) if variance > 0 else 1.0)
    return biases


def confirm_colour(
    spectrum: NoiseSpectrum, x: torch.Tensor, spatial_dims: int, noisy: torch.Tensor | None = None,
    above_darkest: float = 0.0, curvature: bool = True,
) -> NoiseSpectrum:
    """``spectrum`` (a blind estimate from ``x``'s flattest patches) where it is white or :func:`colour_test` finds
    ``x``'s noise coloured too (or has too few patches to test); else white. ``noisy``: where the noise is
    (:func:`_where_the_noise_is`, computed when not given). ``above_darkest``: where above 0, the colour must also be
    found where the local mean is above that share of the image's (:func:`_above_darkest`), or the spectrum is white:
    what only the darkest regions hold is theirs, not the noise's (a test there can only take colour away).
    ``curvature``: as :func:`colour_test`'s."""
    if spectrum.is_white:
        return spectrum
    noisy = _where_the_noise_is(x, spatial_dims) if noisy is None else noisy
    masks = [noisy] + ([noisy & _above_darkest(x, spatial_dims, above_darkest)] if above_darkest > 0 else [])
    for mask in masks:
        test = colour_test(x, spatial_dims, mask=mask, curvature=curvature)
        if test is not None and not test.coloured:
            return NoiseSpectrum.white(spatial_dims)
    return spectrum


def strongly_coloured(spectrum: NoiseSpectrum, variance: float, finest_level: float) -> bool:
    """Whether the flattest patches (``spectrum`` and ``variance``, :func:`flat_patch_spectrum`) hold more than twice
    the noise variance the finest scale sees (``finest_level ** 2``): noise filtered to a low pass (a k-space
    window), beyond any texture's weak colour."""
    return not spectrum.is_white and variance > _STRONGLY_COLOURED * finest_level**2


def _above_darkest(x: torch.Tensor, spatial_dims: int, share: float = DARKEST_SHARE, size: int = 9) -> torch.Tensor:
    """Voxels whose local mean (a ``size`` box) is above the darkest ``share`` of local means."""
    local = box_mean(x.float(), spatial_dims, size)
    flat = local.flatten()
    flat = flat[:: max(1, flat.numel() // (1 << 20))]  # a strided sample is as good a quantile
    return local > torch.quantile(flat, share)


def _where_the_noise_is(x: torch.Tensor, spatial_dims: int, size: int = 8) -> torch.Tensor:
    """Voxels whose neighbourhood (``size`` blocks a side) carries at least half the image's finest-scale noise: a
    noise-free region's flat patches say nothing of the noise's spectrum."""
    if too_thin(x, spatial_dims):
        return torch.ones_like(x, dtype=torch.bool)
    detail, _, _ = haar_blocks(x, spatial_dims)
    carries = box_mean(detail.abs(), spatial_dims, size) >= 0.5 * detail.abs().median()
    return blocks_to_voxels(carries, x.shape[-spatial_dims:], replicate=True).bool()

"""The classical pipelines an expert runs for each noise model (the benchmark's anchors), as pure numpy functions.

One function per piece: noise-level estimates, variance-stabilising transforms and their inverses, and the
pipelines that chain them around BM3D (2D) / BM4D (3D) or DIPY's NL-means:

- Poisson: generalized Anscombe on the counts (gain known), BM3D/BM4D with sigma 1, the closed-form approximation of
  the exact unbiased inverse (Makitalo & Foi 2011), times the gain.
- Rician: BM3D/BM4D on the magnitude with sigma from the bright blocks, then the Rician mean inverted numerically;
  DIPY ``nlmeans(rician=True)``.
- Speckle: log, BM3D/BM4D with the log-domain sigma (from the bright blocks), exp with the log-Gamma bias removed.
- Gaussian: BM3D/BM4D with sigma estimated.
"""

from __future__ import annotations

import numpy as np

# ------------------------------------------------------------------------------------------- noise estimates


def haar_blocks(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finest orthonormal Haar transform on non-overlapping 2x2 (2x2x2) blocks: (block means, all-high detail).

    The all-high detail coefficient of white noise of std sigma has std sigma; an odd trailing row is dropped.
    """
    y = np.asarray(y, dtype=np.float64)
    y = y[tuple(slice(0, (s // 2) * 2) for s in y.shape)]
    mean, detail = y, y
    for axis in range(y.ndim):
        even = [slice(None)] * y.ndim
        odd = [slice(None)] * y.ndim
        even[axis], odd[axis] = slice(0, None, 2), slice(1, None, 2)
        mean = (mean[tuple(even)] + mean[tuple(odd)]) / 2.0
        detail = (detail[tuple(even)] - detail[tuple(odd)]) / np.sqrt(2.0)
    return mean, detail


def mad_sigma(coefficients: np.ndarray) -> float:
    """Robust std of zero-mean noise coefficients: median(|c|) / 0.6745."""
    return float(np.median(np.abs(coefficients)) / 0.6744897501960817) if coefficients.size else 0.0


def bright_block_sigma(y: np.ndarray, snr: float = 3.0) -> float:
    """Noise sigma from the Haar-MAD over bright blocks only, where signal-dependent noise is near Gaussian.

    Bright = block mean above ``snr`` x the all-block estimate, and in the top half of the block means
    (falls back to all blocks when fewer than 64 qualify).
    """
    mean, detail = haar_blocks(y)
    sigma_all = mad_sigma(detail)
    bright = (mean > snr * sigma_all) & (mean >= np.median(mean))
    return mad_sigma(detail[bright]) if bright.sum() >= 64 else sigma_all


def skimage_sigma(y: np.ndarray) -> float:
    """Gaussian sigma by scikit-image's wavelet estimate (all pixels), as a user takes it."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(y))


def dipy_sigma(y: np.ndarray) -> float:
    """DIPY's local-variance sigma estimate (``estimate_sigma``, N=0); a 2D image is passed as one slice."""
    from dipy.denoise.noise_estimate import estimate_sigma

    arr = y if y.ndim == 3 else y[..., None]
    return float(estimate_sigma(arr.astype(np.float64))[0])


# ---------------------------------------------------------------------------------------------- BM3D / BM4D


def bm_denoise(y: np.ndarray, sigma_psd: float | np.ndarray) -> np.ndarray:
    """BM3D for a 2D image, BM4D for a volume, with a noise std or a PSD (the packages' own convention)."""
    if y.ndim == 2:
        import bm3d

        return np.asarray(bm3d.bm3d(y, sigma_psd=sigma_psd), dtype=np.float64)
    import bm4d

    return np.asarray(bm4d.bm4d(y, sigma_psd=sigma_psd), dtype=np.float64)


def gaussian_pipeline(y: np.ndarray) -> np.ndarray:
    """White Gaussian noise: BM3D/BM4D with scikit-image's sigma estimate."""
    return bm_denoise(y, skimage_sigma(y))


# ------------------------------------------------------------------------------------------------- Poisson


def anscombe(counts: np.ndarray) -> np.ndarray:
    """Generalized Anscombe transform of Poisson counts (unit gain, no Gaussian part): 2 sqrt(c + 3/8)."""
    return 2.0 * np.sqrt(np.maximum(counts, 0.0) + 0.375)


def anscombe_inverse_unbiased(d: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of the Anscombe transform (Makitalo & Foi 2011).

    ``1/4 d^2 + 1/4 sqrt(3/2) d^-1 - 11/8 d^-2 + 5/8 sqrt(3/2) d^-3 - 1/8``; it is 0 at d = 2 sqrt(3/8) (the
    transform of 0 counts), and d is clamped there.
    """
    d = np.maximum(np.asarray(d, dtype=np.float64), 2.0 * np.sqrt(0.375))
    s = np.sqrt(1.5)
    return np.maximum(0.25 * d**2 + 0.25 * s / d - 1.375 / d**2 + 0.625 * s / d**3 - 0.125, 0.0)


def poisson_pipeline(y: np.ndarray, gain: float) -> np.ndarray:
    """``y = gain * Poisson(x / gain)``: Anscombe on the counts ``y / gain``, BM3D/BM4D sigma 1, unbiased inverse."""
    stabilised = anscombe(np.asarray(y, dtype=np.float64) / gain)
    return gain * anscombe_inverse_unbiased(bm_denoise(stabilised, 1.0))


# -------------------------------------------------------------------------------------------------- Rician


def rician_mean(x: np.ndarray, sigma: float) -> np.ndarray:
    """``E[|x + n1 + i n2|]`` = sigma sqrt(pi/2) L_{1/2}(-x^2 / 2 sigma^2), stably with exponentially scaled Bessels."""
    from scipy.special import i0e, i1e

    theta = np.asarray(x, dtype=np.float64) ** 2 / (2.0 * sigma**2)
    return sigma * np.sqrt(np.pi / 2.0) * ((1.0 + theta) * i0e(theta / 2.0) + theta * i1e(theta / 2.0))


def rician_mean_inverse(m: np.ndarray, sigma: float, table_max: float = 40.0, table_size: int = 4001) -> np.ndarray:
    """The ``x >= 0`` whose Rician mean is ``m``: a monotone lookup table in units of sigma, 0 below
    ``sigma sqrt(pi/2)``, and the asymptote ``sqrt(m^2 - sigma^2)`` beyond the table."""
    m = np.asarray(m, dtype=np.float64)
    if sigma <= 0:
        return m
    x_table = np.linspace(0.0, table_max, table_size)
    m_table = rician_mean(x_table, 1.0)
    r = m / sigma
    x = np.interp(r, m_table, x_table, left=0.0)
    far = r > m_table[-1]
    x[far] = np.sqrt(r[far] ** 2 - 1.0)
    return sigma * x


def rician_bm_pipeline(y: np.ndarray) -> np.ndarray:
    """Rician magnitude: BM3D/BM4D with the bright-block sigma, then the Rician mean inverted."""
    sigma = bright_block_sigma(y)
    return rician_mean_inverse(bm_denoise(y, sigma), sigma)


def dipy_nlmeans(y: np.ndarray, sigma: float, rician: bool = True) -> np.ndarray:
    """DIPY ``nlmeans`` (blockwise, its defaults) with ``rician``; a 2D image is passed as one slice."""
    from dipy.denoise.nlmeans import nlmeans

    arr = np.asarray(y, dtype=np.float64)
    out = nlmeans(arr if arr.ndim == 3 else arr[..., None], sigma, rician=rician, num_threads=1)
    return np.asarray(out).reshape(arr.shape)


# ------------------------------------------------------------------------------------------------- speckle


def log_gamma_bias(looks: float) -> float:
    """Mean of ``log(G)`` for ``G ~ Gamma(L, 1/L)`` (unit mean): digamma(L) - log(L)."""
    from scipy.special import digamma

    return float(digamma(looks) - np.log(looks))


def looks_from_log_sigma(sigma: float) -> float:
    """The number of looks ``L`` whose log-domain std ``sqrt(polygamma(1, L))`` is ``sigma`` (bisection)."""
    from scipy.optimize import brentq
    from scipy.special import polygamma

    if sigma <= 0:
        return np.inf
    f = lambda L: float(polygamma(1, L)) - sigma**2  # noqa: E731 (decreasing in L)
    lo, hi = 1e-3, 1e6
    if f(hi) > 0:
        return hi
    if f(lo) < 0:
        return lo
    return float(brentq(f, lo, hi))


def speckle_pipeline(y: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """``y = x * Gamma(L, 1/L)``: log (floored at ``floor`` x max), BM3D/BM4D with the bright-block log-domain sigma,
    the log-Gamma bias of the estimated L removed, exp."""
    y = np.asarray(y, dtype=np.float64)
    log_y = np.log(np.maximum(y, floor * float(y.max())))
    sigma = bright_block_sigma(log_y - log_y.min())  # bright = signal, not the floored background
    bias = log_gamma_bias(looks_from_log_sigma(sigma)) if sigma > 0 else 0.0
    return np.exp(bm_denoise(log_y, sigma) - bias)

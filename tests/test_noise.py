"""Noise-level estimation, the Rician mean, and the noise models' maps into the fit domain and back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import hann_kspace_window, make_phantom

from monai_dnaprior import NOISE_MODELS, NoiseModel, estimate_noise_level, estimate_poisson_gain, get_noise_model
from monai_dnaprior.noise import (
    GaussianNoise,
    PoissonNoise,
    RicianNoise,
    SpeckleNoise,
    estimate_rician_sigma,
    haar_finest_detail,
    noise_model_class,
    rician_mean,
)
from monai_dnaprior.settings import NoiseModelName


def _smooth(shape):
    return torch.from_numpy(make_phantom(shape))[None].double()


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1, 0.2])
@pytest.mark.parametrize("shape", [(128, 128), (32, 32, 16)], ids=["2d", "3d"])
def test_noise_level_of_gaussian_noise_within_10_percent(sigma, shape):
    clean = _smooth(shape)
    rng = np.random.default_rng(1)
    noisy = clean + sigma * torch.from_numpy(rng.standard_normal(clean.shape))
    estimate = estimate_noise_level(noisy, len(shape))
    assert estimate == pytest.approx(sigma, rel=0.1)


def test_noise_level_of_a_smooth_image_is_small_and_of_a_constant_zero():
    assert estimate_noise_level(_smooth((64, 64)), 2) < 2e-3
    assert estimate_noise_level(torch.full((2, 8, 8), 0.3), 2) == 0.0


def test_noise_level_is_pooled_over_channels_and_scales_linearly():
    rng = np.random.default_rng(2)
    noisy = _smooth((64, 64)).repeat(2, 1, 1) + 0.05 * torch.from_numpy(rng.standard_normal((2, 64, 64)))
    single = estimate_noise_level(noisy, 2)
    assert single == pytest.approx(0.05, rel=0.15)
    assert estimate_noise_level(3 * noisy, 2) == pytest.approx(3 * single, rel=1e-6)
    assert estimate_noise_level(noisy + 10, 2) == pytest.approx(single, rel=1e-4)  # offset-invariant


@pytest.mark.parametrize("shape", [(1, 9), (1, 5, 8)])
def test_noise_level_of_a_too_thin_image_is_zero(shape):
    assert estimate_noise_level(torch.rand(1, *shape), len(shape)) == 0.0


def test_haar_detail_is_orthonormal_on_white_noise():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((1, 64, 65)))  # odd width: cropped to 64
    detail, mean = haar_finest_detail(x, 2)
    assert detail.shape == mean.shape == (1, 32, 32)
    assert float(detail.std()) == pytest.approx(1.0, rel=0.05)
    ramp = torch.arange(16.0).reshape(1, 4, 4)
    d, m = haar_finest_detail(ramp, 2)
    assert torch.equal(d, torch.zeros(1, 2, 2))  # a linear ramp has no diagonal detail
    torch.testing.assert_close(m, torch.tensor([[[2.5, 4.5], [10.5, 12.5]]]))


@pytest.mark.parametrize("gain", [0.005, 0.02, 0.05])
@pytest.mark.parametrize("shape", [(128, 128), (32, 32, 16)], ids=["2d", "3d"])
def test_poisson_gain_within_25_percent(gain, shape):
    clean = _smooth(shape)
    rng = np.random.default_rng(4)
    noisy = gain * torch.from_numpy(rng.poisson(clean.numpy() / gain).astype(np.float64))
    assert estimate_poisson_gain(noisy, len(shape)) == pytest.approx(gain, rel=0.25)


def test_poisson_gain_of_a_tiny_image_is_zero():
    assert estimate_poisson_gain(torch.rand(1, 4, 5), 2) == 0.0  # 2 Haar blocks: nothing to regress


@pytest.mark.parametrize("shape", [(8, 8), (16, 16), (20, 21), (8, 8, 8), (12, 12, 6), (1, 9), (40, 40, 1)])
def test_poisson_gain_of_a_small_or_thin_image_does_not_crash(shape):
    """Two bugs in ``estimate_poisson_gain``, both reached by ``DNAPriorDenoise(noise_model="poisson")``:

    - between 16 and 127 Haar blocks every intensity bin has fewer than 8 blocks and is skipped, then
      ``torch.stack([])`` raises ``RuntimeError: stack expects a non-empty TensorList`` (2D images from 8x8 to
      21x21, 3D from 8x8x8);
    - a spatial axis of size 1 (a 2D scan loaded as an H x W x 1 volume) crops to 0 in ``haar_finest_detail``:
      ``RuntimeError: maximum size for tensor at dimension ... is 0 but size is 2``. ``estimate_noise_level``
      guards against this case, ``estimate_poisson_gain`` does not.

    Small and thin images must get a usable (finite, >= 0) gain.
    """
    y = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    gain = estimate_poisson_gain(y, len(shape))
    assert math.isfinite(gain) and gain >= 0
    assert get_noise_model("poisson", y, len(shape)).level > 0


@pytest.mark.parametrize("sigma, values", [(0.1, [0.0, 0.05, 0.1, 0.3, 1.0]), (0.01, [0.0, 0.02, 0.5, 1.0])])
def test_rician_mean_matches_monte_carlo(sigma, values):
    rng = np.random.default_rng(5)
    n = 400_000
    x = torch.tensor(values, dtype=torch.float64)
    expected = rician_mean(x, sigma)
    for v, e in zip(values, expected):
        samples = np.abs(v + sigma * rng.standard_normal(n) + 1j * sigma * rng.standard_normal(n))
        stderr = samples.std() / math.sqrt(n)
        assert float(e) == pytest.approx(samples.mean(), abs=5 * stderr), v


def test_rician_mean_limits_and_gradient():
    sigma = 0.1
    assert float(rician_mean(torch.tensor(0.0), sigma)) == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=1e-6)
    x = torch.tensor([0.3, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    mean = rician_mean(x, sigma)
    assert torch.all(mean > x)  # the magnitude of a noisy signal is biased up
    torch.testing.assert_close(mean[1:], (x + sigma**2 / (2 * x))[1:], rtol=1e-4, atol=0)  # high-SNR asymptote
    mean.sum().backward()
    assert torch.all(torch.isfinite(x.grad)) and torch.all(x.grad > 0)
    # continuous across the switch to the asymptote (u = x^2 / (4 sigma^2) = 400)
    edge = torch.tensor([40 * sigma * (1 - 1e-6), 40 * sigma * (1 + 1e-6)], dtype=torch.float64)
    below, above = rician_mean(edge, sigma)
    assert float(above - below) == pytest.approx(float(edge[1] - edge[0]), abs=1e-6)
    torch.testing.assert_close(rician_mean(-x.detach(), sigma), rician_mean(x.detach(), sigma))
    torch.testing.assert_close(rician_mean(x.detach(), 0.0), x.detach())


@pytest.mark.parametrize("sigma", [0.01, 0.1])
def test_rician_mean_inverse_round_trips(sigma):
    """The tabulated inverse of the Rician mean: within 1e-5 sigma of the signal from 0 to far beyond the table (40
    sigma), 0 at and below the noise floor, float32 kept float32."""
    model = RicianNoise(sigma)
    x = torch.cat([torch.linspace(0, 3 * sigma, 3001), torch.linspace(3 * sigma, 80 * sigma, 3001)]).double()
    back = model.unobserve(rician_mean(x, sigma))
    assert float((back - x).abs().max()) < 1e-5 * sigma
    floor = float(rician_mean(torch.tensor(0.0), sigma))
    below = torch.tensor([0.0, 0.5 * floor, floor], dtype=torch.float32)
    assert model.unobserve(below).dtype == torch.float32 and float(model.unobserve(below).abs().max()) == 0.0


@pytest.mark.parametrize("name, level", [("gaussian", 0.1), ("poisson", 0.01), ("rician", 0.05), ("speckle", 0.3)])
def test_forward_then_inverse_round_trip(name, level):
    y = _smooth((32, 32)).float()
    model = NoiseModel.named(name, level)
    fitted = model.forward(y)
    # the fit domain keeps the image range about [0, 1]
    assert -0.05 < float(fitted.min()) and float(fitted.max()) < 1.05
    back = model.inverse(fitted, y)
    # Poisson's unbiased inverse differs from the algebraic one by about a quarter count (gain / 4)
    torch.testing.assert_close(back, y, atol=0.5 * level if name == "poisson" else 1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["gaussian", "rician"])
def test_additive_models_leave_the_image_as_is(name):
    y = _smooth((8, 8)).float()
    assert torch.equal(NoiseModel.named(name, 0.1).forward(y), y)


def test_anscombe_makes_poisson_noise_unit_variance_in_counts():
    gain, counts = 0.01, 40.0
    rng = np.random.default_rng(6)
    y = torch.from_numpy(gain * rng.poisson(counts, size=(1, 200, 200)).astype(np.float32))
    model = PoissonNoise(gain)
    lo, hi = model.span
    assert float(model.forward(y).std() * (hi - lo)) == pytest.approx(1.0, rel=0.05)
    assert float(model.forward(y).std()) == pytest.approx(model.fit_sigma, rel=0.05)


def test_speckle_log_domain_sigma_is_the_fit_sigma():
    rng = np.random.default_rng(7)
    clean = torch.full((1, 200, 200), 0.6)
    looks = 16.0
    noisy = clean * torch.from_numpy(rng.gamma(looks, 1 / looks, clean.shape).astype(np.float32))
    model = get_noise_model("speckle", noisy, 2)
    # the sigma of log(gamma(L, 1/L)) is sqrt(trigamma(L)) ~ 0.254 for L = 16; the offset shrinks it a little
    assert model.level == pytest.approx(0.254, rel=0.1)
    assert float(model.forward(noisy).std()) == pytest.approx(model.fit_sigma, rel=0.1)


def test_fit_sigma():
    assert GaussianNoise(0.07).fit_sigma == pytest.approx(0.07)
    assert RicianNoise(0.07).fit_sigma == pytest.approx(0.07)
    lo, hi = PoissonNoise(0.02).span
    assert PoissonNoise(0.02).fit_sigma == pytest.approx(1 / (hi - lo))


@pytest.mark.parametrize(
    "name, cls",
    [("gaussian", GaussianNoise), ("poisson", PoissonNoise), ("rician", RicianNoise), ("speckle", SpeckleNoise)],
)
def test_each_model_is_its_own_class(name, cls):
    assert noise_model_class(name) is cls and cls.name == name and isinstance(cls.name, NoiseModelName)
    model = NoiseModel.named(name, 0.1)
    assert type(model) is cls and model == cls(0.1) and model != GaussianNoise(0.2)
    assert model.fit_changes_filter == (not model.mean_is_clean) == model.is_magnitude == (name == "rician")
    assert model.additive == (name in ("gaussian", "rician"))
    assert NOISE_MODELS == tuple(NoiseModelName)[1:]  # every name but auto
    with pytest.raises(ValueError, match="auto"):
        NoiseModel.named("auto", 0.1)


@pytest.mark.parametrize("name", NOISE_MODELS)
def test_get_noise_model_uses_a_given_level(name):
    y = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    model = get_noise_model(name, y, 2, level=0.037)
    assert model == NoiseModel.named(name, 0.037)


def test_get_noise_model_estimates_when_no_level():
    rng = np.random.default_rng(8)
    y = _smooth((64, 64)).float() + 0.08 * torch.from_numpy(rng.standard_normal((1, 64, 64)).astype(np.float32))
    assert get_noise_model("gaussian", y, 2).level == pytest.approx(estimate_noise_level(y, 2))
    assert get_noise_model("rician", y, 2).level == pytest.approx(estimate_rician_sigma(y, 2))
    positive = y.clamp_min(0)
    assert get_noise_model("poisson", positive, 2).level == pytest.approx(estimate_poisson_gain(positive, 2))


def test_get_noise_model_keeps_the_poisson_gain_positive():
    assert get_noise_model("poisson", torch.zeros(1, 4, 4), 2, level=0.0).level == pytest.approx(1e-6)
    assert get_noise_model("poisson", torch.full((1, 32, 32), 0.5), 2).level == pytest.approx(1e-6)


def test_no_signal_is_a_background_whose_neighbourhood_mean_is_at_the_rician_floor():
    """A magnitude's background of pure noise (its mean at the floor, give or take its fluctuations) is found, the
    fluctuations above the floor included; tissue at 0.6 sigma is not; other models find none."""
    gen = torch.Generator().manual_seed(0)
    sigma = 0.05
    floor = sigma * math.sqrt(math.pi / 2)
    mean = torch.full((1, 64, 64), floor) + 0.03 * floor * torch.randn(1, 64, 64, generator=gen)
    mean[:, :, 32:] = rician_mean(torch.tensor(0.6 * sigma), sigma) + 0.03 * floor * torch.randn(1, 64, 32, generator=gen)
    found = RicianNoise(sigma).no_signal(mean)
    assert bool(found[:, :, :24].all()) and not bool(found[:, :, 40:].any())
    assert bool((mean[:, :, :24] > floor).any())  # voxels whose own mean is above the floor count as background
    assert not bool(GaussianNoise(sigma).no_signal(mean).any())


def test_a_background_box_within_its_own_spread_of_the_floor_is_no_signal():
    """A filtered Rayleigh background's 15-voxel box means spread about 3.5 % around the floor in 2D, so a box 4 %
    above it is still background (before: a fixed 2 % left such boxes above 0 after the inverse: a third of an
    exact-zero background); in 3D the spread is 0.9 % and the 2 % stands."""
    sigma = 0.05
    floor = sigma * math.sqrt(math.pi / 2)
    model = RicianNoise(sigma)
    assert bool(model.no_signal(torch.full((1, 48, 48), 1.04 * floor)).all())
    assert not bool(model.no_signal(torch.full((1, 48, 48), 1.07 * floor)).any())
    assert not bool(model.no_signal(torch.full((1, 24, 24, 24), 1.03 * floor)).any())
    assert bool(model.no_signal(torch.full((1, 24, 24, 24), 1.015 * floor)).all())


def _hann_kspace_noise(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """Complex white noise of unit std per component under a Hann window in orthonormal k-space: low-pass noise."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.complex(*torch.randn(2, *shape, generator=gen, dtype=torch.float64))
    return torch.fft.ifftn(hann_kspace_window(shape) * noise, norm="ortho")


def test_a_box_mean_spreads_as_the_noise_correlation_says():
    """A box mean of correlated noise spreads ``sqrt(sum_lag c(lag) prod(1 - |lag| / box))`` times white noise's:
    within 5 % of the spread measured on a Hann k-space noise's components, and with the correlation squared within
    8 % of its Rayleigh magnitude's (a pure-noise background); 1 for white noise."""
    from monai_dnaprior.noise.spectrum import NoiseSpectrum, spectrum_from_psd

    shape = (384, 384)
    spectrum, _ = spectrum_from_psd(hann_kspace_window(shape).square())
    assert NoiseSpectrum.white(2).box_mean_spread((15, 15), squared=True) == 1.0
    measured = {"component": [], "magnitude": []}
    for seed in range(4):
        noise = _hann_kspace_noise(shape, seed)
        for kind, field in (("component", noise.real), ("magnitude", noise.abs())):
            boxes = torch.nn.functional.avg_pool2d(field[None].float(), 15, 15)[0]
            white = field.std() / 15  # a box mean's std were the voxels independent
            measured[kind].append(float(boxes.std() / white))
    component, magnitude = (sum(v) / len(v) for v in measured.values())
    assert component == pytest.approx(spectrum.box_mean_spread((15, 15)), rel=0.05)
    assert magnitude == pytest.approx(spectrum.box_mean_spread((15, 15), squared=True), rel=0.08)
    assert magnitude > 1.6  # the white rule's tolerance is too narrow by this much


def test_a_coloured_background_box_within_its_own_spread_of_the_floor_is_no_signal():
    """A Rayleigh background under a k-space window: its box means spread about twice a white one's, so a box 9 % above
    the floor is background where white noise's 5.7 % tolerance would leave it signal (and its inverse above 0)."""
    from monai_dnaprior.noise.spectrum import spectrum_from_psd

    spectrum, _ = spectrum_from_psd(hann_kspace_window((64, 64)).square())
    sigma = 0.05
    mean = torch.full((1, 48, 48), 1.09 * sigma * math.sqrt(math.pi / 2))
    model = RicianNoise(sigma)
    assert bool(model.no_signal(mean, spectrum=spectrum).all())
    assert not bool(model.no_signal(mean).any())
    assert not bool(model.no_signal(1.2 * mean, spectrum=spectrum).any())


def test_poisson_gain_is_not_pulled_up_by_a_textured_bright_region():
    """A textured brightest region reads as extra variance in the brightest bins only; the median over the bins
    outvotes it (a least-squares slope through the origin leans on those bins)."""
    gain = 0.02
    rng = np.random.default_rng(7)
    clean = np.tile(np.linspace(0.05, 0.6, 128), (128, 1))
    clean[:, 100:] = 0.9 + 0.15 * rng.standard_normal((128, 28))
    noisy = gain * torch.from_numpy(rng.poisson(np.clip(clean, 0, None) / gain).astype(np.float64))[None]
    assert estimate_poisson_gain(noisy, 2) == pytest.approx(gain, rel=0.1)

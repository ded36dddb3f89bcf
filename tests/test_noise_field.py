"""The noise field: masked and per-slice levels, the blind spectrum, the whitened fidelity, the auto model, and the
real-scan shapes that used to be silent no-ops (a depth-1 slice, a zeroed background)."""

from __future__ import annotations

import warnings
import pytest
import torch
from conftest import hann_kspace_window, make_phantom, sample_slice, small_network

from monai_dnaprior import DNAPriorDenoise, SpectralFidelity, denoise
from monai_dnaprior.network import fit as fit_module
from monai_dnaprior.noise import (
    UPPER_BOUND_SHARE,
    NoiseSpectrum,
    detect_noise_model,
    estimate_noise_field,
    estimate_noise_level,
    estimate_noise_spectrum,
    estimate_rician_sigma,
    finest_scale_quietness,
    haar_blocks,
    robust_sigma,
    slice_noise_scale,
    spectrum_from_psd,
)

KERNEL = torch.tensor([0.25, 0.5, 0.25])  # separable low-pass: correlation 2/3 at lag 1, 1/6 at lag 2


def _phantom(shape, seed=0):
    """The test phantom, shifted by ``seed`` (for distinct images)."""
    return torch.roll(torch.from_numpy(make_phantom(shape))[None].float(), 5 * seed, -1)


def _coloured_noise(shape, sigma, seed=0):
    """White noise filtered by KERNEL along both axes (circularly), scaled to std ``sigma``."""
    n = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for dim in (-2, -1):
        n = sum(w * torch.roll(n, k - 1, dim) for k, w in enumerate(KERNEL.double()))
    return (sigma * n / n.std()).float()


def test_whitened_fidelity_with_a_flat_spectrum_is_the_pixel_mse():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 1, 12, 10, generator=gen), torch.rand(2, 1, 12, 10, generator=gen)
    flat = SpectralFidelity(2, noise_psd=torch.ones(12, 10))
    torch.testing.assert_close(flat(x, y), torch.nn.functional.mse_loss(x, y))
    torch.testing.assert_close(SpectralFidelity(2)(x, y), torch.nn.functional.mse_loss(x, y))


def test_whitened_fidelity_is_the_coloured_likelihood():
    """sum_k |F(x - y)|^2 / S(k): noise shaped like S costs about 1 per voxel, white noise of the same MSE far more."""
    psd = NoiseSpectrum(torch.outer(torch.tensor([1 / 6, 2 / 3, 1.0, 2 / 3, 1 / 6]),
                                    torch.tensor([1 / 6, 2 / 3, 1.0, 2 / 3, 1 / 6]))).psd((64, 64))
    assert psd.mean() == pytest.approx(1.0, abs=1e-5)
    loss = SpectralFidelity(2, noise_psd=psd)
    coloured = _coloured_noise((1, 1, 64, 64), 1.0, seed=1)
    white = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    zero = torch.zeros_like(white)
    assert float(loss(coloured, zero)) == pytest.approx(1.0, abs=0.3)
    assert float(loss(white, zero)) > 3.0
    manual = (torch.fft.fft2(white, norm="ortho").abs().square() / psd).mean()
    torch.testing.assert_close(loss(white, zero), manual)


def test_coloured_noise_spectrum_is_recovered():
    """Low-pass noise on a phantom: neighbour correlation 2/3 +- 0.1, lag 2 1/6 +- 0.1, std within 15 %."""
    noisy = _phantom((160, 160)) + _coloured_noise((1, 160, 160), 0.05)
    spectrum, variance = estimate_noise_spectrum(noisy, 2)
    c = spectrum.correlation
    centre = c.shape[0] // 2
    assert not spectrum.is_white
    for lag, expected in ((1, 2 / 3), (2, 1 / 6)):
        assert float(c[centre, centre + lag]) == pytest.approx(expected, abs=0.1)
        assert float(c[centre + lag, centre]) == pytest.approx(expected, abs=0.1)
    assert variance**0.5 == pytest.approx(0.05, rel=0.15)


def test_low_pass_noise_correlation_is_read_without_the_patch_mean_bias():
    """A patch's mean removed takes a low-pass noise's lowest frequencies with it; the unbiased reading fits the
    patches' expected periodogram and puts them back: pure low-pass noise reads 2/3 and 1/6 within 0.03 (the
    periodogram's own inverse about 0.61 and 0.07), in 2D and along a volume's one correlated axis."""
    spectrum, variance = estimate_noise_spectrum(_coloured_noise((1, 192, 192), 0.05, seed=5), 2, share=1.0,
                                                 unbiased=True)
    c, centre = spectrum.correlation, spectrum.correlation.shape[0] // 2
    for lag, expected in ((1, 2 / 3), (2, 1 / 6)):
        assert float(c[centre, centre + lag]) == pytest.approx(expected, abs=0.03)
        assert float(c[centre + lag, centre]) == pytest.approx(expected, abs=0.03)
    assert variance**0.5 == pytest.approx(0.05, rel=0.03)
    white = torch.randn(1, 48, 48, 40, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    along = sum(w * torch.roll(white, k - 1, -1) for k, w in enumerate(KERNEL.double())).float()
    c = estimate_noise_spectrum(along, 3, share=1.0, unbiased=True)[0].correlation
    assert float(c[4, 4, 5]) == pytest.approx(2 / 3, abs=0.03) and float(c[4, 4, 6]) == pytest.approx(1 / 6, abs=0.03)
    assert abs(float(c[5, 4, 4])) < 0.03 and abs(float(c[4, 5, 4])) < 0.03


def test_a_background_of_pure_low_pass_noise_reads_its_correlation_nearer():
    """A phantom in a wide field of zeros under low-pass Gaussian noise (a resampled scan): over four draws the field
    reads the background's neighbour correlation within 0.06 of 2/3 on average and two voxels apart above 0.07 (the
    periodogram's own inverse read 0.58 and 0.03), its std within 10 %."""
    scene = torch.nn.functional.pad(_phantom((96, 96)), (80, 80, 80, 80))
    near, far = [], []
    for seed in range(4):
        field, _ = estimate_noise_field(scene + _coloured_noise(scene.shape, 0.05, seed=10 + seed), 2, "gaussian")
        c, centre = field.spectrum.correlation, field.spectrum.correlation.shape[0] // 2
        near += [float(c[centre, centre + 1]), float(c[centre + 1, centre])]
        far += [float(c[centre, centre + 2]), float(c[centre + 2, centre])]
        assert field.model.level == pytest.approx(0.05, rel=0.1)
    assert sum(near) / len(near) == pytest.approx(2 / 3, abs=0.06)
    assert sum(far) / len(far) > 0.07


def test_white_noise_spectrum_is_white_and_a_given_psd_round_trips():
    noisy = _phantom((128, 128)) + 0.05 * torch.randn(1, 128, 128, generator=torch.Generator().manual_seed(3))
    spectrum, _ = estimate_noise_spectrum(noisy, 2)
    assert spectrum.is_white
    correlation = torch.outer(torch.tensor([0.3, 1.0, 0.3]), torch.tensor([0.4, 1.0, 0.4]))
    psd = 0.01 * NoiseSpectrum(correlation).psd((32, 40))
    back, variance = spectrum_from_psd(psd.double(), max_lag=1)
    assert variance == pytest.approx(0.01, rel=1e-4)
    torch.testing.assert_close(back.correlation, correlation, atol=1e-4, rtol=0)


def test_wiener_coefficient_variances_follow_the_spectrum():
    from monai_dnaprior.filters.collaborative import patch_basis

    basis = patch_basis((8, 8), torch.device("cpu"))
    white = NoiseSpectrum.white(2).coefficient_variances(basis, (8, 8))
    torch.testing.assert_close(white, torch.ones(64))
    low = NoiseSpectrum(torch.outer(torch.tensor([2 / 3, 1.0, 2 / 3]), torch.tensor([2 / 3, 1.0, 2 / 3])))
    v = low.coefficient_variances(basis, (8, 8))
    assert float(v[0]) > 3.0 and float(v[-1]) < 0.1  # DC carries the low-pass noise, the finest DCT almost none


@pytest.mark.parametrize("sigma", [0.03, 0.08])
def test_level_ignores_a_zeroed_background(sigma):
    """61 % of the voxels exactly 0 (a masked brain): the level comes from where there is signal."""
    img = _phantom((96, 96)) + 0.3
    img = img + sigma * torch.randn(img.shape, generator=torch.Generator().manual_seed(4))
    img[:, :, :60] = 0.0
    assert estimate_noise_level(img, 2) == pytest.approx(sigma, rel=0.1)
    clipped = img.clamp_max(float(img[img > 0].quantile(0.9)))  # a saturated top decile does not count either
    assert estimate_noise_level(clipped, 2) == pytest.approx(sigma, rel=0.15)


def _sharp_scan(sigma, seed=0):
    """Fine detail everywhere, its strength varying across the image (like a sharp EPI brain), and a little noise."""
    i, j = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    strength = 0.02 + 0.3 * (j / 95) ** 2
    detail = strength * torch.sin(2.6 * i + 0.3 * j) * torch.sin(2.2 * j - 0.2 * i)
    noise = sigma * torch.randn(1, 96, 96, generator=torch.Generator().manual_seed(seed))
    return (0.5 + detail)[None] + noise


def test_noise_alone_is_read_within_5_percent_and_fills_the_finest_scale():
    for seed, shape in enumerate([(1, 128, 128), (1, 48, 48, 16)]):
        noise = 0.1 * torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        dims = len(shape) - 1
        assert estimate_noise_level(noise + 0.5, dims) == pytest.approx(0.1, rel=0.05)
        assert 0.9 < finest_scale_quietness(noise, dims) < 1.1


def test_a_finest_scale_full_of_signal_gives_an_upper_bound_a_white_spectrum_and_a_warning():
    """Where detail fills the finest scale the wavelet MAD reads it as noise; the quietest windows read less, the
    spectrum is not taken from flat patches (there are none), and the user is told the level is a bound."""
    sigma = 0.01
    img = _sharp_scan(sigma)
    detail, _, noisy = haar_blocks(img, 2)
    median = robust_sigma(detail[noisy])
    assert median > 3 * sigma and finest_scale_quietness(img, 2) < 0.8
    level = estimate_noise_level(img, 2)
    assert sigma < level < 0.7 * median
    field, _ = estimate_noise_field(img, 2, "gaussian")
    assert field.upper_bound and field.is_white and "upper bound" in field.describe()
    assert field.model.level == pytest.approx(UPPER_BOUND_SHARE * level)
    with pytest.warns(UserWarning, match=r"at most .*noise_level="):
        result = denoise(img, "gaussian", name="epi.nii")
    assert result.info["level_upper_bound"]
    given, _ = estimate_noise_field(img, 2, "gaussian", level=sigma)  # no spectrum from the signal either
    assert given.is_white and not given.upper_bound and given.model.level == sigma
    with warnings.catch_warnings():  # a given level is no bound: no warning
        warnings.simplefilter("error")
        denoise(img, "gaussian", noise_level=sigma)


def test_repeated_frames_give_the_noise_by_their_differences():
    """Two frames of one sharp scan (an fMRI series): their difference is the noise alone, which no single frame
    shows; two different images are no repeats."""
    sigma = 0.01
    frames = torch.cat([_sharp_scan(sigma, seed=1), _sharp_scan(sigma, seed=2)])
    field, _ = estimate_noise_field(frames, 2, "gaussian")
    assert field.from_repeats and not field.upper_bound and "repeated" in field.describe()
    assert field.model.level == pytest.approx(sigma, rel=0.1)
    different = torch.cat([_sharp_scan(sigma, seed=1), _phantom((96, 96)) + sigma * torch.randn(1, 96, 96)])
    assert not estimate_noise_field(different, 2, "gaussian")[0].from_repeats
    assert not estimate_noise_field(frames, 2, "gaussian", level=sigma)[0].from_repeats  # a given level stands


def test_rician_sigma_within_5_percent_over_a_rayleigh_background():
    gen = torch.Generator().manual_seed(5)
    clean = _phantom((128, 128)) * 0.7 + 0.3
    clean[:, :, :50] = 0.0  # background: pure noise, Rayleigh in the magnitude
    sigma = 0.05
    noisy = torch.hypot(clean + sigma * torch.randn(clean.shape, generator=gen), sigma * torch.randn(clean.shape, generator=gen))
    assert estimate_rician_sigma(noisy, 2) == pytest.approx(sigma, rel=0.05)
    assert estimate_noise_level(noisy, 2) < 0.93 * sigma  # the all-block MAD reads low: why the bright blocks


def test_per_slice_levels_are_found_and_even_ones_are_not():
    clean = torch.from_numpy(make_phantom((48, 48, 12)))[None].float()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(6))
    even = slice_noise_scale(clean + 0.05 * noise, -1)
    assert even is None
    levels = torch.where(torch.arange(12) < 6, 0.04, 0.08)
    scale = slice_noise_scale(clean + levels * noise, -1)
    assert scale is not None and float(scale[-1] / scale[0]) == pytest.approx(2.0, rel=0.2)
    field, target = estimate_noise_field(clean + levels * noise, 3, "gaussian")
    assert field.slice_scale is not None and "per-slice" in field.describe()
    assert float(target[..., -1].std() / target[..., 0].std()) < 1.5  # the target's noise is made even


def test_auto_detects_the_noise_model():
    gen = torch.Generator().manual_seed(7)
    clean = _phantom((128, 128)) * 0.8 + 0.1
    clean[:, :, :40] = 0.0
    gaussian = clean + 0.05 * torch.randn(clean.shape, generator=gen)
    rician = torch.hypot(clean + 0.05 * torch.randn(clean.shape, generator=gen), 0.05 * torch.randn(clean.shape, generator=gen))
    poisson = torch.poisson(_phantom((128, 128), seed=1) * 60 + 5, generator=gen)
    speckle = (_phantom((128, 128), seed=2) + 0.2) * torch.distributions.Gamma(4.0, 4.0).sample((1, 128, 128))
    assert detect_noise_model(gaussian, 2) == "gaussian"
    assert detect_noise_model(rician, 2) == "rician"
    assert detect_noise_model(poisson, 2) == "poisson"
    assert detect_noise_model(speckle, 2) == "speckle"


def _kspace_magnitude(clean, sigma, seed=0):
    """The magnitude of ``clean`` with complex white noise of std ``sigma`` per component in orthonormal k-space and
    a Hann window: low-pass noise, Rayleigh where there is no signal. Returns it and the per-component image std."""
    gen = torch.Generator().manual_seed(seed)
    window = hann_kspace_window(clean.shape[-2:])
    noise = sigma * torch.complex(*torch.randn(2, *clean.shape, generator=gen, dtype=torch.float64))
    image = torch.fft.ifftn(window * (torch.fft.fftn(clean.double(), norm="ortho") + noise), norm="ortho")
    return image.abs().float(), sigma * float(window.square().mean().sqrt())


def _phantom_in_a_wide_view(side: int, radius: int, pad: int) -> torch.Tensor:
    """The phantom (``side`` px, intensities 0.1-0.9) masked to a disc of ``radius`` and set in ``pad`` px of zeros a
    side: a small head in a large field of view."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    disc = (rows - side // 2) ** 2 + (cols - side // 2) ** 2 < radius**2
    return torch.nn.functional.pad((_phantom((side, side)) * 0.8 + 0.1) * disc, (pad,) * 4)


def _unit_kspace_magnitude(clean, sigma, seed=0):
    """:func:`_kspace_magnitude` divided by its maximum, with its per-component std in those units."""
    noisy, true = _kspace_magnitude(clean, sigma, seed)
    return noisy / noisy.max(), true / float(noisy.max())


def test_a_kspace_windowed_magnitude_is_rician_with_a_coloured_field():
    """The finest scale sees a fraction of a low-pass noise: the model is read from the darkest blocks' own voxels,
    and the level from the flat patches, within 15 % of the per-component sigma; white Rician stays white."""
    clean = _phantom((128, 128)) * 0.8 + 0.1
    clean[:, :, :40] = 0.0
    noisy, sigma = _kspace_magnitude(clean, 0.12)
    assert detect_noise_model(noisy, 2) == "rician"
    field, _ = estimate_noise_field(noisy / noisy.max(), 2, "rician")
    assert not field.is_white and field.model.level * float(noisy.max()) == pytest.approx(sigma, rel=0.15)
    assert field.estimated and "estimated" in field.describe()
    gen = torch.Generator().manual_seed(3)
    white = torch.hypot(clean + 0.05 * torch.randn(clean.shape, generator=gen), 0.05 * torch.randn(clean.shape, generator=gen))
    assert estimate_noise_field(white / white.max(), 2, "rician")[0].is_white
    gaussian = clean + _coloured_noise(clean.shape, 0.05)
    assert detect_noise_model(gaussian.clamp_min(0), 2) != "rician"


def _masked_sample_slice() -> torch.Tensor:
    """The bundle's 64x64 MR slice masked to exact zeros outside the head (a skull-stripped or scanner-masked scan)."""
    x = torch.from_numpy(sample_slice()).float()[None]
    return x * (torch.nn.functional.avg_pool2d(x[None], 5, 1, 2)[0] > 0.12)


@pytest.mark.parametrize("sigma,seed", [(0.06, 0), (0.12, 1), (0.2, 2)])
def test_a_masked_kspace_magnitude_reads_its_sigma_from_its_background(sigma, seed):
    """A masked magnitude under a Hann k-space window: its background of pure noise gives the per-component sigma
    within 10 %, though the finest scale sees a third of that noise (the bright blocks' reading is under 0.7x)."""
    from monai_dnaprior.noise.rayleigh import coloured_background

    y, true = _unit_kspace_magnitude(_masked_sample_slice(), sigma, seed)
    assert coloured_background(y, 2).sigma == pytest.approx(true, rel=0.1)
    assert estimate_rician_sigma(y, 2) < 0.7 * true


@pytest.mark.parametrize("sigma,seed", [(0.06, 0), (0.12, 0), (0.12, 1), (0.2, 2)])
def test_a_small_masked_kspace_magnitude_reads_its_colour_and_level_from_its_background(sigma, seed):
    """The masked 64x64 slice under a Hann k-space window: too few patches lie outside its background to read, so
    the flattest patches are the background's, whose Rayleigh spread reads too low a level and, at the lower
    strengths, no strong colour; the noise is found coloured at its level within 10 %, where the finest scale reads
    about half of it."""
    y, true = _unit_kspace_magnitude(_masked_sample_slice(), sigma, seed)
    field, _ = estimate_noise_field(y, 2, "rician")
    assert not field.is_white
    assert field.model.level == pytest.approx(true, rel=0.1)
    assert estimate_rician_sigma(y, 2) < 0.6 * true


def test_a_strongly_coloured_magnitude_takes_the_lower_of_two_readings(monkeypatch):
    """Strongly coloured with a background: the lower of the flattest patches' variance freed of their selection's
    bias and the background's; without a background, the flattest patches' as read."""
    from monai_dnaprior.noise import field as field_module
    from monai_dnaprior.noise.rayleigh import ColouredBackground

    clean = _phantom((128, 128)) * 0.8 + 0.1
    clean[:, :, :40] = 0.0
    noisy, _ = _kspace_magnitude(clean, 0.12)
    y = noisy / noisy.max()
    spectrum, variance = field_module.flat_patch_spectrum(y, 2)
    unbiased = variance / field_module.flattest_patch_bias(spectrum, (128, 128))
    assert unbiased > variance
    readings = {}
    for name, sigma in (("high", 1.0), ("low", 1e-3), ("none", None)):
        background = None if sigma is None else ColouredBackground(sigma, torch.zeros_like(y, dtype=torch.bool))
        monkeypatch.setattr(field_module, "coloured_background", lambda *a, b=background, **k: b)
        readings[name] = field_module._magnitude_spectrum(y, 2, 0.01)[1]
    assert readings["high"] == pytest.approx(unbiased) and readings["low"] == pytest.approx(1e-6)
    assert readings["none"] == pytest.approx(variance)


def test_a_white_rayleigh_background_reads_its_sigma_and_a_flat_image_has_none():
    """White Rician noise on the masked slice: the background reads its sigma within 5 %; an image with no dark
    region of pure noise has no background."""
    from monai_dnaprior.noise.rayleigh import coloured_background

    clean = _masked_sample_slice()
    gen = torch.Generator().manual_seed(5)
    noisy = torch.hypot(clean + 0.05 * torch.randn(clean.shape, generator=gen),
                        0.05 * torch.randn(clean.shape, generator=gen))
    assert coloured_background(noisy, 2).sigma == pytest.approx(0.05, rel=0.05)
    flat = 0.5 + 0.05 * torch.randn((1, 64, 64), generator=gen)
    assert coloured_background(flat, 2) is None


def test_the_flattest_patches_read_low_and_their_bias_is_known():
    """Selecting the flattest tenth of the patches reads a noise's variance low, a low-pass noise's lower (fewer
    independent voxels a patch); :func:`flattest_patch_bias`, simulated for the spectrum, undoes it within 5 %."""
    from monai_dnaprior.noise.spectrum import flattest_patch_bias

    shape = (1, 128, 128)
    spectrum, variance = estimate_noise_spectrum(_coloured_noise(shape, 0.05, seed=4), 2)
    white_bias = flattest_patch_bias(NoiseSpectrum.white(2), shape[1:])
    coloured_bias = flattest_patch_bias(spectrum, shape[1:])
    assert 0.75 < white_bias < 0.95 and coloured_bias < white_bias - 0.05
    assert variance / coloured_bias == pytest.approx(0.05**2, rel=0.05)


def test_a_low_pass_noise_over_pure_noise_reads_its_level_and_over_anatomy_as_before():
    """Strongly coloured Gaussian noise where the flattest patches are pure noise (a 70 % background of exact zeros):
    the flattest tenth reads its variance low (their selection), and freed of that bias the field's level is the
    noise's std within 5 %. Where the flattest patches hold anatomy (a smooth random texture whose strength grows
    across the image, no flat region) the flattest patches' reading stands, the anatomy offsetting the bias."""
    from monai.networks.layers import GaussianFilter

    from monai_dnaprior.noise import field as field_module
    from monai_dnaprior.noise.spectrum import flat_patch_spectrum, strongly_coloured

    clean = _phantom((192, 192)) * 0.8 + 0.1
    clean[:, :, :134] = 0.0
    y = clean + _coloured_noise((1, 192, 192), 0.05, seed=0)
    field, _ = field_module.estimate_stationary_field(y, 2, "gaussian")
    assert not field.is_white and field.model.level == pytest.approx(0.05, rel=0.05)
    assert flat_patch_spectrum(y, 2)[1] < 0.9 * 0.05**2  # as read, without the bias freed
    texture = GaussianFilter(2, 3.0)(torch.randn((1, 1, 160, 160), generator=torch.Generator().manual_seed(100)))[0]
    y = 0.5 + 0.3 * torch.linspace(0.2, 1.0, 160) * texture / texture.std()
    y = y + _coloured_noise((1, 160, 160), 0.05, seed=0)
    level = estimate_noise_level(y, 2)
    assert strongly_coloured(*flat_patch_spectrum(y, 2), level)
    assert flat_patch_spectrum(y, 2, finest_level=level)[1] == flat_patch_spectrum(y, 2)[1]


def test_auto_denoises_coloured_noise_with_the_whitened_fit():
    noisy = _phantom((96, 96)) + _coloured_noise((1, 96, 96), 0.06, seed=8)
    result = denoise(noisy, "auto")
    assert result.info["noise_model"] == "gaussian" and result.info["coloured"]
    assert result.info["prior"] == "filter" and result.info["iterations"] == 0
    seen = {}
    original = fit_module.SpectralFidelity

    def spy(*args, **kwargs):
        seen["psd"] = args[4] if len(args) > 4 else kwargs.get("noise_psd")
        return original(*args, **kwargs)

    fit_module.SpectralFidelity = spy
    try:
        result = denoise(noisy, "auto", prior="network", network_config=small_network(3))  # whitened
    finally:
        fit_module.SpectralFidelity = original
    assert result.info["prior"] == "network" and result.info["iterations"] == 3
    assert seen["psd"] is not None and seen["psd"].shape == (96, 96) and float(seen["psd"].max()) > 2
    assert result.info["noise_level"] == pytest.approx(0.06 / float(noisy.quantile(0.995) - noisy.quantile(0.005)), rel=0.3)


def test_a_given_noise_psd_sets_the_level():
    noisy = _phantom((64, 64)) * 100 + 5 * torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(9))
    result = denoise(noisy, "gaussian", noise_psd=torch.full((64, 64), 25.0))
    window = float(noisy.quantile(0.995) - noisy.quantile(0.005))
    assert result.info["noise_level"] == pytest.approx(5 / window, rel=1e-3) and not result.info["coloured"]
    with pytest.raises(ValueError, match="additive"):
        denoise(noisy, "poisson", noise_psd=torch.ones(64, 64))


def test_depth_one_slice_is_denoised_like_its_2d_squeeze():
    """(1, H, W, 1) as LoadImage gives a single DICOM slice: a 2D image, not a volume with no depth."""
    noisy = _phantom((40, 40)) * 1000 + 60 * torch.randn(1, 40, 40, generator=torch.Generator().manual_seed(10))
    network = {"prior": "network", "network_config": small_network(3)}
    flat = denoise(noisy, **network)
    deep = denoise(noisy[..., None], **network)
    assert deep.image.shape == (1, 40, 40, 1)
    torch.testing.assert_close(deep.image[..., 0], flat.image)
    assert float((deep.image[..., 0] - noisy).abs().max()) > 10  # denoised, not returned as it came
    assert deep.info["volume_mode"] == "2d"


def test_zeroed_background_is_denoised_not_returned():
    noisy = _phantom((64, 64)) + 0.5 + 0.05 * torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(11))
    noisy[:, :, :40] = 0.0  # 62 % exact zeros
    result = denoise(noisy)
    assert result.info["noise_level"] > 0
    assert float((result.image - noisy).abs().max()) > 0.02
    assert bool((result.image[:, :, :30].abs() < 1e-3).all())  # the mask stays a mask


def test_a_noise_free_image_warns_and_says_how_to_go_on():
    img = torch.zeros(1, 48, 48)
    img[:, 10:30, 12:40] = 1.0  # rectangles: edges, no noise
    img[:, 30:44, 5:20] = 0.5
    with pytest.warns(UserWarning, match=r"noise level is 0 .*noise_level=") as record:
        out = denoise(img, "gaussian", name="phantom.nii.gz")
    assert "phantom.nii.gz" in str(record[0].message)
    torch.testing.assert_close(out.image, img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        denoise(torch.full((1, 16, 16), 3.0))  # a constant image is quietly constant


def test_channels_beyond_the_code_are_denoised_in_groups():
    noisy = torch.stack([_phantom((24, 24), seed=s)[0] for s in range(10)]) + 0.05 * torch.randn(
        10, 24, 24, generator=torch.Generator().manual_seed(12))
    result = denoise(noisy, series=False)  # ten different images, not repeats: series=None would take a series
    assert result.image.shape == (10, 24, 24) and len(result.info["groups"]) == 3


def test_the_network_is_fitted_only_where_it_changes_the_result():
    noisy = _phantom((32, 32)) + 0.05 * torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(13))
    network = small_network(3)
    filtered = denoise(noisy, "gaussian")
    assert filtered.info["iterations"] == 0 and filtered.info["prior"] == "filter"
    with pytest.warns(UserWarning, match="changes only a Rician result"):
        gaussian = denoise(noisy, "gaussian", prior="network+filter", network_config=network, name="scan.nii")
    assert gaussian.info["iterations"] == 0 and torch.equal(gaussian.image, filtered.image)
    rician = denoise(noisy.abs(), "rician", prior="network+filter", network_config=network)
    assert rician.info["iterations"] == 3 and rician.info["prior"] == "network+filter"
    fit_alone = denoise(noisy, "gaussian", prior="network", network_config=network)  # the fit is the result
    assert fit_alone.info["iterations"] == 3 and fit_alone.info["prior"] == "network"
    with pytest.raises(ValueError, match="prior"):
        denoise(noisy, prior="nope")


def test_group_coefficient_variances_count_the_noise_patches_share():
    """Two patches ``delta`` apart share coloured noise: the table is ``b_i^T C(delta) b_i``, checked by brute force,
    and a group of overlapping patches gets a larger variance at its group DC than independent patches would."""
    from monai_dnaprior.filters.collaborative import group_variances, patch_basis, dct_matrix

    basis = patch_basis((4, 4), torch.device("cpu"))
    spectrum = NoiseSpectrum(torch.outer(torch.tensor([1 / 6, 2 / 3, 1.0, 2 / 3, 1 / 6]),
                                         torch.tensor([1 / 6, 2 / 3, 1.0, 2 / 3, 1 / 6])))
    table, reach = spectrum.coefficient_cross_covariances(basis, (4, 4))
    assert table.shape == (2 * reach + 1, 2 * reach + 1, 16) and reach == 5
    floor = 0.01  # coefficient_variances keeps every variance at 1 % of the noise's or above
    torch.testing.assert_close(table[reach, reach].clamp_min(floor), spectrum.coefficient_variances(basis, (4, 4)),
                               atol=1e-5, rtol=0)
    c = spectrum.correlation.double()
    coords = [(i, j) for i in range(4) for j in range(4)]
    for delta in [(1, 2), (-3, 0), (4, -1)]:
        cov = torch.zeros(16, 16, dtype=torch.float64)
        for a, (i, j) in enumerate(coords):
            for b, (k, m) in enumerate(coords):
                di, dj = delta[0] + k - i, delta[1] + m - j
                if abs(di) <= 2 and abs(dj) <= 2:
                    cov[a, b] = c[di + 2, dj + 2]
        expected = ((basis.double() @ cov) * basis.double()).sum(1)
        torch.testing.assert_close(table[reach + delta[0], reach + delta[1]].double(), expected, atol=1e-5, rtol=0)
    across = dct_matrix(2)
    near = group_variances(torch.tensor([[[0, 0], [0, 1]]]), across, table, reach, floor)
    far = group_variances(torch.tensor([[[0, 0], [0, 9]]]), across, table, reach, floor)
    assert float(near[0, 0, 0]) > 1.5 * float(far[0, 0, 0])  # overlapping patches: their mean keeps more noise
    torch.testing.assert_close(far[0, 0], far[0, 1])  # independent patches: as the patch variances
    torch.testing.assert_close(far[0, 0], table[reach, reach].clamp_min(floor))


def _textured_magnitude(texture: float, sigma: float = 0.05, seed: int = 11) -> torch.Tensor:
    """A Rician magnitude: a zero background on the left third, bright tissue whose fine texture has std
    ``texture`` (white, so the finest scale reads it as noise)."""
    gen = torch.Generator().manual_seed(seed)
    clean = 0.6 + texture * torch.randn(1, 128, 128, generator=gen)
    clean[:, :, :43] = 0.0
    real, imaginary = (sigma * torch.randn(clean.shape, generator=gen) for _ in range(2))
    return torch.hypot(clean + real, imaginary)


def test_rician_sigma_comes_from_the_background_where_the_tissue_is_textured():
    sigma = 0.05
    noisy = _textured_magnitude(texture=0.6 * sigma)
    assert estimate_rician_sigma(noisy, 2) == pytest.approx(sigma, rel=0.03)
    no_background = noisy[..., 43:]  # the bright blocks alone read the texture too
    assert estimate_rician_sigma(no_background, 2) > 1.1 * sigma


def test_a_textured_rician_magnitude_is_still_rician():
    """Texture in the bright tissue raises the bright blocks' std over the Rayleigh background's: the darkest blocks'
    std then reads well under 0.655 of it (here 0.69 of that, outside the former 0.75-1.25), and the model must
    still be Rician."""
    assert detect_noise_model(_textured_magnitude(texture=0.03), 2) == "rician"


def test_rician_sigma_of_a_masked_magnitude_is_not_zero():
    """A skull-stripped or masked magnitude has exact zeros where the background was: they carry no noise, so they are
    no background to read sigma from (their second moment is 0)."""
    sigma = 0.05
    noisy = _textured_magnitude(texture=0.0)
    masked, part = noisy.clone(), noisy.clone()
    masked[..., :43] = 0.0  # all of the background masked: sigma from the bright blocks
    part[..., :20] = 0.0  # part of it: sigma from the rest
    assert estimate_rician_sigma(masked, 2) == pytest.approx(sigma, rel=0.05)
    assert estimate_rician_sigma(part, 2) == pytest.approx(sigma, rel=0.03)


def test_a_masked_sharp_magnitude_given_as_rician_gets_an_upper_bound():
    """A skull-stripped magnitude has no background to read sigma from, and its bright blocks are fine anatomy: as
    for Gaussian noise, the level is only the quiet windows' bound (before, the anatomy read as strongly coloured
    noise of several times the level, and the scan was smoothed away)."""
    sigma = 0.01
    gen = torch.Generator().manual_seed(3)
    real, imaginary = (sigma * torch.randn(1, 96, 96, generator=gen) for _ in range(2))
    masked = torch.hypot(_sharp_scan(0.0) + real, imaginary)
    masked[..., :32] = 0.0
    field, _ = estimate_noise_field(masked, 2, "rician")
    assert field.upper_bound and field.is_white
    assert field.model.level == pytest.approx(UPPER_BOUND_SHARE * estimate_noise_level(masked, 2))
    assert field.model.level < 0.5 * estimate_rician_sigma(masked, 2)  # the bright blocks read the anatomy
    with pytest.warns(UserWarning, match=r"at most .*noise_level="):
        denoise(masked, "rician")
    assert not estimate_noise_field(masked, 2, "rician", level=sigma)[0].upper_bound  # a given level stands


@pytest.mark.parametrize("sigma,seed", [(0.06, 0), (0.06, 3), (0.12, 1), (0.12, 4)])
def test_a_background_of_a_few_blocks_gives_a_kspace_magnitude_its_sigma(sigma, seed):
    """The masked 64x64 slice with its background filled by the slice shifted half its width: a third of the voxels
    are zero, but only 4-6 of the 8 px blocks lie wholly in that background. Under a Hann k-space window they read
    the per-component sigma within 12 %."""
    from monai_dnaprior.noise.rayleigh import coloured_background

    masked = _masked_sample_slice()
    y, true = _unit_kspace_magnitude(torch.where(masked > 0, masked, masked.roll(32, dims=-1)), sigma, seed)
    background = coloured_background(y, 2)
    assert background is not None and 4 <= round(float(background.voxels.float().mean()) * 64) <= 6
    assert background.sigma == pytest.approx(true, rel=0.12)


@pytest.mark.parametrize("sigma,seed", [(0.06, 0), (0.12, 1), (0.2, 2), (0.12, 3)])
def test_a_kspace_magnitude_in_a_wide_background_reads_its_colour_and_no_noise_map(sigma, seed):
    """A masked phantom with a wide background of zeros (a small head in a large field of view) under a Hann
    k-space window: the Rayleigh background passes the noise map's gate, whose windows, on the finest scale, see little
    of a low-pass noise and read the phantom's edges as a map. The noise is stationary: found coloured, with no map,
    at its level within 5 %."""
    clean = _phantom_in_a_wide_view(128, 60, 48)
    y, true = _unit_kspace_magnitude(clean, sigma, seed)
    field, _ = estimate_noise_field(y, 2, "rician")
    assert field.level_map is None and not field.is_white
    assert field.model.level == pytest.approx(true, rel=0.05)


@pytest.mark.parametrize("sigma,seed", [(0.06, 0), (0.12, 1), (0.2, 2), (0.12, 3)])
def test_a_kspace_magnitude_reads_its_noise_outside_its_background(sigma, seed):
    """The masked 64x64 slice in a field of view of 160 px under a Hann k-space window: most of the flattest patches
    lie in the Rayleigh background, whose spread reads a low level; the patches outside it read the colour, the
    background bounds the level, found within 5 % (the flattest patches of all the image read 0.73-0.77x on three of
    these draws)."""
    y, true = _unit_kspace_magnitude(torch.nn.functional.pad(_masked_sample_slice(), (48,) * 4), sigma, seed)
    field, _ = estimate_noise_field(y, 2, "rician")
    assert not field.is_white
    assert field.model.level == pytest.approx(true, rel=0.05)


@pytest.mark.parametrize("sigma,seed", [(0.06, 0), (0.12, 1), (0.2, 2), (0.12, 3)])
def test_a_wide_background_under_a_kspace_window_is_returned_as_zero(sigma, seed):
    """A masked phantom in a wide field of zeros under a Hann k-space window, denoised by default: the background
    8 px and more from the tissue comes back 0 on over 90 % of its voxels and at a mean under 0.1 sigma. Its box means
    spread twice a white noise's; with the white tolerance a fifth of it stayed above 0 (0.13-0.15 sigma)."""
    clean = _phantom_in_a_wide_view(96, 45, 40)
    y, true = _unit_kspace_magnitude(clean, sigma, seed)
    out = DNAPriorDenoise()(y)
    far = torch.nn.functional.max_pool2d((clean > 0).float()[None], 17, 1, 8)[0] == 0
    assert float((out[far] == 0).float().mean()) > 0.9
    assert float(out[far].mean()) < 0.1 * true


def test_a_given_magnitude_psd_keeps_the_background_rule_of_white_noise():
    """A PSD given for a magnitude, made as a residual's (``noisy - clean`` over draws), holds the Rician bias's pattern
    (largest correlation 0.84 where the noise's is 0.67; a box mean's spread read from it 7x where it is 1.9x): taken
    into the background rule it set 6 % of the tissue to 0 at this level. The rule keeps its white tolerance there."""
    clean = _phantom_in_a_wide_view(96, 45, 40)
    residuals = [torch.fft.fftn(_kspace_magnitude(clean, 0.25, 10 + k)[0][0] - clean[0], norm="ortho") for k in range(4)]
    psd = torch.stack(residuals).abs().square().mean(0)
    out = DNAPriorDenoise(noise_model="rician", noise_psd=psd)(_kspace_magnitude(clean, 0.25, 2)[0])
    assert float((out[clean > 0.2] == 0).float().mean()) < 0.03

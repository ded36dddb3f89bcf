"""``denoise()`` on its default path (``prior="auto"``: the collaborative filter, no network): quality on phantoms
in 2D and 3D, what ``info`` says, determinism, inputs left alone, intensity units, the noise models, the input's
zero, settings refused, threads kept. The network path is specified in ``test_fit.py``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import NOISE_MODEL_NAMES, make_phantom, noisy_phantom, psnr, small_network, synthesise

import monai_dnaprior.denoising as denoising_module
from monai_dnaprior import DenoiseResult, FilterConfig, IntensityWindow, denoise
from monai_dnaprior.filters import FilterResult

SIGMA = 0.1


# ---------------------------------------------------------------------------------------------------- quality


def test_default_denoises_a_2d_phantom_with_the_filter(noisy_2d):
    clean, noisy = noisy_2d
    result = denoise(torch.from_numpy(noisy))
    assert isinstance(result, DenoiseResult)
    assert result.image.shape == noisy.shape and result.image.dtype == torch.float32
    assert psnr(result.image, clean) > psnr(noisy, clean) + 5.0
    assert result.info["prior"] == "filter" and result.info["iterations"] == 0  # no network fitted
    assert result.info["noise_model"] == "gaussian" and result.info["asked_noise_model"] == "auto"
    assert result.info["device"] == "cpu" and result.info["seconds"] > 0 and not result.info["coloured"]
    window = IntensityWindow.from_image(torch.from_numpy(noisy))  # the level is in units of the [0, 1] window
    assert result.info["noise_level"] == pytest.approx(SIGMA / (window.high - window.low), rel=0.25)
    assert result.uncertainty is None  # made only when asked


def test_default_denoises_a_3d_phantom(noisy_3d):
    clean, noisy = noisy_3d
    result = denoise(torch.from_numpy(noisy))
    assert result.image.shape == noisy.shape
    assert psnr(result.image, clean) > psnr(noisy, clean) + 4.0
    assert result.info["prior"] == "filter" and result.info["iterations"] == 0


def test_the_default_on_a_noisy_image_says_nothing(noisy_2d, noisy_3d):
    """No warning where the noise is plain to see (a warning says the level is only a bound, or no noise, or that a
    setting did nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _, noisy in (noisy_2d, noisy_3d):
            denoise(torch.from_numpy(noisy), uncertainty=True)
        denoise(torch.from_numpy(np.abs(noisy_2d[1])), noise_model="rician")


@pytest.mark.parametrize("prior", ["auto", "filter"])
def test_auto_is_the_filter(noisy_2d, prior):
    _, noisy = noisy_2d
    img = torch.from_numpy(noisy)
    assert torch.equal(denoise(img, prior=prior).image, denoise(img).image)


def test_a_depth_one_volume_is_a_2d_image(noisy_2d):
    _, noisy = noisy_2d
    flat = denoise(torch.from_numpy(noisy)).image
    deep = denoise(torch.from_numpy(noisy[..., None])).image
    assert deep.shape == (1, 32, 32, 1)
    torch.testing.assert_close(deep[..., 0], flat)


# ------------------------------------------------------------------------------------------ determinism, RNG


def test_the_filter_is_deterministic_and_has_no_randomness(noisy_2d):
    _, noisy = noisy_2d
    img = torch.from_numpy(noisy)
    first = denoise(img, uncertainty=True)
    again, other_seed = denoise(img, uncertainty=True), denoise(img, seed=7, uncertainty=True)
    assert torch.equal(first.image, again.image) and torch.equal(first.uncertainty, again.uncertainty)
    assert torch.equal(first.image, other_seed.image)  # the seed seeds a network; there is none here


def test_the_global_rng_is_neither_used_nor_changed(noisy_2d, noisy_3d):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = denoise(torch.from_numpy(noisy_2d[1])).image
    denoise(torch.from_numpy(noisy_3d[1]))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    assert torch.equal(denoise(torch.from_numpy(noisy_2d[1])).image, a)


def test_runs_under_no_grad_and_inference_mode_with_the_same_result(noisy_2d):
    img = torch.from_numpy(noisy_2d[1])
    expected = denoise(img).image
    with torch.no_grad():
        assert torch.equal(denoise(img).image, expected)
    with torch.inference_mode():
        assert torch.equal(denoise(img).image, expected)
    assert torch.is_grad_enabled()


# ----------------------------------------------------------------------------------------------- edge inputs


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 5, 7), (1, 4, 4, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int16])
def test_constant_image_is_returned_unchanged(shape, dtype):
    img = torch.full(shape, 7, dtype=dtype)
    result = denoise(img, uncertainty=True)
    assert torch.equal(result.image, torch.full(shape, 7.0))
    assert torch.equal(result.uncertainty, torch.zeros(shape))
    assert result.info["noise_level"] == 0.0 and result.info["prior"] == "none"


def test_denoise_does_not_modify_its_input(noisy_2d):
    _, noisy = noisy_2d
    img = torch.from_numpy(noisy.copy())
    denoise(img, uncertainty=True)
    assert torch.equal(img, torch.from_numpy(noisy))


def test_output_is_in_the_input_intensity_units():
    clean, noisy = noisy_phantom((24, 24))
    scale, offset = 1500.0, -300.0
    out = denoise(torch.from_numpy(noisy * scale + offset)).image.numpy()
    # the filter runs on a percentile-normalised image and maps back: the same gain in the image's own units
    assert psnr((out - offset) / scale, clean) > psnr(noisy, clean) + 4.0


def test_given_noise_level_is_used(noisy_2d):
    _, noisy = noisy_2d
    result = denoise(torch.from_numpy(noisy), noise_level=0.123)
    assert result.info["noise_level"] == 0.123


def test_channels_are_denoised_in_groups_each_with_its_own_field():
    """More channels than one group holds: every group its own noise field, all reported."""
    rng = np.random.default_rng(0)
    clean = np.stack([make_phantom((16, 16))] * 6)
    levels = np.array([0.05] * 4 + [0.2] * 2)[:, None, None]
    noisy = (clean + levels * rng.standard_normal(clean.shape)).astype(np.float32)
    result = denoise(torch.from_numpy(noisy))
    assert result.image.shape == noisy.shape and len(result.info["groups"]) == 2
    first, second = (g["noise_level"] for g in result.info["groups"])
    assert second > 2 * first
    for c in range(6):
        assert psnr(result.image[c], clean[c]) > psnr(noisy[c], clean[c]), c


# ------------------------------------------------------------------------------------------------ noise models


@pytest.mark.parametrize("noise_model", NOISE_MODEL_NAMES)
def test_every_noise_model_improves_a_phantom_under_its_noise(noise_model):
    clean = make_phantom((32, 32))[None]
    noisy = synthesise(noise_model, clean, np.random.default_rng(0))
    result = denoise(torch.from_numpy(noisy), noise_model=noise_model)
    assert result.info["noise_model"] == noise_model and result.info["prior"] == "filter"
    assert psnr(result.image, clean) > psnr(noisy, clean) + 3.0
    assert bool((result.image >= 0).all()) or noise_model == "gaussian"  # the other models keep zero at zero


@pytest.mark.parametrize("offset", [0.0, 3.0, -2.0])
def test_the_filter_sees_the_input_zero_at_zero(monkeypatch, offset):
    """The Wiener shrinkage pulls towards zero: the filter gets the observation with the input's own zero at zero
    (a scaled copy of the input, never shifted by the percentile window)."""
    captured = {}

    def spy(observation, field, config, with_error=False, tracker=None, units=0.0, given_psd=False):
        captured["observation"] = observation.clone()
        return FilterResult(observation.clone(), torch.zeros_like(observation) if with_error else None)

    monkeypatch.setattr(denoising_module, "filter_observation", spy)
    img = torch.from_numpy(noisy_phantom((20, 18))[1]) + offset
    denoise(img, noise_model="gaussian")
    seen = captured["observation"][0]
    scale = float((seen * img).sum() / img.square().sum())
    assert scale > 0
    torch.testing.assert_close(seen, scale * img, atol=1e-5, rtol=1e-5)


def test_the_filter_gets_the_given_filter_config(monkeypatch, noisy_2d):
    configs = []
    original = denoising_module.filter_observation
    monkeypatch.setattr(denoising_module, "filter_observation",
                        lambda observation, field, config, *a, **k: configs.append(config) or original(
                            observation, field, config, *a, **k))
    mine = FilterConfig(patch=6, threshold=3.0)
    denoise(torch.from_numpy(noisy_2d[1]), filter_config=mine)
    denoise(torch.from_numpy(noisy_2d[1]), preset="fast")
    assert configs == [mine, FilterConfig(match_step=4, ridge_patch=0, ridge_volume_patch=0)]


# --------------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("kwargs, names", [
    ({"noise_model": "salt"}, ["noise_model", "'gaussian'", "'poisson'", "'rician'", "'speckle'"]),
    ({"prior": "dip"}, ["prior", "'filter'", "'network'", "'network+filter'"]),
    ({"preset": "turbo"}, ["'fast'", "'default'", "'quality'"]),
])
def test_unknown_options_are_refused_naming_the_choices(kwargs, names):
    with pytest.raises(ValueError) as error:
        denoise(torch.rand(1, 8, 8), **kwargs)
    assert all(name in str(error.value) for name in names)


@pytest.mark.parametrize("prior", ["auto", "filter"])
def test_network_settings_without_a_network_are_refused(prior):
    with pytest.raises(ValueError, match="network_config"):
        denoise(torch.rand(1, 8, 8), prior=prior, network_config=small_network(3))


@pytest.mark.parametrize("noise_model", ["poisson", "speckle"])
def test_a_noise_psd_for_non_additive_noise_is_refused(noise_model):
    with pytest.raises(ValueError, match="noise_psd"):
        denoise(torch.rand(1, 8, 8), noise_model=noise_model, noise_psd=torch.ones(8, 8))


def test_the_users_cpu_thread_setting_is_kept():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        denoise(torch.from_numpy(noisy_phantom((12, 12))[1]), device="cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_denoise_takes_a_numpy_array_and_leaves_it_as_it_was():
    """``denoise()`` takes numpy as the transforms do (the result is a tensor) and does not write into the array."""
    rng = np.random.default_rng(0)
    noisy = (0.5 + 0.1 * rng.standard_normal((1, 32, 32))).astype(np.float32)
    before = noisy.copy()
    result = denoise(noisy)
    assert isinstance(result.image, torch.Tensor) and result.image.shape == (1, 32, 32)
    assert np.array_equal(noisy, before)
    assert torch.allclose(result.image, denoise(torch.from_numpy(before)).image)


def test_a_non_negative_image_gives_a_non_negative_result(monkeypatch):
    """A noisy magnitude masked to an exact-zero background (as a skull-stripped scan), denoised as Gaussian: the
    estimate dips below 0 beside the mask's edge; the result is that estimate clamped at 0. An image with a value
    below 0 is not clamped."""
    g = torch.Generator().manual_seed(0)
    clean = torch.zeros(1, 48, 48)
    clean[:, 12:36, 12:36] = 0.8
    clean[:, 20:28, 20:28] = 0.05
    y = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp_min(0) * (clean > 0)
    out = denoise(y, "gaussian").image
    below = y.clone()
    below[0, 0, 0] = -0.01
    kept = denoise(below, "gaussian").image
    monkeypatch.setattr(denoising_module, "_keep_sign", lambda image, x: image)
    unclamped = denoise(y, "gaussian").image
    assert float(y.min()) == 0.0 and int((unclamped < 0).sum()) > 0
    torch.testing.assert_close(out, unclamped.clamp_min(0), atol=0, rtol=0)
    torch.testing.assert_close(kept, denoise(below, "gaussian").image, atol=0, rtol=0)
    assert float(kept.min()) < 0

"""The uncertainty map: the expected error of the returned image, per voxel, in its intensity units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import NOISE_MODEL_NAMES, make_phantom

from monai_dnaprior import DNAPriorDenoise, FilterConfig, denoise, get_noise_model
from monai_dnaprior.filters import collaborative_refine, filter_passes
from monai_dnaprior.uncertainty import averaged_error, clean_error, observation_bias, to_image_domain

MAP = {"uncertainty": True}  # the default path, the filter, with its map


def _model(name: str, level: float):
    """The noise model ``name`` with ``level`` given (the image it would be estimated on is not used)."""
    return get_noise_model(name, torch.rand(1, 8, 8), 2, level=level)


def _noisy(shape, sigma, seed=0, scale=1.0):
    clean = scale * make_phantom(shape)[None]
    rng = np.random.default_rng(seed)
    return clean, (clean + scale * sigma * rng.standard_normal(clean.shape)).astype(np.float32)


@pytest.mark.parametrize("noisy_half", ["left", "top"])
def test_map_is_higher_where_the_noise_is(noisy_half):
    n = 48
    clean = make_phantom((n, n))[None]
    noisy = clean.copy()
    region = (slice(None), slice(None), slice(0, n // 2)) if noisy_half == "left" else (slice(None), slice(0, n // 2))
    noisy[region] += 0.15 * np.random.default_rng(0).standard_normal(noisy[region].shape).astype(np.float32)
    u = denoise(torch.from_numpy(noisy), noise_model="gaussian", **MAP).uncertainty
    mask = torch.zeros(noisy.shape, dtype=torch.bool)
    mask[region] = True
    assert float(u[mask].mean()) > 1.2 * float(u[~mask].mean())


def test_map_scale_follows_the_noise_level():
    """Given the noise (its estimate is not under test here), more noise, a larger map. On this smooth phantom the
    squared-bias term (inflated for real scans' detail) overestimates at low noise, so the growth is below linear."""
    means = []
    for sigma in (0.05, 0.1, 0.2):
        _, noisy = _noisy((64, 64), sigma)
        img = torch.from_numpy(noisy)
        white = torch.full(img.shape[1:], sigma**2)  # given: white noise of std sigma (the estimate is not under test)
        result = denoise(img, noise_model="gaussian", noise_psd=white, **MAP)
        means.append(float(result.uncertainty.mean()))
    assert means[0] < means[1] < means[2]
    assert 1.8 < means[2] / means[0] < 4.5


def test_map_is_in_intensity_units_and_calibrated():
    """Scaling the input scales the map; its RMS is close to the actual RMS error (a phantom, so loosely)."""
    clean, noisy = _noisy((64, 64), 0.1)
    one = denoise(torch.from_numpy(noisy), noise_model="gaussian", **MAP)
    thousand = denoise(torch.from_numpy(1000 * noisy), noise_model="gaussian", **MAP)
    ratio = thousand.uncertainty / (1000 * one.uncertainty).clamp_min(1e-6)
    assert float((ratio - 1).abs().le(1e-2).float().mean()) > 0.95  # a few block-matching ties may flip
    assert float(thousand.uncertainty.mean() / (1000 * one.uncertainty.mean())) == pytest.approx(1.0, rel=1e-2)
    rmse = float(np.sqrt(((one.image.numpy() - clean) ** 2).mean()))
    predicted = float(one.uncertainty.square().mean().sqrt())
    assert 0.5 < predicted / rmse < 2.0


@pytest.mark.parametrize("noise_model", NOISE_MODEL_NAMES)
@pytest.mark.parametrize("shape", [(24, 24), (16, 17, 4)])
def test_shapes_types_and_sign_for_every_model(noise_model, shape):
    _, noisy = _noisy(shape, 0.1)
    noisy = np.abs(noisy)
    result = denoise(torch.from_numpy(noisy), noise_model=noise_model, **MAP)
    u = result.uncertainty
    assert u.shape == noisy.shape and u.dtype == torch.float32
    assert bool((u >= 0).all()) and bool(torch.isfinite(u).all()) and float(u.max()) > 0


def test_transform_returns_the_map_as_its_input_type():
    _, noisy = _noisy((24, 24), 0.1)
    out, unc = DNAPriorDenoise(noise_model="gaussian").denoise_with_uncertainty(noisy)
    assert isinstance(unc, np.ndarray) and unc.shape == noisy.shape and unc.dtype == np.float32


def test_collaborative_refine_variance_is_optional():
    _, noisy = _noisy((24, 24), 0.1)
    y = torch.from_numpy(noisy)[None]
    pilot = torch.nn.functional.avg_pool2d(y, 3, 1, 1)
    passes = filter_passes(FilterConfig())
    plain = collaborative_refine(y, pilot, 0.1, passes)
    image, variance = collaborative_refine(y, pilot, 0.1, passes, return_variance=True)
    assert isinstance(plain, torch.Tensor)
    torch.testing.assert_close(image, plain)
    assert variance.shape == plain.shape and bool((variance >= 0).all())
    assert float(variance.mean()) < 0.1**2  # below the observation's own noise


def test_delta_method_matches_each_inverse():
    y = torch.rand(1, 16, 16) * 0.8 + 0.1
    x, std = torch.rand(1, 16, 16) * 0.8 + 0.1, torch.full((1, 16, 16), 1e-3)
    torch.testing.assert_close(to_image_domain(_model("gaussian", 0.1), x, std, y), std)
    speckle = _model("speckle", 0.3)
    x = x * 0.5 - 1.0
    got = to_image_domain(speckle, x, std, y)
    small = (speckle.inverse(torch.stack([x - 1e-5, x + 1e-5]), y)).diff(dim=0)[0] / 2e-5 * std
    torch.testing.assert_close(got, small.abs(), rtol=1e-2, atol=1e-7)
    rician = _model("rician", 0.1)  # |x|: slope 1 on both sides of its kink at a background's 0
    x = torch.tensor([[-0.2, 0.0, 0.3]])
    torch.testing.assert_close(to_image_domain(rician, x, std[:, 0, :3], y[:, 0, :3]), std[:, 0, :3])


def test_a_rician_background_is_mapped_as_the_rule_claims():
    """Where the background rule returns a Rician background as 0 (its neighbourhood's mean at the noise floor) the
    map reads 0 (to the inverse's bisection tolerance): the rule claims no signal, as on this true-zero background.
    Every other voxel carries its error, those clamped at 0 (an estimate below its local level) included; a few at
    the claimed region's rim, estimated within 0.001 of 0 (a 100th of sigma), carry less (or none: their local
    median lies below the floor, where the inverse is 0 around it)."""
    clean = np.zeros((1, 64, 64), np.float32)
    clean[:, 20:44, 20:44] = 0.6
    rng = np.random.default_rng(0)
    noisy = np.abs(clean + 0.1 * rng.standard_normal(clean.shape) + 0.1j * rng.standard_normal(clean.shape))
    result = denoise(torch.from_numpy(noisy.astype(np.float32)), noise_model="rician", **MAP)
    zero, unc = result.image == 0, result.uncertainty
    claimed = unc < 1e-6
    assert float(claimed.float().mean()) > 0.1 and bool((result.image[claimed] < 1e-3).all())
    assert float((zero & ~claimed).float().mean()) < 0.05
    assert float(unc[~zero & ~claimed].min()) > 0.001 and float(unc[result.image > 0.001].min()) > 0.004
    square = torch.from_numpy(clean) > 0
    actual = float((result.image - torch.from_numpy(clean))[square].square().mean().sqrt())
    assert 0.5 < float(unc[square].square().mean().sqrt()) / actual < 2.0


def test_rician_bias_is_largest_at_the_noise_floor():
    model = _model("rician", 0.1)
    fitted = torch.tensor([0.0, 0.05, 1.0])
    mean = model.observe(fitted) + 0.02  # the refinement's estimate of the observation's mean
    clean = fitted + 0.02  # mapped back by the fit's linear step
    bias = observation_bias(model, mean, clean)
    assert float(bias[0]) > float(bias[2]) and float(bias[2]) < 1e-5
    assert torch.equal(observation_bias(_model("gaussian", 0.1), mean, clean), torch.zeros(3))


def test_the_rician_inverse_carries_the_error_of_the_mean():
    """The error of ``unobserve(mean)`` for a mean of error std ``s``: the slope's where the inverse is nearly
    linear, the Monte-Carlo root mean square of ``unobserve(mean + e) - clean`` everywhere, the noise floor too."""
    model = _model("rician", 0.1)
    clean = torch.tensor([0.0, 0.05, 0.1, 0.3, 1.0], dtype=torch.float64)
    mean, error = model.observe(clean), torch.full((5,), 1e-4, dtype=torch.float64)
    std = clean_error(model, mean, clean, error, by_fit=False)
    draws = 1e-2 * torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    monte_carlo = (model.unobserve(mean + draws) - clean).square().mean(0).sqrt()
    torch.testing.assert_close(std, monte_carlo, rtol=0.1, atol=0)
    slope = (model.observe(clean + 1e-6) - model.observe(clean)) / 1e-6
    assert float(std[4]) == pytest.approx(1e-2 / float(slope[4]), rel=1e-2)
    assert float(std[0]) > float(std[3]) > float(std[4])
    gaussian = clean_error(_model("gaussian", 0.1), clean, clean, error, by_fit=False)
    torch.testing.assert_close(gaussian, torch.full((5,), 1e-2, dtype=torch.float64))


def test_averaged_error_takes_the_errors_as_correlated():
    first, second = torch.tensor([4.0, 1.0, 0.0]), torch.tensor([4.0, 9.0, 1.0])
    torch.testing.assert_close(averaged_error(first, second), torch.tensor([4.0, 4.0, 0.25]))


def test_the_map_is_made_only_when_asked():
    _, noisy = _noisy((32, 32), 0.1)
    img = torch.from_numpy(noisy)
    with_map = denoise(img, noise_model="rician", **MAP)
    without = denoise(img, noise_model="rician")  # the default: no map
    assert without.uncertainty is None and with_map.uncertainty is not None
    torch.testing.assert_close(without.image, with_map.image, rtol=0, atol=0)
    transform = DNAPriorDenoise(noise_model="gaussian")
    np.testing.assert_array_equal(transform(noisy), transform.denoise_with_uncertainty(noisy)[0])

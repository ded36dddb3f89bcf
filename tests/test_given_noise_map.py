"""A noise map the user gives (``noise_map``): the noise's relative std voxel by voxel, known from the acquisition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_phantom, psnr
from monai.data import MetaTensor

from monai_dnaprior import DNAPriorDenoise, DNAPriorDenoised, denoise


def _falloff(shape: tuple[int, int], ratio: float = 5.0) -> np.ndarray:
    """A coil's falloff: the noise std growing ``ratio`` x along the first axis."""
    t = np.linspace(0.0, 1.0, shape[0])[:, None]
    return np.broadcast_to(np.exp(np.log(ratio) * t), shape).astype(np.float32).copy()


def _noisy(clean: np.ndarray, sigma: float, g: np.ndarray, seed: int = 0, rician: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = sigma * g * rng.standard_normal(clean.shape)
    if rician:
        return np.hypot(clean + n, sigma * g * rng.standard_normal(clean.shape)).astype(np.float32)
    return (clean + n).astype(np.float32)


def test_a_given_map_is_used_and_reported():
    """A 5x falloff given as the map: the result beats one level (the model and the base level named) by over a dB,
    and the info says the map was given, with its range relative to its median."""
    clean = make_phantom((64, 64))
    g = _falloff(clean.shape)
    noisy = _noisy(clean, 0.05, g / np.median(g))
    given = denoise(noisy[None], noise_model="gaussian", noise_map=g)
    one_level = denoise(noisy[None], noise_model="gaussian", noise_level=0.05 / float(np.ptp(noisy)))
    assert psnr(given.image[0], clean) > psnr(one_level.image[0], clean) + 1.0
    assert given.info["noise_map_given"] is True
    low, high = given.info["noise_map_range"]
    assert high / low == pytest.approx(5.0, rel=1e-3) and low < 1 < high


def test_a_flat_or_rescaled_map_changes_nothing_it_should_not():
    """A map of ones gives the result with no map (stationary noise reads none); a map's scale does not matter (it
    is relative to its median)."""
    clean = make_phantom((48, 48))
    noisy = _noisy(clean, 0.05, np.ones(clean.shape))[None]
    plain = denoise(noisy, noise_model="gaussian").image
    flat = denoise(noisy, noise_model="gaussian", noise_map=np.ones(clean.shape)).image
    torch.testing.assert_close(flat, plain)
    g = _falloff(clean.shape, 3.0)
    noisy = _noisy(clean, 0.05, g)[None]
    # the same up to float32 rounding of the map over its median
    torch.testing.assert_close(denoise(noisy, noise_map=g).image, denoise(noisy, noise_map=10.0 * g).image,
                               rtol=1e-4, atol=1e-5)


def _faint(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Faint anatomy of mean 1: the magnitude of white noise summed over 3x3."""
    n = np.random.default_rng(seed).standard_normal(shape)
    box = np.abs(sum(np.roll(np.roll(n, i, 0), j, 1) for i in (-1, 0, 1) for j in (-1, 0, 1)))
    return box / box.mean()


def test_a_magnitude_with_a_given_map_reads_its_base_sigma():
    """A Rician magnitude under a falloff whose background (a quarter of the image) holds faint anatomy at the noise's
    level: with the map given, the per-component sigma where the map is 1 is read within 15 % (1.12x; the blocks of
    pure Rayleigh noise that a map read from the image takes its sigma from read 1.38x here), and the result beats
    the blind run."""
    clean = make_phantom((64, 64))
    clean[:, :16] = 0.04 * _faint((64, 16))
    g = _falloff(clean.shape, 4.0)
    g = g / np.median(g)
    noisy = _noisy(clean, 0.04, g, seed=3, rician=True)
    given = denoise(noisy[None], noise_model="rician", noise_map=g)
    assert given.info["noise_level"] * float(noisy.max()) == pytest.approx(0.04, rel=0.15)
    assert psnr(given.image[0], clean) > psnr(denoise(noisy[None]).image[0], clean)


def test_the_transforms_take_the_map_and_leave_it_as_it_was():
    clean = make_phantom((48, 48))
    g = _falloff(clean.shape)
    noisy = _noisy(clean, 0.05, g)[None]
    kept = g.copy()
    out = DNAPriorDenoise(noise_model="gaussian")(noisy, noise_map=g)
    np.testing.assert_array_equal(g, kept)
    np.testing.assert_allclose(out, denoise(noisy, noise_model="gaussian", noise_map=g).image.numpy())
    image, error = DNAPriorDenoise(noise_model="gaussian").denoise_with_uncertainty(noisy, noise_map=g)
    np.testing.assert_allclose(image, out)
    assert np.isfinite(error).all() and error.shape == noisy.shape
    # the error map follows the noise: higher where the map is
    assert error[0, -8:].mean() > 2 * error[0, :8].mean()
    loaded = MetaTensor(torch.from_numpy(g[None]), meta={"filename_or_obj": "g.nii.gz"})  # as LoadImaged gives it
    d = DNAPriorDenoised(keys="image", noise_model="gaussian", noise_map_key="g")({"image": noisy, "g": loaded})
    np.testing.assert_allclose(d["image"], out)
    # a depth-1 slice and its map as loaded (axes of size 1 do not count)
    slice_out = DNAPriorDenoise(noise_model="gaussian")(noisy[..., None], noise_map=g[None, :, :, None])
    np.testing.assert_allclose(slice_out[..., 0], out)
    with pytest.raises(KeyError, match="noise_map_key='gmap'"):
        DNAPriorDenoised(keys="image", noise_map_key="gmap")({"image": noisy})


@pytest.mark.parametrize(
    "noise_map, error, match",
    [
        (np.ones((40, 48), np.float32), ValueError, "spatial shape"),
        (np.zeros((48, 48), np.float32), ValueError, "positive and finite"),
        (np.full((48, 48), np.nan, np.float32), ValueError, "positive and finite"),
        (np.ones((48, 48), np.complex64), TypeError, "real numbers"),
        ("g.nii", TypeError, "numeric"),
    ],
)
def test_a_bad_map_is_refused_with_the_fix(noise_map, error, match):
    noisy = np.random.default_rng(0).random((1, 48, 48)).astype(np.float32)
    with pytest.raises(error, match=match):
        denoise(noisy, noise_map=noise_map)


def test_a_map_needs_additive_noise_and_one_image():
    noisy = np.random.default_rng(0).random((8, 24, 24, 6)).astype(np.float32)
    g = np.ones((24, 24, 6), np.float32)
    with pytest.raises(ValueError, match="additive noise"):
        denoise(noisy[:1], noise_model="speckle", noise_map=g)
    with pytest.raises(ValueError, match="noise_map describes one image"):
        denoise(noisy, noise_map=g, series=True)

"""Every option the README documents changes the output where it is documented to, through the MONAI transforms,
on numpy, torch and MetaTensor inputs; network settings are refused where no network is fitted; the deprecated
``pilot`` still works, with a FutureWarning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import NOISE_MODEL_NAMES, as_numpy, make_phantom, noisy_phantom, psnr, synthesise

from monai_dnaprior import DNAPriorDenoise, DNAPriorDenoised, denoise

FAST = {"preset": "fast"}  # the default path, the filter
NETWORK = {"prior": "network", "preset": "fast", "max_iters": 8}  # the network alone, a short fit
NETWORK_SETTINGS = {"max_iters": 5, "seed": 1, "volume_mode": "slices", "tv_scale": 1.0, "frequency_power": 1.0,
                    "amplitude_weight": 0.0, "phase_weight": 0.0}


def _run(img: np.ndarray, convert, **settings) -> np.ndarray:
    return as_numpy(DNAPriorDenoise(**settings)(convert(img))).astype(np.float64)


def _differ(a: np.ndarray, b: np.ndarray, by: float = 1e-3) -> bool:
    """Whether two outputs differ by more than ``by`` on average (not just float noise)."""
    return float(np.abs(a - b).mean()) > by


@pytest.fixture(scope="module")
def gaussian_2d():
    return noisy_phantom((24, 24))


@pytest.fixture(scope="module")
def rician_2d():
    clean = make_phantom((24, 24))[None]
    return clean, synthesise("rician", clean, np.random.default_rng(1))


# ------------------------------------------------------------------------------------------------ noise model


def test_noise_model_changes_the_output(array_type, rician_2d):
    """The same non-negative image under each model: four different results; ``auto`` is the model it chose."""
    _, convert = array_type
    _, noisy = rician_2d
    outputs = {m: _run(noisy, convert, noise_model=m, **FAST) for m in NOISE_MODEL_NAMES}
    for i, a in enumerate(NOISE_MODEL_NAMES):
        for b in NOISE_MODEL_NAMES[i + 1:]:
            assert _differ(outputs[a], outputs[b]), (a, b)
    chosen = denoise(torch.from_numpy(noisy)).info["noise_model"]
    np.testing.assert_array_equal(_run(noisy, convert, noise_model="auto", **FAST), outputs[chosen])


# ------------------------------------------------------------------------------------------------ noise level


def test_noise_level_changes_the_output_and_a_larger_one_smooths_more(array_type, gaussian_2d):
    _, convert = array_type
    _, noisy = gaussian_2d
    levels = (0.02, 0.08, 0.3)
    outputs = [_run(noisy, convert, noise_model="gaussian", noise_level=level, **FAST) for level in levels]
    changes = [float(np.abs(out - noisy).mean()) for out in outputs]
    assert changes[0] < changes[1] < changes[2]
    assert _differ(_run(noisy, convert, noise_model="gaussian", **FAST), outputs[2])  # None: estimated


# --------------------------------------------------------------------------------------------------- noise psd


def _low_pass_noise(shape, sigma, seed=0):
    """White noise smoothed by a [1, 2, 1] / 4 kernel per axis (periodic), rescaled to std ``sigma``, and its PSD
    in the convention ``E|fftn(noise, norm="ortho")|^2``."""
    white = np.random.default_rng(seed).standard_normal(shape)
    kernel = np.zeros(shape)
    for offsets, weight in [((0, 0), 4), ((1, 0), 2), ((-1, 0), 2), ((0, 1), 2), ((0, -1), 2), ((1, 1), 1),
                            ((1, -1), 1), ((-1, 1), 1), ((-1, -1), 1)]:
        kernel[offsets] += weight / 16
    transfer = np.fft.fftn(kernel)
    noise = np.real(np.fft.ifftn(np.fft.fftn(white) * transfer))
    scale = sigma / np.sqrt(np.mean(np.abs(transfer) ** 2))
    return noise * scale, np.abs(transfer) ** 2 * scale**2


def test_noise_psd_changes_the_output(array_type):
    """Coloured noise: its true PSD, a white PSD of the same variance, and none (estimated) give three results; the
    true PSD's is the closest to the clean image."""
    _, convert = array_type
    clean = make_phantom((32, 32))
    noise, psd = _low_pass_noise(clean.shape, 0.1)
    noisy = (clean + noise).astype(np.float32)[None]
    settings = {"noise_model": "gaussian", **FAST}
    true = _run(noisy, convert, noise_psd=psd, **settings)
    white = _run(noisy, convert, noise_psd=np.full(psd.shape, psd.mean()), **settings)
    estimated = _run(noisy, convert, **settings)
    assert _differ(true, white) and _differ(true, estimated)
    assert psnr(true[0], clean) > psnr(white[0], clean) + 0.5
    info = denoise(torch.from_numpy(noisy), noise_psd=torch.from_numpy(psd), noise_model="gaussian").info
    assert info["coloured"] and info["noise_level"] == pytest.approx(0.1 / (noisy.max() - noisy.min()), rel=0.2)


# ------------------------------------------------------------------------------------------------------ prior


def test_prior_changes_the_output_on_a_rician_image(array_type, rician_2d):
    """``filter``, ``network`` and ``network+filter``: three results on a Rician magnitude (where the fit changes
    the filter's); ``auto`` is ``filter``."""
    _, convert = array_type
    clean, noisy = rician_2d
    base = {"noise_model": "rician", "preset": "fast"}
    filtered = _run(noisy, convert, prior="filter", **base)
    network = _run(noisy, convert, prior="network", max_iters=30, **base)
    both = _run(noisy, convert, prior="network+filter", max_iters=30, **base)
    assert _differ(filtered, network) and _differ(both, network) and _differ(filtered, both, by=1e-4)
    np.testing.assert_array_equal(_run(noisy, convert, prior="auto", **base), filtered)
    for out in (filtered, both):
        assert psnr(out, clean) > psnr(noisy, clean) + 3.0


# ----------------------------------------------------------------------------------------------------- preset


def test_preset_changes_the_filter_output(array_type, gaussian_2d):
    _, convert = array_type
    clean, noisy = gaussian_2d
    outputs = {p: _run(noisy, convert, preset=p) for p in ("fast", "default", "quality")}
    assert _differ(outputs["fast"], outputs["default"], by=1e-4)
    assert _differ(outputs["default"], outputs["quality"], by=1e-4)
    assert _differ(outputs["fast"], outputs["quality"], by=1e-4)
    for out in outputs.values():
        assert psnr(out, clean) > psnr(noisy, clean) + 3.0


# ------------------------------------------------------------------------------------------- network settings


@pytest.mark.parametrize("name", [n for n in NETWORK_SETTINGS if n != "volume_mode"])
def test_each_network_setting_changes_the_network_output(array_type, gaussian_2d, name):
    _, convert = array_type
    _, noisy = gaussian_2d
    baseline = _run(noisy, convert, **NETWORK)
    changed = _run(noisy, convert, **{**NETWORK, name: NETWORK_SETTINGS[name]})
    assert _differ(baseline, changed), name


def test_volume_mode_changes_the_network_output(array_type):
    _, convert = array_type
    _, noisy = noisy_phantom((8, 8, 3))
    short = {**NETWORK, "max_iters": 3}  # the fast preset's 3D network is padded to 32^3: a few steps
    slices = _run(noisy, convert, volume_mode="slices", **short)
    volume = _run(noisy, convert, volume_mode="volume", **short)
    assert _differ(slices, volume)
    np.testing.assert_array_equal(_run(noisy, convert, volume_mode="auto", **short), slices)


def test_network_settings_act_under_network_then_filter_on_a_rician_image(rician_2d):
    _, noisy = rician_2d
    base = {"noise_model": "rician", "prior": "network+filter", "preset": "fast", "max_iters": 8}
    baseline = _run(noisy, np.asarray, **base)
    assert _differ(baseline, _run(noisy, np.asarray, **{**base, "seed": 1}), by=1e-5)
    assert _differ(baseline, _run(noisy, np.asarray, **{**base, "max_iters": 4}), by=1e-5)


@pytest.mark.parametrize("name", list(NETWORK_SETTINGS))
@pytest.mark.parametrize("prior", [None, "auto", "filter"])
@pytest.mark.parametrize("cls", [DNAPriorDenoise, DNAPriorDenoised])
def test_network_settings_without_a_network_are_refused_by_name(cls, prior, name):
    args = {"keys": "image"} if cls is DNAPriorDenoised else {}
    if prior is not None:
        args["prior"] = prior
    with pytest.raises(ValueError, match=name) as error:
        cls(**args, **{name: NETWORK_SETTINGS[name]})
    assert "prior='network'" in str(error.value)


# ----------------------------------------------------------------------------------------------------- device


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_device_cpu_works(array_type, gaussian_2d, device):
    name, convert = array_type
    clean, noisy = gaussian_2d
    out = DNAPriorDenoise(device=device, **FAST)(convert(noisy))
    if name != "numpy":
        assert out.device.type == "cpu"
    assert psnr(as_numpy(out), clean) > psnr(noisy, clean) + 3.0
    if not torch.cuda.is_available():  # None is the CPU here
        np.testing.assert_array_equal(as_numpy(out), _run(noisy, convert, **FAST))


# ------------------------------------------------------------------------------------------------- slice axis


@pytest.fixture(scope="module")
def noise_along_slices():
    """A volume whose noise grows along its last axis, five-fold from the first slice to the last."""
    clean = make_phantom((20, 20, 6))[None]
    levels = np.array([0.03, 0.04, 0.06, 0.08, 0.12, 0.16])
    rng = np.random.default_rng(0)
    return clean, (clean + levels * rng.standard_normal(clean.shape)).astype(np.float32)


def test_slice_axis_changes_the_result_where_the_noise_varies_along_slices(array_type, noise_along_slices):
    _, convert = array_type
    clean, noisy = noise_along_slices
    along = _run(noisy, convert, slice_axis=-1, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # across the slices the noise reads as a bound, with a warning
        across = _run(noisy, convert, slice_axis=0, **FAST)
    assert _differ(along, across)
    assert psnr(along, clean) > psnr(across, clean) + 3.0  # each slice filtered at its own level
    np.testing.assert_array_equal(_run(noisy, convert, slice_axis=2, **FAST), along)
    assert denoise(torch.from_numpy(noisy), slice_axis=-1).info["slice_levels"]


# -------------------------------------------------------------------------------------------- uncertainty key


def test_uncertainty_key_adds_the_map_and_leaves_the_image(array_type, gaussian_2d):
    _, convert = array_type
    _, noisy = gaussian_2d
    plain = DNAPriorDenoised(keys="image", **FAST)({"image": convert(noisy)})
    mapped = DNAPriorDenoised(keys="image", uncertainty_key="unc", **FAST)({"image": convert(noisy)})
    assert set(plain) == {"image"} and set(mapped) == {"image", "image_unc"}
    np.testing.assert_array_equal(as_numpy(mapped["image"]), as_numpy(plain["image"]))
    unc = as_numpy(mapped["image_unc"])
    assert unc.shape == noisy.shape and (unc >= 0).all() and unc.max() > 0 and type(mapped["image_unc"]) is type(
        mapped["image"])


# ---------------------------------------------------------------------------------------------------- pilot


def test_pilot_network_is_deprecated_and_is_network_then_filter(array_type, rician_2d):
    _, convert = array_type
    _, noisy = rician_2d
    base = {"noise_model": "rician", "preset": "fast", "max_iters": 8}
    with pytest.warns(FutureWarning, match="prior='network\\+filter'"):
        transform = DNAPriorDenoise(pilot="network", **base)
    assert transform.prior == "network+filter"
    expected = _run(noisy, convert, prior="network+filter", **base)
    np.testing.assert_array_equal(as_numpy(transform(convert(noisy))), expected)
    with pytest.warns(FutureWarning, match="pilot"):
        dictionary = DNAPriorDenoised(keys="image", pilot="network", **base)
    np.testing.assert_array_equal(as_numpy(dictionary({"image": convert(noisy)})["image"]), expected)


def test_pilot_thresholded_is_deprecated_and_is_the_filter(gaussian_2d):
    _, noisy = gaussian_2d
    with pytest.warns(FutureWarning, match="prior='filter'"):
        transform = DNAPriorDenoise(pilot="thresholded", **FAST)
    np.testing.assert_array_equal(transform(noisy), DNAPriorDenoise(**FAST)(noisy))
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="max_iters"):
        DNAPriorDenoise(pilot="thresholded", max_iters=5)  # no network: its settings are refused


def test_no_warning_without_pilot(gaussian_2d):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        DNAPriorDenoise(**FAST)(gaussian_2d[1])
        DNAPriorDenoise(**NETWORK)

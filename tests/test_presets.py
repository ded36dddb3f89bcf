"""The presets: ordered budgets, and the same kind of result from each (only the cost and the last decibels differ)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_phantom, psnr

from monai_dnaprior import PRESETS, DNAPriorDenoise

ORDER = ("fast", "default", "quality")


def test_presets_spend_more_in_order():
    configs = [PRESETS[name] for name in ORDER]
    for cheaper, dearer in zip(configs, configs[1:]):
        assert cheaper.max_iters < dearer.max_iters
        assert cheaper.wiener_passes <= dearer.wiener_passes
        assert sum(cheaper.channels) <= sum(dearer.channels)


@pytest.fixture(scope="module")
def outputs():
    clean = make_phantom((32, 32))
    noisy = (clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape)).astype(np.float32)
    denoised = {name: np.asarray(DNAPriorDenoise(preset=name, max_iters=12)(noisy[None]))[0] for name in ORDER}
    return clean, noisy, denoised


@pytest.mark.parametrize("name", ORDER)
def test_every_preset_denoises(outputs, name):
    clean, noisy, denoised = outputs
    out = denoised[name]
    assert out.shape == noisy.shape and out.dtype == noisy.dtype
    assert psnr(out, clean) > psnr(noisy, clean) + 6


def test_presets_agree_with_each_other(outputs):
    """The same image from every preset: the outputs differ far less than any of them differs from the noisy input."""
    _, noisy, denoised = outputs
    noise_rms = float(np.sqrt(np.mean((noisy - denoised["default"]) ** 2)))
    for name in ("fast", "quality"):
        gap = float(np.sqrt(np.mean((denoised[name] - denoised["default"]) ** 2)))
        assert gap < 0.25 * noise_rms, name

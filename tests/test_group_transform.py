"""The groups' transform: the DCT or the Haar wavelet per group, and the piecewise-constant rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_phantom, psnr

from monai_dnaprior import FilterConfig, denoise
from monai_dnaprior.filters import collaborative_refine, filter_passes
from monai_dnaprior.filters.collaborative import RiskTally, haar_matrix, patch_basis
from monai_dnaprior.filters.pipeline import filter_observation
from monai_dnaprior.noise.field import estimate_noise_field


def _ellipses(n: int = 64, seed: int = 0) -> torch.Tensor:
    """A piecewise-constant phantom: ellipses of random levels inside a disc, exact zeros outside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
    inside = (xx / 0.85) ** 2 + (yy / 0.9) ** 2 < 1
    image = 0.8 * inside
    for _ in range(8):
        cx, cy = rng.uniform(-0.5, 0.5, 2)
        a, b = rng.uniform(0.1, 0.35, 2)
        image = np.where(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 < 1, rng.uniform(0.1, 1.0), image) * inside
    return torch.as_tensor(image, dtype=torch.float32)


def _noisy(clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    return clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))


def test_haar_matrix_is_orthonormal_with_the_mean_first():
    h = haar_matrix(8)
    torch.testing.assert_close(h @ h.T, torch.eye(8), atol=1e-6, rtol=0)
    torch.testing.assert_close(h[0], torch.full((8,), 8**-0.5))
    assert int((h[1:].sum(1).abs() < 1e-6).sum()) == 7  # every other row a difference
    with pytest.raises(ValueError, match="power of 2"):
        haar_matrix(6)
    mixed = patch_basis((4, 3), "cpu", haar=True)  # Haar along the side of 4, the DCT along the side of 3
    torch.testing.assert_close(mixed @ mixed.T, torch.eye(12), atol=1e-6, rtol=0)


@pytest.mark.parametrize("transform", ["dct", "adaptive"])
def test_the_passes_run_with_either_transform(transform):
    clean = torch.as_tensor(make_phantom((48, 48)))
    noisy = _noisy(clean, 0.1)
    passes = filter_passes(FilterConfig(group_transform=transform))
    out = collaborative_refine(noisy[None, None], noisy[None, None], 0.1, passes)[0, 0]
    assert psnr(clean, out) > psnr(clean, noisy) + 6


def test_the_haar_wavelet_keeps_a_piecewise_constant_image_sharp():
    """On ellipses of constant levels the per-group choice beats the DCT alone by over 1 dB and says so in its
    tally (the Haar wavelet cuts the Wiener pass's risk by over a tenth); on a smooth phantom it changes little and
    cuts almost nothing."""
    results = {}
    for name, clean in (("ellipses", _ellipses()), ("smooth", torch.as_tensor(make_phantom((64, 64))))):
        noisy = _noisy(clean, 0.05, seed=1)[None, None]
        for transform in ("dct", "adaptive"):
            tally = RiskTally()
            out = collaborative_refine(noisy, noisy, 0.05, filter_passes(FilterConfig(group_transform=transform)),
                                       tally=tally)
            results[name, transform] = (psnr(clean, out[0, 0]), tally.cut)
    assert results["ellipses", "adaptive"][0] > results["ellipses", "dct"][0] + 1.0
    assert results["ellipses", "adaptive"][1] > 0.1 and results["ellipses", "dct"][1] == 0.0
    assert abs(results["smooth", "adaptive"][0] - results["smooth", "dct"][0]) < 0.1
    assert results["smooth", "adaptive"][1] < 0.05


def test_a_piecewise_constant_image_skips_the_later_stages():
    """The whole filter on ellipses: taken as piecewise constant, the NL-Bayes step and the combinations are left
    out, which keeps it above the same filter with the DCT alone; a smooth phantom runs every stage."""
    for clean, expected in ((_ellipses(seed=2), True), (torch.as_tensor(make_phantom((64, 64))), False)):
        noisy = _noisy(clean, 0.05, seed=3)[None, None]
        field, target = estimate_noise_field(noisy[0], 2, "gaussian", level=0.05)
        adaptive = filter_observation(target[None], field, FilterConfig())
        dct = filter_observation(target[None], field, FilterConfig(group_transform="dct"))
        assert adaptive.piecewise_constant is expected and not dct.piecewise_constant
        if expected:
            assert psnr(clean, adaptive.mean[0, 0]) > psnr(clean, dct.mean[0, 0]) + 0.5


def test_the_result_says_when_the_image_is_piecewise_constant(caplog):
    """``denoise`` reports the rule in its info and its log; a smooth image carries no such entry."""
    noisy = _noisy(_ellipses(seed=4), 0.05, seed=5)[None]
    with caplog.at_level("INFO", logger="monai_dnaprior"):
        result = denoise(noisy, noise_model="gaussian", noise_level=0.05)
    assert result.info.get("piecewise_constant") is True and "piecewise constant" in caplog.text
    smooth = _noisy(torch.as_tensor(make_phantom((64, 64))), 0.05, seed=6)[None]
    assert "piecewise_constant" not in denoise(smooth, noise_model="gaussian", noise_level=0.05).info


def test_a_piecewise_constant_image_searches_its_wiener_passes_widely():
    """Taken as piecewise constant, the Wiener passes run again searched as widely as the thresholding pass (long
    edges find their matches far away): on 128x128 ellipses the result beats the narrow search's, which the same
    pipeline returned before (by 0.24 dB here)."""
    clean = _ellipses(n=128, seed=7)
    noisy = _noisy(clean, 0.05, seed=8)[None, None]
    field, target = estimate_noise_field(noisy[0], 2, "gaussian", level=0.05)
    config = FilterConfig()
    wide = filter_observation(target[None], field, config)
    assert wide.piecewise_constant
    passes = filter_passes(config)
    narrow = collaborative_refine(target[None], collaborative_refine(target[None], target[None], 0.05, passes[:1]),
                                  0.05, passes[1:])
    assert psnr(clean, wide.mean[0, 0]) > psnr(clean, narrow[0, 0]) + 0.1

"""Tests of the NL-Bayes step: it denoises, keeps a flat image, is deterministic, the config turns it off, and its
model's posterior variance predicts its error."""

from __future__ import annotations

import pytest
import torch
from conftest import make_phantom, psnr

from monai_dnaprior import FitConfig, NoiseModel, engine, wiener
from monai_dnaprior.denoising import bayes_pass, refinement_passes
from monai_dnaprior.noise import NoiseField, NoiseSpectrum
from monai_dnaprior.filters.nl_bayes import POSTERIOR_INFLATION, BayesPass, bayes_refine, bayes_variance, nl_bayes
from monai_dnaprior.uncertainty import averaged_error
from monai_dnaprior.filters.collaborative import collaborative_refine

SMALL = BayesPass(patch=5, group=24, radius=6, step=3)


def _noisy(clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    return clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))


def _thresholded(noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    """The refinement's own pilot: the hard-thresholding pass."""
    return collaborative_refine(noisy[None, None], noisy[None, None], sigma, refinement_passes(FitConfig())[:1])[0, 0]


def test_nl_bayes_denoises_a_phantom():
    clean = torch.as_tensor(make_phantom((40, 40)))
    noisy = _noisy(clean, 0.1)
    out = nl_bayes(noisy, _thresholded(noisy, 0.1), 0.1, SMALL)
    assert out.shape == clean.shape
    assert psnr(out, clean) > psnr(noisy, clean) + 6


def test_nl_bayes_keeps_a_flat_image_and_a_vanishing_noise():
    flat = torch.full((24, 20), 0.3)
    torch.testing.assert_close(nl_bayes(flat, flat, 0.1, SMALL), flat)
    noisy = torch.rand(19, 17)  # sigma so small that float32 cannot factor C + sigma^2 I: the float64 path
    torch.testing.assert_close(nl_bayes(noisy, noisy, 1e-6, SMALL), noisy, atol=1e-4, rtol=0)


def test_nl_bayes_is_deterministic_and_handles_channels():
    noisy, pilot = torch.rand(1, 2, 20, 18), torch.rand(1, 2, 20, 18)
    before = noisy.clone(), pilot.clone()
    out = bayes_refine(noisy, pilot, 0.1, SMALL)
    torch.testing.assert_close((noisy, pilot), before)
    assert torch.equal(out, bayes_refine(noisy, pilot, 0.1, SMALL))
    torch.testing.assert_close(out[0, 1], nl_bayes(noisy[0, 1], pilot[0, 1], 0.1, SMALL))
    torch.testing.assert_close(bayes_refine(noisy, pilot, 0.0, SMALL), noisy)


def test_nl_bayes_runs_in_3d():
    clean = torch.as_tensor(make_phantom((16, 16, 8)))
    noisy = _noisy(clean, 0.1)
    out = nl_bayes(noisy, clean, 0.1, BayesPass(patch=3, group=16, radius=3, step=2))
    assert psnr(out, clean) > psnr(noisy, clean) + 4


def test_large_images_go_in_slabs(monkeypatch):
    clean = torch.as_tensor(make_phantom((24, 40)))
    noisy = _noisy(clean, 0.1)
    whole = bayes_refine(noisy[None, None], clean[None, None], 0.1, SMALL)[0, 0]
    monkeypatch.setattr(wiener, "_MATCH_TABLE", 1)  # forces slabs of the minimum width
    slabbed = bayes_refine(noisy[None, None], clean[None, None], 0.1, SMALL)[0, 0]
    assert abs(psnr(slabbed, clean) - psnr(whole, clean)) < 0.3


def test_the_step_runs_in_2d_only():
    passes = refinement_passes(FitConfig())
    assert bayes_pass(FitConfig(), passes) == BayesPass(patch=7)
    assert bayes_pass(FitConfig(bayes_patch=0), passes) is None
    assert bayes_pass(FitConfig(), refinement_passes(FitConfig(), 3), 3) is None
    assert bayes_pass(FitConfig(), refinement_passes(FitConfig(), 2, coloured=True)) == BayesPass(patch=7)
    assert bayes_pass(FitConfig(), passes[:1]) is None  # no Wiener pass to average with


def test_coloured_noise_takes_its_correlation():
    """Low-pass noise: the step that knows its correlation beats the one that takes it white, and the Wiener
    passes' result it is piloted by."""
    gen = torch.Generator().manual_seed(3)
    clean = torch.as_tensor(make_phantom((48, 48)))
    kernel = torch.tensor([0.25, 0.5, 0.25])
    noise = torch.randn(48, 48, generator=gen, dtype=torch.float64)
    for dim in (0, 1):
        noise = sum(w * torch.roll(noise, k - 1, dim) for k, w in enumerate(kernel.double()))
    noisy = (clean + 0.08 * noise / noise.std()).float()
    lags = torch.tensor([1 / 6, 2 / 3, 1.0, 2 / 3, 1 / 6])  # the kernel's correlation
    spectrum = NoiseSpectrum(torch.outer(lags, lags))
    field = NoiseField(NoiseModel("gaussian", 0.08), spectrum)
    with_step = engine._refine(noisy[None], None, field, FitConfig(), 0.0)[0][0]
    without = engine._refine(noisy[None], None, field, FitConfig(bayes_patch=0), 0.0)[0][0]
    white = bayes_refine(noisy[None, None], without[None, None], 0.08, BayesPass())[0, 0]
    assert psnr(with_step, clean) > max(psnr(without, clean), psnr(white, clean))


def test_refine_averages_the_step_and_its_error():
    clean = torch.as_tensor(make_phantom((32, 32)))
    noisy = _noisy(clean, 0.1)
    field = NoiseField(NoiseModel("gaussian", 0.1), NoiseSpectrum.white(2))
    off_config = FitConfig(bayes_patch=0)
    off = engine._refine(noisy[None], None, field, off_config, 0.0)
    on = engine._refine(noisy[None], None, field, FitConfig(), 0.0)
    plain = collaborative_refine(noisy[None, None], noisy[None, None], 0.1, refinement_passes(off_config),
                          return_variance=True)
    torch.testing.assert_close(off[0], plain[0][0])  # 0 disables the step: today's result
    torch.testing.assert_close(off[2], plain[1][0])  # and the Wiener pass's error
    assert not torch.allclose(on[0], off[0])
    assert psnr(on[0][0], clean) > psnr(noisy, clean) + 6
    # with the step: the error of the average, the Wiener pass's and the NL-Bayes model's of the result
    step = bayes_variance(on[1][None], 0.1, bayes_pass(FitConfig(), refinement_passes(FitConfig())))[0]
    torch.testing.assert_close(on[2], averaged_error(off[2], step))


def test_posterior_variance_predicts_the_step_error():
    """Given the clean image as its model, the posterior variance is the step's expected squared error: about it on
    a texture, near 0 on a flat region (only the group mean's ``sigma^2 / group``)."""
    generator = torch.Generator().manual_seed(0)
    clean = torch.full((32, 32), 0.5)
    texture = torch.nn.functional.avg_pool2d(torch.randn(1, 1, 32, 32, generator=generator), 3, 1, 1)[0, 0]
    clean[:, 16:] += 0.6 * texture[:, 16:]
    predicted = bayes_variance(clean[None, None], 0.1, SMALL)[0, 0] / POSTERIOR_INFLATION
    actual = torch.stack([(nl_bayes(_noisy(clean, 0.1, seed), clean, 0.1, SMALL) - clean).square()
                          for seed in range(1, 17)]).mean(0)
    flat, textured = (slice(None), slice(2, 14)), (slice(None), slice(18, 30))
    assert 0.7 < float(predicted[textured].mean() / actual[textured].mean()) < 2.0
    assert float(predicted[textured].mean()) > 3 * float(predicted[flat].mean())
    assert float(predicted[flat].mean()) < 0.1 * 0.1**2
    flat_image = torch.full((1, 1, 20, 20), 0.3)
    torch.testing.assert_close(bayes_variance(flat_image, 0.1, SMALL),
                               torch.full_like(flat_image, POSTERIOR_INFLATION * 0.1**2 / SMALL.group))
    assert torch.equal(bayes_variance(flat_image, 0.0, SMALL), torch.zeros_like(flat_image))


@pytest.mark.parametrize("noise_model", ["gaussian", "rician"])
def test_denoise_with_and_without_the_step(noise_model):
    clean = make_phantom((32, 32))
    noisy = _noisy(torch.as_tensor(clean), 0.08).abs()[None]
    on = engine.denoise(noisy, noise_model=noise_model, noise_level=0.08)
    off = engine.denoise(noisy, noise_model=noise_model, noise_level=0.08, config=FitConfig(bayes_patch=0))
    assert torch.equal(on.image, engine.denoise(noisy, noise_model=noise_model, noise_level=0.08).image)
    assert psnr(on.image[0], clean) > psnr(noisy[0], clean) + 5
    assert psnr(on.image[0], clean) > psnr(off.image[0], clean) - 0.3

"""The NL-Bayes step: it denoises, keeps a flat image, zeroes noise where its pilot is 0, is deterministic, runs in 2D only where the config says,
takes coloured noise's correlation, is averaged with the Wiener pass (and its error) by ``filter_observation``, and
its model's posterior variance predicts its error. Its slabs: ``test_collaborative.py``."""

from __future__ import annotations

import pytest
import torch
from conftest import make_phantom, psnr
from monai.networks.layers import GaussianFilter

from monai_dnaprior import FilterConfig, denoise, get_noise_model
from monai_dnaprior.filters import (
    BayesPass,
    bayes_pass,
    bayes_refine,
    bayes_variance,
    collaborative_refine,
    filter_observation,
    filter_passes,
)
from monai_dnaprior.filters.nl_bayes import POSTERIOR_INFLATION, nl_bayes
from monai_dnaprior.noise import NoiseField, NoiseSpectrum
from monai_dnaprior.uncertainty import averaged_error

SMALL = BayesPass(patch=5, group=24, radius=6, step=3)


def _noisy(clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    return clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))


def _thresholded(noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    """The refinement's own pilot: the hard-thresholding pass."""
    return collaborative_refine(noisy[None, None], noisy[None, None], sigma, filter_passes(FilterConfig())[:1])[0, 0]


def test_nl_bayes_denoises_a_phantom():
    clean = torch.as_tensor(make_phantom((40, 40)))
    noisy = _noisy(clean, 0.1)
    out = nl_bayes(noisy, _thresholded(noisy, 0.1), 0.1, SMALL)
    assert out.shape == clean.shape
    assert psnr(out, clean) > psnr(noisy, clean) + 6


def test_nl_bayes_keeps_a_flat_image_and_a_vanishing_noise():
    flat = torch.full((24, 20), 0.3)  # kept, up to the Wiener gain of the group's mean, p^2 / (p^2 + sigma^2 / group)
    torch.testing.assert_close(nl_bayes(flat, flat, 0.1, SMALL), flat * 0.09 / (0.09 + 0.01 / SMALL.group))
    noisy = torch.rand(19, 17)  # sigma so small that float32 cannot factor C + sigma^2 I: the float64 path
    torch.testing.assert_close(nl_bayes(noisy, noisy, 1e-6, SMALL), noisy, atol=1e-4, rtol=0)


def test_nl_bayes_zeroes_noise_where_the_pilot_is_zero():
    """A masked background (exactly 0, white noise over it) whose pilot is 0: the group's mean is shrunk to 0 with the
    rest, where the mean of the noisy patches kept sigma^2 / group of noise (and the shrinkage needs the pilot: with
    a pilot at 1 the mean passes)."""
    noise = _noisy(torch.zeros(30, 30), 0.1)
    torch.testing.assert_close(nl_bayes(noise, torch.zeros_like(noise), 0.1, SMALL), torch.zeros_like(noise))
    lifted = nl_bayes(noise + 1.0, torch.ones_like(noise), 0.1, SMALL) - 1.0
    assert float(lifted.std()) > 0.1 / SMALL.group**0.5 / 2


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


def test_the_step_runs_in_2d_only():
    passes = filter_passes(FilterConfig())
    assert bayes_pass(FilterConfig(), passes) == BayesPass(patch=7)
    assert bayes_pass(FilterConfig(bayes_patch=5), passes) == BayesPass(patch=5)
    assert bayes_pass(FilterConfig(bayes_patch=3), passes) == BayesPass(patch=3, step=3)  # no voxel left out
    assert bayes_pass(FilterConfig(bayes_patch=0), passes) is None
    assert bayes_pass(FilterConfig(), filter_passes(FilterConfig(), 3), 3) is None
    assert bayes_pass(FilterConfig(), filter_passes(FilterConfig(), 2, coloured=True)) == BayesPass(patch=7)
    assert bayes_pass(FilterConfig(), passes[:1]) is None  # no Wiener pass to average with


def _field(image: torch.Tensor, sigma: float, spectrum: NoiseSpectrum) -> NoiseField:
    """Gaussian noise of std ``sigma`` (given, not estimated) with ``spectrum``."""
    return NoiseField(get_noise_model("gaussian", image[None], 2, level=sigma), spectrum)


def test_coloured_noise_over_a_flat_zero_leaves_less_than_its_pilot():
    """Low-pass noise over a background at 0, piloted by its blur (0.018 left of 0.05): the group's mean is shrunk by
    the noise nearby patches share (the mean of the noisy patches kept it: 0.019, more than the pilot), three draws."""
    kernel, lags = torch.tensor([0.25, 0.5, 0.25]), torch.tensor([1 / 6, 2 / 3, 1.0, 2 / 3, 1 / 6])
    spectrum = NoiseSpectrum(torch.outer(lags, lags))
    for seed in range(3):
        noise = torch.randn(96, 96, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        for dim in (0, 1):
            noise = sum(w * torch.roll(noise, k - 1, dim) for k, w in enumerate(kernel.double()))
        noisy = (0.05 * noise / noise.std()).float()[None, None]
        pilot = GaussianFilter(2, 2.0)(noisy)
        out = bayes_refine(noisy, pilot, 0.05, BayesPass(), spectrum)
        assert float(out.square().mean().sqrt()) < 0.85 * float(pilot.square().mean().sqrt())


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
    field = _field(noisy, 0.08, spectrum)
    with_step = filter_observation(noisy[None, None], field, FilterConfig()).mean[0, 0]
    without = filter_observation(noisy[None, None], field, FilterConfig(bayes_patch=0)).mean[0, 0]
    white = bayes_refine(noisy[None, None], without[None, None], 0.08, BayesPass())[0, 0]
    assert psnr(with_step, clean) > max(psnr(without, clean), psnr(white, clean))


def test_refine_averages_the_step_and_its_error():
    clean = torch.as_tensor(make_phantom((32, 32)))
    noisy = _noisy(clean, 0.1)
    field = _field(noisy, 0.1, NoiseSpectrum.white(2))
    observation = noisy[None, None]
    off_config = FilterConfig(bayes_patch=0, ridge_patch=0)  # the step alone, without the combinations after it
    off = filter_observation(observation, field, off_config, with_error=True)
    on = filter_observation(observation, field, FilterConfig(ridge_patch=0), with_error=True)
    plain = collaborative_refine(observation, observation, 0.1, filter_passes(off_config), return_variance=True)
    torch.testing.assert_close(off.mean, plain[0])  # 0 disables the step: the Wiener pass's result
    torch.testing.assert_close(off.variance, plain[1])  # and its error
    step = bayes_refine(observation, _thresholded(noisy, 0.1)[None, None], 0.1, BayesPass(patch=7))
    torch.testing.assert_close(on.mean, 0.5 * (off.mean + step))  # with it: the average, piloted by the threshold
    assert psnr(on.mean[0, 0], clean) > psnr(noisy, clean) + 6
    # and the error of the average, the Wiener pass's and the NL-Bayes model's of the result
    step_error = bayes_variance(on.mean, 0.1, BayesPass(patch=7))
    torch.testing.assert_close(on.variance, averaged_error(off.variance, step_error))
    assert filter_observation(observation, field, FilterConfig()).variance is None  # the error only when asked


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
    on = denoise(noisy, noise_model=noise_model, noise_level=0.08)
    off = denoise(noisy, noise_model=noise_model, noise_level=0.08, filter_config=FilterConfig(bayes_patch=0))
    assert torch.equal(on.image, denoise(noisy, noise_model=noise_model, noise_level=0.08).image)
    assert not torch.allclose(on.image, off.image)
    assert psnr(on.image[0], clean) > psnr(noisy[0], clean) + 5
    assert psnr(on.image[0], clean) > psnr(off.image[0], clean) - 0.3

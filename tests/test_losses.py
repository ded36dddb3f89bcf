"""Spectral fidelity (Parseval, the amplitude/phase split, frequency weighting) and total variation."""

from __future__ import annotations

import math

import pytest
import torch

from monai_dnaprior import SpectralFidelity, radial_frequency, spatial_fft, total_variation

SHAPES = {2: (2, 3, 12, 9), 3: (1, 2, 6, 5, 7)}  # (B, C, *spatial), odd sizes on purpose


def _pair(spatial_dims: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(spatial_dims)
    shape = SHAPES[spatial_dims]
    return torch.rand(shape, generator=g, dtype=dtype), torch.rand(shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_spatial_fft_is_orthonormal(spatial_dims):
    x, _ = _pair(spatial_dims)
    spectrum = spatial_fft(x, spatial_dims)
    assert spectrum.shape == x.shape and spectrum.is_complex()
    torch.testing.assert_close(spectrum.abs().square().sum(), x.square().sum())  # Parseval
    torch.testing.assert_close(spectrum, torch.fft.fftn(x, dim=tuple(range(-spatial_dims, 0)), norm="ortho"))


def test_spatial_fft_promotes_half_precision():
    x = torch.rand(1, 1, 8, 8).half()
    assert spatial_fft(x, 2).dtype == torch.complex64


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equal_weights_no_frequency_weighting_is_pixel_mse(spatial_dims, dtype):
    x, y = _pair(spatial_dims, dtype)
    loss = SpectralFidelity(spatial_dims, amplitude_weight=1.0, phase_weight=1.0, frequency_power=0.0)(x, y)
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(x, y))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_amplitude_phase_split_sums_to_the_complex_error(spatial_dims):
    """|X - Y|^2 = (|X| - |Y|)^2 + 2|X||Y|(1 - cos dphi), computed through the split branch."""
    x, y = _pair(spatial_dims)
    mse = torch.nn.functional.mse_loss(x, y)
    split = SpectralFidelity(spatial_dims, amplitude_weight=1.0, phase_weight=1.0 + 1e-12)(x, y)
    torch.testing.assert_close(split, mse, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_loss_is_linear_in_the_two_weights(spatial_dims):
    x, y = _pair(spatial_dims)
    amplitude = SpectralFidelity(spatial_dims, amplitude_weight=1.0, phase_weight=0.0)(x, y)
    phase = SpectralFidelity(spatial_dims, amplitude_weight=0.0, phase_weight=1.0)(x, y)
    assert amplitude > 0 and phase > 0
    torch.testing.assert_close(amplitude + phase, torch.nn.functional.mse_loss(x, y))
    for a, p in [(2.0, 0.5), (0.3, 3.0)]:
        torch.testing.assert_close(SpectralFidelity(spatial_dims, a, p)(x, y), a * amplitude + p * phase)


def test_phase_term_sees_a_shift_the_amplitude_term_does_not():
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    shifted = torch.roll(x, shifts=3, dims=-1)  # a circular shift changes only the phase of the spectrum
    assert float(SpectralFidelity(2, amplitude_weight=1.0, phase_weight=0.0)(shifted, x)) < 1e-20
    assert float(SpectralFidelity(2, amplitude_weight=0.0, phase_weight=1.0)(shifted, x)) > 1e-3


def test_identical_inputs_give_zero_loss_in_every_branch():
    x, _ = _pair(2)
    for weights in [(1.0, 1.0), (1.0, 2.0), (0.5, 0.0)]:
        for power in (0.0, 1.5):
            # the split branch's cosine carries eps in its denominator: zero up to ~2 * eps * phase_weight
            assert float(SpectralFidelity(2, *weights, frequency_power=power)(x, x)) == pytest.approx(0.0, abs=1e-6)


def test_loss_is_differentiable_through_the_split_branch():
    x, y = _pair(2)
    x.requires_grad_(True)
    SpectralFidelity(2, amplitude_weight=1.0, phase_weight=0.5, frequency_power=1.0)(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_frequency_weighting_has_mean_one_and_trusts_low_frequencies(spatial_dims):
    shape = (1, 1) + SHAPES[spatial_dims][2:]
    numel = math.prod(shape)
    zero = torch.zeros(shape, dtype=torch.float64)
    weighted = SpectralFidelity(spatial_dims, frequency_power=2.0)
    plain = SpectralFidelity(spatial_dims)
    # an impulse has a flat spectrum |X_k|^2 = 1/N: the weighted loss is mean(weight)/N, so mean weight 1 keeps it
    impulse = zero.clone()
    impulse[(0, 0) + (0,) * spatial_dims] = 1.0
    torch.testing.assert_close(weighted(impulse, zero), plain(impulse, zero))
    torch.testing.assert_close(plain(impulse, zero), torch.tensor(1.0 / numel, dtype=torch.float64))
    # a constant offset lives at DC only (weighted up), a random image spreads over all bins: values change
    offset = zero + 0.5
    assert weighted(offset, zero) > 1.5 * plain(offset, zero)
    x, y = _pair(spatial_dims)
    assert not torch.isclose(weighted(x, y), plain(x, y))
    # a checkerboard is the Nyquist corner, the highest frequency: weighted down
    even = (1, 1) + (8, 6, 4)[:spatial_dims]
    index = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in even[2:]], indexing="ij")
    checker, nothing = ((-1.0) ** sum(index)).reshape(even), torch.zeros(even, dtype=torch.float64)
    assert weighted(checker, nothing) < 0.8 * plain(checker, nothing)


def test_radial_frequency_grid():
    r = radial_frequency((8, 6))
    assert r.shape == (8, 6)
    assert float(r[0, 0]) == 0.0
    assert float(r[4, 3]) == pytest.approx(1.0)  # Nyquist along both axes
    assert float(r.max()) == pytest.approx(1.0)
    assert float(r[4, 0]) == pytest.approx(math.sqrt(0.5))
    assert radial_frequency((4, 4, 4)).shape == (4, 4, 4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_tv_of_a_constant_is_zero(spatial_dims, reduction):
    x = torch.full(SHAPES[spatial_dims], 0.7)
    assert float(total_variation(x, spatial_dims, reduction=reduction)) == 0.0


@pytest.mark.parametrize("eps", [1e-3, 0.1])
def test_tv_of_a_unit_step_2d(eps):
    n, width = 7, 10
    x = torch.zeros(1, 1, n, width, dtype=torch.float64)
    x[..., width // 2 :] = 1.0  # a unit step between two columns, across all n rows
    expected = n * (math.sqrt(1 + eps**2) - eps)
    assert float(total_variation(x, 2, eps=eps, reduction="sum")) == pytest.approx(expected, rel=1e-12)
    assert float(total_variation(x, 2, eps=eps, reduction="mean")) == pytest.approx(expected / (n * width), rel=1e-12)
    # the same step along the other axis
    assert float(total_variation(x.transpose(-1, -2), 2, eps=eps, reduction="sum")) == pytest.approx(expected)


def test_tv_of_a_unit_step_3d():
    eps = 1e-3
    x = torch.zeros(2, 1, 5, 6, 4, dtype=torch.float64)
    x[..., 3:, :, :] = 1.0  # step along the first spatial axis: 6 * 4 crossings per image, 2 images
    expected = 2 * 6 * 4 * (math.sqrt(1 + eps**2) - eps)
    assert float(total_variation(x, 3, eps=eps, reduction="sum")) == pytest.approx(expected, rel=1e-12)


def test_tv_is_isotropic_not_anisotropic():
    eps = 1e-6
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    x[0, 0, 0, 0] = 1.0  # forward differences: only this voxel has a gradient, (-1, -1): sqrt(2), not 2
    assert float(total_variation(x, 2, eps=eps, reduction="sum")) == pytest.approx(math.sqrt(2), rel=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_tv_sum_is_mean_times_voxels(spatial_dims):
    x, _ = _pair(spatial_dims)
    total = total_variation(x, spatial_dims, reduction="sum")
    torch.testing.assert_close(total, total_variation(x, spatial_dims, reduction="mean") * x.numel())
    assert float(total_variation(x, spatial_dims)) == pytest.approx(float(total) / x.numel())  # default: mean


def test_tv_grows_with_noise_and_is_differentiable():
    x = torch.linspace(0, 1, 16, dtype=torch.float64).expand(1, 1, 16, 16).clone()
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert total_variation(noisy, 2) > 2 * total_variation(x, 2)
    noisy.requires_grad_(True)
    total_variation(noisy, 2).backward()
    assert torch.isfinite(noisy.grad).all() and noisy.grad.abs().sum() > 0


@pytest.mark.parametrize("reduction", ["none", "max", "", None])
def test_tv_invalid_reduction_raises(reduction):
    with pytest.raises(ValueError, match="reduction"):
        total_variation(torch.rand(1, 1, 4, 4), 2, reduction=reduction)

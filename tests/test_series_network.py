"""Series mode's network and its SURE blend: the prediction never sees a volume's own value at the voxel (J-invariant),
it predicts the clean series, the fit is deterministic for a seed, the MC divergence and SURE's weight are right on
estimates whose answer is known, and the series path reports the weight it chose."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from conftest import make_series

from monai_dnaprior import denoise
from monai_dnaprior.series.network import SeriesNetConfig, VolumePredictor, shell_means
from monai_dnaprior.series.sure import rademacher, sure_blend_weight, weighted_divergence

FAST = SeriesNetConfig(hidden=16, steps=60, batch=512)


_series = partial(make_series, channels=8, shape=(12, 12, 6))


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).square().mean())


def test_shell_means_leave_the_voxel_out():
    x = torch.zeros(1, 9, 9, 9)
    x[0, 4, 4, 4] = 1.0
    near, wide = shell_means(x)
    assert float(near[0, 4, 4, 4]) == 0.0 and float(wide[0, 4, 4, 4]) == 0.0
    assert float(near[0, 3, 4, 4]) == pytest.approx(1 / 26) and float(wide[0, 2, 4, 4]) == pytest.approx(1 / 98)
    x = torch.zeros(1, 9, 9, 9)
    x[0, 3, 4, 4] = 1.0
    assert float(shell_means(x)[1][0, 1, 4, 4]) == pytest.approx(1 / 73)  # at an edge: the 73 inside the image
    edge = torch.zeros(1, 5, 5, 5)
    edge[0, 0, 0, 0] = 1.0
    near, wide = shell_means(edge)
    assert float(near[0, 0, 0, 0]) == 0.0 and float(wide[0, 0, 0, 0]) == 0.0  # never its own value, even at a corner
    assert float(near[0, 0, 0, 1]) == pytest.approx(1 / 11)


def test_prediction_never_sees_the_volumes_own_value():
    _, noisy = _series()
    predictor = VolumePredictor(FAST).fit(noisy)
    before = predictor(noisy)
    changed = noisy.clone()
    changed[3, 6, 6, 3] += 5.0
    after = predictor(changed)
    assert float(after[3, 6, 6, 3]) == float(before[3, 6, 6, 3])  # its own value: not seen
    assert float((after[:, 6, 6, 3] - before[:, 6, 6, 3]).abs().max()) > 0  # the other volumes see it
    assert float((after[3, 5, 6, 3] - before[3, 5, 6, 3]).abs()) > 0  # and its neighbours
    corner = noisy.clone()
    corner[2, 0, 0, 0] += 5.0
    assert float(predictor(corner)[2, 0, 0, 0]) == float(before[2, 0, 0, 0])  # at the edge too


def test_prediction_is_closer_to_the_clean_series_than_the_noise():
    clean, noisy = _series(sigma=0.08)
    guess = VolumePredictor(SeriesNetConfig(hidden=32, steps=150, batch=1024)).fit(noisy)(noisy)
    assert _mse(guess, clean) < 0.5 * _mse(noisy, clean)


def test_fit_is_deterministic_for_a_seed_and_works_in_2d():
    _, noisy = _series(shape=(16, 16))
    state = torch.random.get_rng_state()
    a = VolumePredictor(FAST).fit(noisy)(noisy)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is left alone
    b = VolumePredictor(FAST).fit(noisy)(noisy)
    c = VolumePredictor(SeriesNetConfig(hidden=16, steps=60, batch=512, seed=1)).fit(noisy)(noisy)
    assert a.shape == noisy.shape and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(RuntimeError, match="fit"):
        VolumePredictor(FAST)(noisy)


def test_divergence_of_a_scaling_and_sure_weight():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 10, 10, 10, generator=g)
    variance = torch.full((10, 10, 10), 0.01)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    probe = rademacher(noisy, 3)
    assert set(probe.unique().tolist()) == {-1.0, 1.0}
    # g(t) = 0.7 t: the divergence is 0.7 sum sigma^2, exactly
    div = weighted_divergence(0.7 * noisy, 0.7 * (noisy + 0.01 * probe), probe, 0.01, variance)
    assert div == pytest.approx(0.7 * 0.01 * noisy.numel(), rel=1e-3)
    # the clean series (divergence 0) against the noisy one (divergence sum sigma^2): SURE keeps the clean
    assert sure_blend_weight(noisy, clean, noisy, 0.0, 0.01 * noisy.numel()) < 0.05
    assert sure_blend_weight(noisy, noisy, clean, 0.01 * noisy.numel(), 0.0) > 0.95
    # two independent noisy copies' average is best: each alone has the noise, their mean half of it
    other = clean + 0.1 * torch.randn(clean.shape, generator=g)
    weight = sure_blend_weight(noisy, noisy, other, 0.01 * noisy.numel(), 0.0)
    assert 0.35 < weight < 0.65


def test_series_mode_reports_the_network_weight():
    clean, noisy = _series(channels=10, shape=(16, 16, 8))
    out = denoise(noisy, noise_model="gaussian", series=True)
    assert 0.0 <= out.info["network_weight"] <= 1.0
    assert _mse(out.image, clean) < 0.25 * _mse(noisy, clean)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_network_runs_on_the_series_device():
    _, noisy = _series()
    guess = VolumePredictor(FAST).fit(noisy.cuda())(noisy.cuda())
    assert guess.device.type == "cuda" and guess.shape == noisy.shape

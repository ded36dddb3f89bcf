"""Series mode: MP-PCA's Marchenko-Pastur split, the series path against the per-volume path on a series with a known
clean image, the option's checks, the transforms and the bundle's settings, determinism and progress."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from conftest import make_series

from monai_dnaprior import DNAPriorDenoise, DNAPriorDenoised, denoise
from monai_dnaprior.series import (
    SERIES_MIN_CHANNELS,
    SMALL_SERIES_VALUES,
    marchenko_pastur_split,
    mppca,
    mppca_step,
    optimal_shrinkage,
    series_wiener,
    use_series,
)
from monai_dnaprior.series.patches import PatchGrid


_series = partial(make_series, channels=12, shape=(16, 16, 8))


def _psnr(clean: torch.Tensor, x: torch.Tensor) -> float:
    return float(10 * torch.log10(clean.max() ** 2 / (x - clean).square().mean()))


def test_marchenko_pastur_split_finds_the_signal_rank():
    g = torch.Generator().manual_seed(1)
    samples, channels, rank, sigma = 400, 20, 3, 0.1
    noise = sigma * torch.randn(samples, channels, generator=g, dtype=torch.float64)
    signal = torch.randn(samples, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, channels, generator=g,
                                                                                        dtype=torch.float64)
    eigenvalues = []
    for x in (noise, noise + signal):
        c = x - x.mean(0)
        eigenvalues.append(torch.linalg.eigvalsh(c.T @ c / samples))
    count, variance = marchenko_pastur_split(torch.stack(eigenvalues), samples)
    assert int(count[0]) == channels  # pure noise: every component is noise
    assert channels - rank - 1 <= int(count[1]) <= channels - rank  # the signal's 3 kept (and at most one more)
    assert variance[0] == pytest.approx(sigma**2, rel=0.15) and variance[1] == pytest.approx(sigma**2, rel=0.2)


def test_optimal_shrinkage_beats_the_hard_cut():
    g = torch.Generator().manual_seed(2)
    samples, channels, sigma = 125, 27, 0.1
    strength = torch.tensor([0.05, 0.08, 0.15, 0.5], dtype=torch.float64)  # near the bulk's edge and well above
    basis = torch.linalg.qr(torch.randn(channels, 4, generator=g, dtype=torch.float64))[0]
    errors = {"cut": 0.0, "shrunk": 0.0}
    for _ in range(20):
        signal = torch.randn(samples, 4, generator=g, dtype=torch.float64) * strength @ basis.T
        noisy = signal + sigma * torch.randn(samples, channels, generator=g, dtype=torch.float64)
        centred = noisy - noisy.mean(0)
        eigenvalues, vectors = torch.linalg.eigh(centred.T @ centred / samples)
        count, variance = marchenko_pastur_split(eigenvalues[None], samples)
        keep = (torch.arange(channels) >= count).to(torch.float64)
        factor = optimal_shrinkage(eigenvalues[None], variance, samples)[0]
        for name, weights in (("cut", keep), ("shrunk", keep * factor)):
            estimate = centred @ (vectors * weights) @ vectors.T + noisy.mean(0)
            errors[name] += float((estimate - signal).square().sum())
    assert errors["shrunk"] < 0.9 * errors["cut"]
    edge = sigma**2 * (1 + (channels / samples) ** 0.5) ** 2
    eigenvalues = torch.full((1, channels), 0.5 * edge, dtype=torch.float64)
    eigenvalues[0, -3:] = torch.tensor([0.99 * edge, 1.5 * edge, 100 * edge])
    factors = optimal_shrinkage(eigenvalues, torch.tensor([sigma**2], dtype=torch.float64), samples)[0, -4:]
    assert factors[0] == 0 and factors[1] == 0  # the noise bulk is cut
    assert 0 < factors[2] < factors[3] < 1 and factors[3] > 0.95  # a strong component is almost kept


def test_mppca_step_by_preset_and_size():
    small = (20, 16, 16, 8)
    large = (30, 64, 64, 24)
    assert 20 * 16 * 16 * 8 <= SMALL_SERIES_VALUES < 30 * 64 * 64 * 24
    assert mppca_step(small, "default") == 1 and mppca_step(small, "fast") == 1
    assert mppca_step(large, "default") == 2 and mppca_step(large, "fast") == 2
    assert mppca_step(large, "quality") == 1
    with pytest.raises(ValueError, match="quality"):
        mppca_step(small, "best")


def test_quality_weighs_a_wider_patch_by_sure():
    clean, noisy = make_series(channels=24, shape=(20, 20, 10), sigma=0.08)
    default = denoise(noisy, noise_model="gaussian", prior="filter")
    quality = denoise(noisy, noise_model="gaussian", prior="filter", preset="quality")
    assert "patch_risks" not in default.info and len(quality.info["patch_risks"]) == 2
    errors = {}
    for sides in ((5, 5, 5), (7, 7, 7)):  # the classical path at each candidate, against the clean series
        pilot, variance = mppca(noisy, sides, 1)
        errors[sides] = float((series_wiener(noisy, pilot, variance, (4, 4, 4), 2) - clean).square().sum())
    chosen = quality.info["patch"]
    assert chosen in errors and errors[chosen] == min(errors.values())  # SURE chose the better patch
    again = denoise(noisy, noise_model="gaussian", prior="filter", preset="quality")
    assert torch.equal(quality.image, again.image)


def test_patch_grid_covers_every_voxel_once_averaged():
    x = torch.rand(3, 7, 9, 5)
    grid = PatchGrid(x.shape[1:], (4, 4, 4), 3)
    sums, weights = grid.new_sums(3, x)
    for index in grid.chunks():
        grid.add(sums, weights, index, grid.gather(x, index), torch.ones(index.shape[0]))
    assert bool((weights > 0).all())
    torch.testing.assert_close(grid.average(sums, weights), x)


def test_mppca_denoises_and_maps_the_noise():
    clean, noisy = _series()
    out, variance = mppca(noisy, (5, 5, 5), 2)
    assert _psnr(clean, out) > _psnr(clean, noisy) + 4
    assert float(variance.sqrt().median()) == pytest.approx(0.05, rel=0.25)


def test_series_beats_the_per_volume_path():
    clean, noisy = _series()
    together = denoise(noisy, noise_model="gaussian", series=True)
    apart = denoise(noisy, noise_model="gaussian", series=False)
    assert together.info["series"] and not apart.info.get("series", False)
    assert _psnr(clean, together.image) > _psnr(clean, apart.image) + 1.0
    assert _psnr(clean, together.image) > _psnr(clean, noisy) + 5.0


def test_rician_series_removes_the_magnitude_bias():
    clean, noisy = _series(sigma=0.06)
    g = torch.Generator().manual_seed(3)
    magnitude = torch.hypot(noisy, 0.06 * torch.randn(noisy.shape, generator=g))
    out = denoise(magnitude, noise_model="rician", series=True)
    assert out.info["noise_model"] == "rician"
    assert abs(float((out.image - clean).mean())) < 0.5 * abs(float((magnitude - clean).mean()))


def test_series_none_decides_from_the_channels():
    _, noisy = _series(channels=SERIES_MIN_CHANNELS)
    assert denoise(noisy, noise_model="gaussian").info.get("series") is True
    few = noisy[: SERIES_MIN_CHANNELS - 1]
    assert use_series(None, tuple(few.shape), False, "auto") is False
    with pytest.warns(UserWarning, match="noise_psd.*series=False"):
        assert use_series(None, tuple(noisy.shape), True, "auto") is False  # a given PSD: per channel
    with pytest.warns(UserWarning, match="prior='network'"):
        assert use_series(None, tuple(noisy.shape), False, "network") is False
    assert use_series(None, tuple(noisy.shape), False, "filter") is True


@pytest.mark.parametrize("prior", ["auto", "filter"])
def test_series_uncertainty_map_predicts_the_error(prior):
    """The series' map (the Wiener passes' closed-form error, blended as the passes are) is near the actual error,
    ranks it over 4x4 blocks of each slice of each volume, and leaves the image as it is without the map."""
    clean, noisy = _series()
    result = denoise(noisy, noise_model="gaussian", uncertainty=True, prior=prior)
    assert result.info["series"] and result.uncertainty.shape == noisy.shape
    torch.testing.assert_close(result.image, denoise(noisy, noise_model="gaussian", prior=prior).image, rtol=0,
                               atol=0)
    error = (result.image - clean).square()
    calibration = float(result.uncertainty.square().mean().sqrt() / error.mean().sqrt())
    assert 0.75 < calibration < 1.33

    def blocks(x: torch.Tensor) -> torch.Tensor:  # RMS over 4x4 in-plane blocks, per slice and volume
        return torch.nn.functional.avg_pool2d(x.permute(0, 3, 1, 2).reshape(-1, 1, *x.shape[1:3]), 4).flatten()

    predicted, actual = blocks(result.uncertainty.square()), blocks(error)
    ranks = [v.argsort().argsort().double() for v in (predicted, actual)]
    assert float(torch.corrcoef(torch.stack(ranks))[0, 1]) > 0.6


def test_series_filter_prior_leaves_the_network_out():
    clean, noisy = _series()
    classical = denoise(noisy, noise_model="gaussian", prior="filter")
    blended = denoise(noisy, noise_model="gaussian")
    assert classical.info["series"] and classical.info["prior"] == "series filter"
    assert "network_weight" not in classical.info and blended.info["prior"] == "series"
    assert _psnr(clean, classical.image) > _psnr(clean, noisy) + 5.0
    assert blended.info["network_weight"] > 0.1  # the network takes part in the blend here, so the results differ
    assert float((classical.image - blended.image).abs().max()) > 1e-3
    assert classical.info["mppca_step"] == 1  # a small series: MP-PCA's patches at every voxel
    with pytest.raises(ValueError, match="prior='filter'"):
        denoise(noisy, series=True, prior="network")


@pytest.mark.parametrize("bad", ["auto", 1, "yes"])
def test_series_must_be_a_bool_or_none(bad):
    with pytest.raises(TypeError, match="series must be True"):
        DNAPriorDenoise(series=bad)
    with pytest.raises(TypeError, match="series must be True"):
        denoise(torch.rand(2, 8, 8), series=bad)


def test_series_true_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="1 channel.*series=False"):
        denoise(torch.rand(1, 16, 16, 8), series=True)
    _, noisy = _series()
    with pytest.raises(ValueError, match="noise_psd"):
        denoise(noisy, series=True, noise_psd=torch.full(noisy.shape[1:], 0.01))
    with pytest.raises(ValueError, match="fewer than"):
        denoise(torch.rand(40, 3, 3, 2), series=True)


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
def test_transform_keeps_type_shape_and_is_deterministic(kind):
    _, noisy = _series(channels=10)
    img = {"numpy": noisy.numpy(), "torch": noisy, "meta": MetaTensor(noisy, meta={"filename_or_obj": "s.nii"})}[kind]
    t = DNAPriorDenoise(series=True)
    a, b = t(img), t(img)
    assert isinstance(a, type(img)) and tuple(a.shape) == tuple(noisy.shape)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if kind == "meta":
        assert a.meta["filename_or_obj"] == "s.nii"


def test_transform_passes_its_preset_to_the_series_mode():
    _, noisy = make_series(channels=12, shape=(24, 24, 40), sigma=0.05)  # above SMALL_SERIES_VALUES: step 2 by default
    quality = DNAPriorDenoise(series=True, prior="filter", preset="quality")(noisy)
    expected = denoise(noisy, series=True, prior="filter", preset="quality")
    assert expected.info["mppca_step"] == 1 and "patch_risks" in expected.info
    torch.testing.assert_close(quality, expected.image, rtol=0, atol=0)
    default = DNAPriorDenoise(series=True, prior="filter")(noisy)
    assert float((default - quality).abs().max()) > 0


def test_dictionary_transform_and_progress():
    from monai_dnaprior.progress import reporting_progress

    clean, noisy = _series(channels=10)
    seen = []
    with reporting_progress(lambda done, total: seen.append((done, total))):
        out = DNAPriorDenoised("image", series=True)({"image": noisy.numpy()})["image"]
    assert _psnr(clean, torch.as_tensor(out)) > _psnr(clean, noisy) + 4
    assert seen and seen[-1][0] == seen[-1][1] and len(seen) > 3
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))


def test_two_dimensional_series():
    clean, noisy = _series(channels=12, shape=(32, 32))
    out = denoise(noisy, noise_model="gaussian", series=True)
    assert _psnr(clean, out.image) > _psnr(clean, noisy) + 4


@pytest.mark.parametrize("value,expected", [(None, None), ("null", None), ("auto", None), ("true", True),
                                            (True, True), ("false", False), (0, False)])
def test_bundle_series_setting(value, expected):
    from monai_dnaprior.bundle.checks import as_series, check_settings

    assert as_series(value) is expected
    assert check_settings(series=value, exit_on_error=False)


def test_bundle_refuses_a_bad_series_setting():
    from monai_dnaprior.bundle.checks import check_settings

    with pytest.raises(ValueError, match="series must be true"):
        check_settings(series="maybe", exit_on_error=False)


def test_bundle_config_passes_series_to_the_transform():
    import json
    from pathlib import Path

    config = json.loads((Path(__file__).resolve().parents[1] / "bundle/configs/inference.json").read_text())
    assert config["series"] is None
    denoiser = [t for t in config["preprocessing"]["transforms"] if t["_target_"].endswith("DNAPriorDenoised")][0]
    assert "@series" in denoiser["series"]

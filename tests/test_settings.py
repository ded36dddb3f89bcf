"""The settings: the options as StrEnums, the filter's and the network's configs, the presets (ordered budgets,
the same kind of result from each), ``preset_settings`` and ``resolve_prior``."""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError, fields

import numpy as np
import pytest
from conftest import NOISE_MODEL_NAMES, noisy_phantom, psnr

from monai_dnaprior import (
    PRESETS,
    DNAPriorDenoise,
    FilterConfig,
    NetworkConfig,
    NoiseModelName,
    Preset,
    Prior,
    VolumeMode,
    preset_settings,
)
from monai_dnaprior.filters.pipeline import filter_passes
from monai_dnaprior.settings import NETWORK_SETTINGS, resolve_prior

ORDER = ("fast", "default", "quality")


# ---------------------------------------------------------------------------------------------------- options


def test_the_options_are_string_enums():
    assert [str(m) for m in Prior] == ["auto", "filter", "network", "network+filter"]
    assert [str(m) for m in Preset] == list(ORDER)
    assert [str(m) for m in VolumeMode] == ["auto", "slices", "volume"]
    assert [str(m) for m in NoiseModelName] == ["auto", *NOISE_MODEL_NAMES]
    assert NOISE_MODEL_NAMES == ["gaussian", "poisson", "rician", "speckle"]
    assert Prior.NETWORK_FILTER == "network+filter" and Preset("fast") is Preset.FAST


@pytest.mark.parametrize("prior, runs", [("auto", Prior.FILTER), ("filter", Prior.FILTER),
                                         ("network", Prior.NETWORK), (Prior.NETWORK_FILTER, Prior.NETWORK_FILTER)])
def test_resolve_prior(prior, runs):
    assert resolve_prior(prior) is runs


def test_resolve_prior_refuses_an_unknown_prior():
    with pytest.raises(ValueError, match="network"):
        resolve_prior("dip")


# ---------------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("config", [FilterConfig(), NetworkConfig(), FilterConfig(patch=6), NetworkConfig(lr=0.1)])
def test_configs_are_frozen_hashable_and_pickle(config):
    assert pickle.loads(pickle.dumps(config)) == config
    assert hash(config) == hash(pickle.loads(pickle.dumps(config)))
    with pytest.raises(FrozenInstanceError):
        config.__setattr__(fields(config)[0].name, 1)


def test_network_settings_are_the_network_configs_fields():
    assert NETWORK_SETTINGS == {f.name for f in fields(NetworkConfig)}
    assert not NETWORK_SETTINGS & {f.name for f in fields(FilterConfig)}  # no setting is in both


def test_the_defaults_are_the_measured_ones():
    """The README's numbers: BM3D's threshold 2.7, one Wiener pass, the NL-Bayes step; 150 iterations."""
    config = FilterConfig()
    assert (config.threshold, config.wiener_passes, config.bayes_patch, config.match_step) == (2.7, 1, 7, 3)
    assert NetworkConfig().max_iters == 150 and NetworkConfig().volume_mode == VolumeMode.AUTO


# ---------------------------------------------------------------------------------------------------- presets


def test_every_preset_is_a_filter_and_a_network_config():
    assert set(PRESETS) == set(ORDER)
    for filter_config, network_config in PRESETS.values():
        assert isinstance(filter_config, FilterConfig) and isinstance(network_config, NetworkConfig)
    assert PRESETS["default"] == (FilterConfig(), NetworkConfig())


def test_presets_spend_more_in_order():
    """The filter's reference step 4, 3, 2 px; the network's budget 60, 150, 400 iterations, and its width."""
    filters = [PRESETS[name][0] for name in ORDER]
    networks = [PRESETS[name][1] for name in ORDER]
    assert [f.match_step for f in filters] == [4, 3, 2]
    assert [n.max_iters for n in networks] == [60, 150, 400]
    for cheaper, dearer in zip(networks, networks[1:]):
        assert cheaper.min_iters < dearer.min_iters and sum(cheaper.channels) <= sum(dearer.channels)


def test_preset_settings_apply_each_override_to_its_config():
    filter_config, network_config = preset_settings("fast", match_step=5, max_iters=7, tv_scale=None, seed=None)
    assert filter_config == FilterConfig(match_step=5, ridge_patch=0, ridge_volume_patch=0)  # 5 replaced the preset's 4
    assert network_config == NetworkConfig(max_iters=7, min_iters=40)  # None keeps the preset's
    assert preset_settings() == PRESETS["default"]
    assert preset_settings(Preset.QUALITY) == PRESETS["quality"]


@pytest.mark.parametrize("kwargs, match", [({"preset": "turbo"}, "fast"), ({"max_iter": 5}, "max_iters")])
def test_preset_settings_refuses_unknown_names_naming_the_closest(kwargs, match):
    with pytest.raises(ValueError, match=match):
        preset_settings(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(match_step=9), r"match_step=9 is longer than the patch it steps over \(patch=8\)"),
        (dict(ridge_patch=5), r"ridge_step=6 is longer .*\(ridge_patch=5\).* Pass ridge_step <= 5"),
        (dict(ridge_volume_step=5), r"ridge_volume_step=5 is longer .*ridge_volume_patch=4"),
        (dict(match_group=0), r"match_group=0: pass a number above 0"),
        (dict(match_radius=-3), r"match_radius=-3: pass a number 0 or more"),
        (dict(coloured_pilot_blur=float("nan")), r"coloured_pilot_blur=nan"),
    ],
)
def test_filter_config_refuses_steps_that_leave_voxels_unfiltered(kwargs, match):
    """A reference step longer than its patch left voxels no patch covers: NaN in the output, or a failed
    factorisation in the next step (found with ``ridge_patch=5``); the preset route raises the same."""
    with pytest.raises(ValueError, match=match):
        FilterConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        preset_settings("default", **kwargs)


def test_steps_within_their_patches_are_accepted():
    assert FilterConfig(ridge_patch=5, ridge_step=5).ridge_step == 5
    assert FilterConfig(ridge_patch=0, ridge_step=9).ridge_step == 9  # the stage is off: its step is not used
    assert FilterConfig(ridge_volume_patch=0, ridge_volume_step=9).ridge_volume_step == 9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_iters=0), r"NetworkConfig.max_iters=0: pass a number above 0"),
        (dict(lr=-1.0), r"lr=-1.0: pass a number above 0"),
        (dict(ema_decay=1.5), r"ema_decay=1.5: pass a number below 1"),
        (dict(channels=()), r"channels=\(\): pass one positive channel count per level"),
        (dict(channels=(16, 0)), r"channels=\(16, 0\)"),
        (dict(tv_scale=-0.1), r"tv_scale=-0.1: pass a number 0 or more"),
        (dict(backtrack_factor=1.0), r"backtrack_factor=1.0: pass a number above 1"),
        (dict(warm_iters_fraction=2.0), r"warm_iters_fraction=2.0: pass a number at most 1"),
    ],
)
def test_network_config_refuses_settings_that_fit_nothing(kwargs, match):
    """Before, ``max_iters=0`` returned the untrained network's output as the image, ``ema_decay=1.5`` an average
    that grows without bound, and ``channels=()`` an IndexError."""
    with pytest.raises(ValueError, match=match):
        NetworkConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        preset_settings("default", **kwargs)
    assert NetworkConfig(max_iters=7, min_iters=40).max_iters == 7  # a cap under min_iters stays allowed
    assert NetworkConfig(channels=(np.int64(8), 16)).channels[0] == 8


def test_a_volume_refuses_a_step_longer_than_its_cube():
    with pytest.raises(ValueError, match=r"match_step=5 is longer .*\(volume_patch=4\)"):
        filter_passes(FilterConfig(match_step=5), 3)
    with pytest.raises(ValueError, match=r"match_step=5 .*volume_patch=4"):
        filter_passes(FilterConfig(match_step=5), 3, coloured=True)
    assert len(filter_passes(FilterConfig(match_step=5), 2)) == 2  # 8x8 patches in 2D: fine


@pytest.fixture(scope="module")
def outputs():
    clean, noisy = noisy_phantom((32, 32))
    denoised = {name: np.asarray(DNAPriorDenoise(preset=name)(noisy)) for name in ORDER}
    return clean, noisy, denoised



@pytest.mark.parametrize("name", ORDER)
def test_every_preset_denoises(outputs, name):
    clean, noisy, denoised = outputs
    out = denoised[name]
    assert out.shape == noisy.shape and out.dtype == noisy.dtype
    assert psnr(out, clean) > psnr(noisy, clean) + 6


def test_presets_agree_with_each_other(outputs):
    """The same image from every preset: the outputs differ (``test_options.py``), but far less than any of them
    differs from the noisy input."""
    _, noisy, denoised = outputs
    noise_rms = float(np.sqrt(np.mean((noisy - denoised["default"]) ** 2)))
    for name in ("fast", "quality"):
        gap = float(np.sqrt(np.mean((denoised[name] - denoised["default"]) ** 2)))
        assert 0 < gap < 0.25 * noise_rms, name

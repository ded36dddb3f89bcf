"""The MONAI transforms: types in and out, metadata, dtypes, input safety, Compose, caching, pickling, options."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import as_numpy as _numpy
from conftest import make_phantom, psnr
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor, PersistentDataset
from monai.transforms import (
    Compose,
    LoadImage,
    LoadImaged,
    MapTransform,
    Randomizable,
    ScaleIntensity,
    ScaleIntensityd,
    Transform,
)
from nibabel.testing import data_path as nibabel_data_path

import monai_dnaprior
import monai_dnaprior.transforms as transforms_module
from monai_dnaprior import (
    NETWORK_ALONE,
    PRESETS,
    DNAPriorDenoise,
    DNAPriorDenoiseD,
    DNAPriorDenoised,
    DNAPriorDenoiseDict,
    NetworkConfig,
    denoise,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FAST = {"preset": "fast"}  # the default path, the filter: its fastest preset
NETWORK = {"prior": "network", "preset": "fast", "max_iters": 5}  # the network path, a short fit


def _noisy(shape=(16, 16), sigma=0.1, seed=0, channels=1):
    clean = np.stack([make_phantom(shape)] * channels)
    rng = np.random.default_rng(seed)
    return clean, (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)


def _counting_denoise(monkeypatch):
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return denoise(*args, **kwargs)

    monkeypatch.setattr(transforms_module, "denoise", counted)
    return calls


# ---------------------------------------------------------------------------------------------------- API


def test_aliases_are_the_same_class_and_exported():
    assert DNAPriorDenoiseD is DNAPriorDenoised and DNAPriorDenoiseDict is DNAPriorDenoised
    for name in ("DNAPriorDenoise", "DNAPriorDenoised", "DNAPriorDenoiseD", "DNAPriorDenoiseDict"):
        assert name in monai_dnaprior.__all__ and name in transforms_module.__all__
        assert getattr(monai_dnaprior, name) is getattr(transforms_module, name)
    assert issubclass(DNAPriorDenoise, Transform) and issubclass(DNAPriorDenoised, MapTransform)


def test_every_name_in_all_is_importable():
    for name in monai_dnaprior.__all__:
        assert getattr(monai_dnaprior, name) is not None, name


def test_not_randomizable():
    """Deterministic transforms are what CacheDataset caches; a Randomizable one would be re-run every epoch."""
    assert not isinstance(DNAPriorDenoise(), Randomizable)
    assert not isinstance(DNAPriorDenoised(keys="image"), Randomizable)


def test_torch_backend_declared():
    assert DNAPriorDenoise.backend == DNAPriorDenoised.backend == [monai_dnaprior.transforms.TransformBackends.TORCH]


def test_overrides_reach_the_network_config():
    t = DNAPriorDenoise(preset="fast", prior="network", max_iters=7, tv_scale=0.3, frequency_power=1.0,
                        amplitude_weight=2.0, phase_weight=0.5, volume_mode="volume")
    config = t.network_config
    assert (config.max_iters, config.tv_scale, config.frequency_power) == (7, 0.3, 1.0)
    assert (config.amplitude_weight, config.phase_weight, config.volume_mode) == (2.0, 0.5, "volume")
    fast_filter = PRESETS["fast"][0]
    alone = NETWORK_ALONE["fast"]  # the network alone takes the fit-alone budget of its preset
    assert (config.channels, config.min_iters, config.keep_best) == (alone.channels, alone.min_iters, True)
    assert t.filter_config == fast_filter
    plain = DNAPriorDenoise(preset="fast", prior="network+filter")
    assert (plain.filter_config, plain.network_config) == PRESETS["fast"]  # None keeps the preset's


@pytest.mark.parametrize("prior", ["auto", "filter"])
def test_the_filter_alone_carries_no_network_config(prior):
    t = DNAPriorDenoise(preset="quality", prior=prior)
    assert t.network_config is None and t.filter_config == PRESETS["quality"][0]


# -------------------------------------------------------------------------------------------- types, meta


def test_type_in_type_out(array_type):
    name, convert = array_type
    _, noisy = _noisy()
    img = convert(noisy)
    out = DNAPriorDenoise(**FAST)(img)
    if name == "numpy":
        assert isinstance(out, np.ndarray)
    else:
        assert isinstance(out, torch.Tensor) and out.device == img.device
    if name == "metatensor":
        assert isinstance(out, MetaTensor)
        torch.testing.assert_close(out.affine, img.affine)
        assert out.meta["filename_or_obj"] == "phantom.nii.gz"
    assert out.shape == noisy.shape and out.dtype in (np.float32, torch.float32)
    assert np.isfinite(_numpy(out)).all()


def test_uncertainty_has_the_same_type_and_shape(array_type):
    name, convert = array_type
    _, noisy = _noisy()
    out, unc = DNAPriorDenoise(**FAST).denoise_with_uncertainty(convert(noisy))
    assert type(unc) is type(out) and unc.shape == noisy.shape
    assert (_numpy(unc) >= 0).all() and _numpy(unc).dtype == np.float32
    if name == "metatensor":
        torch.testing.assert_close(unc.affine, out.affine)


def test_input_is_never_modified(array_type):
    _, convert = array_type
    _, noisy = _noisy()
    img = convert(noisy.copy())
    reference = noisy.copy()
    DNAPriorDenoise(**FAST)(img)
    DNAPriorDenoise(**FAST).denoise_with_uncertainty(img)
    np.testing.assert_array_equal(_numpy(img), reference)
    if isinstance(img, MetaTensor):
        assert img.meta["filename_or_obj"] == "phantom.nii.gz" and not img.applied_operations


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_constant_input_comes_back_equal_and_not_aliased(dtype):
    img = np.full((1, 8, 8), 5, dtype=dtype)
    out = DNAPriorDenoise(**FAST)(img)
    np.testing.assert_array_equal(out, img)
    out[...] = 0
    assert (img == 5).all()  # the output is a new array even when nothing was denoised


def test_same_result_for_each_type_and_deterministic(array_type):
    _, convert = array_type
    _, noisy = _noisy()
    expected = DNAPriorDenoise(**FAST)(noisy)
    np.testing.assert_array_equal(_numpy(DNAPriorDenoise(**FAST)(convert(noisy))), expected)
    rician = {"noise_model": "rician", **NETWORK}  # the seed shapes the network's fit
    magnitude = np.abs(noisy)
    network = DNAPriorDenoise(**rician)(magnitude)
    assert not np.array_equal(_numpy(DNAPriorDenoise(seed=1, **rician)(convert(magnitude))), network)
    np.testing.assert_array_equal(_numpy(DNAPriorDenoise(**rician)(convert(magnitude))), network)


# ------------------------------------------------------------------------------------------------- dtypes


def test_uint8_comes_back_as_uint8_and_denoised(array_type):
    _, convert = array_type
    clean = make_phantom((24, 24))[None] * 255
    rng = np.random.default_rng(1)
    noisy = (clean + 25 * rng.standard_normal(clean.shape)).round().clip(0, 255).astype(np.uint8)
    out = DNAPriorDenoise(**FAST)(convert(noisy))
    assert out.dtype in (np.uint8, torch.uint8)
    out = _numpy(out)
    assert psnr(out / 255.0, clean / 255.0) > psnr(noisy / 255.0, clean / 255.0) + 3.0


def test_int16_hu_ct_comes_back_as_int16_in_range_and_denoised(array_type):
    _, convert = array_type
    clean = make_phantom((24, 24))[None] * 3000 - 1000  # -1000 (air) .. 2000 (bone) HU
    rng = np.random.default_rng(2)
    noisy = (clean + 300 * rng.standard_normal(clean.shape)).round().clip(-1000, 2000).astype(np.int16)
    out = DNAPriorDenoise(**FAST)(convert(noisy))
    assert out.dtype in (np.int16, torch.int16)
    out = _numpy(out).astype(np.float64)
    assert out.min() >= -1100 and out.max() <= 2100  # in the image's own HU range, not [0, 1] or clipped
    assert psnr((out + 1000) / 3000, (clean + 1000) / 3000) > psnr((noisy + 1000.0) / 3000, (clean + 1000) / 3000) + 3


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_float_precision_is_kept(array_type, dtype):
    _, convert = array_type
    clean, noisy = _noisy()
    out = DNAPriorDenoise(**FAST)(convert(noisy.astype(dtype)))
    assert out.dtype in (dtype, getattr(torch, np.dtype(dtype).name))
    assert psnr(_numpy(out).astype(np.float64), clean) > psnr(noisy, clean)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_integer_output_is_the_float_result_rounded_and_clipped_to_the_dtype(array_type, dtype):
    """A disc at both ends of its dtype's range, filtered hard (a noise level given far above the noise): the
    filter's result rings beyond both ends (an unsigned image's only above: a non-negative image's result is not
    below 0), and the integer output is the float output rounded and clipped, not wrapped around."""
    _, convert = array_type
    info = np.iinfo(dtype)
    span = float(info.max) - float(info.min)
    rows, cols = np.mgrid[:24, :24]
    clean = ((rows - 12) ** 2 + (cols - 12) ** 2 < 30).astype(np.float64)[None]
    unit = (clean + 0.05 * np.random.default_rng(4).standard_normal(clean.shape)).clip(0, 1)
    noisy = np.round(info.min + span * unit).astype(dtype)
    settings = {"noise_model": "gaussian", "noise_level": 0.2, **FAST}
    as_float = _numpy(DNAPriorDenoise(**settings)(noisy.astype(np.float32)))
    assert as_float.max() > info.max + 0.5  # there is something to clip
    assert as_float.min() < info.min - 0.5 if info.min < 0 else as_float.min() == 0.0
    out = DNAPriorDenoise(**settings)(convert(noisy))
    assert str(out.dtype).split(".")[-1] == np.dtype(dtype).name
    np.testing.assert_array_equal(_numpy(out), np.clip(np.round(as_float), info.min, info.max).astype(dtype))


def test_several_channels_are_denoised_each_in_their_own_right(array_type):
    _, convert = array_type
    a = make_phantom((16, 16))
    b = make_phantom((16, 16))[::-1, :].copy()  # a different image in the second channel
    clean = np.stack([a, b])
    rng = np.random.default_rng(3)
    noisy = (clean + 0.1 * rng.standard_normal(clean.shape)).astype(np.float32)
    out = _numpy(DNAPriorDenoise(**FAST)(convert(noisy)))
    assert out.shape == (2, 16, 16)
    for c in range(2):
        assert psnr(out[c], clean[c]) > psnr(noisy[c], clean[c]) + 2.0
        assert psnr(out[c], clean[c]) > psnr(out[c], clean[1 - c]) + 5.0


def test_3d_volume(array_type):
    _, convert = array_type
    clean, noisy = _noisy((16, 16, 6))
    out = DNAPriorDenoise(**FAST)(convert(noisy))
    assert out.shape == noisy.shape and psnr(_numpy(out), clean) > psnr(noisy, clean) + 3.0


@pytest.mark.parametrize("volume_mode", ["auto", "slices", "volume"])
def test_3d_volume_with_the_network(array_type, volume_mode):
    _, convert = array_type
    _clean, noisy = _noisy((8, 8, 5))
    out = DNAPriorDenoise(volume_mode=volume_mode, **NETWORK)(convert(noisy))
    assert out.shape == noisy.shape and np.isfinite(_numpy(out)).all()


# --------------------------------------------------------------------------------------- MONAI integration


def test_inside_compose(array_type):
    _, convert = array_type
    _, noisy = _noisy()
    pipeline = Compose([ScaleIntensity(minv=0.0, maxv=1.0), DNAPriorDenoise(**FAST)])
    out = pipeline(convert(noisy * 100 + 5))
    expected = DNAPriorDenoise(**FAST)(ScaleIntensity(minv=0.0, maxv=1.0)(convert(noisy * 100 + 5)))
    np.testing.assert_array_equal(_numpy(out), _numpy(expected))


def test_dictionary_transform_inside_compose_and_dataloader():
    data = [{"image": _noisy(seed=s)[1], "label": np.zeros((1, 16, 16), np.uint8)} for s in range(2)]
    pipeline = Compose([ScaleIntensityd(keys="image"), DNAPriorDenoised(keys="image", **FAST)])
    batches = list(DataLoader(Dataset(data, pipeline), batch_size=2, num_workers=0))
    assert batches[0]["image"].shape == (2, 1, 16, 16) and batches[0]["label"].shape == (2, 1, 16, 16)


def test_real_scan_file_pipeline_keeps_the_affine():
    """A real MR volume (nibabel's test data: big-endian int16, 33x41x25) loaded by MONAI and denoised."""
    path = os.path.join(nibabel_data_path, "anatomical.nii")
    pipeline = Compose([
        LoadImaged(keys="image", ensure_channel_first=True, image_only=True),
        DNAPriorDenoised(keys="image", uncertainty_key="std", preset="fast"),
    ])
    loaded = LoadImaged(keys="image", ensure_channel_first=True, image_only=True)({"image": path})["image"]
    out = pipeline({"image": path})
    for key in ("image", "image_std"):
        assert isinstance(out[key], MetaTensor) and out[key].shape == loaded.shape == (1, 33, 41, 25)
        torch.testing.assert_close(out[key].affine, loaded.affine)
        assert torch.isfinite(out[key]).all()
    assert out["image"].dtype == loaded.dtype


@pytest.mark.parametrize("name", ["mr_small_2d.nii.gz", "ratlung_ct_2d.nii.gz"])
def test_real_scan_with_added_noise_is_denoised(name):
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not here (the shared real scans live beside the repository)")
    clean = LoadImage(image_only=True, ensure_channel_first=True)(str(path)).numpy()
    noisy = (clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape)).astype(np.float32)
    out = DNAPriorDenoise(**FAST)(noisy)
    assert psnr(out, clean) > psnr(noisy, clean) + 3.0


def test_cache_dataset_runs_the_fit_once_per_image(monkeypatch):
    calls = _counting_denoise(monkeypatch)
    data = [{"image": _noisy(seed=s)[1]} for s in range(3)]
    ds = CacheDataset(data, DNAPriorDenoised(keys="image", **FAST), cache_rate=1.0, num_workers=0, progress=False)
    first = [ds[i]["image"] for i in range(len(ds))]
    second = [item["image"] for item in DataLoader(ds, batch_size=1, num_workers=0)]
    assert len(calls) == len(data)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(_numpy(a), _numpy(b)[0])


def test_persistent_dataset_runs_the_fit_once_per_image(monkeypatch, tmp_path):
    calls = _counting_denoise(monkeypatch)
    data = [{"image": _noisy(seed=s)[1]} for s in range(2)]
    transform = DNAPriorDenoised(keys="image", **FAST)
    for _ in range(2):  # a second dataset on the same cache directory reads the cache
        ds = PersistentDataset(data, transform, cache_dir=tmp_path)
        for _ in range(2):
            [ds[i] for i in range(len(ds))]
    assert len(calls) == len(data)


def test_pickle_round_trip_gives_the_same_output():
    _, noisy = _noisy()
    t = DNAPriorDenoise(noise_model="speckle", seed=3, tv_scale=0.2, **NETWORK)
    clone = pickle.loads(pickle.dumps(t))
    assert clone.network_config == t.network_config and clone.filter_config == t.filter_config
    assert clone.noise_model == "speckle" and clone.seed == 3 and clone.prior == "network"
    np.testing.assert_array_equal(clone(np.abs(noisy)), t(np.abs(noisy)))
    plain = DNAPriorDenoise(noise_model="gaussian", **FAST)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(plain))(noisy), plain(noisy))
    d = DNAPriorDenoised(keys="image", uncertainty_key="unc", **FAST)
    d_clone = pickle.loads(pickle.dumps(d))
    out, out_clone = d({"image": noisy}), d_clone({"image": noisy})
    for key in ("image", "image_unc"):
        np.testing.assert_array_equal(_numpy(out[key]), _numpy(out_clone[key]))


# ------------------------------------------------------------------------------------------ dictionary


def test_dictionary_transform_matches_the_array_transform(array_type):
    _, convert = array_type
    _, noisy = _noisy()
    label = np.ones((1, 16, 16), np.uint8)
    data = {"image": convert(noisy), "label": label}
    out = DNAPriorDenoised(keys="image", **FAST)(data)
    np.testing.assert_array_equal(_numpy(out["image"]), _numpy(DNAPriorDenoise(**FAST)(convert(noisy))))
    assert out["label"] is label and set(out) == {"image", "label"}
    assert data["image"] is not out["image"]  # the input dictionary is not changed
    np.testing.assert_array_equal(_numpy(data["image"]), noisy)


def test_dictionary_uncertainty_key(array_type):
    _, convert = array_type
    _, noisy = _noisy()
    out = DNAPriorDenoised(keys=["image", "other"], uncertainty_key="std", **FAST)(
        {"image": convert(noisy), "other": convert(noisy[:, ::-1].copy())}
    )
    assert set(out) == {"image", "other", "image_std", "other_std"}
    expected_image, expected_unc = DNAPriorDenoise(**FAST).denoise_with_uncertainty(convert(noisy))
    np.testing.assert_array_equal(_numpy(out["image"]), _numpy(expected_image))
    np.testing.assert_array_equal(_numpy(out["image_std"]), _numpy(expected_unc))
    assert type(out["image_std"]) is type(out["image"])


def test_dictionary_missing_keys():
    _, noisy = _noisy()
    with pytest.raises(KeyError):
        DNAPriorDenoised(keys=["image", "missing"], **FAST)({"image": noisy})
    out = DNAPriorDenoised(keys=["image", "missing"], uncertainty_key="u", allow_missing_keys=True, **FAST)(
        {"image": noisy}
    )
    assert set(out) == {"image", "image_u"}


# ------------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize("kwargs, choices", [
    ({"noise_model": "gauss"}, ["'gaussian'", "'poisson'", "'rician'", "'speckle'"]),
    ({"preset": "turbo"}, ["'fast'", "'default'", "'quality'"]),
    ({"volume_mode": "3d"}, ["'auto'", "'slices'", "'volume'"]),
])
@pytest.mark.parametrize("cls", [DNAPriorDenoise, DNAPriorDenoised])
def test_unknown_option_raises_naming_the_choices(cls, kwargs, choices):
    args = {"keys": "image"} if cls is DNAPriorDenoised else {}
    with pytest.raises(ValueError) as error:
        cls(**args, **kwargs)
    message = str(error.value)
    assert repr(next(iter(kwargs.values()))) in message
    assert all(choice in message for choice in choices)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_iters": 0}, "max_iters"),
    ({"max_iters": 2.5}, "max_iters"),
    ({"noise_level": -0.1}, "noise_level"),
    ({"noise_level": float("nan")}, "noise_level"),
    ({"slice_axis": 3}, "slice_axis"),
])
def test_invalid_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DNAPriorDenoise(**kwargs)


def test_the_settings_reach_denoise(monkeypatch):
    seen = []
    monkeypatch.setattr(transforms_module, "denoise", lambda img, **kw: seen.append(kw) or denoise(img, **kw))
    DNAPriorDenoise(noise_level=0.05, noise_model="rician", seed=4, volume_mode="volume", slice_axis=0, **NETWORK)(
        _noisy()[1]
    )
    DNAPriorDenoise(noise_level=0.07, device="cpu", **FAST)(_noisy()[1])
    network, default = seen
    assert network["noise_level"] == 0.05 and network["noise_model"] == "rician" and network["seed"] == 4
    assert network["prior"] == "network" and network["slice_axis"] == 0
    assert isinstance(network["network_config"], NetworkConfig)
    assert network["network_config"].volume_mode == "volume" and network["network_config"].max_iters == 5
    assert default["noise_level"] == 0.07 and default["prior"] == "auto" and default["device"] == "cpu"
    assert default["network_config"] is None and default["filter_config"] == PRESETS["fast"][0]

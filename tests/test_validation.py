"""Input checks that fail early with a message saying what to do (issue 7), unusual-but-valid inputs that just
work, and the device choice (CUDA in a forked DataLoader worker)."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from conftest import as_numpy as _numpy
from conftest import make_phantom

from monai_dnaprior import DNAPriorDenoise, VolumeMode, denoise
from monai_dnaprior.devices import resolve_device
from monai_dnaprior.validation import check_image, check_option

FAST = {"preset": "fast"}  # the default path, the filter
NETWORK = {"prior": "network", "preset": "fast", "max_iters": 3}  # the network path, a short fit


# --------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_say_how_many_and_how_to_clean(array_type, bad_value):
    _, convert = array_type
    img = np.full((1, 8, 8), 0.5, np.float32)
    img[0, 1, ::2] = bad_value  # 4 bad voxels
    with pytest.raises(ValueError) as error:
        DNAPriorDenoise(**FAST)(convert(img))
    message = str(error.value)
    assert "4 NaN or infinite values out of 64" in message
    assert "clean" in message and "nan_to_num" in message


def test_non_finite_values_are_caught_by_denoise_too():
    img = torch.rand(2, 6, 6, 3, dtype=torch.float64)
    img[1, 2, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        denoise(img)


@pytest.mark.parametrize("shape", [(8, 8), (8,), (1, 1, 4, 4, 4), (2, 1, 1, 4, 4, 4)])
def test_wrong_number_of_dimensions_asks_for_channel_first(array_type, shape):
    _, convert = array_type
    with pytest.raises(ValueError) as error:
        DNAPriorDenoise(**FAST)(convert(np.random.default_rng(0).random(shape).astype(np.float32)))
    message = str(error.value)
    assert "channel-first" in message and "(C, H, W)" in message and "(C, H, W, D)" in message
    assert str(shape) in message and "EnsureChannelFirst" in message


@pytest.mark.parametrize("shape", [(1, 0, 8), (0, 8, 8), (1, 4, 4, 0)])
def test_empty_image_raises(array_type, shape):
    _, convert = array_type
    with pytest.raises(ValueError, match="empty"):
        DNAPriorDenoise(**FAST)(convert(np.zeros(shape, np.float32)))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_image_asks_for_the_magnitude(array_type, dtype):
    _, convert = array_type
    img = (np.random.default_rng(0).random((1, 8, 8)) * (1 + 1j)).astype(dtype)
    with pytest.raises(TypeError, match="magnitude"):
        DNAPriorDenoise(**FAST)(convert(img))


def test_boolean_image_raises(array_type):
    _, convert = array_type
    with pytest.raises(TypeError, match="boolean"):
        DNAPriorDenoise(**FAST)(convert(np.random.default_rng(0).random((1, 8, 8)) > 0.5))


def test_check_image_accepts_valid_and_rejects_with_the_given_name():
    check_image(torch.rand(1, 3, 3))
    check_image(torch.zeros(2, 3, 4, 5, dtype=torch.int16))
    with pytest.raises(ValueError, match="The label has shape"):
        check_image(torch.rand(3, 3), name="label")


@pytest.mark.parametrize("img", [np.full((1, 4, 4), "a"), np.full((1, 4, 4), None, dtype=object)],
                         ids=["str", "object"])
def test_non_numeric_image_raises_type_error(img):
    """Bug: ``convert_to_tensor`` leaves a string/object array as numpy and ``check_image`` then fails with
    ``AttributeError: 'numpy.ndarray' object has no attribute 'is_complex'``; its docstring promises a TypeError
    for non-numeric data."""
    with pytest.raises(TypeError):
        DNAPriorDenoise(**FAST)(img)


def test_float64_values_beyond_float32_fail_clearly_or_work():
    """Bug: finite float64 values above float32's range (~3.4e38) passed the check, turned into inf when cast to
    float32, every iteration backtracked, and the user got ``RuntimeError: no output was averaged yet``.
    Either normalise in float64 before the cast or reject such values with a ValueError that says so."""
    img = make_phantom((8, 8))[None].astype(np.float64) * 1e300
    for settings in (FAST, NETWORK):
        try:
            out = DNAPriorDenoise(**settings)(img)
        except ValueError as error:
            assert "float32" in str(error)
        else:
            assert out.dtype == np.float64 and np.isfinite(out).all()


def test_check_option_names_the_setting_and_every_choice():
    assert check_option("volume_mode", "slices", VolumeMode) is VolumeMode.SLICES
    with pytest.raises(ValueError) as error:
        check_option("volume_mode", "3d", VolumeMode)
    message = str(error.value)
    assert "volume_mode" in message and "'3d'" in message
    assert all(repr(str(m)) in message for m in VolumeMode)


# ------------------------------------------------------------------------------- unusual but valid inputs


VALID = {
    "constant": np.full((1, 8, 8), 0.25, np.float32),
    "uint8": (make_phantom((12, 10))[None] * 255).astype(np.uint8),
    "int16 CT": (make_phantom((12, 10))[None] * 3000 - 1000).astype(np.int16),
    "int32": (make_phantom((9, 9))[None] * 1000).astype(np.int32),
    "float64": make_phantom((12, 10))[None].astype(np.float64),
    "float16": make_phantom((12, 10))[None].astype(np.float16),
    "tiny 3x3": make_phantom((3, 3))[None],
    "one voxel": np.full((1, 1, 1), 3.0, np.float32),
    "thin 1x7": make_phantom((1, 7))[None],
    "odd 3D": make_phantom((5, 7, 3))[None],
    "tiny 3D 3x3x3": make_phantom((3, 3, 3))[None],
    "single slice 3D": make_phantom((8, 8, 1))[None],
    "three channels": np.stack([make_phantom((9, 11)) * k for k in (1, 2, 3)]),
    "two channel 3D": np.stack([make_phantom((6, 5, 4)), 1 - make_phantom((6, 5, 4))]),
    "negative floats": make_phantom((10, 10))[None] * 4 - 5,
    "non-contiguous": np.ascontiguousarray(make_phantom((10, 12))[None]).transpose(0, 2, 1),
}


def _with_noise(name: str) -> np.ndarray:
    """``VALID[name]`` with a little noise where it is float and not constant."""
    img = VALID[name]
    if img.dtype.kind in "iu" or name in ("constant", "one voxel"):
        return img
    return (img + np.random.default_rng(0).normal(0, 0.05, img.shape)).astype(img.dtype)


@pytest.mark.parametrize("name", list(VALID))
def test_unusual_but_valid_inputs_just_work(array_type, name):
    _, convert = array_type
    img = VALID[name]
    reference = img.copy()
    noisy = _with_noise(name)
    out = DNAPriorDenoise(**FAST)(convert(noisy))
    assert out.shape == img.shape
    assert str(out.dtype).split(".")[-1] == noisy.dtype.name
    values = _numpy(out).astype(np.float64)
    assert np.isfinite(values).all()
    span = float(noisy.max()) - float(noisy.min())
    assert values.min() >= noisy.min() - 0.5 * span - 1 and values.max() <= noisy.max() + 0.5 * span + 1
    np.testing.assert_array_equal(img, reference)


@pytest.mark.parametrize("name", ["constant", "one voxel"])
def test_constant_images_come_back_unchanged(array_type, name):
    _, convert = array_type
    np.testing.assert_array_equal(_numpy(DNAPriorDenoise(**FAST)(convert(VALID[name]))), VALID[name])


@pytest.mark.parametrize("name", list(VALID))
def test_unusual_but_valid_inputs_work_with_the_network_too(name):
    img = _with_noise(name)
    out = DNAPriorDenoise(**NETWORK)(img)
    assert out.shape == img.shape and out.dtype == img.dtype and np.isfinite(out.astype(np.float64)).all()


@pytest.mark.parametrize("volume_mode", ["slices", "volume"])
@pytest.mark.parametrize("name", ["odd 3D", "tiny 3D 3x3x3", "single slice 3D", "two channel 3D"])
def test_3d_edge_shapes_in_both_modes(name, volume_mode):
    out = DNAPriorDenoise(volume_mode=volume_mode, **NETWORK)(_with_noise(name))
    assert out.shape == VALID[name].shape and np.isfinite(out).all()


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_numpy_unsigned_dtype_is_kept(dtype):
    """Bug: MONAI's ``convert_to_tensor`` turns numpy uint16/uint32 (the usual DICOM CT/MR storage) into
    int32/int64, and the transform returns that wider signed dtype instead of the input's."""
    img = (make_phantom((12, 12))[None] * 4000 + 1000).astype(dtype)
    out = DNAPriorDenoise(**FAST)(img)
    assert out.dtype == dtype
    assert out.min() >= 0


# --------------------------------------------------------------------------------------------------- devices


def _fake_bad_fork(monkeypatch):
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_cuda_in_a_forked_worker_says_what_to_do(monkeypatch, device):
    _fake_bad_fork(monkeypatch)
    with pytest.raises(RuntimeError) as error:
        resolve_device(device)
    message = str(error.value)
    assert "forked" in message
    assert "num_workers=0" in message and "ThreadDataLoader" in message and "spawn" in message
    assert "device='cpu'" in message


def test_transform_in_a_forked_worker_raises_the_helpful_error(monkeypatch):
    _fake_bad_fork(monkeypatch)
    with pytest.raises(RuntimeError, match="ThreadDataLoader"):
        DNAPriorDenoise(device="cuda", **FAST)(make_phantom((8, 8))[None])


def test_default_device_in_a_forked_worker_is_the_cpu(monkeypatch):
    _fake_bad_fork(monkeypatch)
    assert resolve_device(None) == torch.device("cpu")
    out = DNAPriorDenoise(**FAST)(make_phantom((8, 8))[None])  # and a fit there runs
    assert out.shape == (1, 8, 8)


def test_default_device_is_cuda_when_available_and_cpu_otherwise(monkeypatch):
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: False, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")


def test_cuda_without_cuda_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: False, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available; use device='cpu'"):
        resolve_device("cuda")


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_cpu_is_always_fine(monkeypatch, device):
    _fake_bad_fork(monkeypatch)  # a forked worker may always use the CPU
    assert resolve_device(device) == torch.device("cpu")


def test_the_test_process_may_use_cuda_when_it_has_it():
    """Not a forked worker: the default is CUDA where there is one, and asking for it does not raise."""
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None) == torch.device(expected)
    assert resolve_device(expected) == torch.device(expected)

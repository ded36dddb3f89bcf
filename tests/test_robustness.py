"""Property tests (hypothesis): any valid shape, dtype, value range, input type, noise model and prior gives a
finite output of the input's shape and type family, and never modifies the input."""

from __future__ import annotations

import numpy as np
import torch
from conftest import ARRAY_TYPES, NOISE_MODEL_NAMES
from conftest import as_numpy as _numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monai_dnaprior import DNAPriorDenoise

DTYPES = [np.uint8, np.int16, np.float32, np.float64]
PATTERNS = ["uniform", "smooth+noise", "constant", "one outlier", "two levels"]

PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def images(draw):
    """A channel-first image: its shape, dtype, value range and pattern, as numpy."""
    channels = draw(st.integers(1, 2))
    if draw(st.booleans()):
        spatial = (draw(st.integers(3, 12)), draw(st.integers(3, 12)))
    else:
        spatial = (draw(st.integers(3, 8)), draw(st.integers(3, 8)), draw(st.integers(1, 5)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low = draw(st.integers(int(info.min), int(info.max)))
        high = draw(st.integers(low, int(info.max)))
    else:
        low = draw(st.floats(-1e4, 1e4))
        high = low + draw(st.sampled_from([0.0, 1e-6, 1e-3, 1.0, 1e3, 1e6]))
    pattern = draw(st.sampled_from(PATTERNS))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (channels, *spatial)
    if pattern == "uniform":
        unit = rng.random(shape)
    elif pattern == "smooth+noise":
        grids = np.meshgrid(*[np.linspace(0, 1, s) for s in spatial], indexing="ij")
        unit = np.clip(0.5 + 0.4 * np.sin(3 * sum(grids)) + 0.1 * rng.standard_normal(shape), 0, 1)
    elif pattern == "constant":
        unit = np.full(shape, rng.random())
    elif pattern == "one outlier":
        unit = np.zeros(shape)
        unit[(0,) + tuple(rng.integers(0, s) for s in spatial)] = 1.0
    else:
        unit = (rng.random(shape) > 0.5).astype(np.float64)
    values = low + unit * (float(high) - float(low))
    if dtype.kind in "iu":
        values = np.clip(np.round(values), low, high)
    return values.astype(dtype)


def _check(img: np.ndarray, array_type: str, **kwargs) -> None:
    reference = img.copy()
    inp = ARRAY_TYPES[array_type](img)
    out = DNAPriorDenoise(preset="fast", **kwargs)(inp)
    if isinstance(inp, np.ndarray):
        assert isinstance(out, np.ndarray)
    else:  # a torch.Tensor comes back as a MetaTensor (MONAI's track_meta), a MetaTensor as itself
        assert isinstance(out, torch.Tensor) and (type(out) is type(inp) or array_type == "torch")
    assert tuple(out.shape) == img.shape
    assert str(out.dtype).split(".")[-1] == img.dtype.name
    values = _numpy(out).astype(np.float64)
    assert np.isfinite(values).all()
    np.testing.assert_array_equal(_numpy(inp), reference)  # the input is untouched


@PROPERTY_SETTINGS
@given(img=images(), array_type=st.sampled_from(list(ARRAY_TYPES)), noise_level=st.sampled_from([0.05, None]))
def test_any_valid_image_gives_a_finite_output_of_its_shape_and_type(img, array_type, noise_level):
    _check(img, array_type, noise_level=noise_level)


@PROPERTY_SETTINGS
@given(img=images(), array_type=st.sampled_from(list(ARRAY_TYPES)), volume_mode=st.sampled_from(["slices", "volume"]))
def test_any_valid_image_gives_a_finite_output_with_the_network(img, array_type, volume_mode):
    """A level given, so that the network is fitted also where the image shows no noise."""
    _check(img, array_type, prior="network", noise_level=0.05, max_iters=3, volume_mode=volume_mode)


@PROPERTY_SETTINGS
@given(img=images(), noise_model=st.sampled_from(NOISE_MODEL_NAMES))
def test_every_noise_model_copes_with_any_valid_image(img, noise_model):
    if noise_model != "gaussian":  # the other models need non-negative intensities: shift into [0, ...)
        img = (img.astype(np.float64) - min(0.0, float(img.min()))).astype(img.dtype) if img.dtype.kind == "f" else (
            img if img.min() >= 0 else (img.astype(np.int64) - int(img.min())).clip(0, np.iinfo(img.dtype).max)
            .astype(img.dtype))
    _check(img, "numpy", noise_model=noise_model)

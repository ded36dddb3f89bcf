"""The untrained prior network: any 2D/3D size keeps its shape, out_channels is respected, bad args raise."""

from __future__ import annotations

import pytest
import torch

from monai_dnaprior import DIPHourglass

CASES = [
    # spatial_dims, in_channels, out_channels, channels, spatial shape
    (2, 8, 1, (8, 16), (17, 23)),
    (2, 4, 3, (8, 16, 16), (3, 3)),
    (2, 8, 2, (8, 8, 16, 16), (32, 20)),
    (2, 2, 1, (4,), (1, 7)),
    (3, 8, 1, (8, 16), (9, 7, 5)),
    (3, 3, 2, (4, 8, 8), (3, 3, 3)),
]


@pytest.mark.parametrize("spatial_dims, in_channels, out_channels, channels, shape", CASES)
def test_output_keeps_the_code_shape(spatial_dims, in_channels, out_channels, channels, shape):
    torch.manual_seed(0)
    net = DIPHourglass(spatial_dims, in_channels, out_channels, channels, skip_channels=2)
    z = torch.rand(2, in_channels, *shape)
    out = net(z)
    assert out.shape == (2, out_channels, *shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("spatial_dims, in_channels, out_channels, channels, shape", CASES)
def test_padded_code_is_cropped_to_out_shape(spatial_dims, in_channels, out_channels, channels, shape):
    """The fit (:func:`fit_prior`) draws its code on ``padded_shape`` and asks for the image's own shape back."""
    net = DIPHourglass(spatial_dims, in_channels, out_channels, channels)
    padded = net.padded_shape(shape)
    m = 2 ** len(channels)
    assert all(p % m == 0 and p >= s and p >= 2 * m for p, s in zip(padded, shape))
    assert net.padded_shape(padded) == padded  # idempotent
    out = net(torch.rand(1, in_channels, *padded), shape)
    assert out.shape == (1, out_channels, *shape)


def test_padded_shape_values():
    net = DIPHourglass(2, 1, 1, channels=(8, 8, 8))  # multiple of 8, at least 16
    assert net.padded_shape((3, 17)) == (16, 24)
    assert net.padded_shape((16, 33)) == (16, 40)


@pytest.mark.parametrize("skip_channels", [0, 3, (2, 0)])
def test_skip_channels_variants(skip_channels):
    net = DIPHourglass(2, 4, 1, channels=(8, 16), skip_channels=skip_channels)
    assert net(torch.rand(1, 4, 11, 13)).shape == (1, 1, 11, 13)


def test_skip_branch_can_be_dropped():
    with_skip = DIPHourglass(2, 4, 1, channels=(8, 16), skip_channels=4)
    without = DIPHourglass(2, 4, 1, channels=(8, 16), skip_channels=0)
    assert with_skip.body.skip is not None and without.body.skip is None
    assert sum(p.numel() for p in without.parameters()) < sum(p.numel() for p in with_skip.parameters())


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = DIPHourglass(2, 4, 2, channels=(8, 16), skip_channels=2)
    net(torch.rand(1, 4, 9, 10)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = DIPHourglass(3, 2, 1, channels=(4, 8))
    torch.manual_seed(3)
    b = DIPHourglass(3, 2, 1, channels=(4, 8))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("spatial_dims", [0, 1, 4])
def test_unsupported_spatial_dims_raise(spatial_dims):
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        DIPHourglass(spatial_dims, 8, 1)


def test_skip_channels_length_mismatch_raises():
    with pytest.raises(ValueError, match="one value per level"):
        DIPHourglass(2, 8, 1, channels=(8, 16, 32), skip_channels=(4, 4))

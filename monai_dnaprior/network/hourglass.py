"""The untrained prior network: a Deep Image Prior hourglass (encoder-decoder with skips) for 2D and 3D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Norm
from torch import nn

__all__ = ["DIPHourglass"]

_ACT = ("leakyrelu", {"negative_slope": 0.2, "inplace": True})


def _conv(spatial_dims: int, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> Convolution:
    return Convolution(
        spatial_dims, c_in, c_out, strides=stride, kernel_size=kernel, act=_ACT, norm=Norm.BATCH,
        adn_ordering="NA", padding=kernel // 2,
    )


class _Level(nn.Module):
    """One level of the hourglass: downsample, go deeper, upsample, merge with the skip branch."""

    def __init__(self, spatial_dims: int, c_in: int, c_down: int, c_skip: int, c_up: int, deeper: nn.Module | None,
                 c_deeper_out: int) -> None:
        super().__init__()
        self.skip = _conv(spatial_dims, c_in, c_skip, kernel=1) if c_skip > 0 else None
        self.down = nn.Sequential(_conv(spatial_dims, c_in, c_down, stride=2), _conv(spatial_dims, c_down, c_down))
        self.deeper = deeper
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.up = nn.Sequential(
            Norm[Norm.BATCH, spatial_dims](c_skip + c_deeper_out),
            _conv(spatial_dims, c_skip + c_deeper_out, c_up),
            _conv(spatial_dims, c_up, c_up, kernel=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.deeper is not None:
            y = self.deeper(y)
        y = nn.functional.interpolate(y, size=x.shape[2:], mode=self.mode, align_corners=False)
        if self.skip is not None:
            y = torch.cat([self.skip(x), y], dim=1)
        return self.up(y)


class DIPHourglass(nn.Module):
    """Encoder-decoder with skip connections, the "skip" network of Deep Image Prior (Ulyanov et al., 2018).

    Any input size works: the input is replicate-padded to a multiple of ``2 ** len(channels)`` and the
    output cropped back, so odd sizes keep their shape.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the random input code.
        out_channels: channels of the output image.
        channels: feature channels of each level, from the finest to the coarsest.
        skip_channels: channels of the skip branch of each level (0 drops it).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 32, 64, 64),
        skip_channels: Sequence[int] | int = 4,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        skips = [skip_channels] * len(channels) if isinstance(skip_channels, int) else list(skip_channels)
        if len(skips) != len(channels):
            raise ValueError("skip_channels must give one value per level of channels.")
        self.spatial_dims = spatial_dims
        self.multiple = 2 ** len(channels)
        level: nn.Module | None = None
        deeper_out = 0
        for i in reversed(range(len(channels))):
            c_in = in_channels if i == 0 else channels[i - 1]
            level = _Level(spatial_dims, c_in, channels[i], skips[i], channels[i], level, deeper_out or channels[i])
            deeper_out = channels[i]
        self.body = level
        self.head = Convolution(spatial_dims, channels[0], out_channels, kernel_size=1, conv_only=True)

    def padded_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape the network works on for ``shape``: a multiple of ``2 ** levels``, at least twice it
        (so the coarsest level keeps two voxels per axis for its batch statistics)."""
        m = self.multiple
        return tuple(max(-(-s // m), 2) * m for s in shape)

    def forward(self, z: torch.Tensor, out_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Map the code ``z`` to an image; crop to ``out_shape`` (the code's own shape by default)."""
        out_shape = tuple(out_shape or z.shape[2:])
        target = self.padded_shape(z.shape[2:])
        pad: list[int] = []
        for s, t in zip(reversed(z.shape[2:]), reversed(target)):
            pad += [0, t - s]
        if any(pad):
            z = nn.functional.pad(z, pad, mode="replicate")
        y = self.head(self.body(z))
        return y[(slice(None), slice(None)) + tuple(slice(0, s) for s in out_shape)]

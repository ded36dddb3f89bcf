"""A network fitted at test time that predicts each volume of a series from the others (J-invariant across volumes).

For the volume j at the voxel v the network sees, for every volume k, the value at v and the means of two shells
around v (its 3^d - 1 nearest neighbours, then the rest of the 5^d block), with the value of volume j at v itself
left out (set to 0): what it predicts for ``y_j(v)`` never depends on ``y_j(v)``, so the fit cannot copy the noise
(Noise2Self, Batson and Royer 2019; across volumes as Patch2Self, Fadnavis et al. 2020, but nonlinear and using
space). Shared weights for all volumes (a per-volume embedding added to the first layer); a two-hidden-layer MLP
predicting the residual from volume j's own neighbour mean. Fitted by Adam on random (voxel, volume) samples with
the squared error to the noisy value, whose expectation is the error to the clean mean plus the noise variance.
Deterministic for a seed (a torch generator draws the samples); on the series' device, in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from monai_dnaprior.progress import report_share

__all__ = ["SeriesNetConfig", "VolumePredictor", "shell_means"]


@dataclass(frozen=True)
class SeriesNetConfig:
    """Size and fit of the network: hidden width, Adam steps (one-cycle schedule to ``lr``), samples per step (at
    most a 16th of the series' values), seed (defaults: measured on the benchmark's series, ``docs/series.md``)."""

    hidden: int = 64
    steps: int = 600
    batch: int = 4096
    lr: float = 2e-3
    seed: int = 0


def _shell_sum(x: torch.Tensor, inner: int, outer: int) -> torch.Tensor:
    """The sum over each voxel's shell (the ``(2 outer + 1)^d`` block less the ``(2 inner - 1)^d`` one; inner 0: the
    whole block) of ``x`` ``(C, *spatial)``, over the voxels inside the image (zero padding). A convolution whose
    kernel is 0 inside the shell: the values there are never added, not added and subtracted (exact)."""
    d = x.ndim - 1
    kernel = torch.ones((2 * outer + 1,) * d, dtype=x.dtype, device=x.device)
    if inner > 0:
        kernel[(slice(outer - inner + 1, outer + inner),) * d] = 0.0
    conv = {2: F.conv2d, 3: F.conv3d}[d]
    return conv(x[:, None], kernel[None, None], padding=outer)[:, 0]


def shell_means(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of each voxel's nearest neighbours (the 3^d block without the voxel) and of the next shell (the 5^d
    block without the 3^d one), over the neighbours inside the image, ``(C, *spatial)`` each (0 where a shell has
    none)."""
    ones = torch.ones_like(x[:1])
    counts = [_shell_sum(ones, 1, 1), _shell_sum(ones, 2, 2)]
    sums = [_shell_sum(x, 1, 1), _shell_sum(x, 2, 2)]
    return tuple(total / count.clamp_min(1) for total, count in zip(sums, counts))


class _VolumeNet(torch.nn.Module):
    """The MLP: features ``(B, 3C)`` and the target volume ``(B,)`` to the residual ``(B,)``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.first = torch.nn.Linear(3 * channels, hidden)
        self.volume = torch.nn.Embedding(channels, hidden)
        self.second = torch.nn.Linear(hidden, hidden)
        self.out = torch.nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first(features), j)

    def rest(self, first: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The layers after the first, given its output ``first`` ``(B, hidden)``."""
        return self.out(F.silu(self.second(F.silu(first + self.volume(j)))))[:, 0]


def _table(series: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The features of every voxel ``(voxels, 3C)`` (values, near and wide shell means of all volumes), the values
    ``(C, voxels)`` and the near means ``(C, voxels)``, all divided by ``scale``."""
    channels = series.shape[0]
    x = series.float() / scale
    near, wide = (m.reshape(channels, -1) for m in shell_means(x))
    x = x.reshape(channels, -1)
    return torch.cat([x, near, wide], 0).T.contiguous(), x, near


def _features(table: torch.Tensor, vox: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """The features of the voxels ``vox`` for the target volumes ``j``: volume j's own value there set to 0."""
    f = table[vox]
    f[torch.arange(len(j), device=f.device), j] = 0.0
    return f


class VolumePredictor:
    """The network fitted to a series (:meth:`fit`); calling it on a series of the same shape (the series itself,
    or the series perturbed, as SURE's divergence asks) predicts every volume from the others."""

    def __init__(self, config: SeriesNetConfig | None = None) -> None:
        self.config = config or SeriesNetConfig()
        self.net: _VolumeNet | None = None
        self.scale = 1.0

    def fit(self, series: torch.Tensor) -> VolumePredictor:
        """Fit the network to ``series`` ``(C, *spatial)``; reports the share of the fit done."""
        cfg, channels, device = self.config, series.shape[0], series.device
        self.scale = float(series.float().std().clamp_min(1e-12))
        table, x, near = _table(series, self.scale)
        voxels = x.shape[1]
        batch = min(cfg.batch, max(256, voxels * channels // 16))  # a small series: smaller steps, not more epochs
        generator = torch.Generator().manual_seed(cfg.seed)
        with torch.random.fork_rng(devices=[]):  # the initial weights drawn on the CPU from the seed; the caller's
            torch.random.default_generator.manual_seed(cfg.seed)  # random state is left as it was
            self.net = net = _VolumeNet(channels, cfg.hidden).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
        for step in range(cfg.steps):
            vox = torch.randint(0, voxels, (batch,), generator=generator).to(device)
            j = torch.randint(0, channels, (batch,), generator=generator).to(device)
            loss = (net(_features(table, vox, j), j) + near[j, vox] - x[j, vox]).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            if step % 50 == 0:
                report_share((step + 1) / cfg.steps)
        return self

    @torch.no_grad()
    def __call__(self, series: torch.Tensor, chunk: int = 1 << 15) -> torch.Tensor:
        """Every volume of ``series`` predicted from the other volumes and its own neighbours, never from its own
        value at the voxel."""
        if self.net is None:
            raise RuntimeError("VolumePredictor: call fit(series) before predicting.")
        channels, device = series.shape[0], series.device
        table, x, near = _table(series, self.scale)
        out = torch.empty_like(x)
        values, shells = self.net.first.weight.split([channels, 2 * channels], 1)  # (hidden, C), (hidden, 2C)
        for start in range(0, x.shape[1], chunk):
            vox = torch.arange(start, min(start + chunk, x.shape[1]), device=device)
            features = table[vox]
            shell_part = F.linear(features[:, channels:], shells, self.net.first.bias)  # the same for every j
            for j in range(channels):
                own = features[:, :channels].clone()
                own[:, j] = 0.0  # volume j's own value never enters: exactly, not added and taken away
                jj = torch.full_like(vox, j)
                out[j, vox] = self.net.rest(shell_part + own @ values.T, jj) + near[j, vox]
        return (out * self.scale).reshape(series.shape).to(series.dtype)

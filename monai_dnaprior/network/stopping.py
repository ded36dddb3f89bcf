"""Running statistics of the fit's outputs: the returned average, the uncertainty, and when to stop."""

from __future__ import annotations

import torch

__all__ = ["OutputAverager"]


class OutputAverager:
    """Exponential moving average and variance of the fit's outputs, with a stop rule that needs no clean image.

    The variance of the outputs around their average falls while the network learns the image and rises once
    it starts to fit the noise (Wang et al., ES-WMV). Its minimum marks the end of the useful fit of the raw
    outputs; the average lags them by about ``1 / (1 - decay)`` iterations, so the fit stops ``patience``
    iterations after the last minimum. It returns the average then, or with ``keep_best`` the average as it was at
    that minimum (a copy is kept at every new minimum): a long fit (the network alone, thousands of iterations)
    has begun to fit the noise by the time the stop is certain, and the average at the minimum is near the prior's
    best point (``docs/network.md``: on ``mr_small`` 28.17 dB, where the best average a clean image would pick is
    28.14 dB and the average 1000 iterations later 27.0 dB).

    Args:
        decay: weight of the past in the moving average and variance.
        patience: iterations without a new variance minimum before :meth:`should_stop` says so.
        min_iters: iterations before any minimum counts.
        tolerance: relative improvement a new minimum must bring.
        min_change: the fit is also done once the average moves less than this (RMS) over ``check_every``
            iterations: it has converged and more iterations would not change the result.
        check_every: iterations between two convergence checks.
        keep_best: return the average at the last variance minimum (ES-WMV's point) rather than the latest.
    """

    def __init__(
        self,
        decay: float = 0.99,
        patience: int = 100,
        min_iters: int = 50,
        tolerance: float = 0.0,
        min_change: float = 0.0,
        check_every: int = 50,
        keep_best: bool = False,
    ) -> None:
        self.decay = decay
        self.patience = patience
        self.min_iters = min_iters
        self.tolerance = tolerance
        self.iteration = 0
        self.mean: torch.Tensor | None = None
        self.variance: torch.Tensor | None = None
        self.best_score = float("inf")
        self.best_iteration = 0
        self.min_change = min_change
        self.check_every = check_every
        self.converged = False
        self._checkpoint: torch.Tensor | None = None
        self.keep_best = keep_best
        self.best_mean: torch.Tensor | None = None
        self.best_variance: torch.Tensor | None = None

    def update(self, output: torch.Tensor) -> None:
        """Add one output (detached inside)."""
        output = output.detach().float()
        self.iteration += 1
        if self.mean is None:
            self.mean, self.variance = output.clone(), torch.zeros_like(output)
            return
        # bias-corrected weight: early iterations are not pulled toward the first, untrained output
        w = max(1.0 - self.decay, 1.0 / self.iteration)
        delta = output - self.mean
        self.mean.add_(delta, alpha=w)
        self.variance.mul_(1 - w).addcmul_(delta, output - self.mean, value=w)
        if self.iteration >= self.min_iters:
            score = float(self.variance.mean())
            if score < self.best_score * (1 - self.tolerance):
                self.best_score, self.best_iteration = score, self.iteration
                if self.keep_best and self.best_mean is None:
                    self.best_mean, self.best_variance = self.mean.clone(), self.variance.clone()
                elif self.keep_best:  # into the same buffers: a new minimum comes at most iterations early on
                    self.best_mean.copy_(self.mean)
                    self.best_variance.copy_(self.variance)
        if self.iteration % self.check_every == 0:
            if self._checkpoint is not None and self.iteration >= self.min_iters:
                change = float((self.mean - self._checkpoint).square().mean().sqrt())
                self.converged = change < self.min_change
            self._checkpoint = self.mean.clone()

    def should_stop(self) -> bool:
        """Whether the fit has converged, or its variance has not reached a new minimum for ``patience`` iterations."""
        if self.iteration < self.min_iters:
            return False
        return self.converged or self.iteration - self.best_iteration > self.patience

    @property
    def result_iteration(self) -> int:
        """The iteration whose average :meth:`result` returns."""
        return self.best_iteration if self.keep_best and self.best_mean is not None else self.iteration

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The average of the outputs and their standard deviation map (at the last variance minimum with
        ``keep_best``, where there was one after ``min_iters``)."""
        if self.mean is None:
            raise RuntimeError("no output was averaged yet.")
        if self.keep_best and self.best_mean is not None:
            return self.best_mean, self.best_variance.clamp_min(0).sqrt()
        return self.mean, self.variance.clamp_min(0).sqrt()

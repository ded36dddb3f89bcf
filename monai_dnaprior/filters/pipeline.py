"""The filter pipeline: which collaborative passes run, in what order, and how their estimate of the observation's
mean becomes the clean image.

White noise (or noise a transform stabilised): a hard-thresholding pass makes the first pilot (BM3D's first stage),
one block-matching Wiener pass follows, and in 2D it is averaged with an NL-Bayes step piloted by the thresholded
image; where the preset sets them, iterated linear combinations of patches (:mod:`.ridge`) start from that average
(3D: over 4x4x4 cubes, 128 per group, from the Wiener pass). Coloured noise: the first pilot is the observation
blurred, since matching on the observation would follow the noise's own texture; a local DCT Wiener pass,
block-matching Wiener passes, and in 2D an NL-Bayes step that takes the noise's correlation exactly has the last
word. Each coefficient gets its own noise variance from the spectrum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from monai.networks.layers import GaussianFilter
from monai.utils import look_up_option

from monai_dnaprior.filters.collaborative import CollaborativePass, RiskTally, collaborative_refine
from monai_dnaprior.filters.nl_bayes import BayesPass, bayes_refine, bayes_variance
from monai_dnaprior.filters.ridge import RidgePass, ridge_refine
from monai_dnaprior.noise.field import NoiseField
from monai_dnaprior.progress import ProgressTracker
from monai_dnaprior.settings import FilterConfig, GroupTransform, check_step
from monai_dnaprior.uncertainty import averaged_error

__all__ = ["FilterResult", "bayes_pass", "filter_observation", "filter_passes", "ridge_pass"]


def filter_passes(config: FilterConfig, spatial_dims: int = 2, coloured: bool = False) -> list[CollaborativePass]:
    """The collaborative passes, in order: square patches in 2D, cubes searched across slices in 3D (white noise:
    :func:`_volume_passes`)."""
    if spatial_dims == 3:  # the cubes' step (a 2D step may reach 8: FilterConfig checks it against the square patch)
        check_step("match_step", config.match_step, "volume_patch", config.volume_patch)
    if spatial_dims == 3 and not coloured:
        return _volume_passes(config)
    if spatial_dims == 2:
        patch, depth, depth_radius = config.patch, 1, 0
        radius, threshold_radius = config.match_radius, config.threshold_radius
    else:
        patch, depth, depth_radius = config.volume_patch, config.volume_patch, config.volume_depth_radius
        radius = threshold_radius = config.volume_radius
    shape = dict(patch=patch, step=config.match_step, depth=depth, adaptive=_adaptive(config) and not coloured)
    matched = CollaborativePass.wiener(group=config.match_group, radius=radius, depth_radius=depth_radius, **shape)
    if coloured:
        return [CollaborativePass.wiener(patch=patch, depth=depth)] + [matched] * config.coloured_passes
    thresholded = CollaborativePass.hard_threshold(config.threshold, group=config.match_group,
                                                   radius=threshold_radius, depth_radius=depth_radius, **shape)
    return [thresholded] + [matched] * config.wiener_passes


def _volume_passes(config: FilterConfig) -> list[CollaborativePass]:
    """White noise in 3D: hard thresholding over ``volume_patch`` cubes matched on the observation, then Wiener
    passes over the same cubes with their own search (``volume_wiener_*``: ``quality`` widens only the thresholding
    pass's; larger cubes or groups, as BM4D's Wiener stage has, measured no better here: ``docs/filter.md``)."""
    shape = dict(patch=config.volume_patch, depth=config.volume_patch, group=config.match_group, step=config.match_step,
                 adaptive=_adaptive(config))
    thresholded = CollaborativePass.hard_threshold(
        config.threshold, radius=config.volume_radius, depth_radius=config.volume_depth_radius, **shape)
    matched = CollaborativePass.wiener(
        radius=config.volume_wiener_radius, depth_radius=config.volume_wiener_depth_radius, **shape)
    return [thresholded] + [matched] * config.wiener_passes


def _adaptive(config: FilterConfig) -> bool:
    """Whether the groups choose between the DCT and the Haar wavelet (:class:`GroupTransform`).

    Raises:
        ValueError: ``config.group_transform`` is not one of them (the message names the setting and its options).
    """
    try:
        return look_up_option(config.group_transform, GroupTransform) == GroupTransform.ADAPTIVE
    except ValueError as error:
        raise ValueError(f"FilterConfig.group_transform={config.group_transform!r} is not known: pass one of "
                         f"{[t.value for t in GroupTransform]} (default 'adaptive').") from error


def bayes_pass(config: FilterConfig, passes: Sequence[CollaborativePass], spatial_dims: int = 2) -> BayesPass | None:
    """The NL-Bayes step, or None: in 2D, after at least two passes, where ``config.bayes_patch`` is set (measured on
    the 2D dev scans, ``benchmarks/nl_bayes.py``: it adds with white and coloured noise; in 3D, with the combinations
    of cubes after it, it measured -0.05 to +0.02 dB on the dev EPI volume for 1.5x the time: ``docs/filter.md``)."""
    if config.bayes_patch <= 0 or spatial_dims != 2 or len(passes) < 2:
        return None
    return BayesPass(patch=config.bayes_patch, step=min(BayesPass.step, config.bayes_patch))  # no voxel left out


def ridge_pass(config: FilterConfig, spatial_dims: int = 2) -> RidgePass | None:
    """The iterated linear combinations of patches that run last (:mod:`.ridge`), or None where the preset leaves
    them out (``ridge_patch`` in 2D, ``ridge_volume_patch`` in 3D, each with its own settings)."""
    if spatial_dims == 2:
        if config.ridge_patch <= 0 or config.ridge_iterations <= 0:
            return None
        return RidgePass(patch=config.ridge_patch, group=config.ridge_group, radius=config.ridge_radius,
                         step=config.ridge_step, iterations=config.ridge_iterations)
    patch = config.ridge_volume_patch
    if patch <= 0 or config.ridge_volume_iterations <= 0:
        return None
    return RidgePass(patch=patch, group=config.ridge_volume_group, radius=config.ridge_volume_radius,
                     step=config.ridge_volume_step,
                     iterations=config.ridge_volume_iterations, depth_radius=config.volume_depth_radius)


PIECEWISE_CONSTANT_CUT = 0.1
"""Where the Haar wavelet cuts the Wiener passes' predicted risk by more than this share (``group_transform=
"adaptive"``), the image is taken as piecewise constant and the NL-Bayes step and the combinations are left out:
on the 2D development slices the cut is 0.000-0.016 (white noise 0.02-0.1 of the range), on piecewise-constant
phantoms 0.21-0.56, where those stages cost 1.7 dB (``docs/filter.md``)."""


@dataclass
class FilterResult:
    """The filter's estimate of the observation's mean (fit domain, ``(1, C, *spatial)``), where asked its expected
    squared error per voxel, and whether the image was taken as piecewise constant (:data:`PIECEWISE_CONSTANT_CUT`)."""

    mean: torch.Tensor
    variance: torch.Tensor | None
    piecewise_constant: bool = False


def filter_observation(
    observation: torch.Tensor, field: NoiseField, config: FilterConfig, with_error: bool = False,
    tracker: ProgressTracker | None = None, units: float = 0.0, given_psd: bool = False,
) -> FilterResult:
    """Estimate the mean of ``observation`` (``(1, C, *spatial)``, fit domain, its shrinkage target at 0) with the
    passes of :func:`_collaborative_estimate`, then, for white (or stabilised) noise where the preset sets them
    (:func:`ridge_pass`), the iterated linear combinations of patches from that estimate (the expected error stays
    the collaborative estimate's). ``given_psd``: the field's spectrum was given, not read from the image."""
    ridge = ridge_pass(config, observation.ndim - 2)
    tracker = tracker or ProgressTracker(None, 0)
    if ridge is None or not field.is_white:  # coloured: measured no better, given the spectrum (docs/filter.md)
        return _collaborative_estimate(observation, field, config, with_error, tracker, units, given_psd)
    first = units / (1 + _RIDGE_SHARE * ridge.iterations)
    result = _collaborative_estimate(observation, field, config, with_error, tracker, first)
    with tracker.span(units - first):
        if result.piecewise_constant:
            return result
        mean = ridge_refine(observation, result.mean, field.model.fit_sigma, ridge)
    return FilterResult(mean, result.variance)


_RIDGE_SHARE = 0.3  # the share of the collaborative passes' time that one iteration of the combinations takes


def _collaborative_estimate(
    observation: torch.Tensor, field: NoiseField, config: FilterConfig, with_error: bool,
    tracker: ProgressTracker, units: float, given_psd: bool = False,
) -> FilterResult:
    """The estimate of :func:`filter_observation` before the combinations: the collaborative passes of
    :func:`filter_passes` and the NL-Bayes step of :func:`bayes_pass`.

    The expected error is the last Wiener pass's; with white noise in 2D, that of the average of the Wiener pass's
    and the NL-Bayes model's of the result (:func:`~monai_dnaprior.filters.nl_bayes.bayes_variance`; coloured: the
    Wiener pass's, the step's is not modelled). ``tracker`` gets ``units`` of progress, shared over the passes.
    """
    spatial_dims = observation.ndim - 2
    passes = filter_passes(config, spatial_dims, coloured=not field.is_white)
    sigma = field.model.fit_sigma
    spectrum = None if field.is_white else field.spectrum
    bayes = bayes_pass(config, passes, spatial_dims)
    stages = len(passes) + (bayes is not None) + (with_error and bayes is not None and field.is_white)
    share = units / stages

    tally = RiskTally()

    def run(noisy: torch.Tensor, pilot: torch.Tensor, steps: Sequence[CollaborativePass], variance: bool = False):
        with tracker.span(share * len(steps)):
            return collaborative_refine(noisy, pilot, sigma, steps, spectrum, return_variance=variance, tally=tally)

    if bayes is None or not field.is_white:
        pilot = observation
        if not field.is_white:
            pilot = GaussianFilter(spatial_dims, config.coloured_pilot_blur).to(observation.device)(observation)
        filtered = run(observation, pilot, passes, with_error)
        mean, variance = filtered if with_error else (filtered, None)
        if bayes is not None:  # coloured: the step, piloted by the Wiener passes' result, takes its place; a
            # magnitude's given PSD (a residual's) holds the Rician bias's pattern, far more correlated than the
            # noise: its groups' mean stays the plain mean (as the background rule keeps white noise's tolerance)
            shared = not (given_psd and field.model.is_magnitude)
            with tracker.span(share):
                mean = bayes_refine(observation, mean, sigma, bayes, spectrum, shared_mean=shared)
        return FilterResult(mean, variance, tally.cut > PIECEWISE_CONSTANT_CUT)
    basic = run(observation, observation, passes[:1])
    filtered = run(observation, basic, passes[1:], with_error)
    piecewise = tally.cut > PIECEWISE_CONSTANT_CUT
    if piecewise:  # the later stages are left out; the Wiener passes search again as widely as the thresholding
        # pass, where a piecewise-constant image's long edges find their matches
        with tracker.span(share * (stages - len(passes))):
            wide = [replace(step, radius=passes[0].radius) for step in passes[1:]]
            filtered = collaborative_refine(observation, basic, sigma, wide, spectrum, return_variance=with_error)
    mean, variance = filtered if with_error else (filtered, None)
    if piecewise:
        return FilterResult(mean, variance, True)
    with tracker.span(share):
        mean = 0.5 * (mean + bayes_refine(observation, basic, sigma, bayes))
    if with_error:
        with tracker.span(share):
            variance = averaged_error(variance, bayes_variance(mean, sigma, bayes))
    return FilterResult(mean, variance)

"""The settings, grouped by what they govern: the options as ``StrEnum`` s, the collaborative filter's
:class:`FilterConfig`, the network fit's :class:`NetworkConfig`, and the presets that trade seconds for decibels."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace

from monai.utils import StrEnum, look_up_option

__all__ = [
    "NETWORK_ALONE",
    "NETWORK_SETTINGS",
    "PRESETS",
    "FilterConfig",
    "NetworkConfig",
    "NoiseModelName",
    "Preset",
    "Prior",
    "VolumeMode",
    "preset_settings",
    "resolve_prior",
]


class NoiseModelName(StrEnum):
    """The noise models; ``auto`` picks one from the image (:func:`monai_dnaprior.noise.auto.choose_noise_model`)."""

    AUTO = "auto"
    GAUSSIAN = "gaussian"
    POISSON = "poisson"
    RICIAN = "rician"
    SPECKLE = "speckle"


class Prior(StrEnum):
    """What makes the clean estimate.

    - ``filter``: the collaborative filter alone (hard thresholding, Wiener, NL-Bayes, linear combinations of
      patches), each coefficient with its noise variance from the noise field;
    - ``network``: the DNA-Prior network alone, an untrained encoder-decoder fitted to the image under the
      whitened spectral fidelity and total variation (the paper's method), with its own budget and automatic stop
      (:data:`NETWORK_ALONE`);
    - ``network+filter``: the network's fit as the filter's guide to the observation's bias (it changes the result
      for a Rician magnitude only, whose exact likelihood the fit takes);
    - ``auto``: the measured best, today ``filter`` for every input (``docs/design.md``).

    A series (``series=True``, :mod:`monai_dnaprior.series`) takes ``auto`` (its own network, predicting each volume
    from the others, weighed in by SURE) or ``filter`` (MP-PCA and the series Wiener pass alone).
    """

    AUTO = "auto"
    FILTER = "filter"
    NETWORK = "network"
    NETWORK_FILTER = "network+filter"


class Preset(StrEnum):
    """``fast``, ``default`` and ``quality``: see :data:`PRESETS` for what each changes."""

    FAST = "fast"
    DEFAULT = "default"
    QUALITY = "quality"


class GroupTransform(StrEnum):
    """The transform of the collaborative passes' groups (white or stabilised noise): ``dct``, the DCT in the patch
    and across the group; ``adaptive``, per group the DCT or the Haar wavelet, whichever the shrinkage predicts the
    lower risk for (piecewise-constant anatomy, phantoms and label-like images are sparse in the Haar wavelet, as in
    BM3D's first stage). Coloured noise always takes the DCT."""

    DCT = "dct"
    ADAPTIVE = "adaptive"


class VolumeMode(StrEnum):
    """How a network is fitted to a 3D image: ``slices`` (2D fits along the slice axis, each warm-started from its
    neighbour), ``volume`` (one 3D fit, slice by slice where it does not fit in memory); ``auto`` is ``slices``."""

    AUTO = "auto"
    SLICES = "slices"
    VOLUME = "volume"


@dataclass(frozen=True)
class FilterConfig:
    """The collaborative filter (BM3D's two stages, an NL-Bayes step and iterated linear combinations of patches;
    :mod:`monai_dnaprior.filters`). Plain values, so it pickles and hashes.

    Attributes:
        patch: square patch side in 2D.
        threshold: the hard-thresholding pass zeroes every coefficient below this many noise stds (BM3D's 2.7).
        threshold_radius: its search radius in 2D, in pixels (3D: ``volume_radius``).
        wiener_passes: block-matching Wiener passes after the hard-thresholding pass (one is best: each pass's result
            reads the signal lower).
        coloured_passes: block-matching Wiener passes for coloured noise, after a local DCT pass.
        coloured_pilot_blur: std (pixels) of the Gaussian blur that makes the first pilot for coloured noise.
        match_group: patches per block-matching group.
        match_radius: search radius of the Wiener passes' block matching in 2D, in pixels.
        match_step: step between the reference patches (in-plane), at most ``patch`` (in 3D ``volume_patch``).
        bayes_patch: patch side of the NL-Bayes step (2D); 0 leaves it out.
        volume_patch: cube side in 3D.
        volume_radius: in-plane search radius in 3D.
        volume_depth_radius: search radius along the last axis in 3D.
        volume_wiener_radius: in-plane search radius of the Wiener pass in 3D, white noise (the thresholding pass
            and coloured noise's passes: ``volume_radius``).
        volume_wiener_depth_radius: its search radius along the last axis (the others': ``volume_depth_radius``).
        ridge_patch: patch side of the iterated linear combinations of patches (after NL-Ridge/LIChI,
            :mod:`monai_dnaprior.filters.ridge`), run last from the filter's estimate, in 2D; 0 leaves them out.
        ridge_volume_patch: their cube side in 3D; 0 leaves them out.
        ridge_volume_group: cubes per group in 3D.
        ridge_volume_radius: their in-plane search radius in 3D (``volume_depth_radius`` across).
        ridge_volume_step: the step between their reference cubes in 3D, along every axis (at most the cube side).
        ridge_volume_iterations: their iterations in 3D.
        ridge_group: patches per group of the combinations (2D).
        ridge_radius: their search radius, in pixels (2D).
        ridge_step: the step between their reference patches (2D), at most ``ridge_patch``.
        ridge_iterations: their iterations (2D; groups matched again every third).
        group_transform: the groups' transform in the hard-thresholding and Wiener passes (:class:`GroupTransform`).
    """

    patch: int = 8
    threshold: float = 2.7
    threshold_radius: int = 19
    wiener_passes: int = 1
    coloured_passes: int = 4
    coloured_pilot_blur: float = 2.0
    match_group: int = 16
    match_radius: int = 8
    match_step: int = 3
    bayes_patch: int = 7
    volume_patch: int = 4
    volume_radius: int = 5
    volume_depth_radius: int = 2
    volume_wiener_radius: int = 5
    volume_wiener_depth_radius: int = 2
    ridge_patch: int = 7
    ridge_volume_patch: int = 4
    ridge_volume_group: int = 128
    ridge_volume_radius: int = 7
    ridge_volume_step: int = 4
    ridge_volume_iterations: int = 2
    ridge_group: int = 64
    ridge_radius: int = 12
    ridge_step: int = 6
    ridge_iterations: int = 2
    group_transform: str = GroupTransform.ADAPTIVE

    def __post_init__(self) -> None:
        """Sizes are positive, radii and counts not negative, and every reference step at most the patch side it steps
        over: a longer step leaves voxels that no reference patch covers, unfiltered (NaN, or a failed factorisation
        in the next step)."""
        _require(self, ("patch", "volume_patch", "match_group", "ridge_group", "ridge_volume_group", "match_step",
                        "ridge_step", "ridge_volume_step", "threshold"), positive=True)
        _require(self, ("threshold_radius", "match_radius", "volume_radius", "volume_depth_radius",
                        "volume_wiener_radius", "volume_wiener_depth_radius", "ridge_radius", "ridge_volume_radius",
                        "wiener_passes", "coloured_passes", "coloured_pilot_blur", "bayes_patch", "ridge_patch",
                        "ridge_volume_patch", "ridge_iterations", "ridge_volume_iterations"), positive=False)
        steps = [("match_step", "patch")]  # in 3D over volume_patch: checked where a volume is filtered
        steps += [("ridge_step", "ridge_patch")] if self.ridge_patch > 0 else []
        steps += [("ridge_volume_step", "ridge_volume_patch")] if self.ridge_volume_patch > 0 else []
        for step, patch in steps:
            check_step(step, getattr(self, step), patch, getattr(self, patch))


def _require(config: object, names: tuple[str, ...], positive: bool) -> None:
    """Raise where one of ``config``'s settings ``names`` is not a number above 0 (``positive``) or at least 0."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, numbers.Real) or math.isnan(value) or (value <= 0 if positive else value < 0):
            bound = "above 0" if positive else "0 or more"
            raise ValueError(f"{type(config).__name__}.{name}={value!r}: pass a number {bound}.")


def check_step(step: str, value: int, patch: str, side: int) -> None:
    """Raise where the reference step ``value`` (setting ``step``) is longer than the patch side ``side`` (setting
    ``patch``) it steps over: voxels between the reference patches would be left unfiltered."""
    if value > side:
        raise ValueError(
            f"FilterConfig.{step}={value} is longer than the patch it steps over ({patch}={side}): reference patches "
            f"that far apart leave voxels unfiltered. Pass {step} <= {side}, or larger patches.")


@dataclass(frozen=True)
class NetworkConfig:
    """The network fit (:mod:`monai_dnaprior.network`): its size, optimiser, objective and automatic stop. Plain
    values, so it pickles and hashes.

    Attributes:
        max_iters: hard cap on iterations; the automatic stop can end the fit before (after ``min_iters``).
        min_iters: iterations before the automatic stop may end the fit.
        patience: iterations without a new output-variance minimum before the fit stops.
        min_change: the fit is done when its average moves less than this share of the noise sigma (RMS) over 50
            iterations.
        lr: Adam learning rate.
        code_channels: channels of the fixed random input code.
        channels: feature channels per level of the hourglass, finest first.
        skip_channels: channels of each skip branch.
        code_noise: std of the perturbation added to the code at every iteration.
        code_blur: the code's first channels hold the observation blurred by a Gaussian of this std (pixels), which
            starts the fit from the image's coarse structure; 0 gives the plain random code of the Deep Image Prior.
        ema_decay: weight of the past in the output average.
        tv_scale: total-variation weight per unit of noise sigma (fit domain).
        amplitude_weight: weight of the spectral amplitude term.
        phase_weight: weight of the spectral phase term.
        frequency_power: exponent of the radial frequency weighting of the spectral fidelity.
        backtrack_factor: a loss above this multiple of the best loss so far restores the last good state.
        warm_iters_fraction: share of ``max_iters`` (and of the patience) given to a warm-started fit.
        volume_mode: 3D images, see :class:`VolumeMode`.
        keep_best: return the output average as it was at the last output-variance minimum (the ES-WMV point),
            not at the stop; the fit alone (:data:`NETWORK_ALONE`) sets it.

    The defaults are the guide fit of ``prior="network+filter"``; :data:`NETWORK_ALONE` holds the fit alone's.
    """

    max_iters: int = 150
    min_iters: int = 100
    patience: int = 150
    min_change: float = 0.02
    lr: float = 0.01
    code_channels: int = 8
    channels: tuple[int, ...] = (16, 32, 64, 64)
    skip_channels: int = 4
    code_noise: float = 1.0 / 30
    code_blur: float = 2.0
    ema_decay: float = 0.99
    tv_scale: float = 0.15
    amplitude_weight: float = 1.0
    phase_weight: float = 1.0
    frequency_power: float = 0.0
    backtrack_factor: float = 3.0
    warm_iters_fraction: float = 0.1
    volume_mode: str = VolumeMode.AUTO
    keep_best: bool = False

    def __post_init__(self) -> None:
        """Counts, rates and weights in their ranges: a fit of no iterations, an average that grows without bound or a
        network of no levels would return no estimate of the image, silently."""
        _require(self, ("max_iters", "patience", "lr", "code_channels", "backtrack_factor", "warm_iters_fraction"),
                 positive=True)
        _require(self, ("min_iters", "min_change", "skip_channels", "code_noise", "code_blur", "ema_decay", "tv_scale",
                        "amplitude_weight", "phase_weight"), positive=False)
        if not self.channels or not all(isinstance(c, numbers.Integral) and c > 0 for c in self.channels):
            raise ValueError(f"NetworkConfig.channels={self.channels!r}: pass one positive channel count per level, "
                             "finest first, e.g. (16, 32, 64, 64).")
        ranges = {"ema_decay": (self.ema_decay < 1, "below 1"), "warm_iters_fraction": (self.warm_iters_fraction <= 1,
                  "at most 1"), "backtrack_factor": (self.backtrack_factor > 1, "above 1")}
        for name, (within, bound) in ranges.items():
            if not within:
                raise ValueError(f"NetworkConfig.{name}={getattr(self, name)!r}: pass a number {bound}.")


# What each preset changes: the filter's reference step (4, 3, 2 px: more overlapping estimates, more time), whether
# the iterated linear combinations of patches run (white or stabilised noise: not in `fast`; 2D: reference step 6 in
# `default`, within 1.5x BM3D's time, 2 in `quality`; 3D: 4x4x4 cubes, 128 per group, 2 iterations in `default`, 3 and
# a wider thresholding search in `quality`; benchmarks/results/ceiling/, docs/filter.md), and where a network is
# fitted its iteration budget and width.
PRESETS: dict[str, tuple[FilterConfig, NetworkConfig]] = {
    Preset.FAST: (FilterConfig(match_step=4, ridge_patch=0, ridge_volume_patch=0),
                  NetworkConfig(max_iters=60, min_iters=40)),
    Preset.DEFAULT: (FilterConfig(), NetworkConfig()),
    Preset.QUALITY: (FilterConfig(match_step=2, ridge_step=2, ridge_volume_iterations=3, volume_radius=7,
                                  volume_depth_radius=4),
                     NetworkConfig(max_iters=400, min_iters=200, channels=(32, 32, 64, 64))),
}

# The network alone (``prior="network"``, the paper's Deep Image Prior) per preset: the result is the fit's own average,
# so it takes the iterations a Deep Image Prior needs (thousands; the guide fit above stops at 60-400), stopped by the
# output variance (ES-WMV) with the average at its minimum kept; the stop ends most fits before the cap. Measured in
# docs/network.md and benchmarks/results/dip/.
NETWORK_ALONE: dict[str, NetworkConfig] = {
    Preset.FAST: NetworkConfig(max_iters=800, min_iters=300, patience=100, min_change=0.005, keep_best=True),
    Preset.DEFAULT: NetworkConfig(max_iters=2000, min_iters=400, patience=150, min_change=0.005, keep_best=True),
    Preset.QUALITY: NetworkConfig(max_iters=4000, min_iters=400, patience=200, min_change=0.0025, keep_best=True,
                                  channels=(32, 32, 64, 64)),
}

FILTER_SETTINGS = frozenset(f.name for f in fields(FilterConfig))
NETWORK_SETTINGS = frozenset(f.name for f in fields(NetworkConfig))
"""Settings that act only where a network is fitted (``prior="network"`` or ``"network+filter"``)."""


def preset_settings(
    preset: str = Preset.DEFAULT, prior: str | None = None, **overrides: object
) -> tuple[FilterConfig, NetworkConfig]:
    """The filter and network settings of ``preset``, with every override that is not None applied to whichever of
    the two it belongs to. The network's are those of the fit ``prior`` runs: the fit alone's
    (:data:`NETWORK_ALONE`) for ``prior="network"``, the guide fit's (:data:`PRESETS`) otherwise.

    Raises:
        ValueError: an unknown preset or setting (the message names the closest known one).
    """
    filter_config, network_config = PRESETS[look_up_option(preset, Preset)]
    if prior is not None and resolve_prior(prior) == Prior.NETWORK:
        network_config = NETWORK_ALONE[look_up_option(preset, Preset)]
    given = {k: v for k, v in overrides.items() if v is not None}
    for key in given:
        look_up_option(key, sorted(FILTER_SETTINGS | NETWORK_SETTINGS))
    filter_config = replace(filter_config, **{k: v for k, v in given.items() if k in FILTER_SETTINGS})
    network_config = replace(network_config, **{k: v for k, v in given.items() if k in NETWORK_SETTINGS})
    return filter_config, network_config


def resolve_prior(prior: str) -> Prior:
    """The prior that runs for ``prior``: ``auto`` is the filter, the measured best on every input so far.

    ``benchmarks/results/results.md``: as the filter's guide the network changes only a Rician result, -0.05 dB
    from the best classical pipeline where the filter alone is +0.01, in 8.7x that pipeline's time where the filter
    takes 0.6x. ``benchmarks/results/dip/``: the network alone is 0.85-1.86 dB below BM3D on the 2D dev slices with
    white noise (1.95 dB above deepinv's Deep Image Prior), where the filter is 0.03-0.20 dB above it in 1-3% of
    the network's time.
    """
    prior = look_up_option(prior, Prior)
    return Prior.FILTER if prior == Prior.AUTO else prior

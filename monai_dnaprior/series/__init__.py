"""Series mode: the channels of a channel-first image as repeats of one anatomy (diffusion directions, fMRI time
points, averages), denoised together: MP-PCA across the volumes, a network fitted to predict each volume from the
others, and a Wiener pass over space and volumes at once, piloted with and without the network, blended by SURE."""

from __future__ import annotations

from monai_dnaprior.series.blend import network_blend
from monai_dnaprior.series.mppca import marchenko_pastur_split, mppca, optimal_shrinkage
from monai_dnaprior.series.network import SeriesNetConfig, VolumePredictor
from monai_dnaprior.series.options import SERIES_MIN_CHANNELS, SMALL_SERIES_VALUES, check_series, mppca_step, use_series
from monai_dnaprior.series.pipeline import denoise_series
from monai_dnaprior.series.wiener import series_wiener

__all__ = ["SERIES_MIN_CHANNELS", "SMALL_SERIES_VALUES", "SeriesNetConfig", "VolumePredictor", "check_series",
           "denoise_series", "marchenko_pastur_split", "mppca", "mppca_step", "network_blend", "optimal_shrinkage",
           "series_wiener", "use_series"]

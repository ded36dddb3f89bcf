"""The MONAI transforms: thin wrappers over :func:`monai_dnaprior.denoising.denoise`."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_dnaprior.denoising import denoise
from monai_dnaprior.progress import active_progress
from monai_dnaprior.series import check_series
from monai_dnaprior.settings import NoiseModelName, Preset, Prior, VolumeMode, preset_settings, resolve_prior
from monai_dnaprior.validation import check_image, check_network_settings, check_option, check_options

__all__ = ["DNAPriorDenoise", "DNAPriorDenoised", "DNAPriorDenoiseD", "DNAPriorDenoiseDict"]


class DNAPriorDenoise(Transform):
    """Denoise a channel-first image with no training data and no weights, from the noise field estimated from the
    image itself (model, level, spectrum): by default a collaborative filter (a hard-thresholding pass, a Wiener pass
    and an NL-Bayes step over groups of similar patches, each coefficient with its own noise variance); on request
    the DNA-Prior network, an untrained encoder-decoder fitted to the image under a whitened Fourier-domain fidelity
    and total variation.

    Deterministic for a given ``seed`` and device, and not randomizable, so ``CacheDataset`` caches the result
    and the work runs once per image. Numpy in gives numpy out, a ``MetaTensor`` keeps its metadata,
    integer images come back rounded and clipped to their dtype's range. The input is never modified.

    Args:
        noise_model: ``"auto"`` (chosen from the image and logged: Rician where an MRI magnitude has a Rayleigh
            background, Poisson or speckle where the noise grows with the intensity, else Gaussian; coloured or
            white from its estimated spectrum), ``"gaussian"`` (additive), ``"poisson"`` (photon counting,
            low-dose CT), ``"rician"`` (MRI magnitude) or ``"speckle"`` (ultrasound, multiplicative).
        noise_level: noise parameter on the image normalised to [0, 1]; estimated from the image when None.
        preset: ``"fast"``, ``"default"`` or ``"quality"``: the filter's reference step (4, 3, 2 px) and, where a
            network is fitted, its iteration budget (as the filter's guide 60, 150, 400; alone, the automatic stop
            capped at 800, 2000, 4000) and width.
        max_iters: network only: cap on iterations (the automatic stop can end the fit earlier).
        seed: network only: seed of its weights, input code and perturbations (0 where None). The filter has no
            randomness.
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``); CUDA when available and None.
        volume_mode: network only, 3D: ``"slices"`` (warm-started 2D fits), ``"volume"`` (one 3D fit) or ``"auto"``.
        slice_axis: spatial axis along which a volume's noise level is checked slice by slice (and a network's slice
            fits step).
        tv_scale: network only: total-variation weight per unit of noise sigma.
        frequency_power: network only: radial frequency weighting of the spectral fidelity.
        amplitude_weight: network only: weight of the spectral amplitude term.
        phase_weight: network only: weight of the spectral phase term.
        noise_psd: the noise power spectrum where it is known (additive noise): ``E|fftn(noise, norm="ortho")|^2``
            over the spatial axes, unshifted, in the image's intensity units (its mean is the noise variance);
            estimated from the image when None.
        pilot: deprecated since 0.8.0, use ``prior`` (``"network"`` is ``prior="network+filter"``).
        prior: ``"auto"`` (the measured best: the filter), ``"filter"``, ``"network"`` (the network alone, the
            paper's method) or ``"network+filter"`` (the network's fit guides the filter: changes a Rician result
            only). The settings marked "network only" are refused where no network is fitted.
        series: ``True``: the channels are repeats of one anatomy (diffusion directions, fMRI time points, averages;
            a 4D NIfTI as MONAI loads it), denoised together (MP-PCA across the volumes, then a Wiener pass over
            space and volumes, a network predicting each volume from the others blended in by SURE with
            ``prior="auto"`` and left out with ``prior="filter"``; :mod:`monai_dnaprior.series`); ``False``:
            channels in groups, each image on its own; ``None``: a series from 8 channels on, where ``prior`` is
            ``"auto"`` or ``"filter"`` and no ``noise_psd`` is given (the series makes its own uncertainty map).

    Raises:
        ValueError: an unknown option (naming the closest), a bad value, or a network setting without a network.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        noise_model: str = NoiseModelName.AUTO,
        noise_level: float | None = None,
        preset: str = Preset.DEFAULT,
        max_iters: int | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        volume_mode: str | None = None,
        slice_axis: int = -1,
        tv_scale: float | None = None,
        frequency_power: float | None = None,
        amplitude_weight: float | None = None,
        phase_weight: float | None = None,
        noise_psd: NdarrayOrTensor | None = None,
        pilot: str | None = None,
        prior: str = Prior.AUTO,
        series: bool | None = None,
    ) -> None:
        check_options(noise_level=noise_level, seed=0 if seed is None else seed, device=device, slice_axis=slice_axis)
        check_series(series)
        self.series = series
        self.noise_model = str(check_option("noise_model", noise_model, NoiseModelName))
        self.preset = str(check_option("preset", preset, Preset))
        self.prior = str(check_option("prior", _prior_from_pilot(pilot, prior), Prior))
        if volume_mode is not None:
            volume_mode = str(check_option("volume_mode", volume_mode, VolumeMode))
        if max_iters is not None and (isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1):
            raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}.")
        network = dict(max_iters=max_iters, volume_mode=volume_mode, tv_scale=tv_scale,
                       frequency_power=frequency_power, amplitude_weight=amplitude_weight, phase_weight=phase_weight)
        check_network_settings(self.prior, seed=seed, **network)
        self.noise_level = noise_level
        self.noise_psd = None if noise_psd is None else np.asarray(noise_psd, dtype=np.float64)
        self.seed = 0 if seed is None else seed
        self.device = str(device) if device is not None else None
        self.slice_axis = slice_axis
        self.filter_config, network_config = preset_settings(self.preset, prior=self.prior, **network)
        self.network_config = network_config if resolve_prior(self.prior) != Prior.FILTER else None

    def __call__(self, img: NdarrayOrTensor, noise_map: NdarrayOrTensor | None = None) -> NdarrayOrTensor:
        """Denoise ``img``, channel-first ``(C, H, W)`` or ``(C, H, W, D)`` (no uncertainty map: it costs time).

        ``noise_map``: the noise's relative std at every voxel where it is known (a parallel-imaging g-factor map, a
        CT tube-current modulation's; the image's spatial shape, positive, its scale free), used in place of a map
        read from the image (:func:`~monai_dnaprior.denoising.denoise`). Additive noise only.
        """
        return self._denoise(img, with_map=False, noise_map=noise_map)[0]

    def denoise_with_uncertainty(
        self, img: NdarrayOrTensor, noise_map: NdarrayOrTensor | None = None
    ) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
        """Denoise ``img`` (with ``noise_map`` where given, as :meth:`__call__`) and also return the per-voxel
        uncertainty map (same type and shape, float32).

        The map is the expected error of the returned image at each voxel (a root mean square, in the image's own
        intensity units): where it reads 20 HU, the denoised value is expected to be about 20 HU off the clean one.
        It is the refinement's residual noise plus the detail its shrinkage removed, mapped through the noise
        model's inverse (see :mod:`monai_dnaprior.uncertainty`); over 8x8 blocks of the dev scans it ranks the
        actual error with a Spearman correlation of 0.58-0.97 and its RMS matches the actual RMSE to 0.83-1.20x
        and its time (``benchmarks/results/uncertainty/README.md``). It reads high on very smooth images at low
        noise, and 0 where the Rician background rule returns a background as 0 (the rule claims no signal there).
        The image is the same as without the map.
        """
        return self._denoise(img, with_map=True, noise_map=noise_map)

    def _denoise(
        self, img: NdarrayOrTensor, with_map: bool, noise_map: NdarrayOrTensor | None = None
    ) -> tuple[NdarrayOrTensor, NdarrayOrTensor | None]:
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        check_image(img_t)
        result = denoise(
            _plain(img_t),
            noise_model=self.noise_model, noise_level=self.noise_level, prior=self.prior, preset=self.preset,
            filter_config=self.filter_config, network_config=self.network_config, seed=self.seed, device=self.device,
            slice_axis=self.slice_axis, noise_psd=None if self.noise_psd is None else torch.from_numpy(self.noise_psd),
            noise_map=_plain(noise_map),
            name=_source_name(img_t), progress=active_progress(), uncertainty=with_map, series=self.series,
        )
        out = _to_input_dtype(result.image, img_t.dtype)
        out_img, *_ = convert_to_dst_type(out, dst=img_t, dtype=out.dtype)
        unc = None
        if result.uncertainty is not None:
            unc, *_ = convert_to_dst_type(result.uncertainty, dst=img_t, dtype=torch.float32)
        if isinstance(img, np.ndarray):
            out_np = out_img.numpy() if isinstance(out_img, torch.Tensor) else np.asarray(out_img)
            if out_np.dtype != img.dtype and img.dtype.kind in "iu":  # MONAI widens uint16/uint32 on the way in
                info = np.iinfo(img.dtype)
                out_np = np.clip(out_np, info.min, info.max).astype(img.dtype)
            return out_np, None if unc is None else np.asarray(unc)
        return out_img, unc


def _prior_from_pilot(pilot: str | None, prior: str) -> str:
    """``prior``, or for the deprecated ``pilot`` the prior it meant (with a warning).

    Raises:
        ValueError: an unknown ``pilot``, or both ``pilot`` and a ``prior`` other than ``"auto"``.
    """
    if pilot is None:
        return prior
    meant = {"auto": Prior.AUTO, "thresholded": Prior.FILTER, "network": Prior.NETWORK_FILTER}
    if pilot not in meant:
        raise ValueError(f"Unknown pilot {pilot!r} (deprecated: use prior='auto', 'filter' or 'network+filter').")
    if str(prior) != Prior.AUTO:
        raise ValueError(f"pilot={pilot!r} and prior={str(prior)!r} were both given; pilot is deprecated: pass prior "
                         "alone.")
    warnings.warn(f"pilot={pilot!r} is deprecated since 0.8.0 and will be removed in 0.9.0; use "
                  f"prior={str(meant[pilot])!r}.", FutureWarning, stacklevel=3)
    return meant[pilot]


def _plain(array: NdarrayOrTensor | None) -> NdarrayOrTensor | None:
    """A ``MetaTensor`` as a plain tensor (its metadata plays no part); anything else as it is."""
    return array.as_tensor() if hasattr(array, "as_tensor") else array


def _source_name(img: torch.Tensor) -> str | None:
    """The file a MetaTensor was loaded from, for the log."""
    meta = getattr(img, "meta", None) or {}
    source = meta.get("filename_or_obj")
    return str(source) if source else None


def _to_input_dtype(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Integer inputs come back rounded and clipped to their dtype's range; floats keep their precision."""
    if dtype.is_floating_point:
        return out.to(dtype)
    info = torch.iinfo(dtype)
    return out.round().clamp(info.min, info.max).to(dtype)


class DNAPriorDenoised(MapTransform):
    """Dictionary-based wrapper of :class:`DNAPriorDenoise`.

    Args:
        keys: keys of the images to denoise.
        uncertainty_key: if set, the per-voxel uncertainty map of each key is stored under
            ``f"{key}_{uncertainty_key}"`` (with the image's metadata, so it saves alongside the image): the expected
            error of the denoised voxel in the image's intensity units (see
            :meth:`DNAPriorDenoise.denoise_with_uncertainty`).
        noise_map_key: if set, the key of each item's noise map (the noise's relative std at every voxel, a
            g-factor map say, loaded alongside the image: :meth:`DNAPriorDenoise.__call__`), used for every key.
        allow_missing_keys: don't raise if a key is missing.
        noise_model, noise_level, preset, kwargs: the arguments of :class:`DNAPriorDenoise` (``prior``, ``device``,
            ``noise_psd``, ``slice_axis`` and the network settings).

    Raises:
        KeyError: ``noise_map_key`` is set and an item has no such key.
    """

    backend = DNAPriorDenoise.backend

    def __init__(
        self,
        keys: KeysCollection,
        noise_model: str = NoiseModelName.AUTO,
        noise_level: float | None = None,
        preset: str = Preset.DEFAULT,
        *,
        uncertainty_key: str | None = None,
        noise_map_key: str | None = None,
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.denoiser = DNAPriorDenoise(noise_model=noise_model, noise_level=noise_level, preset=preset, **kwargs)
        self.uncertainty_key = uncertainty_key
        self.noise_map_key = noise_map_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        noise_map = None
        if self.noise_map_key is not None:
            if self.noise_map_key not in d:
                raise KeyError(f"noise_map_key={self.noise_map_key!r} is not in the data (keys: {list(d)}); load the "
                               "noise map under that key, or leave noise_map_key out to read the map from the image.")
            noise_map = d[self.noise_map_key]
        for key in self.key_iterator(d):
            if self.uncertainty_key is None:
                d[key] = self.denoiser(d[key], noise_map=noise_map)
            else:
                d[key], d[f"{key}_{self.uncertainty_key}"] = self.denoiser.denoise_with_uncertainty(
                    d[key], noise_map=noise_map)
        return d


DNAPriorDenoiseD = DNAPriorDenoiseDict = DNAPriorDenoised

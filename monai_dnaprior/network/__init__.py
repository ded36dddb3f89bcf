"""The DNA-Prior network: an untrained encoder-decoder (:mod:`.hourglass`) fitted to one image under the dual-domain
objective (:mod:`.losses`: a Fourier-domain fidelity whitened by the noise spectrum, total variation), its output
averaged and the fit stopped without a clean image (:mod:`.stopping`), one fit (:mod:`.fit`) and a whole image's fit,
2D, 3D or warm-started slices, with its memory fallback (:mod:`.volume`)."""

from __future__ import annotations

from monai_dnaprior.network.fit import FitResult, PriorState, fit_prior
from monai_dnaprior.network.hourglass import DIPHourglass
from monai_dnaprior.network.losses import SpectralFidelity, radial_frequency, spatial_fft, total_variation
from monai_dnaprior.network.stopping import OutputAverager
from monai_dnaprior.network.volume import NetworkFit, fit_network, volume_fits

__all__ = [
    "DIPHourglass",
    "FitResult",
    "NetworkFit",
    "OutputAverager",
    "PriorState",
    "SpectralFidelity",
    "fit_network",
    "fit_prior",
    "radial_frequency",
    "spatial_fft",
    "total_variation",
    "volume_fits",
]

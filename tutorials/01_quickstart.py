# %% [markdown]
# # DNA-Prior quickstart: denoise one real MRI slice
#
# DNA-Prior needs no training data and no weights: it estimates the noise from the image itself (model, level,
# spectrum), then filters the observation collaboratively over groups of similar patches (a hard-thresholding pass,
# a block-matching Wiener pass and an NL-Bayes step), each coefficient with its own noise variance. That filter is
# the default (`prior="auto"`). On request `prior="network"` fits a freshly initialised network to the one noisy
# image instead (a Deep Image Prior: tens of seconds rather than seconds), and `prior="network+filter"` lets that
# fit guide the filter, which changes an MRI magnitude's (Rician) result only: the fit corrects its bias.
#
# Here: load a real brain MRI slice with MONAI, add Gaussian noise with a fixed seed, denoise it with
# `DNAPriorDenoise`, and look at what was removed. With white Gaussian noise it takes about a second on a CPU.
#
# Install the package with matplotlib, from the repository root: `pip install -e ".[tutorials]"`.
# Run as a notebook (Jupyter, VS Code) or headless: `MPLBACKEND=Agg python tutorials/01_quickstart.py`.
# Figures are saved as PNG in the current working directory.

# %%
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import torch
from monai.transforms import LoadImage
from tutorial_utils import add_noise, psnr, save_figure, scan_path, view

from monai_dnaprior import DNAPriorDenoise

# %% [markdown]
# ## Load a real scan
# `LoadImage(ensure_channel_first=True)` gives a channel-first `MetaTensor` `(1, H, W)` that carries the affine.
# The shared scans are scaled to [0, 1].

# %%
path = scan_path("mri_sagittal_2d.nii.gz")
clean = LoadImage(image_only=True, ensure_channel_first=True)(path)
print(type(clean).__name__, tuple(clean.shape), f"range [{float(clean.min()):.2f}, {float(clean.max()):.2f}]")

# %% [markdown]
# ## Add noise
# Gaussian, sigma = 0.1 of the intensity range, fixed seed: the same noisy image on every run.

# %%
noisy = add_noise(clean, "gaussian", 0.1, seed=0)
print(f"noisy PSNR: {psnr(clean, noisy):.2f} dB")

# %% [markdown]
# ## Denoise
# The defaults estimate the noise level from the image; only the noise model is a choice (`"auto"`, the default,
# finds it from the image; `"gaussian"`, `"poisson"`, `"rician"`, `"speckle"`). The filter has no randomness: the
# same image always gives the same result. The network's settings (`max_iters`, `seed`, `volume_mode`, ...) are
# accepted only with a prior that fits a network (`prior="network"` or `"network+filter"`).

# %%
denoiser = DNAPriorDenoise(noise_model="gaussian")
start = time.perf_counter()
denoised = denoiser(noisy)
seconds = time.perf_counter() - start
print(f"denoised PSNR: {psnr(clean, denoised):.2f} dB in {seconds:.1f} s")
print("still a MetaTensor with the same affine:", type(denoised).__name__, torch.equal(denoised.affine, noisy.affine))

# %% [markdown]
# ## Look at it
# The removed part (noisy - denoised) should look like noise, with no anatomy in it; the error map
# (|denoised - clean|) shows what the denoiser could not recover.

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 4.6))
panels = [
    (noisy, f"noisy, {psnr(clean, noisy):.2f} dB", "gray", (0, 1)),
    (denoised, f"DNA-Prior, {psnr(clean, denoised):.2f} dB", "gray", (0, 1)),
    (noisy - denoised, "removed: noisy - denoised", "coolwarm", (-0.3, 0.3)),
    ((denoised - clean).abs(), "|denoised - clean|", "magma", (0, 0.15)),
]
for ax, (img, title, cmap, (lo, hi)) in zip(axes, panels):
    ax.imshow(view(img), cmap=cmap, vmin=lo, vmax=hi)
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()
save_figure(fig, "01_quickstart.png")

# %% [markdown]
# ## Notes
# - Numpy in gives numpy out; integer images come back rounded in their own dtype, HU-range CT in HU.
# - `preset="fast"` trades some quality for time; `preset="quality"` goes the other way.
# - `DNAPriorDenoise(noise_model="gaussian", prior="network", max_iters=150, seed=0)` fits the network alone (the
#   Deep Image Prior), `seed` making it reproducible; tutorial 3 compares the priors on a volume.
# - On a busy or shared CPU, `OMP_NUM_THREADS=1` is often faster than PyTorch's one thread per core.
#
# Next: `02_before_segmentation.py` puts the transform in a MONAI pipeline.

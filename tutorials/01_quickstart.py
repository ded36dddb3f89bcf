# %% [markdown]
# # DNA-Prior quickstart: denoise one real MRI slice
#
# DNA-Prior needs no training data and no weights: it estimates the noise from the image itself (model, level,
# spectrum), then filters the observation collaboratively: a hard-thresholding pass for the first pilot, then a
# block-matching Wiener pass. For MRI magnitudes (Rician noise) `pilot="network"` also fits a freshly initialised
# network to that one noisy image (a Deep Image Prior) to correct the magnitude's bias.
#
# Here: load a real brain MRI slice with MONAI, add Gaussian noise with a fixed seed, denoise it with
# `DNAPriorDenoise`, and look at what was removed. With white Gaussian noise it takes about a second on a CPU
# (`DNAPRIOR_TUTORIAL_ITERS=20` caps the fit where there is one, for a smoke run).
#
# Run as a notebook (Jupyter, VS Code) or headless: `MPLBACKEND=Agg python tutorials/01_quickstart.py`.
# Figures are saved as PNG in the current working directory.

# %%
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import torch
from monai.transforms import LoadImage
from tutorial_utils import add_noise, max_iters, psnr, save_figure, scan_path, view

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
# The defaults estimate the noise level from the image and stop automatically; only the noise model is a choice
# (`"gaussian"`, `"poisson"`, `"rician"`, `"speckle"`). `seed` makes the result reproducible.
# `max_iters` caps the network fit where there is one (none here: Gaussian noise needs no network).

# %%
denoiser = DNAPriorDenoise(noise_model="gaussian", seed=0, max_iters=max_iters())
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
# - On a busy or shared CPU, `OMP_NUM_THREADS=1` is often faster than PyTorch's one thread per core.
#
# Next: `02_before_segmentation.py` puts the transform in a MONAI pipeline.

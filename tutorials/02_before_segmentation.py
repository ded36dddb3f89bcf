# %% [markdown]
# # DNA-Prior in a MONAI pipeline, before a segmentation network
#
# `DNAPriorDenoised` is a dictionary transform: put it in a `Compose` right after loading, before intensity
# scaling and the network. Denoising takes seconds per image (minutes where a network is fitted:
# `prior="network"`), so cache it: the transform is deterministic and not random, so `CacheDataset` (memory) or
# `PersistentDataset` (disk) keep its output and **the denoising runs once per image**, not once per epoch. This
# tutorial shows that by counting the runs.
#
# The UNet below has **random weights**: its output is meaningless and only shows the wiring. Bring your own
# trained network. To keep the run short on a CPU this tutorial uses `preset="fast"`. Figures are saved in the
# current working directory.
#
# Install the package with matplotlib, from the repository root: `pip install -e ".[tutorials]"`.
# Run headless: `MPLBACKEND=Agg python tutorials/02_before_segmentation.py`.

# %%
from __future__ import annotations

import time
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.networks.nets import UNet
from monai.transforms import Compose, DivisiblePadd, EnsureChannelFirstd, LoadImage, LoadImaged, ScaleIntensityd
from tutorial_utils import add_noise, save_figure, scan_path, view

from monai_dnaprior import DNAPriorDenoised

# %% [markdown]
# ## Noisy input files
# Three real scans (MR, rat lung CT, cryosection) with Gaussian noise (sigma 0.08, fixed seed), written as NIfTI,
# as a scanner's noisy images would arrive.

# %%
data_dir = Path.cwd() / "tutorial02_data"
data_dir.mkdir(exist_ok=True)
files = []
for i, name in enumerate(["mr_small_2d.nii.gz", "ratlung_ct_2d.nii.gz", "vw_eye_2d.nii.gz"]):
    src = scan_path(name)
    clean = LoadImage(image_only=True)(src)
    noisy = add_noise(clean, "gaussian", 0.08, seed=i)
    out = data_dir / f"noisy_{src.name}"
    nib.save(nib.Nifti1Image(noisy.numpy().astype(np.float32), np.eye(4)), out)
    files.append({"image": str(out)})
    if src.name != name:  # shared data missing: only the fallback scan exists
        break
print([Path(f["image"]).name for f in files])

# %% [markdown]
# ## The pipeline
# A subclass of `DNAPriorDenoised` that counts its calls, so we can see when the denoising happens.

# %%


class CountingDenoised(DNAPriorDenoised):
    """`DNAPriorDenoised` that counts how many images it has denoised."""

    calls = 0

    def __call__(self, data):
        CountingDenoised.calls += 1
        return super().__call__(data)


transform = Compose([
    LoadImaged(keys="image", image_only=True),
    EnsureChannelFirstd(keys="image"),
    CountingDenoised(keys="image", noise_model="gaussian", preset="fast"),
    ScaleIntensityd(keys="image"),  # whatever intensity step your network was trained with
    DivisiblePadd(keys="image", k=4),  # the UNet below halves the size twice
])

# %% [markdown]
# ## Cache: the denoising happens here, once per image

# %%
start = time.perf_counter()
dataset = CacheDataset(data=files, transform=transform, cache_rate=1.0)
print(f"cache built in {time.perf_counter() - start:.1f} s; runs so far: {CountingDenoised.calls}")

# %% [markdown]
# ## Segment, two epochs
# A randomly initialised UNet, run as an evaluator would. `num_workers=0` (or MONAI's `ThreadDataLoader`):
# on CUDA, forked DataLoader workers cannot fit on the GPU.

# %%
net = UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(8, 16, 32), strides=(2, 2)).eval()
loader = DataLoader(dataset, batch_size=1, num_workers=0)
segmentations = []
for epoch in range(2):
    start = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            labels = net(batch["image"]).argmax(dim=1)
            if epoch == 0:
                segmentations.append((batch["image"][0], labels[0]))
    print(f"epoch {epoch}: {time.perf_counter() - start:.2f} s, runs so far: {CountingDenoised.calls}")

assert CountingDenoised.calls == len(files), "the denoising should run exactly once per image"

# %% [markdown]
# ## Look at it
# Top: the noisy inputs. Middle: denoised (cached). Bottom: the random UNet's labels (meaningless by design).

# %%
fig, axes = plt.subplots(3, len(files), figsize=(4 * len(files), 11), squeeze=False)
for j, (f, (image, labels)) in enumerate(zip(files, segmentations)):
    noisy = LoadImage(image_only=True)(f["image"])
    axes[0, j].imshow(view(noisy), cmap="gray")
    axes[0, j].set_title(Path(f["image"]).name, fontsize=9)
    axes[1, j].imshow(view(image), cmap="gray")
    axes[1, j].set_title("denoised + scaled (cached)", fontsize=9)
    axes[2, j].imshow(view(labels), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    axes[2, j].set_title("random-weight UNet labels", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
save_figure(fig, "02_before_segmentation.png")

# %% [markdown]
# ## Notes
# - `PersistentDataset(data, transform, cache_dir=..., hash_transform=monai.data.utils.pickle_hashing)` caches
#   to disk, across runs; the denoiser's settings are plain values, so changing one (preset, noise model, prior)
#   changes the hash and gives a fresh cache instead of stale outputs.
# - Random augmentations placed after `DNAPriorDenoised` still vary per epoch; the cache stops at the first
#   random transform, so keep the denoiser before them.
# - The bundle (`04_bundle.py`) runs the same pipeline over a folder from the command line.

# %% [markdown]
# # The MONAI Bundle: denoise a folder from the command line
#
# The repository's `bundle/` is a MONAI Bundle that `python -m monai.bundle run` executes: it denoises every
# NIfTI / DICOM / MetaImage / NRRD file of a folder into `<name>_denoised.nii.gz`, keeping shape, affine, NIfTI
# header and data type. There are no trained weights to download: everything is estimated from each image.
# (`bundle/docs/README.md` has every setting, multi-process runs with `torchrun`, and denoise-then-segment.)
#
# This tutorial runs the commands with `subprocess` from the repository root, as you would in a shell. With the
# default settings no network is fitted (the collaborative filter runs), so each run takes seconds. To fit the
# DNA-Prior network instead, add `--prior network` (its settings, such as `--max_iters 150` or `--seed 0`, are
# refused without it: they could not change the result). Figures are saved in the current working directory.

# %%
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from monai.transforms import LoadImage
from tutorial_utils import add_noise, repo_root, save_figure, scan_path, view

ROOT = repo_root()
if not (ROOT / "bundle" / "configs" / "inference.json").exists():
    raise SystemExit(f"No bundle at {ROOT / 'bundle'}; this tutorial needs the repository's bundle/ folder.")


def bundle_run(*overrides: str) -> subprocess.CompletedProcess:
    """`python -m monai.bundle run` with the inference config, run from the repository root; prints the command
    and the end of its log."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", "bundle",
           "--config_file", "bundle/configs/inference.json", "--meta_file", "bundle/configs/metadata.json", *overrides]
    print("$", shlex.join(["python", *cmd[1:]]))
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True)
    log = [line for line in (done.stdout + done.stderr).splitlines() if "monai_dnaprior" in line or "DNA" in line]
    print("\n".join(log[-12:]) or (done.stdout + done.stderr)[-2000:])
    print(f"exit status {done.returncode}")
    return done


# %% [markdown]
# ## 1. The sample image
# The bundle ships one real MR slice (`bundle/sample_data/mr_small_2d.nii.gz`). Denoise it into a temporary folder:

# %%
out1 = Path(tempfile.mkdtemp(prefix="dnaprior_bundle_"))
bundle_run("--output_dir", str(out1))
print(sorted(p.name for p in out1.iterdir()))

# %% [markdown]
# ## 2. Your own folder, with a noise model
# Two real scans with Gaussian noise added (fixed seed), written as NIfTI into a folder; then point the bundle at
# it with `--dataset_dir`. Any setting of `configs/inference.json` is overridden the same way (`--preset fast`,
# `--noise_model rician`, `--device cuda:1`, ...); a misspelled one (`--nois_model`) is refused with the closest
# known setting, so a typo never runs silently with the default.

# %%
in_dir = Path.cwd() / "tutorial04_in"
in_dir.mkdir(exist_ok=True)
for seed, name in enumerate(["mr_small_2d.nii.gz", "ratlung_ct_2d.nii.gz"]):
    clean = LoadImage(image_only=True)(scan_path(name))
    noisy = add_noise(clean, "gaussian", 0.08, seed=seed)
    nib.save(nib.Nifti1Image(noisy.numpy().astype(np.float32), np.eye(4)), in_dir / f"noisy_{scan_path(name).name}")
out2 = Path(tempfile.mkdtemp(prefix="dnaprior_bundle_"))
bundle_run("--dataset_dir", str(in_dir), "--output_dir", str(out2), "--noise_model", "gaussian")
outputs = sorted(out2.glob("*_denoised.nii.gz"))
print([p.name for p in outputs])

# %% [markdown]
# Beside each output, a JSON sidecar holds a fingerprint of the settings and of the input. Run it again with the
# same settings: finished outputs are skipped (an interrupted run can simply be restarted). With settings that change
# the result (another `--preset`, `--noise_model`, `--prior network` ...) or a changed input they are denoised again,
# never silently kept; settings that cannot change it (`--prior filter`, which is what `auto` runs, or
# `--progress_interval`) keep them. `--overwrite true` redoes everything.

# %%
print(json.loads(outputs[0].with_name(outputs[0].name.replace(".nii.gz", ".json")).read_text())["fingerprint"])
bundle_run("--dataset_dir", str(in_dir), "--output_dir", str(out2), "--noise_model", "gaussian")

# %% [markdown]
# ## Look at the outputs
# Same shape, affine, NIfTI header and data type as the inputs, in the inputs' intensity units (a denoised value can
# fall slightly outside the input's range: nothing clips it).

# %%
loader = LoadImage(image_only=True)
pairs = [(out1 / "mr_small_2d_denoised.nii.gz", ROOT / "bundle" / "sample_data" / "mr_small_2d.nii.gz")]
pairs += [(p, in_dir / p.name.replace("_denoised", "")) for p in outputs]
fig, axes = plt.subplots(2, len(pairs), figsize=(4 * len(pairs), 8), squeeze=False)
for j, (out_path, in_path) in enumerate(pairs):
    src, den = loader(in_path), loader(out_path)
    same_affine = np.allclose(src.affine, den.affine)
    print(f"{in_path.name}: {tuple(src.shape)} -> {tuple(den.shape)}, same affine: {same_affine}")
    lo, hi = float(src.min()), float(src.max())
    axes[0, j].imshow(view(src), cmap="gray", vmin=lo, vmax=hi)
    axes[0, j].set_title(f"input {in_path.name}", fontsize=9)
    axes[1, j].imshow(view(den), cmap="gray", vmin=lo, vmax=hi)
    axes[1, j].set_title(out_path.name, fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
save_figure(fig, "04_bundle.png")

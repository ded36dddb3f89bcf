"""The bundle's file handling, sharding, flags and progress arithmetic, without denoising anything."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirst, LoadImage

from monai_dnaprior.bundle import DenoiseFolder, ImageProgress, as_flag, root_cause, shard
from monai_dnaprior.bundle.inputs import find_inputs, input_stem
from monai_dnaprior.bundle.outputs import plan_outputs, save_atomic


@pytest.mark.parametrize("n", [0, 1, 4, 5, 7])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_covers_every_item_once(n, world):
    items = list(range(n))
    shares = [shard(items, r, world) for r in range(world)]
    assert sorted(i for s in shares for i in s) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_shard_rejects_bad_rank():
    with pytest.raises(ValueError):
        shard([1, 2], 2, 2)
    with pytest.raises(ValueError):
        shard([1, 2], 0, 2, sizes=[1])


def test_shard_balances_by_size_not_name():
    """The largest first onto the least-loaded rank, each share kept in name order: 1000 + 200 and 900 + 300, where
    turns by name would give 1000 + 300 and 900 + 200."""
    items = ["a", "b", "c", "d"]
    sizes = [1000, 900, 300, 200]
    assert shard(items, 0, 2, sizes) == ["a", "d"] and shard(items, 1, 2, sizes) == ["b", "c"]
    assert shard(items, 0, 2) == ["a", "c"] and shard(items, 1, 2) == ["b", "d"]  # no sizes: one each in turn
    assert shard(items, 0, 5, sizes) == ["a"] and shard(items, 4, 5, sizes) == []  # more ranks than items


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_by_size_covers_every_item_once_and_balances(seed, world):
    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in rng.integers(1, 10**6, size=int(rng.integers(0, 12)))]
    items = list(range(len(sizes)))
    shares = [shard(items, r, world, sizes) for r in range(world)]
    assert sorted(i for s in shares for i in s) == items and all(s == sorted(s) for s in shares)
    assert shares == [shard(items, r, world, sizes) for r in range(world)]  # deterministic: every rank agrees
    loads = [sum(sizes[i] for i in s) for s in shares]
    if sizes:
        assert max(loads) - min(loads) <= max(sizes)  # greedy's bound: no rank a whole item behind another


@pytest.mark.parametrize(
    "path, stem",
    [("/d/a.nii.gz", "a"), ("/d/a.b.nii", "a.b"), ("/d/CT.DCM", "CT"), ("/d/series/", "series"), ("x.mha", "x")],
)
def test_input_stem(path, stem):
    assert input_stem(path) == stem


def test_find_inputs_and_plan_outputs(tmp_path):
    for name in ("b.nii.gz", "a.nii", "c.mha", "notes.txt", ".hidden.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty_folder").mkdir()
    found = find_inputs(tmp_path)
    assert [os.path.basename(p) for p in found] == ["a.nii", "b.nii.gz", "c.mha"]
    outputs = plan_outputs(found, tmp_path / "out")
    assert [os.path.basename(p) for p in outputs] == ["a_denoised.nii.gz", "b_denoised.nii.gz", "c_denoised.nii.gz"]
    with pytest.raises(ValueError, match="input folder"):
        plan_outputs(found, tmp_path)
    with pytest.raises(FileNotFoundError):
        find_inputs(tmp_path / "missing")
    assert find_inputs(tmp_path / "a.nii") == [str(tmp_path / "a.nii")]  # one file as dataset_dir
    with pytest.raises(ValueError, match="neither a folder nor an image"):
        find_inputs(tmp_path / "notes.txt")


def test_plan_outputs_refuses_a_folder_inside_a_series(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"x")
    assert find_inputs(tmp_path) == [str(series)]
    with pytest.raises(ValueError, match="inside the DICOM series"):
        plan_outputs([str(series)], series / "out")


@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 1), (5, 6, 3), (4, 5, 3, 2)])
def test_save_atomic_keeps_the_input_layout(tmp_path, shape):
    affine = np.diag([0.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = (1.0, -2.0, 3.0)
    arr = np.random.default_rng(0).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, affine), tmp_path / "in.nii.gz")
    img = EnsureChannelFirst()(LoadImage(image_only=True)(tmp_path / "in.nii.gz"))
    save_atomic(img, tmp_path / "out.nii.gz")
    out = nib.load(tmp_path / "out.nii.gz")
    assert out.shape == shape and np.allclose(out.affine, affine) and np.allclose(out.get_fdata(), arr)
    assert sorted(os.listdir(tmp_path)) == ["in.nii.gz", "out.nii.gz"]


def test_save_atomic_plain_tensor_and_bad_suffix(tmp_path):
    save_atomic(torch.zeros(2, 4, 5), tmp_path / "t.nii")  # no metadata: identity affine, channels last
    assert nib.load(tmp_path / "t.nii").shape == (4, 5, 2)
    with pytest.raises(ValueError, match="must end with"):
        save_atomic(MetaTensor(torch.zeros(1, 4, 4)), tmp_path / "t.png")


def test_flags_and_error_summaries(tmp_path):
    assert as_flag("false") is False and as_flag("True") is True and as_flag(0) is False and as_flag(" yes ")
    with pytest.raises(ValueError, match="overwrite must be true or false, got 'maybe'"):
        DenoiseFolder(tmp_path, tmp_path / "out", transform=lambda d: d, overwrite="maybe")
    with pytest.raises(ValueError, match="output_dtype"):
        DenoiseFolder(tmp_path, tmp_path / "out", transform=lambda d: d, output_dtype="complex64")
    try:
        try:
            raise OSError("cannot read\nthe file")
        except OSError as inner:
            raise RuntimeError("applying transform LoadImaged") from inner
    except RuntimeError as outer:
        assert root_cause(outer) == "OSError: cannot read the file"


def test_time_left_by_work_done_and_voxels():
    """In this image: seconds so far per unit done times the units left; in all: plus the files after this one at the
    seconds per voxel of everything done in the run (the files before and this image's share)."""
    progress = ImageProgress("a.nii.gz", voxels=1000, voxels_after=3000, seconds_before=20.0, voxels_before=1000)
    here, everything = progress.time_left(done=25, total=100, elapsed=5.0)  # a quarter done in 5 s
    assert here == pytest.approx(15.0)
    assert everything == pytest.approx(15.0 + (20.0 + 5.0) / (1000 + 250) * 3000)
    alone = ImageProgress("a.nii.gz", voxels=1000, voxels_after=1000)
    assert alone.time_left(50, 100, 10.0) == pytest.approx((10.0, 30.0))

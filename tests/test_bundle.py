"""The MONAI Bundle in bundle/: run through MONAI's own API and CLI on tiny images (the default prior, the filter:
no network is fitted)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from pydoc import locate

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.transforms import LoadImage

import monai_dnaprior
from monai_dnaprior.bundle.runner import DenoiseFolderError

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning")

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
CONFIGS = BUNDLE / "configs"
INFERENCE, MULTI, SEGMENT = (
    str(CONFIGS / n) for n in ("inference.json", "multi_gpu_inference.json", "denoise_segment.json")
)
META = str(CONFIGS / "metadata.json")
AFFINE = np.array([[0.8, 0.1, 0.0, -12.0], [0.0, 0.9, 0.0, 4.0], [0.0, 0.0, 2.5, 7.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the machine's 2 cores are shared, and oversubscribed threads make small fits crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def write_nifti(path: Path, shape: tuple[int, ...], seed: int = 0) -> Path:
    img = np.random.default_rng(seed).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(img, AFFINE), path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_workflow(config: str | list[str], **override) -> list:
    """Initialise, run and finalise a workflow in this process; returns what ``run`` returned."""
    override.setdefault("bundle_root", str(BUNDLE))
    workflow = ConfigWorkflow(config_file=config, meta_file=META, logging_file=False, workflow_type=None, **override)
    workflow.initialize()
    try:
        return workflow.run()
    finally:
        workflow.finalize()


def denoise_folder(dataset_dir: Path, output_dir: Path, **override) -> dict[str, list[str]]:
    override = {"device": "cpu", "exit_on_error": False, **override}
    return run_workflow(INFERENCE, dataset_dir=str(dataset_dir), output_dir=str(output_dir), **override)[0]


def _fails_with(exc_type: type[BaseException], match: str, *args, **kwargs) -> None:
    """``denoise_folder`` raises ``exc_type`` (MONAI wraps it in a RuntimeError) with ``match`` in its message."""
    with pytest.raises((exc_type, RuntimeError)) as info:
        denoise_folder(*args, **kwargs)
    error = info.value if isinstance(info.value, exc_type) else info.value.__cause__
    assert isinstance(error, exc_type) and match in str(error), repr(info.value)


def output_files(folder: Path) -> list[str]:
    """The files of ``folder`` but the JSON settings sidecars (each output has one: see ``sidecar_files``)."""
    return sorted(n for n in os.listdir(folder) if not n.endswith(".json")) if folder.exists() else []


def sidecar_files(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".json"))


def test_default_input_through_the_cli(tmp_path):
    """The documented command with no dataset_dir denoises the sample that ships in bundle/sample_data."""
    sample = BUNDLE / "sample_data" / "mr_small_2d.nii.gz"
    before = _digest(sample)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", str(BUNDLE), "--config_file", INFERENCE,
           "--meta_file", META, "--output_dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[1/1] mr_small_2d.nii.gz: wrote" in proc.stdout  # per-file progress through configs/logging.conf
    out = nib.load(tmp_path / "out" / "mr_small_2d_denoised.nii.gz")
    src = nib.load(sample)
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)
    assert _digest(sample) == before
    assert output_files(tmp_path / "out") == ["mr_small_2d_denoised.nii.gz"]


def test_folder_keeps_shape_and_affine_and_inputs(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    shapes = {"a.nii.gz": (16, 16), "b.nii": (12, 20), "c.nii.gz": (12, 12, 2), "d.nii.gz": (10, 10, 1)}
    digests = {n: _digest(write_nifti(data / n, s, i)) for i, (n, s) in enumerate(shapes.items())}
    (data / "notes.txt").write_text("not an image")
    (data / ".hidden.nii.gz").write_bytes(b"ignored")
    summary = denoise_folder(data, out)
    assert len(summary["written"]) == 4 and not summary["failed"] and not summary["skipped"]
    assert output_files(out) == ["a_denoised.nii.gz", "b_denoised.nii.gz", "c_denoised.nii.gz", "d_denoised.nii.gz"]
    for name, shape in shapes.items():
        stem = name.split(".")[0]
        img = nib.load(out / f"{stem}_denoised.nii.gz")
        assert img.shape == shape and np.allclose(img.affine, AFFINE) and img.get_data_dtype() == np.float32
        assert np.isfinite(img.get_fdata()).all()
        assert _digest(data / name) == digests[name]


def test_missing_dataset_dir_is_one_error_line(tmp_path):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", str(BUNDLE), "--config_file", INFERENCE,
           "--meta_file", META, "--dataset_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "does not exist" in errors[0] and str(tmp_path / "nope") in errors[0]
    assert not (tmp_path / "out").exists()


def test_empty_dataset_dir_and_unsafe_output_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    _fails_with(ValueError, "No input images", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(SystemExit) as exit_info:
        denoise_folder(tmp_path / "empty", tmp_path / "out", exit_on_error=True)
    assert exit_info.value.code == 1
    data = tmp_path / "data"
    data.mkdir()
    digest = _digest(write_nifti(data / "x_denoised.nii.gz", (8, 8)))
    _fails_with(ValueError, "input folder", data, data)
    assert output_files(data) == ["x_denoised.nii.gz"] and _digest(data / "x_denoised.nii.gz") == digest
    write_nifti(data / "x_denoised.nii", (8, 8))
    _fails_with(ValueError, "both be written", data, tmp_path / "out")


def _torchrun(data: Path, out: Path, *extra: str) -> tuple[int, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "monai.bundle", "run", "--bundle_root", str(BUNDLE), "--config_file", f"['{INFERENCE}','{MULTI}']",
           "--meta_file", META, "--dataset_dir", str(data), "--output_dir", str(out), *extra]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=cli_env(), timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_torchrun_with_a_corrupt_file_writes_every_other_output(tmp_path):
    """The files are shared out by size (the corrupt file, one voxel by its header that does not load, goes last
    onto rank 0); no rank is killed: every good file is written, the failure is listed once (by rank 0, for every
    rank), the run exits non-zero, and a rerun gives the same result."""
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    names = ["img0", "img1_corrupt", "img2", "img3", "img4"]
    for i, name in enumerate(names):
        if "corrupt" in name:
            (data / f"{name}.nii.gz").write_bytes(b"not a NIfTI file")
        else:
            write_nifti(data / f"{name}.nii.gz", (16, 16), i)
    good = [f"{n}_denoised.nii.gz" for n in names if "corrupt" not in n]
    for attempt in ("first", "rerun"):
        rc, log = _torchrun(data, out)
        assert rc != 0, log
        assert output_files(out) == good, log
        assert len(sidecar_files(out)) == 4
        assert log.count("1 of 5 images failed: img1_corrupt.nii.gz") == 1, log
        assert log.count("img1_corrupt.nii.gz: FAILED") == 1, log
        # both ranks finished their share (torchrun may SIGTERM a rank that is already tearing down, never one
        # that is fitting: rank 0 exits only after every rank has reported)
        assert log.count("[rank 0/2] done") == 1 and log.count("[rank 1/2] done") == 1, log
        if attempt == "first":
            for name in good:
                assert log.count(f"{name} in") == 1, log  # written by exactly one rank
            # by size: img0, img3 (and the corrupt one) on rank 0, img2, img4 on rank 1, each share in name order
            assert "[rank 0/2] [3/3] img3.nii.gz: wrote" in log and "[rank 1/2] [2/2] img4.nii.gz: wrote" in log
            assert "[rank 0/2] [2/3] img1_corrupt.nii.gz: FAILED" in log
        else:
            assert log.count("exists with the same settings, skipped") == 4, log


def test_torchrun_the_failing_rank_waits_for_the_others(tmp_path):
    """Rank 1's only file is corrupt, so it is done at once while rank 0 still denoises; it must wait, not exit."""
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_nifti(data / "a.nii.gz", (96, 96), 0)
    (data / "b_corrupt.nii.gz").write_bytes(b"not a NIfTI file")
    rc, log = _torchrun(data, out)
    assert rc != 0, log
    assert output_files(out) == ["a_denoised.nii.gz"], log
    assert "[rank 1/2] [1/1] b_corrupt.nii.gz: FAILED" in log, log
    assert log.count("1 of 2 images failed: b_corrupt.nii.gz") == 1, log
    assert log.count("[rank 0/2] done") == 1 and log.count("[rank 1/2] done") == 1, log


def test_corrupt_file_is_reported_and_the_rest_written(tmp_path, caplog):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_nifti(data / "a.nii.gz", (16, 16), 1)
    (data / "b_corrupt.nii.gz").write_bytes(b"this is not a NIfTI file")
    write_nifti(data / "c.nii.gz", (16, 16), 2)
    with caplog.at_level("INFO", logger="monai_dnaprior"), pytest.raises(SystemExit) as exit_info:
        denoise_folder(data, out, exit_on_error=True)
    assert exit_info.value.code == 1
    assert output_files(out) == ["a_denoised.nii.gz", "c_denoised.nii.gz"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("b_corrupt.nii.gz: FAILED" in e for e in errors)
    assert errors[-1] == "1 of 3 images failed: b_corrupt.nii.gz"
    _fails_with(DenoiseFolderError, "b_corrupt", data, out)  # Python callers get an exception instead


def test_rerun_skips_existing_outputs_unless_overwrite(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_nifti(data / "a.nii.gz", (16, 16))
    write_nifti(data / "b.nii.gz", (16, 16), 1)
    assert len(denoise_folder(data, out)["written"]) == 2
    marker = out / "a_denoised.nii.gz"
    marker.write_bytes(b"kept")
    summary = denoise_folder(data, out)
    assert len(summary["skipped"]) == 2 and not summary["written"] and marker.read_bytes() == b"kept"
    summary = denoise_folder(data, out, overwrite="true")  # as `--overwrite true` arrives from the command line
    assert len(summary["written"]) == 2 and nib.load(marker).shape == (16, 16)


def _falloff_scan(data: Path, maps: Path, name: str) -> np.ndarray:
    """A smooth 48x48 image under noise growing 5x along its first axis, and that map (at another scale) in ``maps``
    under the same name; returns the clean image."""
    yy, xx = np.mgrid[-1:1:48j, -1:1:48j]
    clean = (0.2 + np.exp(-3 * (xx**2 + yy**2))).astype(np.float32)
    g = np.exp(np.log(5.0) * (yy + 1) / 2).astype(np.float32)
    noisy = clean + 0.04 * g / np.median(g) * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(noisy, AFFINE), data / name)
    nib.save(nib.Nifti1Image(100 * g, AFFINE), maps / name)
    return clean


def test_noise_maps_from_a_folder(tmp_path):
    """``--noise_map_dir``: each input takes the map of its name there (recorded in its sidecar and fingerprint);
    an input without one fails with the folder named, the others are written; a changed map re-denoises."""
    data, maps, out, plain_out = tmp_path / "data", tmp_path / "maps", tmp_path / "out", tmp_path / "plain"
    for d in (data, maps):
        d.mkdir()
    clean = _falloff_scan(data, maps, "a.nii.gz")
    write_nifti(data / "b.nii.gz", (16, 16))  # no map for it
    _fails_with(DenoiseFolderError, "1 of 2 images failed: b.nii.gz", data, out, noise_map_dir=str(maps))
    assert output_files(out) == ["a_denoised.nii.gz"]
    sidecar = json.loads((out / "a_denoised.json").read_text())
    assert sidecar["noise_map"] == str((maps / "a.nii.gz").resolve())
    (data / "b.nii.gz").unlink()
    denoise_folder(data, plain_out)  # the map read from the image instead

    def error(folder: Path) -> float:
        return float(np.sqrt(np.mean((nib.load(folder / "a_denoised.nii.gz").get_fdata() - clean) ** 2)))

    noisy = float(np.sqrt(np.mean((nib.load(data / "a.nii.gz").get_fdata() - clean) ** 2)))
    assert error(out) < 0.3 * noisy  # 0.010 from 0.050
    assert error(out) < error(plain_out) * 1.05  # at least as good as without it (on 48 px the blind map is unread)
    assert denoise_folder(data, out, noise_map_dir=str(maps))["skipped"] == [str(data / "a.nii.gz")]
    g = nib.load(maps / "a.nii.gz").get_fdata().astype(np.float32)
    nib.save(nib.Nifti1Image(np.ones_like(g), AFFINE), maps / "a.nii.gz")  # another map: denoised again
    os.utime(maps / "a.nii.gz", ns=(1, 1))
    assert denoise_folder(data, out, noise_map_dir=str(maps))["written"] == [str(data / "a.nii.gz")]


def test_noise_map_dir_is_checked_before_any_work(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_nifti(data / "a.nii.gz", (16, 16))
    _fails_with(ValueError, "is not a folder", data, tmp_path / "out", noise_map_dir=str(tmp_path / "none"))
    _fails_with(ValueError, "describes additive noise", data, tmp_path / "out", noise_map_dir=str(data),
                noise_model="speckle")
    _fails_with(ValueError, "noise_map_dir is dataset_dir", data, tmp_path / "out", noise_map_dir=str(data))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_leaves_no_partial_output(tmp_path, monkeypatch, error):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_nifti(data / "a.nii.gz", (16, 16))

    def broken_save(img, filename):
        Path(filename).write_bytes(b"half a file")
        raise error

    monkeypatch.setattr("monai_dnaprior.bundle.outputs.nib.save", broken_save)
    with pytest.raises((type(error), RuntimeError)):
        denoise_folder(data, out)
    assert output_files(out) == []  # neither the final name nor the temporary file


def test_dicom_file_and_series(tmp_path):
    """A ``.dcm`` file and a sub-folder of DICOM files (here without a suffix: found by the preamble)."""
    itk = pytest.importorskip("itk")
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "series").mkdir(parents=True)
    img = itk.image_from_array((np.random.default_rng(0).random((12, 14)) * 1000).astype(np.int16))
    img.SetSpacing([0.5, 0.7])
    itk.imwrite(img, str(data / "slice.dcm"))
    shutil.copy(data / "slice.dcm", data / "series" / "IM0001")
    before = LoadImage(image_only=True)(data / "slice.dcm")
    summary = denoise_folder(data, out)
    assert not summary["failed"] and output_files(out) == ["series_denoised.nii.gz", "slice_denoised.nii.gz"]
    for name in output_files(out):
        result = nib.load(out / name)
        assert result.shape == tuple(before.shape) and np.allclose(result.affine, before.affine.numpy())


def test_metadata_fields():
    """`monai.bundle verify_metadata` downloads its schema, so the schema's required fields are checked here."""
    meta = json.loads(Path(META).read_text())
    required = ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "task", "description", "authors", "copyright", "network_data_format")
    assert all(meta.get(k) for k in required)
    assert meta["version"] in meta["changelog"]
    assert meta["required_packages_version"]["monai_dnaprior"] == monai_dnaprior.__version__
    for io in ("inputs", "outputs"):
        for tensor in meta["network_data_format"][io].values():
            assert {"type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
                    "channel_def"} <= set(tensor)
    assert set(meta["network_data_format"]["inputs"]) == {"image"}
    written = json.loads(Path(INFERENCE).read_text())["image_key"]  # the key the runner writes out
    assert set(meta["network_data_format"]["outputs"]) == {written}
    for io in ("inputs", "outputs"):
        for tensor in meta["network_data_format"][io].values():
            value_range = tensor["value_range"]  # the spec's form: [MIN, MAX], or [] when not known
            numbers = all(isinstance(v, (int, float)) for v in value_range)
            assert value_range == [] or (len(value_range) == 2 and numbers)
            assert len(tensor["spatial_shape"]) in (2, 3)


def _targets(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "_target_"] + [t for v in node.values() for t in _targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in _targets(v)]
    return []


def test_configs_use_full_dotted_targets_and_user_keys():
    targets = [t for c in (INFERENCE, MULTI, SEGMENT) for t in _targets(json.loads(Path(c).read_text()))]
    assert "monai_dnaprior.transforms.DNAPriorDenoised" in targets
    for target in targets:
        assert target.split(".")[0] in ("monai", "monai_dnaprior") and locate(target) is not None, target
    keys = json.loads(Path(INFERENCE).read_text())
    assert {"dataset_dir", "output_dir", "device", "noise_model", "noise_level", "preset", "prior", "max_iters", "seed",
            "volume_mode", "output_dtype", "overwrite", "exit_on_error", "progress_interval"} <= set(keys)
    assert keys["prior"] == "auto" and keys["max_iters"] is keys["seed"] is keys["volume_mode"] is None
    segment = json.loads(Path(SEGMENT).read_text())
    assert segment["prior"] == "auto" and segment["max_iters"] is segment["seed"] is segment["volume_mode"] is None
    assert "checkpoint" in json.loads(Path(SEGMENT).read_text())


def _two_images(tmp_path: Path) -> Path:
    pytest.importorskip("ignite", reason="SupervisedEvaluator needs pytorch-ignite (pip install .[bundle])")
    data = tmp_path / "data"
    data.mkdir()
    write_nifti(data / "a.nii.gz", (16, 16))
    write_nifti(data / "b.nii.gz", (20, 12), 1)
    return data


def test_denoise_then_segment_with_a_random_unet(tmp_path):
    """No checkpoint: the UNet is randomly initialised, so this proves the wiring, not the segmentation."""
    data, out = _two_images(tmp_path), tmp_path / "seg"
    run_workflow(SEGMENT, dataset_dir=str(data), output_dir=str(out), device="cpu")
    assert output_files(out) == ["a_seg.nii.gz", "b_seg.nii.gz"]
    for name, shape in (("a", (16, 16)), ("b", (20, 12))):
        seg = nib.load(out / f"{name}_seg.nii.gz")
        assert seg.shape == shape and np.allclose(seg.affine, AFFINE)
        assert set(np.unique(seg.get_fdata())) <= {0.0, 1.0}


def test_denoise_then_segment_loads_the_checkpoint_safely(tmp_path, monkeypatch):
    data, out = _two_images(tmp_path), tmp_path / "seg"
    net = locate("monai.networks.nets.UNet")(
        spatial_dims=2, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
        num_res_units=2, norm="batch",
    )
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.01)
    torch.save(net.state_dict(), tmp_path / "unet.pt")
    calls = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    workflow = ConfigWorkflow(
        config_file=SEGMENT, meta_file=META, logging_file=False, workflow_type=None, bundle_root=str(BUNDLE),
        dataset_dir=str(data), output_dir=str(out), device="cpu", checkpoint=str(tmp_path / "unet.pt"),
    )
    workflow.initialize()
    workflow.run()
    assert calls == [True]
    loaded = workflow.parser.get_parsed_content("network").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    assert output_files(out) == ["a_seg.nii.gz", "b_seg.nii.gz"]

"""Tests of the refinement: block matching, the local and collaborative Wiener passes, and their schedule."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_phantom, psnr
from monai.networks.layers import GaussianFilter

from monai_dnaprior import FitConfig
from monai_dnaprior import block_matching, wiener
from monai_dnaprior.filters.block_matching import grid_positions, match_blocks, patch_indices
from monai_dnaprior.denoising import refinement_passes
from monai_dnaprior.filters.collaborative import CollaborativePass, collaborative_filter, dct_matrix, collaborative_refine

LOCAL = CollaborativePass(patch=4)
MATCHED = CollaborativePass(patch=4, group=8, radius=6, step=2)
SAMPLE = Path(__file__).resolve().parents[1] / "bundle" / "sample_data" / "mr_small_2d.nii.gz"


def _periodic(shape: tuple[int, ...], period: int = 5) -> torch.Tensor:
    """A texture that repeats every ``period`` voxels along each axis, in [0, 1]."""
    rng = np.random.default_rng(3)
    tile = rng.random((period,) * len(shape))
    reps = [-(-s // period) for s in shape]
    return torch.as_tensor(np.tile(tile, reps)[tuple(slice(0, s) for s in shape)], dtype=torch.float32)


def _noisy(clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    return clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))


def test_dct_matrix_is_orthonormal():
    d = dct_matrix(8)
    torch.testing.assert_close(d @ d.T, torch.eye(8), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size,step", [(10, 3), (9, 4), (1, 3), (7, 1)])
def test_grid_positions_cover_the_axis(size, step):
    positions = grid_positions(size, step).tolist()
    assert positions[0] == 0 and positions[-1] == size - 1
    assert all(0 < b - a <= step for a, b in zip(positions, positions[1:]))


def test_patch_indices_match_slicing():
    image = torch.arange(7 * 6 * 5).view(7, 6, 5)
    corners = torch.tensor([[0, 0, 0], [3, 2, 1]])
    index = patch_indices(corners, (4, 3, 2), image.shape)
    for corner, idx in zip(corners.tolist(), index):
        x, y, z = corner
        torch.testing.assert_close(image.flatten()[idx], image[x : x + 4, y : y + 3, z : z + 2].flatten())


@pytest.mark.parametrize("shape,patch,radius,step", [((23, 21), (4, 4), (6, 6), (2, 2)),
                                                     ((16, 15, 12), (4, 4, 2), (5, 5, 5), (3, 3, 1))])
def test_block_matching_finds_exact_repeats(shape, patch, radius, step):
    """In a texture of period 5 the best matches of a patch are its exact copies, at multiples of the period."""
    pilot = _periodic(shape)
    groups = match_blocks(pilot, patch, radius, step, group=4)
    assert groups.shape[1:] == (4, len(shape))
    positions = torch.tensor([s - p + 1 for s, p in zip(shape, patch)])
    assert (groups >= 0).all() and (groups < positions).all()
    index = patch_indices(groups, patch, shape)
    patches = pilot.flatten()[index]  # (refs, group, voxels)
    torch.testing.assert_close(groups[:, 0], match_blocks(pilot, patch, radius, step, group=1)[:, 0])  # reference first
    interior = ((groups[:, 0] >= 5) & (groups[:, 0] < positions - 5)).all(-1)  # copies within reach on every side
    assert interior.any()
    torch.testing.assert_close(patches[interior], patches[interior, :1].expand_as(patches[interior]))
    assert ((groups[interior] - groups[interior, :1]) % 5 == 0).all()


def test_block_matching_fills_small_windows_with_the_reference():
    groups = match_blocks(torch.rand(5, 5), (4, 4), (1, 1), (1, 1), group=16)  # 2x2 positions, 3x3 offsets
    assert groups.shape == (4, 9, 2)
    assert (groups >= 0).all() and (groups <= 1).all()
    repeats = (groups == groups[:, :1]).all(-1).sum(1)
    assert (repeats >= 9 - 3).all()  # the 5 offsets that leave the image point back at the reference


@pytest.mark.parametrize("spec", [LOCAL, MATCHED], ids=["local", "matched"])
def test_wiener_keeps_the_observation_when_the_noise_vanishes(spec):
    noisy = torch.rand(19, 17)
    torch.testing.assert_close(collaborative_filter(noisy, noisy, 1e-6, spec), noisy, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", [(32, 32), (24, 20, 8)])
def test_wiener_with_a_good_pilot_removes_most_noise(shape):
    clean = torch.as_tensor(make_phantom(shape))
    noisy = _noisy(clean, 0.1)
    for spec in (LOCAL, MATCHED):
        out = collaborative_filter(noisy, clean, 0.1, spec)
        assert out.shape == clean.shape
        assert psnr(out, clean) > psnr(noisy, clean) + 6


def test_collaborative_beats_local_on_repeated_structure():
    """Similar patches average out each other's noise: grouping must pay on a repeating texture."""
    clean = _periodic((40, 40))
    noisy = _noisy(clean, 0.2)
    local = collaborative_filter(noisy, clean, 0.2, CollaborativePass(patch=5))
    grouped = collaborative_filter(noisy, clean, 0.2, CollaborativePass(patch=5, group=16, radius=10, step=2))
    assert psnr(grouped, clean) > psnr(local, clean) + 1.0


def test_passes_improve_a_blurred_pilot():
    """On the real MR slice that ships with the bundle, each pass's result is a better pilot for the next."""
    image = np.squeeze(nib.load(str(SAMPLE)).get_fdata(dtype=np.float32))
    clean = torch.as_tensor((image - image.min()) / (image.max() - image.min()))
    noisy = _noisy(clean, 0.1)
    pilot = GaussianFilter(2, 1.0)(noisy[None, None])
    scores = [psnr(collaborative_refine(noisy[None, None], pilot, 0.1, [MATCHED] * n)[0, 0], clean) for n in (1, 2, 3)]
    assert psnr(noisy, clean) + 5 < psnr(pilot[0, 0], clean) + 2 < scores[0] < scores[1] < scores[2]


@pytest.mark.parametrize(
    "shape, spec, slabs",
    [
        ((16, 16, 12), CollaborativePass(patch=4, group=4, radius=3, step=2, depth=2), 3),  # 4 slices a slab
        ((24, 40), CollaborativePass(patch=4, group=4, radius=3, step=2), 5),  # 8 columns a slab
    ],
)
def test_large_images_are_filtered_in_slabs(monkeypatch, shape, spec, slabs):
    clean = torch.as_tensor(make_phantom(shape))
    noisy = _noisy(clean, 0.1)
    whole = collaborative_filter(noisy, clean, 0.1, spec)
    calls = []
    original = wiener.collaborative_filter
    monkeypatch.setattr(wiener, "_MATCH_TABLE", 1)  # forces slabs of the minimum width
    monkeypatch.setattr(wiener, "collaborative_filter", lambda *a: calls.append(a[0].shape) or original(*a))
    slabbed = collaborative_refine(noisy[None, None], clean[None, None], 0.1, [spec])[0, 0]
    assert len(calls) == slabs and all(s[-1] < shape[-1] for s in calls)
    assert slabbed.shape == clean.shape
    assert abs(psnr(slabbed, clean) - psnr(whole, clean)) < 0.3


def test_refine_leaves_its_inputs_alone_and_handles_channels():
    noisy, pilot = torch.rand(1, 2, 12, 12), torch.rand(1, 2, 12, 12)
    before = noisy.clone(), pilot.clone()
    out = collaborative_refine(noisy, pilot, 0.1, [LOCAL, MATCHED])
    assert out.shape == noisy.shape
    torch.testing.assert_close((noisy, pilot), before)
    torch.testing.assert_close(out[0, 1:], collaborative_refine(noisy[:, 1:], pilot[:, 1:], 0.1, [LOCAL, MATCHED])[0])
    torch.testing.assert_close(collaborative_refine(noisy, pilot, 0.0, [LOCAL]), noisy)
    torch.testing.assert_close(collaborative_refine(noisy, pilot, 0.1, []), noisy)


def test_block_matching_memory_chunks_agree(monkeypatch):
    pilot = torch.rand(20, 18)
    full = match_blocks(pilot, (4, 4), (5, 5), (2, 2), 6)
    monkeypatch.setattr(block_matching, "_SHIFTED_VOXELS", pilot.numel() * 7)  # 7 offsets at a time
    torch.testing.assert_close(match_blocks(pilot, (4, 4), (5, 5), (2, 2), 6), full)


def test_schedule_follows_the_config():
    passes = refinement_passes(FitConfig(wiener_passes=3, match_group=8, threshold=3.0, threshold_radius=12))
    assert len(passes) == 4 and passes[0].threshold == 3.0 and passes[0].radius == 12
    assert all(p.group == 8 for p in passes) and all(p.threshold == 0 and p.radius == 8 for p in passes[1:])
    volume = refinement_passes(FitConfig(), 3)
    assert all(p.patch == p.depth == 4 and p.radius == 5 for p in volume)
    coloured = refinement_passes(FitConfig(coloured_passes=2), 2, coloured=True)  # nothing matched on the noise
    assert len(coloured) == 3 and coloured[0].group == 1 and all(p.threshold == 0 for p in coloured)
    assert refinement_passes(FitConfig(wiener_patch=0)) == []


def test_hard_thresholding_needs_no_pilot_and_keeps_the_mean():
    """The first pass thresholds the observation itself: matched on it, its pilot unused; a flat image (all its
    energy in the groups' means) comes back as it was."""
    clean = torch.as_tensor(make_phantom((40, 40)))
    noisy = _noisy(clean, 0.1)
    spec = CollaborativePass(patch=8, group=16, radius=10, step=3, threshold=2.7)
    out = collaborative_filter(noisy, torch.zeros_like(noisy), 0.1, spec)
    torch.testing.assert_close(out, collaborative_filter(noisy, torch.rand(40, 40), 0.1, spec))
    assert psnr(out, clean) > psnr(noisy, clean) + 5
    flat = torch.full((24, 24), 0.3)
    torch.testing.assert_close(collaborative_filter(flat, flat, 0.1, spec), flat)


def test_a_wiener_pass_improves_the_thresholded_pilot():
    """On the real MR slice that ships with the bundle: thresholding denoises, and a Wiener pass with its result as
    the pilot does better still."""
    image = np.squeeze(nib.load(str(SAMPLE)).get_fdata(dtype=np.float32))
    clean = torch.as_tensor((image - image.min()) / (image.max() - image.min()))
    noisy = _noisy(clean, 0.1)[None, None]
    passes = refinement_passes(FitConfig())
    thresholded = collaborative_refine(noisy, noisy, 0.1, passes[:1])[0, 0]
    refined = collaborative_refine(noisy, noisy, 0.1, passes)[0, 0]
    assert psnr(noisy[0, 0], clean) + 5 < psnr(thresholded, clean) < psnr(refined, clean) - 0.3

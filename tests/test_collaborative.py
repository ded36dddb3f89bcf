"""The collaborative filter: block matching, the hard-thresholding and Wiener passes over groups of similar
patches, large images in slabs, and the passes the filter runs (``filter_passes``)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_phantom, psnr
from monai.networks.layers import GaussianFilter

import monai_dnaprior.filters.collaborative as collaborative_module
from monai_dnaprior import CollaborativePass, FilterConfig
from monai_dnaprior.filters import collaborative_filter, collaborative_refine, filter_passes, match_blocks
from monai_dnaprior.filters.block_matching import grid_positions, patch_indices
from monai_dnaprior.filters.collaborative import dct_matrix
from monai_dnaprior.filters.nl_bayes import BayesPass, nl_bayes
from monai_dnaprior.filters.slabs import in_slabs

LOCAL = CollaborativePass.wiener(patch=4)
MATCHED = CollaborativePass.wiener(patch=4, group=8, radius=6, step=2)
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



@pytest.mark.parametrize("shape", [(24, 20), (12, 12, 8)])
def test_hard_thresholding_zeroes_a_flat_group_at_the_origin(shape):
    """The group's mean is thresholded as BM3D thresholds it: a flat region at 0 whose every coefficient lies under
    the threshold comes back as 0, not as the mean of its noise; a flat region at 1 keeps its level."""
    small = 0.01 * torch.randn(shape, generator=torch.Generator().manual_seed(0))
    spec = filter_passes(FilterConfig(), len(shape))[0]
    torch.testing.assert_close(collaborative_filter(small, small, 0.1, spec), torch.zeros(shape))
    lifted = collaborative_filter(small + 1.0, small + 1.0, 0.1, spec)
    torch.testing.assert_close(lifted, (small + 1.0).mean().expand(shape), atol=0.01, rtol=0)

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
    local = collaborative_filter(noisy, clean, 0.2, CollaborativePass.wiener(patch=5))
    grouped = collaborative_filter(noisy, clean, 0.2, CollaborativePass.wiener(patch=5, group=16, radius=10, step=2))
    assert psnr(grouped, clean) > psnr(local, clean) + 1.0


def test_passes_improve_a_blurred_pilot():
    """On the real MR slice that ships with the bundle, each pass's result is a better pilot for the next."""
    image = np.squeeze(nib.load(str(SAMPLE)).get_fdata(dtype=np.float32))
    clean = torch.as_tensor((image - image.min()) / (image.max() - image.min()))
    noisy = _noisy(clean, 0.1)
    pilot = GaussianFilter(2, 1.0)(noisy[None, None])
    scores = [psnr(collaborative_refine(noisy[None, None], pilot, 0.1, [MATCHED] * n)[0, 0], clean) for n in (1, 2, 3)]
    assert psnr(noisy, clean) + 5 < psnr(pilot[0, 0], clean) + 2 < scores[0] < scores[1] < scores[2]


def test_a_large_volume_is_filtered_in_slabs(monkeypatch):
    """A search window so wide in-plane (radius 150, reaching past the image) that the block matching's distance
    table (references x offsets) is over its bound: the volume goes in slabs of 4 slices, each with a margin of 3
    (the cube's depth and the search along it), and the result is the whole volume's."""
    shape = (16, 16, 12)
    spec = CollaborativePass.wiener(patch=4, group=4, radius=150, step=2, depth=2, depth_radius=1)
    clean = torch.as_tensor(make_phantom(shape))
    noisy = _noisy(clean, 0.1)
    whole = collaborative_filter(noisy, clean, 0.1, spec)
    calls = []
    original = collaborative_module.collaborative_filter
    monkeypatch.setattr(collaborative_module, "collaborative_filter",
                        lambda *a: calls.append(a[0].shape) or original(*a))
    slabbed = collaborative_refine(noisy[None, None], clean[None, None], 0.1, [spec])[0, 0]
    assert [s[-1] for s in calls] == [7, 10, 7]  # slabs [0, 4), [4, 8), [8, 12), with their margins
    assert slabbed.shape == clean.shape
    assert abs(psnr(slabbed, clean) - psnr(whole, clean)) < 0.3


@pytest.mark.parametrize("name", ["collaborative", "nl_bayes"])
def test_in_slabs_puts_the_slabs_together_as_the_whole(name):
    """A 2D image in slabs of columns (a search radius along the rows large enough to bound the table, and along
    the columns the filter's own): each slab filtered with a margin for its patches and searches, the result close
    to the whole image's."""
    clean = torch.as_tensor(make_phantom((24, 40)))
    noisy = _noisy(clean, 0.1)
    if name == "collaborative":
        spec = CollaborativePass.wiener(patch=4, group=4, radius=3, step=2)
        part = lambda n, p: collaborative_filter(n, p, 0.1, spec)  # noqa: E731
    else:
        spec = BayesPass(patch=4, group=8, radius=3, step=2)
        part = lambda n, p: nl_bayes(n, p, 0.1, spec)  # noqa: E731
    calls = []
    whole = part(noisy, clean)
    slabbed = in_slabs(lambda n, p: calls.append(n.shape) or part(n, p), noisy, clean, (4, 4), (10**6, 3), (2, 2),
                       True)
    assert len(calls) > 2 and all(s[-1] < 40 for s in calls)
    assert slabbed.shape == clean.shape
    assert abs(psnr(slabbed, clean) - psnr(whole, clean)) < 0.3
    assert float((slabbed - whole).abs().max()) < 0.1


def test_in_slabs_leaves_a_small_image_whole():
    calls = []
    image = torch.rand(12, 12)
    out = in_slabs(lambda n, p: calls.append(n.shape) or n + p, image, image, (4, 4), (3, 3), (2, 2), True)
    assert calls == [(12, 12)] and torch.equal(out, 2 * image)


def test_refine_leaves_its_inputs_alone_and_handles_channels():
    noisy, pilot = torch.rand(1, 2, 12, 12), torch.rand(1, 2, 12, 12)
    before = noisy.clone(), pilot.clone()
    out = collaborative_refine(noisy, pilot, 0.1, [LOCAL, MATCHED])
    assert out.shape == noisy.shape
    torch.testing.assert_close((noisy, pilot), before)
    torch.testing.assert_close(out[0, 1:], collaborative_refine(noisy[:, 1:], pilot[:, 1:], 0.1, [LOCAL, MATCHED])[0])
    torch.testing.assert_close(collaborative_refine(noisy, pilot, 0.0, [LOCAL]), noisy)
    torch.testing.assert_close(collaborative_refine(noisy, pilot, 0.1, []), noisy)


def test_block_matching_finds_the_nearest_patches_on_a_large_image():
    """An image large enough that the shifted copies of the pilot are held a few offsets at a time: every group
    holds the most similar patches within its window (brute force), nearest first."""
    pilot = torch.rand(300, 300, generator=torch.Generator().manual_seed(0))
    patch, radius, group = (4, 4), (3, 3), 6
    groups = match_blocks(pilot, patch, radius, (60, 60), group)
    for corners in groups:
        ref = corners[0].tolist()
        reference = pilot[ref[0] : ref[0] + 4, ref[1] : ref[1] + 4]
        distances = {}
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                y, x = ref[0] + dy, ref[1] + dx
                if 0 <= y <= 300 - 4 and 0 <= x <= 300 - 4:
                    distances[(y, x)] = float((pilot[y : y + 4, x : x + 4] - reference).square().sum())
        found = [distances[tuple(c)] for c in corners.tolist()]
        assert found == sorted(found) and found[0] == 0.0
        assert found[-1] == pytest.approx(sorted(distances.values())[group - 1], rel=1e-4)


def test_the_passes_follow_the_config():
    passes = filter_passes(FilterConfig(wiener_passes=3, match_group=8, threshold=3.0, threshold_radius=12))
    assert len(passes) == 4 and passes[0].is_hard_threshold and passes[0].threshold == 3.0 and passes[0].radius == 12
    assert all(p.group == 8 for p in passes)
    assert all(not p.is_hard_threshold and p.radius == 8 and p.step == 3 for p in passes[1:])
    volume = filter_passes(FilterConfig(), 3)
    assert all(p.patch == p.depth == 4 and p.radius == 5 and p.depth_radius == 2 for p in volume)
    coloured = filter_passes(FilterConfig(coloured_passes=2), 2, coloured=True)  # nothing matched on the noise
    assert len(coloured) == 3 and coloured[0].group == 1 and not any(p.is_hard_threshold for p in coloured)
    assert filter_passes(FilterConfig(patch=6, match_step=2))[1] == CollaborativePass.wiener(
        patch=6, group=16, radius=8, step=2, depth_radius=0, adaptive=True)
    assert all(p.adaptive for p in passes + volume) and not any(p.adaptive for p in coloured)
    assert not any(p.adaptive for p in filter_passes(FilterConfig(group_transform="dct")))
    with pytest.raises(ValueError, match="group_transform='haar' is not known.*adaptive"):
        filter_passes(FilterConfig(group_transform="haar"))


def test_a_hard_thresholding_pass_needs_a_positive_threshold():
    assert CollaborativePass.hard_threshold(2.7, patch=8).is_hard_threshold
    assert not CollaborativePass.wiener(patch=8).is_hard_threshold
    with pytest.raises(ValueError, match="positive threshold"):
        CollaborativePass.hard_threshold(0.0, patch=8)


def test_hard_thresholding_needs_no_pilot_and_keeps_the_mean():
    """The first pass thresholds the observation itself: matched on it, its pilot unused; a flat image (all its
    energy in the groups' means) comes back as it was."""
    clean = torch.as_tensor(make_phantom((40, 40)))
    noisy = _noisy(clean, 0.1)
    spec = CollaborativePass.hard_threshold(2.7, patch=8, group=16, radius=10, step=3)
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
    passes = filter_passes(FilterConfig())
    thresholded = collaborative_refine(noisy, noisy, 0.1, passes[:1])[0, 0]
    refined = collaborative_refine(noisy, noisy, 0.1, passes)[0, 0]
    assert psnr(noisy[0, 0], clean) + 5 < psnr(thresholded, clean) < psnr(refined, clean) - 0.3

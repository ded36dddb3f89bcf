"""Python-side setting checks (seed, noise level, device, batch-like and channel-last shapes) and the CPU thread
policy (user's choice kept; DataLoader workers and torchrun ranks share the cores)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from monai_dnaprior import DNAPriorDenoise, DNAPriorDenoised
from monai_dnaprior.devices import cpu_threads, planned_threads
from monai_dnaprior.settings import NoiseModelName, Prior
from monai_dnaprior.validation import check_device, check_image, check_network_settings, check_option


@pytest.mark.parametrize("kwargs, error, match", [
    ({"seed": 1.5, "prior": "network"}, TypeError, "seed must be an integer"),
    ({"seed": "0", "prior": "network"}, TypeError, "seed must be an integer"),
    ({"noise_level": "0.1"}, TypeError, "noise_level must be a number"),
    ({"noise_level": float("inf")}, ValueError, "noise_level"),
    ({"device": "gpu"}, ValueError, "use 'cuda'"),
    ({"device": "cuda;1"}, ValueError, "Unknown device"),
    ({"device": 3.5}, TypeError, "device must be"),
])
@pytest.mark.parametrize("cls", [DNAPriorDenoise, DNAPriorDenoised])
def test_bad_settings_are_one_clear_error(cls, kwargs, error, match):
    args = {"keys": "image"} if cls is DNAPriorDenoised else {}
    with pytest.raises(error, match=match):
        cls(**args, **kwargs)


def test_valid_settings_pass():
    t = DNAPriorDenoise(seed=np.int64(3), noise_level=np.float32(0.1), device=torch.device("cpu"), prior="network")
    assert t.seed == 3 and t.device == "cpu"
    assert DNAPriorDenoise(prior="network").seed == 0  # None: the default seed
    check_device("cuda:1")  # a valid name, even without a GPU: availability is checked when the fit runs


def test_typo_suggests_the_choice():
    with pytest.raises(ValueError, match="noise_model") as error:
        check_option("noise_model", "gausian", NoiseModelName)
    assert "'gaussian'" in str(error.value) and "'gausian'" in str(error.value)
    assert check_option("prior", "network+filter", Prior) is Prior.NETWORK_FILTER


def test_network_settings_are_checked_against_the_prior():
    check_network_settings("network", max_iters=5, seed=1)
    check_network_settings(Prior.NETWORK_FILTER, tv_scale=0.3)
    check_network_settings("auto", max_iters=None, seed=None)  # nothing given: nothing to refuse
    with pytest.raises(ValueError, match="phase_weight, seed set the network fit") as error:
        check_network_settings("filter", seed=0, phase_weight=0.5, max_iters=None)
    assert "max_iters" not in str(error.value)


@pytest.mark.parametrize("shape, match", [
    ((2, 1, 16, 16), "looks like a batch"),
    ((64, 64, 1), "channel-last"),
    ((3, 1, 7), "channel-last"),
])
def test_batch_and_channel_last_shapes_are_refused(shape, match):
    with pytest.raises(ValueError, match=match):
        check_image(torch.zeros(shape))


@pytest.mark.parametrize("shape", [(1, 16, 16, 1), (3, 16, 16, 1), (1, 1, 16, 16), (2, 8, 8), (10, 8, 8, 3)])
def test_single_slices_and_channels_stay_valid(shape):
    check_image(torch.zeros(shape))


def _eight_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)


@pytest.fixture
def no_thread_env(monkeypatch):
    """A user who chose nothing: no thread variables, and torch's thread count as it was when ``monai_dnaprior``
    was imported (conftest.py sets it to 1 before that import); 8 cores."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert torch.get_num_threads() == 1, "conftest.py sets one thread before importing monai_dnaprior"
    _eight_cores(monkeypatch)


def test_lone_process_takes_half_the_cores(no_thread_env):
    assert planned_threads("cpu") == 4
    assert planned_threads("cuda") is None


def test_torchrun_ranks_share_the_cores(no_thread_env, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert planned_threads("cpu") == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert planned_threads("cpu") == 1


def test_user_choice_is_kept(no_thread_env, monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3 if before != 3 else 2)  # set after import: the user's choice
        assert planned_threads("cpu") is None
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert planned_threads("cpu") is None


def test_cpu_threads_sets_and_restores(no_thread_env):
    before = torch.get_num_threads()
    with cpu_threads("cpu") as n:
        assert n == 4 and torch.get_num_threads() == 4
    assert torch.get_num_threads() == before


class _Threads(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return planned_threads("cpu")


def test_dataloader_workers_share_the_cores(monkeypatch):
    _eight_cores(monkeypatch)
    loader = DataLoader(_Threads(), num_workers=2, batch_size=None, multiprocessing_context="fork")
    assert [int(x) for x in loader] == [4, 4]

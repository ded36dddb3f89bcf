"""Where a fit runs: device choice, the forked-worker CUDA trap, and how many CPU threads one fit takes.

CPU thread policy (:func:`cpu_threads`, applied around every :func:`monai_dnaprior.denoising.denoise` call on the CPU):

- the user's choice wins: ``torch.set_num_threads`` called after ``monai_dnaprior`` was imported, or
  ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the environment (torchrun sets ``OMP_NUM_THREADS=1`` itself);
- inside a DataLoader worker: the cores shared out between the workers, ``max(1, cores // num_workers)``;
- under torchrun (``LOCAL_WORLD_SIZE`` > 1): the cores shared out between this machine's processes;
- otherwise (one process): half the cores, at least one (:data:`LONE_PROCESS_SHARE`). torch's default (every core)
  makes a second process on the same machine, or any other busy program, oversubscribe the cores, and OpenMP
  threads that spin-wait for each other then run many times slower (measured in ``bundle/docs/README.md``).

The previous thread count is restored when the call returns.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

from monai_dnaprior.validation import check_device

__all__ = ["LONE_PROCESS_SHARE", "cpu_threads", "planned_threads", "resolve_device", "with_cpu_threads"]

LONE_PROCESS_SHARE = 0.5
"""The share of the cores that a lone process takes when nobody chose a thread count."""

_THREADS_AT_IMPORT = torch.get_num_threads()
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

F = TypeVar("F", bound=Callable)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """CUDA when available and ``device`` is None, else ``device``; refuse CUDA inside a forked worker.

    Raises:
        RuntimeError: CUDA was asked for in a process forked after CUDA started (a DataLoader worker),
            where it cannot run; the message says what to do instead.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() and not _in_bad_fork() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if _in_bad_fork():
            raise RuntimeError(
                "DNA-Prior cannot use CUDA in a forked DataLoader worker (CUDA was initialised in the parent). "
                "Use `num_workers=0`, MONAI's `ThreadDataLoader`, or the 'spawn' start method "
                "(`multiprocessing_context='spawn'`), or pass `device='cpu'`."
            )
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={str(device)!r} was asked for but CUDA is not available; use device='cpu'.")
    return device


def _in_bad_fork() -> bool:
    return bool(getattr(torch.cuda, "_is_in_bad_fork", lambda: False)())


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _user_chose_threads() -> bool:
    return any(os.environ.get(v) for v in _THREAD_ENV) or torch.get_num_threads() != _THREADS_AT_IMPORT


def planned_threads(device: str | torch.device | None = "cpu") -> int | None:
    """The intra-op thread count a fit on ``device`` should use, or None to leave torch's setting as it is
    (not the CPU, or the user chose). See the module's docstring for the policy."""
    check_device(device)
    if device is not None and torch.device(device).type != "cpu":
        return None
    cores = _cores()
    worker = torch.utils.data.get_worker_info()
    if worker is not None:  # torch set 1 thread in the worker; share the cores out instead
        return max(1, cores // max(1, worker.num_workers))
    if _user_chose_threads():
        return None
    processes = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    if processes > 1:
        return max(1, cores // processes)
    return max(1, int(cores * LONE_PROCESS_SHARE))


@contextmanager
def cpu_threads(device: str | torch.device | None = "cpu") -> Iterator[int]:
    """Run the block with :func:`planned_threads` intra-op threads (when there is a plan), then restore the
    previous setting. Yields the thread count in use."""
    before = torch.get_num_threads()
    planned = planned_threads(device)
    if planned is None or planned == before:
        yield before
        return
    torch.set_num_threads(planned)
    try:
        yield planned
    finally:
        torch.set_num_threads(before)


def with_cpu_threads(fn: F) -> F:
    """Decorate a function that takes a ``device`` argument so that it runs under :func:`cpu_threads`; a ``None``
    device counts as the CPU unless CUDA is available."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        device = bound.arguments.get("device")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        with cpu_threads(device):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

"""Where a fit runs: device choice and the forked-worker CUDA trap.

CPU threads are left to torch: its default (one per physical core) or the user's ``torch.set_num_threads`` /
``OMP_NUM_THREADS``; nothing here changes them.
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


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

"""Shared memory for DataLoader workers: what a worker hands to the training process lives there.

A DataLoader worker puts each batch it makes into shared memory (``/dev/shm`` on Linux, whichever
of PyTorch's sharing strategies is in use: both allocate there), and the batch stays there until
the training process has taken it. With ``prefetch`` batches in flight per worker, the loader
needs about ``workers * prefetch * batch bytes`` of it. Docker gives a container 64 MB, less
than one batch of 128 images at 224 px (77 MB as float32): the workers then fail to hand their
batches over, and a loader without a timeout waits for them forever.

:func:`fit_workers` compares what the loader needs with what ``/dev/shm`` has free, before the
workers start, and lowers the batches in flight (then the workers) to fit, with one line saying
so and what to give the container instead.
"""

from __future__ import annotations

import math
import os

SHM_PATH = "/dev/shm"
# Batches in flight per worker (DataLoader's prefetch_factor) when shared memory allows.
PREFETCH = 4
# The share of the free shared memory the loader may plan to fill (other processes use it too).
BUDGET = 0.75


def shared_memory_free(path: str = SHM_PATH) -> int | None:
    """Bytes free in shared memory, or None where there is no ``/dev/shm`` to measure (not Linux)."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def batch_bytes(batch_size: int, channels: int, image_size: int, bytes_per_value: int = 4) -> int:
    """The bytes of one batch of images as a worker hands it over (float32 by default)."""
    return batch_size * channels * image_size * image_size * bytes_per_value


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def fit_workers(workers: int, one_batch: int, free: int | None = None) -> tuple[int, int, str | None]:
    """``(workers, prefetch, note)`` for a loader of ``workers`` workers whose batches take
    ``one_batch`` bytes, given ``free`` bytes of shared memory (None: measured now).

    Unchanged (and no note) when everything fits or nothing can be measured; else fewer batches
    in flight per worker, then fewer workers, then none (loading in the training process, which
    needs no shared memory); ``note`` says what was done and how to give the container more.
    """
    if workers <= 0 or one_batch <= 0:
        return workers, PREFETCH, None
    free = shared_memory_free() if free is None else free
    if free is None:
        return workers, PREFETCH, None
    budget = int(free * BUDGET)
    batches = budget // one_batch  # batches in flight that fit
    if batches >= workers * PREFETCH:
        return workers, PREFETCH, None
    if batches >= workers:
        fitted = (workers, batches // workers)
        what = f"{fitted[1]} batches in flight per worker instead of {PREFETCH}"
    elif batches >= 1:
        fitted = (int(batches), 1)
        what = f"{fitted[0]} workers with 1 batch in flight each instead of {workers}"
    else:
        fitted = (0, PREFETCH)
        what = "loading in the training process instead (slower)"
    wanted = math.ceil(workers * PREFETCH * one_batch / BUDGET / 2**30)
    note = (f"shared memory ({SHM_PATH}) has {_mb(free)} free, too little for {workers} DataLoader workers "
            f"with {PREFETCH} batches of {_mb(one_batch)} each in flight: {what}; give it more "
            f"(docker run --shm-size {wanted}g, or --ipc=host)")
    return fitted[0], fitted[1], note

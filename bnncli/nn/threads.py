"""PyTorch's CPU threads, set the way bnncli.threads sets every other pool."""

from __future__ import annotations

import os

import torch

from bnncli.threads import resolve


def use_torch_threads(threads: int | None) -> int:
    """Give PyTorch ``threads`` intra-op threads and as many inter-op threads (where it still may:
    only before its first parallel work); returns the count. None: ``$OMP_NUM_THREADS`` when set
    (torchrun sets it to 1 per process when it starts several), else the CPUs of the process's
    affinity set."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    n = resolve(threads)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set, or inter-op work already started in this process
        pass
    return n

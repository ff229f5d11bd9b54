"""Random state: seeding, the RNG state a checkpoint carries, initialization, weight digests.

With a fixed seed on CPU a run that is stopped and resumed ends with bit-for-bit the weights of
an uninterrupted run: the batches are a function of ``(seed, epoch, position)`` (see
:mod:`bnncli.data.loading`) and every RNG is saved and restored here.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from bnncli.errors import ArtifactError
from bnncli.nn import BinaryConv2d


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG, as tensors and plain values (``torch.load(weights_only=True)`` must read it)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def set_rng_state(state: Any) -> None:
    """Restore what :func:`rng_state` saved; ArtifactError when the saved state is malformed."""
    try:
        torch_state = state["torch"]
        if not isinstance(torch_state, torch.Tensor) or torch_state.dtype != torch.uint8:
            raise TypeError("torch: not a byte tensor")
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        numpy_state = (str(kind), np.array(keys, dtype=np.uint32), int(pos), int(has_gauss), float(gauss))
        version, internal, gauss_next = state["python"]
        python_state = (version, tuple(internal), gauss_next)
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"the checkpoint being resumed holds a malformed RNG state ({first})") from None
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        try:
            torch.cuda.set_rng_state_all(cuda)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ArtifactError(f"the checkpoint being resumed holds a malformed CUDA RNG state ({e})") from None


def he_normal_(model: nn.Module) -> None:
    """He-normal (fan-in) init of every convolution, as in the authors' 2019 ablation protocol."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, BinaryConv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the state dict's bytes: equal digests mean bit-identical weights and statistics."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

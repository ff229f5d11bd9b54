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
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


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

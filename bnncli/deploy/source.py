"""What export and pack start from: a checkpoint's model, graph and metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bnncli.deploy.lower import lower
from bnncli.engine.checkpoint import load_model
from bnncli.runtime.graph import Graph


@dataclass
class Source:
    """A checkpoint opened for deployment."""

    path: Path
    model: nn.Module
    meta: dict[str, Any]  # arch, arch_kwargs, class_names, preprocessing

    def graph(self) -> Graph:
        return lower(self.model)

    @torch.inference_mode()
    def logits(self, x: np.ndarray) -> np.ndarray:
        """PyTorch eval logits, the reference every backend is compared with."""
        return self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def open_checkpoint(path: str | os.PathLike) -> Source:
    """A checkpoint file, or a run directory (its best.pt), opened for deployment."""
    from bnncli.deploy.loader import _resolve

    path = _resolve(path)
    model, ckpt = load_model(path)
    meta = {k: ckpt[k] for k in ("arch", "arch_kwargs", "class_names", "preprocessing")}
    meta["arch_kwargs"] = dict(meta["arch_kwargs"])
    meta["class_names"] = [str(c) for c in meta["class_names"]]
    meta["preprocessing"] = dict(meta["preprocessing"])
    return Source(Path(path), model, meta)

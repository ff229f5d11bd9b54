"""Deployment: lowering to one shared graph, ONNX export, bit packing, and opening any model file.

    registry model --lower--> Graph --to_onnx------------------> model.onnx  (onnxruntime)
                                    --fold + pack (1-bit)------> model.bnn   (bnncli.runtime, NumPy)

``export_onnx`` and ``pack_model`` start from a checkpoint and verify the result against PyTorch
before writing; ``open_model`` opens any of checkpoint / ONNX / packed by content. Names are
imported on first use, so ``from bnncli.deploy import open_model`` does not import torch unless
the file is a checkpoint.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ExportResult": "bnncli.deploy.export",
    "export_onnx": "bnncli.deploy.export",
    "PackResult": "bnncli.deploy.pack",
    "pack_model": "bnncli.deploy.pack",
    "packed_graph": "bnncli.deploy.pack",
    "fold": "bnncli.deploy.lower",
    "lower": "bnncli.deploy.lower",
    "Predictor": "bnncli.deploy.loader",
    "open_model": "bnncli.deploy.loader",
    "sniff": "bnncli.deploy.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bnncli.deploy' has no attribute {name!r}")

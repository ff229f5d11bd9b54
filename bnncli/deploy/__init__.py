"""Deployment: lowering to one shared graph, ONNX export, bit packing, one verification.

    registry model --lower--> Graph --to_onnx------------------> model.onnx  (onnxruntime)
                                    --fold + pack (1-bit)------> model.bnn   (bnncli.runtime, NumPy)

``export_onnx`` and ``pack_model`` start from a checkpoint and verify the result against PyTorch
(:mod:`bnncli.deploy.verification`) before writing. Opening model files is :mod:`bnncli.artifacts`'s job.
"""

from __future__ import annotations

from bnncli.lazy import lazy_exports

_EXPORTS = {
    "ExportResult": "bnncli.deploy.export",
    "export_onnx": "bnncli.deploy.export",
    "PackResult": "bnncli.deploy.pack",
    "pack_model": "bnncli.deploy.pack",
    "packed_graph": "bnncli.deploy.pack",
    "fold": "bnncli.deploy.lowering",
    "lower": "bnncli.deploy.lowering",
    "Parity": "bnncli.deploy.verification",
    "VerificationError": "bnncli.deploy.verification",
    "verify": "bnncli.deploy.verification",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)

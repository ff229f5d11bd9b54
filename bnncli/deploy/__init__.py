"""Deployment: lowering to one shared graph, ONNX export, bit packing, and opening any model file.

    registry model --lower--> Graph --to_onnx------------------> model.onnx  (onnxruntime)
                                    --fold + pack (1-bit)------> model.bnn   (bnncli.runtime, NumPy)

``export_onnx`` and ``pack_model`` start from a checkpoint and verify the result against PyTorch
before writing; ``open_model`` opens any of checkpoint / ONNX / packed by content.
"""

from bnncli.deploy.export import ExportResult, export_onnx
from bnncli.deploy.loader import Predictor, open_model, sniff
from bnncli.deploy.lower import fold, lower
from bnncli.deploy.pack import PackResult, pack_model, packed_graph

__all__ = [
    "ExportResult",
    "PackResult",
    "Predictor",
    "export_onnx",
    "fold",
    "lower",
    "open_model",
    "pack_model",
    "packed_graph",
    "sniff",
]

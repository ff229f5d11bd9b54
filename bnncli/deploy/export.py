"""`bnn export`: a checkpoint -> ONNX, verified against PyTorch with onnxruntime."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnncli.artifacts.checkpoint import open_checkpoint
from bnncli.artifacts.onnx_file import ort_session, save_onnx
from bnncli.deploy.lowering import lower
from bnncli.deploy.onnx_export import OPSET, to_onnx
from bnncli.deploy.verification import SAMPLES, TOLERANCE, Parity, verify
from bnncli.nn.threads import use_torch_threads


@dataclass
class ExportResult:
    path: Path
    bytes: int
    opset: int
    parity: Parity

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "opset": self.opset, "verification": self.parity.as_dict()}


def export_onnx(checkpoint: str | os.PathLike, output: str | os.PathLike, samples: int = SAMPLES,
                tolerance: float = TOLERANCE, threads: int | None = None) -> ExportResult:
    """Export ``checkpoint`` to ONNX at ``output`` after checking onnxruntime agrees with PyTorch.

    Raises ArtifactError (and writes nothing) when the checker fails, and VerificationError when
    the largest relative logit difference exceeds ``tolerance`` or a top-1 differs. ``threads``:
    PyTorch's and onnxruntime's CPU threads (bnncli.threads).
    """
    use_torch_threads(threads)
    src = open_checkpoint(checkpoint)
    model = to_onnx(lower(src.model), src.meta)
    session = ort_session(model, threads)
    parity = verify(src.logits, lambda x: session.run(None, {"input": x})[0], src.meta["preprocessing"],
                    what=f"ONNX export of {checkpoint}", samples=samples, tolerance=tolerance)
    path = save_onnx(model, output)
    return ExportResult(path, path.stat().st_size, OPSET, parity)

"""`bnn export`: a checkpoint -> ONNX, verified against PyTorch with onnxruntime."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnncli.deploy.onnx_export import Parity, compare, ort_session, sample_inputs, save_onnx, to_onnx
from bnncli.deploy.source import open_checkpoint
from bnncli.errors import ArtifactError

TOLERANCE = 1e-3  # largest |onnx - torch| / max |torch| accepted


@dataclass
class ExportResult:
    path: Path
    bytes: int
    opset: int
    parity: Parity

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "opset": self.opset, "verification": self.parity.as_dict()}


def export_onnx(checkpoint: str | os.PathLike, output: str | os.PathLike, samples: int = 4,
                tolerance: float = TOLERANCE) -> ExportResult:
    """Export ``checkpoint`` to ONNX at ``output`` after checking onnxruntime agrees with PyTorch.

    Raises ArtifactError (and writes nothing) when the checker fails or the largest relative
    logit difference exceeds ``tolerance`` or a top-1 differs.
    """
    from bnncli.deploy.onnx_export import OPSET

    src = open_checkpoint(checkpoint)
    model = to_onnx(src.graph(), src.meta)
    x = sample_inputs(src.meta["preprocessing"], samples)
    reference = src.logits(x)
    got = ort_session(model).run(None, {"input": x})[0]
    parity = compare(reference, got)
    if not parity.max_rel_diff <= tolerance or parity.top1_agree != parity.samples:
        raise ArtifactError(
            f"ONNX export of {checkpoint} disagrees with PyTorch: largest difference {parity.max_abs_diff:.3g} "
            f"({parity.max_rel_diff:.3g} relative, tolerance {tolerance:g}), top-1 equal on "
            f"{parity.top1_agree}/{parity.samples} inputs; nothing written (in an untrained network with random "
            f"BatchNorm statistics a last-bit float difference that flips one binarization can do this; see "
            f"docs/deployment.md, Parity)")
    path = save_onnx(model, output)
    return ExportResult(path, path.stat().st_size, OPSET, parity)

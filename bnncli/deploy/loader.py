"""Open any bnncli model file -- checkpoint, ONNX or packed -- by its content, not its name.

    from bnncli.deploy.loader import open_model
    predictor = open_model("model.bnn")          # or best.pt, or model.onnx
    predictor.kind                               # "checkpoint" | "onnx" | "packed"
    predictor.arch, predictor.class_names, predictor.preprocessing
    logits = predictor(x)                        # x: float32 [N, C, H, W], preprocessed

How a file is told apart:

* a zip archive (``PK\\x03\\x04``): a PyTorch checkpoint, loaded by
  :func:`bnncli.engine.checkpoint.load_checkpoint` (no unpickling of code);
* the packed magic ``\\x89BNN\\r\\n\\x1a\\n``: a packed model, run by :mod:`bnncli.runtime`;
* otherwise an ONNX protobuf carrying ``bnncli.*`` metadata, run by onnxruntime.

Anything else raises one :class:`~bnncli.errors.ArtifactError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bnncli.errors import ArtifactError
from bnncli.runtime.format import is_packed
from bnncli.runtime.labels import readable_labels

KINDS = ("checkpoint", "onnx", "packed")
ZIP_MAGIC = b"PK\x03\x04"


class Predictor:
    """A model of any kind: ``predictor(x) -> logits`` plus what is needed to feed and read it."""

    kind: str = ""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.arch: str = meta["arch"]
        self.class_names: list[str] = list(meta["class_names"])
        self.preprocessing: dict[str, Any] = dict(meta["preprocessing"])

    @property
    def labels(self) -> list[str]:
        """Class names to show people (ImageNet synset ids mapped to readable names)."""
        return readable_labels(self.class_names)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.arch} {len(self.class_names)} classes from {self.path}>"


class CheckpointPredictor(Predictor):
    kind = "checkpoint"

    def __init__(self, path: Path) -> None:
        from bnncli.deploy.source import open_checkpoint

        self.source = open_checkpoint(path)
        super().__init__(path, self.source.meta)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.source.logits(x)


class OnnxPredictor(Predictor):
    kind = "onnx"

    def __init__(self, path: Path, model, threads: int | None = None) -> None:
        from bnncli.deploy.onnx_export import ort_session, read_metadata

        super().__init__(path, read_metadata(model, str(path)))
        try:
            self.session = ort_session(model, threads)
        except Exception as e:
            raise ArtifactError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:200]}") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run(None, {self.input_name: x})[0]


class PackedPredictor(Predictor):
    kind = "packed"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from bnncli.runtime import load

        self.runtime = load(path, threads=threads)
        super().__init__(path, self.runtime.meta)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.runtime(x)


def _resolve(path: str | os.PathLike) -> Path:
    """A run directory stands for its best.pt, else last.pt (torch-free copy of
    ``bnncli.deploy.source.resolve_model_path``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
    return path


def sniff(path: str | os.PathLike) -> str:
    """``checkpoint``, ``onnx`` or ``packed`` from the first bytes; ArtifactError when none fits."""
    path = _resolve(path)
    if not path.exists():
        raise ArtifactError(f"model not found: {path}")
    if not path.is_file():
        raise ArtifactError(f"{path} is not a model file (nor a run directory with best.pt or last.pt)")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise ArtifactError(f"{path} is empty")
    if head.startswith(ZIP_MAGIC):
        return "checkpoint"
    if is_packed(head):
        return "packed"
    return "onnx"


def open_model(path: str | os.PathLike, threads: int | None = None) -> Predictor:
    """Open a checkpoint, ONNX model or packed model, told apart by content (a run directory
    stands for its best.pt).

    ``threads`` limits onnxruntime's and the packed runtime's threads (default: all CPUs).
    """
    path = _resolve(path)
    kind = sniff(path)
    if kind == "checkpoint":
        return CheckpointPredictor(path)
    if kind == "packed":
        return PackedPredictor(path, threads)
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError):
        model = None
    if model is None or not model.HasField("graph") or not model.graph.node:
        raise ArtifactError(f"{path} is not a bnncli checkpoint, ONNX model or packed model")
    return OnnxPredictor(path, model, threads)

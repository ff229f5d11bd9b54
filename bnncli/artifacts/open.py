"""Open any bnncli model file -- checkpoint, run directory, ONNX or packed -- by its content.

    from bnncli.artifacts import open_model
    predictor = open_model("model.bnn")          # or best.pt, a run directory, or model.onnx
    predictor.kind                               # "checkpoint" | "onnx" | "packed"
    predictor.arch, predictor.class_names, predictor.preprocessing
    logits = predictor(x)                        # x: float32 [N, C, H, W], preprocessed

How a file is told apart (:func:`sniff`), whatever its name:

* a zip archive (``PK\\x03\\x04``): a PyTorch checkpoint (:mod:`bnncli.artifacts.checkpoint`,
  loaded without unpickling code);
* the packed magic ``\\x89BNN\\r\\n\\x1a\\n``: a packed model, run by :mod:`bnncli.runtime`;
* otherwise an ONNX protobuf carrying ``bnncli.*`` metadata (:mod:`bnncli.artifacts.onnx_file`),
  run by onnxruntime.

An empty file, a text file or an HDF5 file is refused at once, saying what it is
(:mod:`bnncli.artifacts.identify`); anything else that fails raises one
:class:`~bnncli.errors.ArtifactError`. Torch is imported only for
checkpoints, onnx and onnxruntime only for ONNX files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bnncli.artifacts.identify import describe, identify, reason
from bnncli.artifacts.rundir import resolve_model_path
from bnncli.errors import ArtifactError, BnnError
from bnncli.images.labels import readable_labels


class Predictor:
    """A model of any kind: ``predictor(x) -> logits`` plus what is needed to feed and read it."""

    kind: str = ""
    backend: str = ""  # what computes it: pytorch, onnxruntime, or the packed runtime's numpy / numba

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
    backend = "pytorch"

    def __init__(self, path: Path) -> None:
        from bnncli.artifacts.checkpoint import open_checkpoint

        self.source = open_checkpoint(path)
        super().__init__(path, self.source.meta)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.source.logits(x)


class OnnxPredictor(Predictor):
    kind = "onnx"
    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from bnncli.artifacts.onnx_file import load_onnx, ort_session, plan_onnx, read_metadata

        model = load_onnx(path)
        super().__init__(path, read_metadata(model, str(path)))
        try:
            self.plan = plan_onnx(model, self.meta)  # the whole plan bounded before onnxruntime allocates
        except ArtifactError as e:
            raise ArtifactError(f"{path}: {e}") from None
        try:
            self.session = ort_session(model, threads)
        except Exception as e:
            raise ArtifactError(f"onnxruntime cannot load {path}: {reason(e)}") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run(None, {self.input_name: x})[0]


class PackedPredictor(Predictor):
    kind = "packed"

    def __init__(self, path: Path, threads: int | None = None, backend: str | None = None) -> None:
        from bnncli.runtime import load

        self.runtime = load(path, threads=threads, backend=backend)
        self.backend = self.runtime.backend
        super().__init__(path, self.runtime.meta)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.runtime(x)


def sniff(path: str | os.PathLike) -> str:
    """``checkpoint``, ``onnx`` or ``packed`` from the first bytes; ArtifactError when none fits."""
    path = resolve_model_path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is not a model file (nor a run directory with best.pt or last.pt)")
    try:
        kind = identify(path)
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror or e}") from None
    if kind in ("empty", "text", "hdf5"):
        raise ArtifactError(f"{path} is {describe(kind)}, not a bnncli checkpoint, ONNX model or packed model")
    if kind in ("checkpoint", "pickle"):
        return "checkpoint"
    return "packed" if kind == "packed" else "onnx"  # unknown bytes: read as ONNX, which refuses them


def open_model(path: str | os.PathLike, threads: int | None = None, backend: str | None = None) -> Predictor:
    """Open a checkpoint, run directory, ONNX model or packed model, told apart by content.

    ``threads`` limits onnxruntime's and the packed runtime's threads (default: all CPUs);
    ``backend`` chooses the packed runtime's kernels (bnncli.runtime.backends; default auto).
    """
    path = resolve_model_path(path)
    kind = sniff(path)
    if kind == "checkpoint":
        return CheckpointPredictor(path)
    if kind == "packed":
        return PackedPredictor(path, threads, backend)
    return OnnxPredictor(path, threads)


def run_predictor(predictor: Predictor, x):
    """``predictor(x)`` for a NumPy batch; 0 images give 0 rows (the model is not run), and an
    error from the model becomes one line naming its file."""
    if len(x) == 0:
        return np.zeros((0, len(predictor.class_names)), np.float32)
    try:
        return predictor(x)
    except BnnError as e:
        if str(predictor.path) in str(e):
            raise
        raise type(e)(f"{predictor.path}: {e}") from e
    except Exception as e:
        if not isinstance(e, (ValueError, RuntimeError, ArithmeticError)) and not _from_onnxruntime(e):
            raise  # anything else is a bug: a traceback under BNN_DEBUG=1
        why = reason(e, limit=300)
        raise ArtifactError(f"{predictor.path}: the {predictor.kind} model failed on {len(x)} image(s): "
                            f"{type(e).__name__}: {why}") from e


def _from_onnxruntime(e: Exception) -> bool:
    """onnxruntime's errors (InvalidArgument, Fail, ...) derive from Exception alone."""
    return type(e).__module__.startswith("onnxruntime")

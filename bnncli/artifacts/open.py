"""Open any bnncli model file -- checkpoint, run directory, ONNX or packed -- by its content.

    import bnncli
    predictor = bnncli.open_model("model.bnn", threads=1)   # or best.pt, a run directory, or model.onnx
    predictor.kind                               # "checkpoint" | "onnx" | "packed"
    predictor.arch, predictor.class_names, predictor.preprocessing
    x = predictor.preprocess(["cat.jpg"])        # float32 [N, C, H, W]
    logits = predictor(x)                        # float32 [N, classes]
    probs = predictor.probabilities(x)

:func:`open_model` is the one place a model file is opened for inference: ``bnn predict``,
``bnn eval`` and the Python API all go through it, so ``threads`` (every kind: PyTorch,
onnxruntime, the packed runtime; bnncli.threads), ``backend`` (the packed runtime's kernels) and,
for checkpoints, ``device``, ``amp`` and ``channels_last`` mean the same everywhere.

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

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from bnncli.artifacts.identify import describe, identify, reason
from bnncli.artifacts.rundir import resolve_model_path
from bnncli.errors import ArtifactError, BnnError, UsageError
from bnncli.images.labels import readable_labels


class Predictor:
    """A model of any kind: ``predictor(x) -> logits`` plus what is needed to feed and read it."""

    kind: str = ""
    backend: str = ""  # what computes it: pytorch, onnxruntime, or the packed runtime's numpy / numba
    device: str = "cpu"  # where it computes

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
        """Logits, float32 ``[N, classes]``, of a preprocessed float32 batch ``[N, C, H, W]``."""
        raise NotImplementedError

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The same as calling the predictor."""
        return self(x)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax of the logits, float64 ``[N, classes]`` (rows sum to 1)."""
        return softmax(self(x))

    def preprocess(self, images: list[str | os.PathLike]) -> np.ndarray:
        """Image files as the model's input batch (the preprocessing it was trained with)."""
        from bnncli.images.preprocess import preprocess_files

        return preprocess_files(list(images), self.preprocessing)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.arch} {len(self.class_names)} classes from {self.path}>"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable for large logits)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


AMP_MODES = ("none", "bf16", "fp16")


def autocast(device: Any, amp: str) -> Any:
    """bf16/fp16 autocast on ``device`` (a torch.device), or nothing."""
    if amp == "none":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def torch_device(device: Any) -> Any:
    """``"auto"`` (CUDA when there is one), ``"cpu"``, ``"cuda"`` or a torch.device, as a torch.device."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {device} was asked for but no CUDA GPU is available (try cpu)")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda") from None


class CheckpointPredictor(Predictor):
    """A checkpoint run by PyTorch: on ``device``, with ``amp`` autocast and ``channels_last`` if asked."""

    kind = "checkpoint"
    backend = "pytorch"

    def __init__(self, path: Path, threads: int | None = None, device: Any = "cpu", amp: str = "none",
                 channels_last: bool = False) -> None:
        import torch

        from bnncli.artifacts.checkpoint import open_checkpoint
        from bnncli.nn.threads import use_torch_threads

        if amp not in AMP_MODES:
            raise UsageError(f"amp must be one of {', '.join(AMP_MODES)}, not {amp!r}")
        use_torch_threads(threads)
        dev = torch_device(device)
        self.source = open_checkpoint(path)
        super().__init__(path, self.source.meta)
        model = self.source.model
        self.nonfinite_weights = sum(1 for t in model.state_dict().values()
                                     if t.is_floating_point() and not torch.isfinite(t).all())
        model = model.to(dev)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.device, self.torch_device, self.amp, self.channels_last = str(dev), dev, amp, channels_last

    def forward(self, x: Any) -> Any:
        """Logits of a torch batch, as a torch tensor on the model's device (0 images: 0 rows)."""
        import torch

        with torch.inference_mode():
            if len(x) == 0:
                return torch.zeros(0, len(self.class_names))
            x = x.to(self.torch_device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.torch_device, self.amp):
                return self.model(x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        logits = self.forward(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return logits.float().cpu().numpy()


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


def open_model(path: str | os.PathLike, threads: int | None = None, backend: str | None = None,
               device: Any = "cpu", amp: str = "none", channels_last: bool = False) -> Predictor:
    """Open a checkpoint, run directory, ONNX model or packed model for inference, told apart by content.

    ``threads``: the CPU threads of whatever runs it -- PyTorch (intra- and inter-op), onnxruntime
    or the packed runtime (default: the CPUs this process may use, bnncli.threads).
    ``backend``: the packed runtime's kernels, numpy, numba or auto (bnncli.runtime.backends).
    ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``), ``amp`` (``"none"``, ``"bf16"``, ``"fp16"``) and
    ``channels_last`` apply to checkpoints; ONNX and packed models run on the CPU as they are.
    """
    path = resolve_model_path(path)
    kind = sniff(path)
    if kind == "checkpoint":
        return CheckpointPredictor(path, threads, device, amp, channels_last)
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

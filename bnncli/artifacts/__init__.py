"""Every model file bnncli reads or writes, in one layer below training and deployment.

* :mod:`~bnncli.artifacts.rundir`: the run directory layout and the one rule "a run directory
  stands for its best.pt, else last.pt";
* :mod:`~bnncli.artifacts.checkpoint`: writing and reading checkpoints (never unpickling code),
  rebuilding their model;
* :mod:`~bnncli.artifacts.onnx_file`: the bnncli metadata of ONNX files, reading them, sessions;
* :mod:`~bnncli.artifacts.open`: "open any model file" (checkpoint, run directory, ONNX, packed),
  told apart by content.

The packed format itself lives in :mod:`bnncli.graph.format` (the runtime must read it without
this package), and the model description all three carry in :mod:`bnncli.metadata`.

This package imports ``bnncli.models``, ``bnncli.runtime`` and the base modules, never
``bnncli.engine``, ``bnncli.deploy`` or ``bnncli.cli`` (checked by the import contracts in
pyproject.toml). Names are imported on first use, so opening a packed file never imports torch.
"""

from __future__ import annotations

from bnncli.lazy import lazy_exports

_EXPORTS = {
    "RunFiles": "bnncli.artifacts.rundir",
    "resolve_model_path": "bnncli.artifacts.rundir",
    "find_default_model": "bnncli.artifacts.rundir",
    "CheckpointModel": "bnncli.artifacts.checkpoint",
    "build_model": "bnncli.artifacts.checkpoint",
    "load_checkpoint": "bnncli.artifacts.checkpoint",
    "load_model": "bnncli.artifacts.checkpoint",
    "model_checkpoint": "bnncli.artifacts.checkpoint",
    "open_checkpoint": "bnncli.artifacts.checkpoint",
    "save_checkpoint": "bnncli.artifacts.checkpoint",
    "read_metadata": "bnncli.artifacts.onnx_file",
    "ort_session": "bnncli.artifacts.onnx_file",
    "Predictor": "bnncli.artifacts.open",
    "open_model": "bnncli.artifacts.open",
    "sniff": "bnncli.artifacts.open",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)

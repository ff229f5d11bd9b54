"""The packed-model runtime: runs ``bnn pack`` files with NumPy alone (never torch; Pillow for images).

    from bnncli.runtime import load, preprocess_files
    model = load("model.bnn")
    x = preprocess_files(["cat.jpg"], model.preprocessing)   # float32 [N, C, H, W]
    logits = model(x)                                         # float32 [N, classes]
    model.class_names[logits.argmax(1)[0]]

* :mod:`.model`: the evaluator (a graph's nodes through a name -> array dict, buffer planning);
* :mod:`.ops`: one class per graph op (bnncli.graph.opset), validating its node and calling
  the kernels of its context;
* :mod:`.context`: what a model's ops share (kernels, threads, buffers, BLAS held to one thread);
* :mod:`.backends`: the kernels, NumPy (the reference) or numba (compiled, the ``fast`` extra),
  chosen once per model.

Binary convolutions run as XNOR + popcount on 64-bit words (bit layout: bnncli.graph.bits).
"""

from __future__ import annotations

import os

from bnncli.errors import ArtifactError
from bnncli.graph.format import FORMAT_VERSION, read_packed
from bnncli.graph.graph import Graph, Node
from bnncli.images.preprocess import preprocess_file, preprocess_files, preprocess_image
from bnncli.runtime.model import Model
from bnncli.runtime.ops import OP_TYPES, OPS

__all__ = [
    "FORMAT_VERSION",
    "OPS",
    "OP_TYPES",
    "Graph",
    "Model",
    "Node",
    "load",
    "preprocess_file",
    "preprocess_files",
    "preprocess_image",
    "read_packed",
]


def load(path: str | os.PathLike, threads: int | None = None, backend: str | None = None) -> Model:
    """Load a packed model (``bnn pack``); every field is validated before anything runs.

    ``threads``: threads of the kernels (default: the CPUs this process may use).
    ``backend``: ``"numpy"``, ``"numba"`` (compiled, the ``fast`` extra) or ``"auto"`` (default:
    ``$BNN_BACKEND``, else numba where it is installed); see bnncli.runtime.backends.
    """
    graph, meta = read_packed(path)
    try:
        return Model(graph, meta, threads=threads, backend=backend)
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None

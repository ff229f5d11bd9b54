"""The NumPy runtime for packed bnncli models (imports NumPy, never torch; Pillow for images).

    from bnncli.runtime import load, preprocess_files
    model = load("model.bnn")
    x = preprocess_files(["cat.jpg"], model.preprocessing)   # float32 [N, C, H, W]
    logits = model(x)                                         # float32 [N, classes]
    model.class_names[logits.argmax(1)[0]]

Binary convolutions run as XNOR + popcount on 64-bit words; everything else in NumPy.
"""

from __future__ import annotations

import os

from bnncli.errors import ArtifactError
from bnncli.runtime.format import FORMAT_VERSION, read_packed
from bnncli.runtime.graph import Graph, Node
from bnncli.runtime.model import Model
from bnncli.runtime.ops import OP_TYPES, OPS
from bnncli.runtime.preprocess import preprocess_file, preprocess_files, preprocess_image

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

    ``threads``: worker threads of the binary kernels (default: the CPUs this process may use).
    ``backend``: ``"numpy"``, ``"numba"`` (compiled, the ``fast`` extra) or ``"auto"`` (default:
    ``$BNN_BACKEND``, else numba where it is installed); see bnncli.runtime.backends.
    """
    graph, meta = read_packed(path)
    try:
        return Model(graph, meta, threads=threads, backend=backend)
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None

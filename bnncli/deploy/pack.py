"""`bnn pack`: a checkpoint -> one packed file with 1-bit binary weights (docs/FORMAT.md).

The graph is lowered and folded (``bnncli.deploy.lowering.fold``), binary weights are stored as
bits in 32-bit words, convolution and linear weights and biases in ``float_dtype`` (float32 or
float16; the first convolution, which reads the image, stays float32 unless its weights are
float16 values already), and the small per-channel vectors (BatchNorm affine, binarization
thresholds, output scales) in float32. The bytes are decoded again and run by the NumPy runtime
against PyTorch before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnncli import __version__
from bnncli.artifacts.checkpoint import open_checkpoint
from bnncli.deploy.lowering import fold, lower
from bnncli.deploy.verification import SAMPLES, TOLERANCE, Parity, verify
from bnncli.errors import ArtifactError, UsageError
from bnncli.fileio import write_bytes
from bnncli.graph.format import FLOAT_DTYPES, decode, encode, header_size
from bnncli.graph.graph import Graph
from bnncli.graph.opset import FLOAT_DTYPE_PARAMS
from bnncli.nn.threads import use_torch_threads
from bnncli.runtime.model import Model

AUTO = "auto"  # the float dtype: float16 when lossless, else float32
# Tensors stored in the chosen float dtype: the weights of the full-precision layers (the op list says which).
FLOAT_WEIGHTS = FLOAT_DTYPE_PARAMS


def exact_in_float16(array: np.ndarray) -> bool:
    """True when every value of ``array`` is a float16 value (float16 storage then loses nothing)."""
    with np.errstate(over="ignore"):
        return bool(np.array_equal(array.astype(np.float16).astype(array.dtype), array))


def packed_graph(graph: Graph, float_dtype: str = "float32") -> Graph:
    """Fold ``graph`` and give every tensor its stored dtype."""
    return _packed(graph, float_dtype)[0]


def _packed(graph: Graph, float_dtype: str) -> tuple[Graph, list[str]]:
    """:func:`packed_graph`, and the names of the tensors whose values float16 storage rounded."""
    if float_dtype not in FLOAT_DTYPES:
        raise UsageError(f"float dtype must be one of {', '.join(FLOAT_DTYPES)}, not {float_dtype!r}")
    # float16: a BatchNorm after a float conv stays a float32 Affine, so the stored weights are the
    # trained ones (float16 values already, for models trained with float_weights=float16) rather
    # than weight * scale, which would need rounding.
    g = fold(graph, into_float_convs=float_dtype == "float32")
    rounded = []
    for node in g.nodes:
        # The first convolution sees the pixels and feeds the first binarizations: rounding its
        # weights to float16 flips far more decisions downstream than any other layer, for 1%
        # of the float weights (BinaryDenseNet28: 9,408). Unless its weights are float16 values
        # already, it stays float32.
        first = node.op == "Conv" and set(node.inputs) & set(g.inputs)
        for role, name in node.params.items():
            array = g.tensors[name]
            if float_dtype == "float16" and (node.op, role) in FLOAT_WEIGHTS:
                exact = exact_in_float16(array)
                if exact or not first:
                    if np.abs(array).max(initial=0) > np.finfo(np.float16).max:
                        raise ArtifactError(f"{node.name}.{role} exceeds the float16 range; pack with float32")
                    g.tensors[name] = array.astype(np.float16)
                    if not exact:
                        rounded.append(name)
                    continue
            if array.dtype.kind == "f":
                g.tensors[name] = array.astype(np.float32)
    return g, rounded


@dataclass
class PackResult:
    """What was written. ``sizes`` are bytes by kind (:func:`size_breakdown`); ``binary_params`` and
    ``float_params`` count weights (a binary weight takes 1 bit, rows are padded to 32-bit words)."""

    path: Path
    bytes: int
    float_dtype: str
    sizes: dict[str, int]
    binary_params: int
    float_params: int
    parity: Parity
    ops: dict[str, int] = field(default_factory=dict)
    # float16 only: float weights that float16 storage rounded (none for a float_weights=float16 model).
    rounded: list[str] = field(default_factory=list)

    @property
    def lossless(self) -> bool:
        return not self.rounded

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "float_dtype": self.float_dtype,
                "bytes_by_kind": self.sizes, "binary_params": self.binary_params, "float_params": self.float_params,
                "ops": self.ops, "lossless": self.lossless,
                "rounded_tensors": self.rounded, "verification": self.parity.as_dict()}


def size_breakdown(graph: Graph, data: bytes) -> dict[str, int]:
    """Bytes by kind: binary weights, float weights, per-channel vectors, header, alignment."""
    binary = float_w = vectors = 0
    for node in graph.nodes:
        for role, name in node.params.items():
            n = graph.tensors[name].nbytes
            if node.op == "BinaryConv" and role == "weight":
                binary += n
            elif (node.op, role) in FLOAT_WEIGHTS:
                float_w += n
            else:
                vectors += n
    header = header_size(data)
    return {"binary_weights": binary, "float_weights": float_w, "per_channel": vectors, "header": header,
            "alignment": len(data) - header - binary - float_w - vectors, "total": len(data)}


def pack_model(checkpoint: str | os.PathLike, output: str | os.PathLike, float_dtype: str = "float32",
               samples: int = SAMPLES, tolerance: float = TOLERANCE, threads: int | None = None) -> PackResult:
    """Pack ``checkpoint`` into ``output``; ``float_dtype`` float32, float16, or auto: float16 when that
    stores every float weight unchanged (a model trained with float16-valued weights), else float32.

    The written bytes are decoded and run first; a relative logit difference above ``tolerance``
    or a different top-1 raises ArtifactError and nothing is written. That holds for float32 and
    for a float16 file that stores every weight unchanged (a model trained with float16-valued
    float weights); when float16 storage rounds weights (a model trained with float32 float
    weights), the differences are reported, not enforced, and ``rounded`` names those tensors.
    ``threads``: PyTorch's and the packed runtime's CPU threads (bnncli.threads).
    """
    use_torch_threads(threads)
    if float_dtype not in (*FLOAT_DTYPES, AUTO):
        raise UsageError(f"float dtype must be one of {', '.join((*FLOAT_DTYPES, AUTO))}, not {float_dtype!r}")
    src = open_checkpoint(checkpoint)
    lowered = lower(src.model)
    if float_dtype == AUTO:  # float16 where it stores every weight unchanged, else float32
        graph, rounded = _packed(lowered, "float16")
        float_dtype = "float16" if not rounded else "float32"
        if rounded:
            graph, rounded = _packed(lowered, "float32")
    else:
        graph, rounded = _packed(lowered, float_dtype)
    meta = {**src.meta, "float_dtype": float_dtype, "producer": f"bnncli {__version__}"}
    data = encode(graph, meta)
    runtime = Model(*decode(data, str(output)), threads=threads)  # what a reader of the file will run
    parity = verify(src.logits, runtime, src.meta["preprocessing"], what=f"the packed model of {checkpoint}",
                    samples=samples, tolerance=tolerance, enforce=not rounded)
    path = write_bytes(output, data)
    binary_params = sum(n.attrs["in_channels"] * n.attrs["out_channels"] * n.attrs["kernel_size"][0]
                        * n.attrs["kernel_size"][1] for n in graph.nodes if n.op == "BinaryConv")
    float_params = sum(graph.tensors[name].size for n in graph.nodes for role, name in n.params.items()
                       if (n.op, role) in FLOAT_WEIGHTS)
    return PackResult(path, len(data), float_dtype, size_breakdown(graph, data), binary_params, float_params,
                      parity, graph.op_counts(), rounded)

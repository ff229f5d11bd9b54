"""ONNX model files: the bnncli metadata they carry, reading them, and an onnxruntime session.

Metadata (``metadata_props``): ``bnncli.format`` = ``bnncli-onnx``, ``bnncli.format_version``,
``bnncli.version``, ``bnncli.arch``, and JSON-encoded ``bnncli.arch_kwargs``,
``bnncli.class_names``, ``bnncli.preprocessing`` (the keys of :data:`bnncli.metadata.MODEL_KEYS`).
The graph itself is written by :mod:`bnncli.deploy.onnx_export`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bnncli import __version__
from bnncli.artifacts.identify import reason
from bnncli.errors import ArtifactError
from bnncli.fileio import write_bytes
from bnncli.metadata import MODEL_KEYS, check_model_meta, load_json

FORMAT = "bnncli-onnx"
FORMAT_VERSION = 1
PREFIX = "bnncli."
JSON_KEYS = tuple(k for k in MODEL_KEYS if k != "arch")  # stored JSON-encoded; arch is stored as it is


def metadata_props(meta: dict[str, Any]) -> dict[str, str]:
    """The ``metadata_props`` entries describing the model ``meta`` (see :data:`MODEL_KEYS`)."""
    props = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "version": __version__,
             "arch": meta["arch"]}
    for key in JSON_KEYS:
        props[key] = json.dumps(meta[key], sort_keys=True)
    return {PREFIX + k: v for k, v in props.items()}


def read_metadata(model, source: str = "model") -> dict[str, Any]:
    """Our metadata from an ONNX ModelProto; ArtifactError if it was not exported by bnncli."""
    props = {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    if props.get("format") != FORMAT:
        raise ArtifactError(f"{source} is an ONNX model without bnncli metadata (export it with `bnn export`)")
    try:
        version = int(props.get("format_version", ""))
    except ValueError:
        version = -1
    if version < 1 or version > FORMAT_VERSION:
        raise ArtifactError(f"{source} has bnncli ONNX format version {props.get('format_version')!r}; "
                            f"this bnncli reads up to {FORMAT_VERSION}")
    missing = [k for k in ("arch", *JSON_KEYS) if k not in props]
    if missing:
        raise ArtifactError(f"{source} has incomplete bnncli metadata (no {PREFIX}{missing[0]})")
    raw = {"arch": props["arch"], **{k: load_json(props[k], f"{source}: metadata {PREFIX}{k}") for k in JSON_KEYS}}
    try:
        meta = check_model_meta(raw)
        _check_graph_shapes(model, meta)
    except ArtifactError as e:
        raise ArtifactError(f"{source}: {e}") from None
    return {**meta, "format_version": version}


def _fixed_dims(value_info) -> list[int | None]:
    """The dimensions of a graph input or output: a size, or None where it is symbolic (the batch)."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _check_graph_shapes(model, meta: dict[str, Any]) -> None:
    """The graph's input must be what the preprocessing makes, its output one logit per class name."""
    pp, classes = meta["preprocessing"], len(meta["class_names"])
    expected = {"input": [None, pp["channels"], pp["image_size"], pp["image_size"]], "output": [None, classes]}
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        if not values or not values[0].type.tensor_type.HasField("shape"):
            continue
        dims = _fixed_dims(values[0])
        want = expected[kind]
        if len(dims) != len(want) or any(d is not None and w is not None and d != w for d, w in zip(dims, want)):
            shown = ["N" if d is None else d for d in dims]
            raise ArtifactError(f"the graph {kind} has shape {shown}, but the metadata says "
                                f"{['N', *want[1:]]} ({pp['channels']} channels, {pp['image_size']} px, "
                                f"{classes} classes)")


def plan_onnx(model, meta: dict[str, Any]):
    """The model's whole plan per image (bnncli.runtime.plan), from ONNX's shape inference at the
    input size of its metadata; ArtifactError above the runtime's limits. A Conv reading a
    binarized map (a ``Where``, padded or not, as bnncli exports a binary conv) counts as binary."""
    import onnx

    from bnncli.runtime.plan import Step, plan_steps

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # onnx raises its own error types, and ValueError / RuntimeError
        raise ArtifactError(f"the graph's shapes cannot be inferred ({reason(e)})") from None
    g = inferred.graph
    dims = {v.name: _fixed_dims(v) for v in (*g.input, *g.value_info, *g.output)
            if v.type.tensor_type.HasField("shape")}
    weights = {t.name: list(t.dims) for t in g.initializer}

    def elements(name: str) -> int:  # per image: the batch dimension left out (0 where unknown)
        if name not in dims:
            return 0
        n = 1
        for d in dims[name][1:]:
            n *= d or 1
        return n

    made_by = {out: node.op_type for node in g.node for out in node.output}
    producer_input = {node.output[0]: node.input[0] for node in g.node if node.output and node.input}
    steps = []
    for node in g.node:
        if not node.output:
            continue
        out = node.output[0]
        n = elements(out)
        macs = 0
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights:
            w = weights[node.input[1]]
            if node.op_type == "Conv":  # [Cout, Cin / groups, kh, kw]
                per_output = 1
                for d in w[1:]:
                    per_output *= d
            else:  # the inner dimension: MatMul's [K, N], Gemm's B (transposed or not)
                trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                per_output = w[-1] if node.op_type == "Gemm" and trans_b else w[0] if w else 1
            macs = n * per_output
        source = node.input[0] if node.input else ""
        if made_by.get(source) == "Pad":
            source = producer_input.get(source, "")
        binary = node.op_type == "Conv" and made_by.get(source) == "Where"
        steps.append(Step(node.name or out, out, tuple(i for i in node.input if i and i not in weights), n,
                          0 if binary else macs, macs if binary else 0))
    inputs = {v.name: elements(v.name) for v in g.input if v.name not in weights}
    size = meta["preprocessing"]["image_size"]
    return plan_steps(steps, inputs, [v.name for v in g.output]).check(size)


def load_onnx(path: str | os.PathLike):
    """The ModelProto in ``path`` (no external data); ArtifactError when it is not an ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError):
        model = None
    if model is None or not model.HasField("graph") or not model.graph.node:
        raise ArtifactError(f"{path} is not a bnncli checkpoint, ONNX model or packed model")
    return model


def save_onnx(model, path: str | os.PathLike) -> Path:
    """Write a ModelProto atomically (:mod:`bnncli.fileio`)."""
    return write_bytes(path, model.SerializeToString())


def ort_session(model_or_path, threads: int | None = None):
    """An onnxruntime CPU session (all graph optimizations on) of a ModelProto or a file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    if isinstance(model_or_path, (str, os.PathLike)):
        source = str(model_or_path)
    else:
        source = model_or_path.SerializeToString()
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])

"""The packed model file (``.bnn``): writer and validating reader. Specified in docs/FORMAT.md.

Layout::

    offset  size  field
    0       8     magic b"\\x89BNN\\r\\n\\x1a\\n"
    8       4     format version, uint32 little-endian
    12      4     header length H in bytes, uint32 LE
    16      8     payload length P in bytes, uint64 LE
    24      32    SHA-256 of bytes [0, 24) + header + payload
    56      H     header: zlib-compressed UTF-8 JSON
    56 + H  P     payload: the tensors, each at an 8-byte aligned offset from the payload start

The file is exactly 56 + H + P bytes. Reading never unpickles: the header is JSON, tensors are
raw little-endian arrays. Every field is checked; anything unexpected raises one
:class:`~bnncli.errors.ArtifactError` that says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from bnncli.errors import ArtifactError
from bnncli.fileio import write_bytes
from bnncli.graph.graph import Graph, Node
from bnncli.graph.padding import SAME
from bnncli.metadata import MODEL_KEYS, check_model_meta

MAGIC = b"\x89BNN\r\n\x1a\n"
FORMAT = "bnncli-packed"
FORMAT_VERSION = 2  # the newest version; a file is written in the oldest version that can hold it
READ_VERSIONS = (1, 2)
# What each version added (docs/FORMAT.md): 2, the padding attribute "same" (TensorFlow's rule) and
# the preprocessing interpolation "tf-bicubic" (Larq Zoo's).
_PREAMBLE = struct.Struct("<8sIIQ32s")  # magic, version, header length, payload length, sha256
PREAMBLE_SIZE = _PREAMBLE.size  # 56
ALIGN = 8
MAX_HEADER = 64 << 20  # the compressed header, bytes
# Bounds that keep reading any file cheap (docs/FORMAT.md, Limits): the header's JSON text, its
# nesting, a tensor's dimensions and its element count (zero-size dimensions counted as 1).
MAX_HEADER_JSON = 16 << 20
MAX_JSON_DEPTH = 32
MAX_TENSOR_DIMS = 4
MAX_TENSOR_ELEMENTS = 1 << 32

# How binary weights are encoded; a reader accepts exactly this.
BINARY_ENCODING = {
    "sign_of_zero": 1,
    "polarity": "bit 1 = +1, bit 0 = -1",
    "packed_axis": "input channel",
    "layout": "[out_channels, kernel_h, kernel_w, words]",
    "word_bits": 32,
    "bit_order": "least significant bit first",
    "byte_order": "little",
    "tail_bits": 0,
}
DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "uint32": np.dtype("<u4"),
          "uint8": np.dtype("u1")}
FLOAT_DTYPES = ("float32", "float16")


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _dtype_name(dtype: np.dtype) -> str:
    for name, dt in DTYPES.items():
        if np.dtype(dtype).newbyteorder("<") == dt or np.dtype(dtype) == dt:
            return name
    raise ArtifactError(f"cannot store tensors of dtype {dtype}; supported: {', '.join(DTYPES)}")


def encode(graph: Graph, meta: dict[str, Any]) -> bytes:
    """The bytes of a packed file for ``graph`` and ``meta`` (arch, arch_kwargs, class_names,
    preprocessing, float_dtype, producer)."""
    graph.check()
    table, chunks, offset = [], [], 0
    for name, array in graph.tensors.items():
        dtype = DTYPES[_dtype_name(array.dtype)]
        data = np.ascontiguousarray(array, dtype=dtype).tobytes()
        start = _align(offset)
        if start > offset:
            chunks.append(b"\0" * (start - offset))
        chunks.append(data)
        table.append({"name": name, "dtype": _dtype_name(dtype), "shape": [int(s) for s in array.shape],
                      "offset": start, "nbytes": len(data)})
        offset = start + len(data)
    payload = b"".join(chunks)
    version = required_version(graph, meta)
    header = {
        "format": FORMAT,
        "format_version": version,
        "producer": meta.get("producer", "bnncli"),
        "model": {k: meta[k] for k in MODEL_KEYS},
        "float_dtype": meta["float_dtype"],
        "binary_encoding": BINARY_ENCODING,
        "graph": {"inputs": graph.inputs, "outputs": graph.outputs, "nodes": [n.to_json() for n in graph.nodes]},
        "tensors": table,
    }
    header_bytes = zlib.compress(json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8"), 9)
    head = struct.pack("<8sIIQ", MAGIC, version, len(header_bytes), len(payload))
    digest = hashlib.sha256(head + header_bytes + payload).digest()
    return head + digest + header_bytes + payload


def _uses_same_padding(nodes: list[Node]) -> bool:
    return any(n.attrs.get("padding") == SAME for n in nodes)


def required_version(graph: Graph, meta: dict[str, Any] | None = None) -> int:
    """The oldest format version that can hold ``graph`` and ``meta`` (so older readers load what they can)."""
    tf_bicubic = meta is not None and meta.get("preprocessing", {}).get("interpolation") == "tf-bicubic"
    return 2 if _uses_same_padding(graph.nodes) or tf_bicubic else 1


def write_packed(path: str | os.PathLike, graph: Graph, meta: dict[str, Any]) -> Path:
    """Encode and write atomically; returns the path."""
    return write_bytes(path, encode(graph, meta))


def is_packed(prefix: bytes) -> bool:
    """Whether the first bytes of a file are the packed format's magic."""
    return prefix[:len(MAGIC)] == MAGIC


def header_size(data: bytes) -> int:
    """Bytes before the payload (preamble + header) of a packed file's ``data``."""
    if len(data) < PREAMBLE_SIZE or not is_packed(data):
        raise ArtifactError("not a bnncli packed model (wrong magic bytes or truncated preamble)")
    return PREAMBLE_SIZE + _PREAMBLE.unpack_from(data)[2]


def decode(data: bytes, source: str = "<bytes>") -> tuple[Graph, dict[str, Any]]:
    """Validate and parse a packed file's bytes into ``(graph, meta)``."""
    try:
        return _decode(data)
    except _Invalid as e:
        raise ArtifactError(f"{source}: {e}") from None


def read_packed(path: str | os.PathLike) -> tuple[Graph, dict[str, Any]]:
    """Read and validate a packed file; see :func:`decode`."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"packed model not found: {path}")
    return decode(path.read_bytes(), str(path))


class _Invalid(Exception):
    pass


def _decode(data: bytes) -> tuple[Graph, dict[str, Any]]:
    if len(data) < len(MAGIC) or not is_packed(data):
        raise _Invalid("not a bnncli packed model (wrong magic bytes)")
    if len(data) < PREAMBLE_SIZE:
        raise _Invalid(f"truncated: {len(data)} bytes, shorter than the {PREAMBLE_SIZE}-byte preamble")
    _, version, header_len, payload_len, digest = _PREAMBLE.unpack_from(data)
    if version not in READ_VERSIONS:
        raise _Invalid(f"packed format version {version}; this bnncli reads versions "
                       f"{', '.join(map(str, READ_VERSIONS))} (a newer bnncli may read it)")
    expected = PREAMBLE_SIZE + header_len + payload_len
    if len(data) < expected:
        raise _Invalid(f"truncated: {len(data)} bytes, the preamble says {expected}")
    if len(data) > expected:
        raise _Invalid(f"{len(data) - expected} unexpected bytes after the end of the model ({expected} bytes)")
    if header_len > MAX_HEADER:
        raise _Invalid(f"header of {header_len} bytes is implausibly large")
    if hashlib.sha256(data[:24] + data[PREAMBLE_SIZE:]).digest() != digest:
        raise _Invalid("corrupted: the SHA-256 checksum does not match the contents")
    header = _parse_json(_inflate(data[PREAMBLE_SIZE:PREAMBLE_SIZE + header_len]))
    payload = memoryview(data)[PREAMBLE_SIZE + header_len:]
    return _parse_header(header, payload, version)


def _inflate(compressed: bytes) -> bytes:
    """The header's JSON text: exactly one zlib stream, inflated to at most MAX_HEADER_JSON bytes."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(compressed, MAX_HEADER_JSON + 1)
    except zlib.error as e:
        raise _Invalid(f"unreadable header ({e})") from None
    if len(text) > MAX_HEADER_JSON:
        raise _Invalid(f"header inflates to more than {MAX_HEADER_JSON} bytes")
    if not inflater.eof:
        raise _Invalid("unreadable header (truncated zlib stream)")
    if inflater.unused_data:
        raise _Invalid(f"{len(inflater.unused_data)} unexpected bytes after the header's zlib stream")
    return text


# A JSON string (with its escapes), to be skipped when counting brackets.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _json_depth(text: bytes, chunk: int = 1 << 20) -> int:
    """The deepest nesting of arrays and objects in JSON ``text``, counted without parsing it."""
    brackets = np.frombuffer(_JSON_STRING.sub(b'""', text), dtype=np.uint8)
    depth = deepest = 0
    for start in range(0, len(brackets), chunk):
        part = brackets[start:start + chunk]
        steps = (np.isin(part, _OPENERS).astype(np.int32) - np.isin(part, _CLOSERS).astype(np.int32)).cumsum()
        if len(steps):
            deepest = max(deepest, depth + int(steps.max()))
            depth += int(steps[-1])
    return deepest


_OPENERS = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSERS = np.frombuffer(b"]}", dtype=np.uint8)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Invalid(f"header repeats the key {next(k for k in keys if keys.count(k) > 1)!r} in one object")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise _Invalid(f"header holds {name}, which is not JSON")


def _parse_json(text: bytes) -> Any:
    """Strict JSON: UTF-8, nesting at most MAX_JSON_DEPTH, no repeated keys, no NaN or Infinity."""
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise _Invalid(f"header nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _Invalid(f"unreadable header ({e})") from None


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise _Invalid(message)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


HEADER_KEYS = ("format", "format_version", "producer", "model", "float_dtype", "binary_encoding", "graph", "tensors")
GRAPH_KEYS = ("inputs", "outputs", "nodes")
# The dtypes a node's tensor may have, by (op, role); every other role holds floats (float32 or float16,
# computed in float32 either way).
ROLE_DTYPES = {("BinaryConv", "weight"): ("uint32",), ("BinaryConv", "in_negate"): ("uint8",)}


def _exact_keys(obj: Any, keys: tuple[str, ...], what: str) -> None:
    _require(isinstance(obj, dict), f"{what} is not a JSON object")
    missing = [k for k in keys if k not in obj]
    _require(not missing, f"{what} lacks {', '.join(missing)}")
    extra = sorted(set(obj) - set(keys))
    _require(not extra, f"{what} has unknown keys {', '.join(map(repr, extra))}")


def _same_json(a: Any, b: Any) -> bool:
    """Equal values of equal JSON types (``1``, ``1.0`` and ``true`` differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _parse_header(h: Any, payload: memoryview, version: int) -> tuple[Graph, dict[str, Any]]:
    _exact_keys(h, HEADER_KEYS, "header")
    _require(h["format"] == FORMAT, f"header format is {h['format']!r}, not {FORMAT!r}")
    _require(_same_json(h["format_version"], version), "header and preamble disagree on the format version")
    _require(isinstance(h["producer"], str), "producer must be a string")
    _require(h["float_dtype"] in FLOAT_DTYPES, f"float_dtype {h['float_dtype']!r} is not one of {FLOAT_DTYPES}")
    enc = h["binary_encoding"]
    _require(_same_json(enc, BINARY_ENCODING), f"binary encoding {enc!r} is not the one this reader supports "
                                               f"({BINARY_ENCODING!r})")
    _exact_keys(h["model"], MODEL_KEYS, "model")
    try:
        model = check_model_meta(h["model"])
    except ArtifactError as e:
        raise _Invalid(str(e)) from None
    tensors = _parse_tensors(h["tensors"], payload)
    graph = _parse_graph(h["graph"], tensors)
    _require(version >= 2 or not _uses_same_padding(graph.nodes),
             'padding "same" needs format version 2, the file says 1')
    _require(version >= 2 or model["preprocessing"]["interpolation"] == "bilinear",
             'interpolation "tf-bicubic" needs format version 2, the file says 1')
    _check_roles(graph)
    _check_input_channels(graph, model["preprocessing"]["channels"])
    meta = {
        **model,
        "float_dtype": h["float_dtype"],
        "producer": h["producer"],
        "format_version": h["format_version"],
    }
    return graph, meta


def _parse_graph(g: Any, tensors: dict[str, np.ndarray]) -> Graph:
    _exact_keys(g, GRAPH_KEYS, "graph")
    for key in ("inputs", "outputs"):
        _require(isinstance(g[key], list) and len(g[key]) == 1 and isinstance(g[key][0], str),
                 f"graph {key} must be one name")
    _require(isinstance(g["nodes"], list) and bool(g["nodes"]), "graph nodes must be a non-empty list")
    try:
        nodes = [Node.from_json(n) for n in g["nodes"]]
        graph = Graph(nodes, tensors, list(g["inputs"]), list(g["outputs"]))
        graph.check()
        rank = graph.ranks().get(graph.outputs[0])
    except ArtifactError as e:
        raise _Invalid(str(e)) from None
    _require(rank == 2, f"graph output {graph.outputs[0]!r} is {rank}-D; it must be [N, classes] (2-D)")
    used = {name for n in nodes for name in n.params.values()}
    _require(used == set(tensors), f"tensors not used by any node: {', '.join(sorted(set(tensors) - used))}")
    return graph


def _check_roles(graph: Graph) -> None:
    """Each tensor's dtype is one its role allows (:data:`ROLE_DTYPES`, else a float)."""
    for node in graph.nodes:
        for role, name in node.params.items():
            allowed = ROLE_DTYPES.get((node.op, role), FLOAT_DTYPES)
            dtype = _dtype_name(graph.tensors[name].dtype)
            _require(dtype in allowed, f"node {node.name!r} ({node.op}): tensor {role} is {dtype}; "
                                       f"it must be {' or '.join(allowed)}")


def _check_input_channels(graph: Graph, channels: int) -> None:
    """The convolutions that read the graph input take the preprocessing's channels."""
    for node in graph.nodes:
        if graph.inputs[0] not in node.inputs:
            continue
        if node.op in ("Conv", "GroupConv"):
            weight = graph.param(node, "weight")
            groups = node.attrs.get("groups", 1) if node.op == "GroupConv" else 1
            cin = weight.shape[1] * groups if weight is not None and weight.ndim == 4 and isinstance(groups, int) \
                else None
        else:
            cin = node.attrs.get("in_channels") if node.op == "BinaryConv" else None
        _require(cin is None or cin == channels, f"node {node.name!r} ({node.op}) takes {cin} input channels; "
                                                 f"the preprocessing makes {channels}")


def _parse_tensors(table: Any, payload: memoryview) -> dict[str, np.ndarray]:
    _require(isinstance(table, list), "tensors must be a list")
    tensors: dict[str, np.ndarray] = {}
    spans = []
    for entry in table:
        _require(isinstance(entry, dict) and {"name", "dtype", "shape", "offset", "nbytes"} == set(entry),
                 "each tensor entry needs exactly name, dtype, shape, offset, nbytes")
        name = entry["name"]
        _require(isinstance(name, str) and bool(name) and name not in tensors,
                 f"bad or duplicate tensor name {name!r}")
        _require(entry["dtype"] in DTYPES, f"tensor {name}: unknown dtype {entry['dtype']!r}")
        shape = entry["shape"]
        _check_shape(name, shape)
        dtype = DTYPES[entry["dtype"]]
        nbytes, offset = entry["nbytes"], entry["offset"]
        _require(_is_int(nbytes) and nbytes == math.prod(shape) * dtype.itemsize,
                 f"tensor {name}: nbytes {nbytes!r} does not match shape {shape} of {entry['dtype']}")
        _require(_is_int(offset) and offset >= 0 and offset % ALIGN == 0,
                 f"tensor {name}: offset {offset!r} is not a multiple of {ALIGN}")
        _require(offset + nbytes <= len(payload), f"tensor {name} lies past the end of the payload")
        spans.append((offset, offset + nbytes, name))
        array = np.frombuffer(payload, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
        tensors[name] = array.astype(dtype.newbyteorder("="), copy=True)
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        _require(start >= end, f"tensors {a} and {b} overlap")
    _check_gaps(spans, payload)
    return tensors


def _check_shape(name: str, shape: Any) -> None:
    _require(isinstance(shape, list) and len(shape) <= MAX_TENSOR_DIMS and all(_is_int(s) and s >= 0 for s in shape),
             f"tensor {name}: shape must be a list of at most {MAX_TENSOR_DIMS} sizes, not {shape!r}"[:300])
    _require(math.prod(max(s, 1) for s in shape) <= MAX_TENSOR_ELEMENTS,
             f"tensor {name}: shape {shape} has more than {MAX_TENSOR_ELEMENTS} elements"[:300])


def _check_gaps(spans: list[tuple[int, int, str]], payload: memoryview) -> None:
    """Every payload byte outside the tensors is zero (the alignment padding)."""
    edges = [0, *(edge for start, end, _ in spans for edge in (start, end)), len(payload)]
    for start, stop in zip(edges[::2], edges[1::2]):
        if start < stop and np.frombuffer(payload, dtype=np.uint8, count=stop - start, offset=start).any():
            raise _Invalid(f"payload bytes {start} to {stop} lie outside every tensor and are not zero")

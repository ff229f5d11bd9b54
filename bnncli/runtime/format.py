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
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from bnncli.errors import ArtifactError
from bnncli.fileio import write_bytes
from bnncli.metadata import MODEL_KEYS, check_model_meta
from bnncli.runtime.graph import Graph, Node
from bnncli.runtime.padding import SAME

MAGIC = b"\x89BNN\r\n\x1a\n"
FORMAT = "bnncli-packed"
FORMAT_VERSION = 2  # the newest version; a file is written in the oldest version that can hold it
READ_VERSIONS = (1, 2)
# What each version added (docs/FORMAT.md): 2, the padding attribute "same" (TensorFlow's rule) and
# the preprocessing interpolation "tf-bicubic" (Larq Zoo's).
_PREAMBLE = struct.Struct("<8sIIQ32s")  # magic, version, header length, payload length, sha256
PREAMBLE_SIZE = _PREAMBLE.size  # 56
ALIGN = 8
MAX_HEADER = 64 << 20

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
DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "uint32": np.dtype("<u4"),
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
    try:
        header = json.loads(zlib.decompress(data[PREAMBLE_SIZE:PREAMBLE_SIZE + header_len]).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, ValueError) as e:
        raise _Invalid(f"unreadable header ({e})") from None
    payload = memoryview(data)[PREAMBLE_SIZE + header_len:]
    return _parse_header(header, payload, version)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise _Invalid(message)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_header(h: Any, payload: memoryview, version: int) -> tuple[Graph, dict[str, Any]]:
    _require(isinstance(h, dict), "header is not a JSON object")
    missing = [k for k in ("format", "format_version", "producer", "model", "float_dtype", "binary_encoding",
                           "graph", "tensors") if k not in h]
    _require(not missing, f"header lacks {', '.join(missing)}")
    _require(h["format"] == FORMAT, f"header format is {h['format']!r}, not {FORMAT!r}")
    _require(h["format_version"] == version, "header and preamble disagree on the format version")
    _require(isinstance(h["producer"], str), "producer must be a string")
    _require(h["float_dtype"] in FLOAT_DTYPES, f"float_dtype {h['float_dtype']!r} is not one of {FLOAT_DTYPES}")
    enc = h["binary_encoding"]
    _require(enc == BINARY_ENCODING, f"binary encoding {enc!r} is not the one this reader supports "
                                     f"({BINARY_ENCODING!r})")
    try:
        model = check_model_meta(h["model"])
    except ArtifactError as e:
        raise _Invalid(str(e)) from None

    tensors = _parse_tensors(h["tensors"], payload)
    g = h["graph"]
    _require(isinstance(g, dict) and {"inputs", "outputs", "nodes"} <= set(g), "graph needs inputs, outputs, nodes")
    for key in ("inputs", "outputs"):
        _require(isinstance(g[key], list) and len(g[key]) == 1 and isinstance(g[key][0], str),
                 f"graph {key} must be one name")
    _require(isinstance(g["nodes"], list) and g["nodes"], "graph nodes must be a non-empty list")
    try:
        nodes = [Node.from_json(n) for n in g["nodes"]]
        graph = Graph(nodes, tensors, list(g["inputs"]), list(g["outputs"]))
        graph.check()
    except ArtifactError as e:
        raise _Invalid(str(e)) from None
    _require(version >= 2 or not _uses_same_padding(nodes), 'padding "same" needs format version 2, the file says 1')
    _require(version >= 2 or model["preprocessing"]["interpolation"] == "bilinear",
             'interpolation "tf-bicubic" needs format version 2, the file says 1')
    used = {name for n in nodes for name in n.params.values()}
    _require(used == set(tensors), f"tensors not used by any node: {', '.join(sorted(set(tensors) - used))}")
    meta = {
        **model,
        "float_dtype": h["float_dtype"],
        "producer": h["producer"],
        "format_version": h["format_version"],
    }
    return graph, meta


def _parse_tensors(table: Any, payload: memoryview) -> dict[str, np.ndarray]:
    _require(isinstance(table, list), "tensors must be a list")
    tensors: dict[str, np.ndarray] = {}
    spans = []
    for entry in table:
        _require(isinstance(entry, dict) and {"name", "dtype", "shape", "offset", "nbytes"} == set(entry),
                 "each tensor entry needs exactly name, dtype, shape, offset, nbytes")
        name = entry["name"]
        _require(isinstance(name, str) and name and name not in tensors, f"bad or duplicate tensor name {name!r}")
        _require(entry["dtype"] in DTYPES, f"tensor {name}: unknown dtype {entry['dtype']!r}")
        shape = entry["shape"]
        _require(isinstance(shape, list) and all(_is_int(s) and s >= 0 for s in shape),
                 f"tensor {name}: shape must be a list of sizes")
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
    return tensors

"""The packed file format: round trip, and refusal of truncated, corrupted, foreign and
tampered files with one clear message."""

import struct

import numpy as np
import pytest
from conftest import rewrite_packed_header

from bnncli.artifacts.open import open_model, sniff
from bnncli.deploy.pack import pack_model
from bnncli.errors import ArtifactError
from bnncli.graph import format as fmt
from bnncli.runtime import load


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_checkpoint):
    path = tmp_path_factory.mktemp("format") / "tiny.bnn"
    pack_model(tiny_checkpoint, path)
    return path


def _refused(tmp_path, data: bytes, needle: str, name: str = "bad.bnn") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ArtifactError) as info:
        load(path)
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message and str(path) in message
    return message



def test_round_trip_keeps_graph_and_metadata(packed, tiny_checkpoint):
    graph, meta = fmt.read_packed(packed)
    assert meta["arch"] == "binarydensenet_tiny" and meta["class_names"] == ["a", "b", "c", "d"]
    assert meta["preprocessing"]["image_size"] == 32 and meta["float_dtype"] == "float32"
    data = packed.read_bytes()
    # Symmetric padding only: written as version 1, which older readers load.
    assert data[:8] == fmt.MAGIC and struct.unpack_from("<I", data, 8)[0] == 1 == meta["format_version"]
    # Re-encoding what was read gives the same bytes: nothing is lost or reordered.
    assert fmt.encode(graph, {**meta}) == data
    binary = [graph.tensors[n.params["weight"]] for n in graph.nodes if n.op == "BinaryConv"]
    assert binary and all(w.dtype == np.uint32 for w in binary)


@pytest.mark.parametrize("cut", [0.999, 0.5, 0.02, 40 / 41340, 5 / 41340])
def test_truncated_file_is_refused(tmp_path, packed, cut):
    data = packed.read_bytes()
    n = max(1, int(len(data) * cut))
    needle = "wrong magic bytes" if n < 8 else "truncated"
    _refused(tmp_path, data[:n], needle)


def test_trailing_bytes_are_refused(tmp_path, packed):
    _refused(tmp_path, packed.read_bytes() + b"\0" * 3, "3 unexpected bytes after the end")


@pytest.mark.parametrize("where", [30, 60, -1, -5000])
def test_corrupted_byte_is_refused(tmp_path, packed, where):
    data = bytearray(packed.read_bytes())
    data[where] ^= 0x10
    _refused(tmp_path, bytes(data), "corrupted: the SHA-256 checksum does not match")


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n" + b"\0" * 100,  # an image
    b"PK\x03\x04" + b"\0" * 100,  # a zip (PyTorch checkpoint)
    b"hello, world\n" * 10,  # text
    bytes(range(256)),
])
def test_foreign_file_is_refused(tmp_path, content):
    _refused(tmp_path, content, "not a bnncli packed model (wrong magic bytes)")


def test_newer_format_version_is_refused(tmp_path, packed):
    data = bytearray(packed.read_bytes())
    struct.pack_into("<I", data, 8, fmt.FORMAT_VERSION + 1)
    _refused(tmp_path, bytes(data), f"packed format version {fmt.FORMAT_VERSION + 1}; this bnncli reads versions 1, 2")


def _set_polarity(h):
    h["binary_encoding"]["polarity"] = "bit 1 = -1, bit 0 = +1"


def _tensor_past_end(h):
    h["tensors"][0]["offset"] = 1 << 20


def _wrong_nbytes(h):
    h["tensors"][1]["nbytes"] += 8


def _unknown_op(h):
    h["graph"]["nodes"][2]["op"] = "Gelu"


def _dangling_input(h):
    h["graph"]["nodes"][3]["inputs"] = ["nowhere"]


def _class_count(h):
    h["model"]["class_names"] = h["model"]["class_names"][:3]


def _bad_preprocessing(h):
    h["model"]["preprocessing"]["std"] = [0.0, 1.0, 1.0]


def _bad_pad_value(h):
    next(n for n in h["graph"]["nodes"] if n.get("op") == "BinaryConv")["attrs"]["pad_value"] = 2


def _wrong_weight_shape(h):
    name = next(n for n in h["graph"]["nodes"] if n.get("op") == "BinaryConv")["params"]["weight"]
    entry = next(t for t in h["tensors"] if t["name"] == name)
    entry["shape"] = [entry["shape"][0] // 2, 3, 3, entry["shape"][3] * 2]


@pytest.mark.parametrize("edit,needle", [
    (_set_polarity, "binary encoding"),
    (_tensor_past_end, "lies past the end of the payload"),
    (_wrong_nbytes, "does not match shape"),
    (_unknown_op, "unknown op 'Gelu'"),
    (_dangling_input, "reads 'nowhere' before anything writes it"),
    (_class_count, "but 3 class names"),
    (_bad_preprocessing, "std must be positive"),
    (_bad_pad_value, "pad_value must be 0, -1 or 1"),
    (_wrong_weight_shape, "tensor weight has shape"),
    (lambda h: h.pop("float_dtype"), "header lacks float_dtype"),
    (lambda h: h.__setitem__("format", "other"), "header format is 'other'"),
])
def test_every_field_is_validated(tmp_path, packed, edit, needle):
    """Files with a valid checksum but a field this reader must not trust."""
    _refused(tmp_path, rewrite_packed_header(packed.read_bytes(), edit), needle)


def test_nonzero_tail_bits_are_refused(tmp_path):
    from conftest import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "odd.pt", "resnete_tiny", class_names=("x", "y"))
    path = tmp_path / "odd.bnn"
    pack_model(ckpt, path)
    graph, meta = fmt.read_packed(path)
    conv = next(n for n in graph.nodes if n.op == "BinaryConv" and n.attrs["in_channels"] % 32)
    graph.tensors[conv.params["weight"]][..., -1] |= np.uint32(1 << 31)
    _refused(tmp_path, fmt.encode(graph, meta), "tail bits must be 0")


def test_loader_tells_kinds_apart_by_content(tmp_path, packed, tiny_checkpoint):
    from bnncli.deploy.export import export_onnx

    onnx_path = tmp_path / "m.onnx"
    export_onnx(tiny_checkpoint, onnx_path, samples=1)
    disguised = {"packed.pt": packed, "checkpoint.bnn": tiny_checkpoint, "onnx.bnn": onnx_path}
    for name, source in disguised.items():
        (tmp_path / name).write_bytes(source.read_bytes())
    assert [sniff(tmp_path / n) for n in disguised] == ["packed", "checkpoint", "onnx"]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    outputs = []
    for name in disguised:
        predictor = open_model(tmp_path / name)
        assert predictor.arch == "binarydensenet_tiny" and predictor.class_names == ["a", "b", "c", "d"]
        assert predictor.preprocessing["image_size"] == 32
        outputs.append(predictor(x))
    assert all(np.allclose(o, outputs[1], rtol=1e-3, atol=1e-4) for o in outputs)
    (tmp_path / "junk.bin").write_bytes(b"\x08\x01junk that is no model at all")
    with pytest.raises(ArtifactError, match="not a bnncli checkpoint, ONNX model or packed model"):
        open_model(tmp_path / "junk.bin")
    (tmp_path / "empty.bnn").write_bytes(b"")
    with pytest.raises(ArtifactError, match="is empty"):
        open_model(tmp_path / "empty.bnn")

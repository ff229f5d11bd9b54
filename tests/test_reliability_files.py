"""Model files and options that are malformed or absurd are refused with one line, before anything
large is allocated: packed headers (size, nesting, strict JSON), sizes in every kind of model file,
checkpoint and ONNX metadata, resume state, training options, and a diverging run."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from conftest import rewrite_packed_header, write_checkpoint

from bnncli.artifacts.open import open_model
from bnncli.cli.app import main
from bnncli.deploy.pack import pack_model
from bnncli.engine import train as train_module
from bnncli.engine.config import resolve_config
from bnncli.engine.train import train
from bnncli.errors import ArtifactError, UsageError
from bnncli.graph import format as fmt
from bnncli.metadata import MAX_IMAGE_SIZE
from bnncli.runtime import load


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_checkpoint):
    path = tmp_path_factory.mktemp("reliability") / "tiny.bnn"
    pack_model(tiny_checkpoint, path)
    return path.read_bytes()


def _pieces(data: bytes) -> tuple[int, bytes, bytes]:
    """(version, header JSON text, payload) of a packed file."""
    _, version, hlen, _, _ = struct.unpack_from("<8sIIQ32s", data)
    return version, zlib.decompress(data[56:56 + hlen]), data[56 + hlen:]


def _seal(version: int, compressed_header: bytes, payload: bytes) -> bytes:
    """A packed file of these parts with a valid checksum."""
    head = struct.pack("<8sIIQ", fmt.MAGIC, version, len(compressed_header), len(payload))
    return head + hashlib.sha256(head + compressed_header + payload).digest() + compressed_header + payload


def _with_text(data: bytes, edit) -> bytes:
    """The file with ``edit`` applied to its header's JSON text."""
    version, text, payload = _pieces(data)
    return _seal(version, zlib.compress(edit(text)), payload)


def _refused(tmp_path, data: bytes, needle: str) -> str:
    path = tmp_path / "bad.bnn"
    path.write_bytes(data)
    with pytest.raises(ArtifactError) as info:
        load(path)
    message = str(info.value)
    assert needle in message and "\n" not in message and str(path) in message, message
    return message


def _node(h, op: str, role: str | None = None) -> dict:
    return next(n for n in h["graph"]["nodes"] if n["op"] == op and (role is None or role in n["params"]))


# ---- 8: the packed header's inflated size and nesting are bounded ------------------------------------


def test_a_header_that_inflates_beyond_the_bound_is_refused_in_bounded_memory(tmp_path, packed):
    version, text, payload = _pieces(packed)
    deflate = zlib.compressobj(9)
    spaces = b" " * (1 << 20)
    parts = [deflate.compress(text[:-1])] + [deflate.compress(spaces) for _ in range(256)]  # 256 MB of blanks
    parts += [deflate.compress(text[-1:]), deflate.flush()]
    bomb = _seal(version, b"".join(parts), payload)
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        _refused(tmp_path, bomb, f"header inflates to more than {fmt.MAX_HEADER_JSON} bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * fmt.MAX_HEADER_JSON, peak


def test_deep_nesting_is_refused_before_parsing(tmp_path, packed):
    deep = "[" * 100_000 + "]" * 100_000

    def nest(text: bytes) -> bytes:
        return text.replace(b'"arch_kwargs":{', b'"arch_kwargs":{"x":' + deep.encode() + b",", 1)

    _refused(tmp_path, _with_text(packed, nest), f"header nests deeper than {fmt.MAX_JSON_DEPTH} levels")
    # Brackets inside strings are text, not nesting.
    names = ["[" * 200 + str(i) + "}" * 200 for i in range(4)]
    graph, meta = fmt.decode(rewrite_packed_header(packed, lambda h: h["model"].__setitem__("class_names", names)))
    assert meta["class_names"] == names


# ---- 10: every size in a model file is bounded before anything is allocated ---------------------------


def _conv_padding(h):
    _node(h, "Conv")["attrs"]["padding"] = [2000, 2000]


def _binary_padding(h):
    _node(h, "BinaryConv")["attrs"]["padding"] = [2000, 2000]


def _huge_dilation(h):
    _node(h, "BinaryConv")["attrs"]["dilation"] = [10**6, 10**6]
    _node(h, "BinaryConv")["attrs"]["padding"] = [10**6, 10**6]


def _huge_pool(h):
    _node(h, "MaxPool")["attrs"].update(kernel_size=[10**5, 10**5], padding=[0, 0])


def _image_size(h):
    h["model"]["preprocessing"].update(image_size=100_000, resize=100_000)


def _shape_overflow(h):
    h["tensors"].append({"name": "huge", "dtype": "float32", "shape": [0, 2**70], "offset": 0, "nbytes": 0})


def _too_many_elements(h):
    h["tensors"].append({"name": "huge", "dtype": "float32", "shape": [0, 2**20, 2**20, 2**20], "offset": 0,
                         "nbytes": 0})


@pytest.mark.parametrize("edit,needle", [
    (_conv_padding, "padding [2000, 2000] is more than the kernel's reach"),
    (_binary_padding, "padding [2000, 2000] is more than the kernel's reach"),
    (_huge_dilation, "reach beyond 2048 positions"),
    (_huge_pool, "reach beyond 2048 positions"),
    (_image_size, "preprocessing image_size must be an integer from 1 to 2048, not 100000"),
    (_shape_overflow, "tensor huge: shape [0, 1180591620717411303424] has more than"),
    (_too_many_elements, "has more than 4294967296 elements"),
])
def test_sizes_in_a_packed_file_are_bounded(tmp_path, packed, edit, needle):
    _refused(tmp_path, rewrite_packed_header(packed, edit), needle)


def _saved_checkpoint(tmp_path, edit, name: str = "bad.pt"):
    """A copy of a small checkpoint with ``edit`` applied to its dict."""
    ckpt = torch.load(write_checkpoint(tmp_path / "good.pt"), weights_only=True)
    edit(ckpt)
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


def _refused_checkpoint(tmp_path, edit, needle: str) -> None:
    path = _saved_checkpoint(tmp_path, edit)
    with pytest.raises(ArtifactError) as info:
        open_model(path)
    assert needle in str(info.value) and str(path) in str(info.value), str(info.value)


@pytest.mark.parametrize("edit,needle", [
    (lambda c: c["preprocessing"].update(image_size=100_000), "image_size must be an integer from 1 to 2048"),
    (lambda c: c["preprocessing"].update(resize=10**6), "resize must be an integer from 1 to 4096"),
    (lambda c: c.__setitem__("class_names", "abcd"), "class_names must be a non-empty list of strings"),
    (lambda c: c.__setitem__("class_names", ["a", "b", "c"]), "num_classes is 4 but 3 class names are listed"),
    (lambda c: c.__setitem__("preprocessing", {}), "preprocessing lacks preset, image_size"),
    (lambda c: c.__setitem__("preprocessing", "imagenet"), "preprocessing must be an object, not str"),
    (lambda c: c["preprocessing"].update(channels=5, mean=[0.5] * 5, std=[0.5] * 5),
     "preprocessing channels must be 1 or 3, not 5"),
    (lambda c: c["preprocessing"].update(channels=1, mean=[0.5], std=[0.5]),
     "arch_kwargs in_channels is 3 but the preprocessing has 1 channels"),
    (lambda c: c["preprocessing"].update(std=[0.0, 1.0, 1.0]), "preprocessing std must be positive"),
])
def test_checkpoint_metadata_is_validated_on_load(tmp_path, edit, needle):
    _refused_checkpoint(tmp_path, edit, needle)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, tiny_checkpoint):
    import onnx

    from bnncli.deploy.export import export_onnx

    path = tmp_path_factory.mktemp("reliability_onnx") / "tiny.onnx"
    export_onnx(tiny_checkpoint, path, samples=1)
    return onnx.load(str(path))


def _refused_onnx(tmp_path, model, props: dict, needle: str) -> None:
    import onnx

    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    for key, value in props.items():
        next(p for p in bad.metadata_props if p.key == f"bnncli.{key}").value = json.dumps(value)
    path = tmp_path / "bad.onnx"
    onnx.save(bad, str(path))
    with pytest.raises(ArtifactError) as info:
        open_model(path)
    assert needle in str(info.value) and str(path) in str(info.value), str(info.value)


def test_onnx_metadata_is_validated_like_the_other_files(tmp_path, onnx_model):
    from bnncli.artifacts.onnx_file import read_metadata

    meta = read_metadata(onnx_model)
    pre, kwargs = meta["preprocessing"], meta["arch_kwargs"]
    _refused_onnx(tmp_path, onnx_model, {"preprocessing": {**pre, "image_size": 10**6}},
                  "image_size must be an integer from 1 to 2048")
    _refused_onnx(tmp_path, onnx_model, {"preprocessing": {**pre, "image_size": 64, "resize": 64}},
                  "the graph input has shape ['N', 3, 32, 32], but the metadata says ['N', 3, 64, 64]")
    _refused_onnx(tmp_path, onnx_model, {"class_names": [["a"], ["b"], ["c"], ["d"]]}, "class_names must be")
    _refused_onnx(tmp_path, onnx_model, {"class_names": ["a", "b"], "arch_kwargs": {**kwargs, "num_classes": 2}},
                  "the graph output has shape ['N', 4], but the metadata says ['N', 2]")


# ---- 11: the packed file's structure -------------------------------------------------------------------


def _four_d_output(h):
    h["graph"]["outputs"] = [_node(h, "BinaryConv")["outputs"][0]]


def test_a_packed_graph_must_end_in_logits(tmp_path, packed):
    _refused(tmp_path, rewrite_packed_header(packed, _four_d_output), "is 4-D; it must be [N, classes] (2-D)")


def test_the_input_convolution_must_take_the_preprocessings_channels(tmp_path, packed):
    def one_channel(h):
        h["model"]["preprocessing"].update(channels=1, mean=[0.5], std=[0.5])
        h["model"]["arch_kwargs"]["in_channels"] = 1

    _refused(tmp_path, rewrite_packed_header(packed, one_channel), "takes 3 input channels; the preprocessing makes 1")


# ---- 11: a resumed run's state --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_epoch_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("reliability_runs") / "run"
    cfg = resolve_config(overrides=dict(arch="binarydensenet_tiny", data=str(image_folder), epochs=1, batch_size=8,
                                        image_size=16, seed=3, workers=0))
    train(cfg, out)
    return out


def _edit_last(run, tmp_path, edit):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ckpt = torch.load(copy / "last.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, copy / "last.pt")
    return copy


@pytest.mark.parametrize("edit,needle", [
    (lambda c: c.__setitem__("epoch", -1), "epoch must be a whole number >= 0, not -1"),
    (lambda c: c.__setitem__("step_in_epoch", "2"), "step_in_epoch must be a whole number >= 0, not '2'"),
    (lambda c: c["rng"].__setitem__("numpy", ["MT19937", [1, 2, 3], 0, 0, 0.0]), "malformed RNG state"),
    (lambda c: c["rng"].__setitem__("python", (3, (1, 2), None)), "malformed RNG state"),
    (lambda c: c["rng"].__setitem__("torch", torch.zeros(4)), "malformed RNG state"),
    (lambda c: c.__setitem__("rng", "seed 3"), "malformed RNG state"),
    (lambda c: c["optimizer"].__setitem__("param_groups", [{"params": [0]}]), "malformed optimizer state"),
    (lambda c: c.__setitem__("optimizer", {"state": {}}), "malformed optimizer state"),
    (lambda c: c.__setitem__("scheduler", "cosine"), "malformed scheduler state"),
])
def test_a_malformed_resume_state_is_refused(one_epoch_run, tmp_path, capsys, edit, needle):
    run = _edit_last(one_epoch_run, tmp_path, edit)
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


# ---- 12: training options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options,needle", [
    ({"lr": float("inf")}, "learning rate must be in (0, 10], not inf"),
    ({"lr": 1e308}, "learning rate must be in (0, 10], not 1e+308"),
    ({"lr": float("nan")}, "learning rate must be in (0, 10], not nan"),
    ({"weight_decay": float("nan")}, "weight decay must be in [0, 1], not nan"),
    ({"warmup_epochs": float("inf")}, "warmup epochs must be in [0, 100000], not inf"),
    ({"image_size": 100_000}, f"image size must be in [8, {MAX_IMAGE_SIZE}], not 100000"),
    ({"seed": 2**64}, "seed must be a 64-bit signed integer"),
    ({"seed": 10**400}, "not a 401-digit number"),
    ({"momentum": -5.0}, "momentum must be in [0, 1), not -5.0"),
    ({"epochs": 10**12}, "epochs must be in [1, 100000]"),
    ({"factor": float("nan")}, "factor must be in (0, 1]"),
    ({"model": {"clip_threshold": float("inf")}}, "clip_threshold of binarydensenet_tiny must be like 1.3, not inf"),
])
def test_absurd_options_are_refused_up_front(options, needle):
    with pytest.raises(UsageError) as info:
        resolve_config(overrides={"arch": "binarydensenet_tiny", "data": "builtin:shapes", **options})
    assert needle in str(info.value), str(info.value)


def test_a_recipe_gets_the_same_checks(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('arch = "binarydensenet_tiny"\noptimizer = "sgd"\nmomentum = -5.0\n')
    with pytest.raises(UsageError, match=r"momentum must be in \[0, 1\), not -5.0"):
        resolve_config(recipe=recipe, overrides={"data": "builtin:shapes"})


@pytest.mark.parametrize("args,needle", [
    (["-o", ""], "--out needs a directory name, not an empty string"),
    (["--lr", "inf"], "learning rate must be in (0, 10], not inf"),
    (["--image-size", "100000"], "image size must be in [8, 2048], not 100000"),
    (["--seed", str(2**64)], "seed must be a 64-bit signed integer"),
    (["--warmup-epochs", "inf"], "warmup epochs must be in [0, 100000], not inf"),
])
def test_the_command_line_refuses_them_in_one_line(image_folder, tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "-a", "binarydensenet_tiny", "-d", str(image_folder), "--epochs", "1", "--image-size", "16",
            "-b", "8", "-o", "run", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing written, here or in the current directory


def test_a_diverging_run_stops_with_a_clear_message(image_folder, tmp_path, monkeypatch):
    real_step = train_module.train_step

    def diverges_in_epoch_2(run, x, y):
        loss, logits, y = real_step(run, x, y)
        return (loss * float("nan") if run.history else loss), logits, y

    monkeypatch.setattr(train_module, "train_step", diverges_in_epoch_2)
    cfg = resolve_config(overrides=dict(arch="binarydensenet_tiny", data=str(image_folder), epochs=3, batch_size=8,
                                        image_size=16, lr=0.004, seed=3, workers=0))
    out = tmp_path / "run"
    with pytest.raises(UsageError) as info:
        train(cfg, out)
    message = str(info.value)
    assert "training diverged in epoch 2: the loss is not finite by step 4/4" in message, message
    assert f"{out / 'last.pt'} keeps epoch 1" in message and "lower --lr (this run: 0.004)" in message
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert (out / "curves.png").stat().st_size > 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in history] == [1] and np.isfinite(history[0]["train_loss"])


# ---- 18: what docs/FORMAT.md states, the reader enforces ----------------------------------------------------


def _with_gap(data: bytes, fill: bytes) -> bytes:
    """The file with 8 bytes of ``fill`` inserted before its last tensor (whose offset moves on)."""
    version, text, payload = _pieces(data)
    h = json.loads(text)
    last = max(h["tensors"], key=lambda t: t["offset"])
    start = last["offset"]
    last["offset"] += 8
    return _seal(version, zlib.compress(json.dumps(h).encode()), payload[:start] + fill + payload[start:])


def test_padding_between_tensors_must_be_zero(tmp_path, packed):
    graph, meta = fmt.decode(_with_gap(packed, bytes(8)))  # zero padding: fine
    assert meta["class_names"] == fmt.decode(packed)[1]["class_names"]
    _refused(tmp_path, _with_gap(packed, b"\0\0\0\x01\0\0\0\0"), "lie outside every tensor and are not zero")


def _extra_node_key(h):
    h["graph"]["nodes"][0]["comment"] = "hi"


def _duplicate_node_name(h):
    h["graph"]["nodes"][1]["name"] = h["graph"]["nodes"][0]["name"]


@pytest.mark.parametrize("edit,needle", [
    (_extra_node_key, "has unknown keys 'comment'"),
    (_duplicate_node_name, "two graph nodes are named"),
    (lambda h: h.__setitem__("comment", 1), "header has unknown keys 'comment'"),
    (lambda h: h["model"].__setitem__("comment", 1), "model has unknown keys 'comment'"),
    (lambda h: h["graph"].__setitem__("comment", 1), "graph has unknown keys 'comment'"),
    (lambda h: h["model"].pop("arch_kwargs"), "model lacks arch_kwargs"),
    (lambda h: h["binary_encoding"].__setitem__("sign_of_zero", True), "binary encoding"),
    (lambda h: h["binary_encoding"].__setitem__("word_bits", 32.0), "binary encoding"),
    (lambda h: h.__setitem__("format_version", 1.0), "header and preamble disagree on the format version"),
    (lambda h: _node(h, "MaxPool")["attrs"].__setitem__("kernel_size", 3), "kernel_size must be two integers"),
])
def test_the_header_is_read_strictly(tmp_path, packed, edit, needle):
    _refused(tmp_path, rewrite_packed_header(packed, edit), needle)


@pytest.mark.parametrize("edit,needle", [
    (lambda t: t.replace(b'"producer":', b'"producer":"x","producer":', 1), "header repeats the key 'producer'"),
    (lambda t: t.replace(b'"arch_kwargs":{', b'"arch_kwargs":{"x":NaN,', 1), "header holds NaN, which is not JSON"),
])
def test_the_header_is_strict_json(tmp_path, packed, edit, needle):
    _refused(tmp_path, _with_text(packed, edit), needle)


def test_the_header_is_exactly_one_zlib_stream(tmp_path, packed):
    version, text, payload = _pieces(packed)
    _refused(tmp_path, _seal(version, zlib.compress(text) + b"junk", payload),
             "4 unexpected bytes after the header's zlib stream")
    _refused(tmp_path, _seal(version, zlib.compress(text)[:-8], payload), "unreadable header")


def test_each_role_has_its_dtypes(tmp_path, packed):
    graph, meta = fmt.decode(packed)
    node = next(n for n in graph.nodes if n.op == "BinaryConv" and "in_negate" in n.params)
    graph.tensors[node.params["in_negate"]] = graph.tensors[node.params["in_negate"]].astype(np.uint32)
    _refused(tmp_path, fmt.encode(graph, meta), "tensor in_negate is uint32; it must be uint8")
    graph, meta = fmt.decode(packed)
    node = next(n for n in graph.nodes if n.op == "BinaryConv" and "in_threshold" in n.params)
    graph.tensors[node.params["in_threshold"]] = graph.tensors[node.params["in_threshold"]].astype(np.float16)
    (tmp_path / "ok.bnn").write_bytes(fmt.encode(graph, meta))
    assert load(tmp_path / "ok.bnn").class_names == meta["class_names"]  # any float role takes float16

"""A packed or ONNX model's whole plan (largest value, live memory, MACs per image) is computed
from its graph at load and refused above bnncli.runtime.plan's limits, before any map is
allocated. The hostile graphs are small files built here; the registry's models pass far below."""

from __future__ import annotations

import numpy as np
import pytest

from bnncli.data.presets import preprocessing
from bnncli.deploy.lowering import fold, lower
from bnncli.errors import ArtifactError
from bnncli.graph.format import write_packed
from bnncli.graph.graph import Graph, Node
from bnncli.models import create_model
from bnncli.runtime import load
from bnncli.runtime import plan as P


def _meta(classes: int, image_size: int = 32) -> dict:
    return {"arch": "hostile", "arch_kwargs": {"num_classes": classes},
            "class_names": [f"c{i}" for i in range(classes)],
            "preprocessing": preprocessing("small", image_size), "float_dtype": "float32"}


def _conv(name: str, x: str, cin: int, cout: int, out: str | None = None, **attrs) -> tuple[Node, dict]:
    weight = np.ones((cout, cin, 1, 1), np.float32)
    node = Node("Conv", name, [x], [out or name], {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], **attrs},
                {"weight": f"{name}.w"})
    return node, {f"{name}.w": weight}


def _head(x: str, channels: int, classes: int = 2) -> tuple[list[Node], dict]:
    nodes = [Node("GlobalAvgPool", "gap", [x], ["gap"]), Node("Flatten", "flat", ["gap"], ["flat"]),
             Node("Linear", "fc", ["flat"], ["logits"], {}, {"weight": "fc.w", "bias": "fc.b"})]
    return nodes, {"fc.w": np.zeros((classes, channels), np.float32), "fc.b": np.zeros(classes, np.float32)}


def _graph(body: list[Node], tensors: dict, last: str, channels: int, head: bool = False) -> Graph:
    """``body``, then a pool, and a classifier (weights of ``channels`` x 2) with ``head``."""
    if not head:  # pooled and flattened: a 2-D output without weights
        pool = [Node("GlobalAvgPool", "gap", [last], ["gap"]), Node("Flatten", "flat", ["gap"], ["logits"])]
        return Graph(body + pool, tensors)
    nodes, head_tensors = _head(last, channels)
    return Graph(body + nodes, {**tensors, **head_tensors})


def _refused(tmp_path, graph: Graph, needle: str, image_size: int = 32) -> str:
    path = tmp_path / "hostile.bnn"
    write_packed(path, graph, _meta(2, image_size))
    assert path.stat().st_size < 16 << 20
    with pytest.raises(ArtifactError) as info:
        load(path, threads=1, backend="numpy")
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message, message
    return message


def test_doubling_concatenations_are_refused(tmp_path):
    stem, tensors = _conv("stem", "input", 3, 8)
    nodes, x, channels = [stem], "stem", 8
    for i in range(24):  # Concat(x, x): 8 * 2^24 channels in a few KB
        nodes.append(Node("Concat", f"cat{i}", [x, x], [f"cat{i}"], {"axis": 1}))
        x, channels = f"cat{i}", 2 * channels
    _refused(tmp_path, _graph(nodes, tensors, x, channels), "more than the 1.0 GiB bnncli allows one value")


def test_one_concatenation_of_one_map_many_times_is_refused(tmp_path):
    stem, tensors = _conv("stem", "input", 3, 8)
    cat = Node("Concat", "cat", ["stem"] * 40_000, ["cat"], {"axis": 1})  # 320,000 channels of 32x32
    _refused(tmp_path, _graph([stem, cat], tensors, "cat", 8 * 40_000), "node 'cat' writes 1.2 GiB per image")


def test_a_conv_with_a_huge_output_is_refused(tmp_path):
    conv, tensors = _conv("wide", "input", 3, 1 << 18)  # 2^18 channels of 64x64: 4 GiB per image
    _refused(tmp_path, _graph([conv], tensors, "wide", 1 << 18), "node 'wide' writes 4.0 GiB per image at 64 px",
             image_size=64)


def test_padding_that_compounds_over_dilated_layers_is_refused(tmp_path):
    # Each layer pads its whole reach (allowed on its own) and grows the map by 2 x 1000 px.
    nodes, tensors, x = [], {}, "input"
    for i, cin in enumerate((3, 16, 16)):
        node = Node("BinaryConv", f"b{i}", [x], [f"b{i}"],
                    {"in_channels": cin, "out_channels": 16, "kernel_size": [3, 3], "stride": [1, 1],
                     "padding": [2000, 2000], "dilation": [1000, 1000], "pad_value": 0},
                    {"weight": f"b{i}.w"})
        nodes.append(node)
        tensors[f"b{i}.w"] = np.zeros((16, 3, 3, 1), np.uint32)
        x = f"b{i}"
    message = _refused(tmp_path, _graph(nodes, tensors, x, 16), "per image at 32 px")
    assert "b2" in message or "live values" in message


def test_one_padded_dilated_layer_of_too_much_work_is_refused(tmp_path):
    # Within every per-op bound and with no value above 300 MB: a padded dilated layer grows a
    # 64 px map of 4096 channels to 2064 px, 2.5 T binary multiply-accumulates per image.
    wide, tensors = _conv("wide", "input", 3, 4096)
    node = Node("BinaryConv", "b", ["wide"], ["b"],
                {"in_channels": 4096, "out_channels": 16, "kernel_size": [3, 3], "stride": [1, 1],
                 "padding": [2000, 2000], "dilation": [1000, 1000], "pad_value": 0}, {"weight": "b.w"})
    tensors["b.w"] = np.zeros((16, 3, 3, 128), np.uint32)
    _refused(tmp_path, _graph([wide, node], tensors, "b", 16), "binary multiply-accumulates per image at 64 px",
             image_size=64)


def test_every_registry_model_is_far_below_the_limits():
    for arch in ("resnete18", "binarydensenet37_dilated"):
        plan = P.graph_plan(fold(lower(create_model(arch))), 3, 224).check(224)
        assert plan.largest_value * 30 < P.MAX_VALUE_BYTES and plan.live_bytes * 30 < P.MAX_LIVE_BYTES
        assert plan.macs * 30 < P.MAX_MACS and plan.binary_macs * 30 < P.MAX_BINARY_MACS
        large = P.graph_plan(fold(lower(create_model(arch))), 3, 1024)  # and at 1024 px still
        assert large.check(1024) is large


def test_plan_counts_what_the_runtime_runs():
    model = create_model("resnete_tiny", num_classes=4)
    plan = P.graph_plan(fold(lower(model)), 3, 32)
    from bnncli.models import count_model

    stats = count_model(model, 32)
    assert plan.binary_macs == stats.binary_macs and plan.macs == stats.fp_macs


def test_an_onnx_model_beyond_the_limits_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    from bnncli.artifacts.onnx_file import save_onnx
    from bnncli.artifacts.open import open_model
    from bnncli.deploy.onnx_export import to_onnx

    conv, tensors = _conv("wide", "input", 3, 1 << 18)
    graph = _graph([conv], tensors, "wide", 1 << 18, head=True)
    path = save_onnx(to_onnx(graph, _meta(2, 64)), tmp_path / "wide.onnx")
    with pytest.raises(ArtifactError, match=r"wide.onnx: node '.*' writes 4.0 GiB per image at 64 px"):
        open_model(path)
    # The same graph at 16 px is 256 MiB: it opens.
    small = save_onnx(to_onnx(graph, _meta(2, 16)), tmp_path / "small.onnx")
    assert open_model(small).plan.largest_value == 4 * (1 << 18) * 16 * 16

"""The one list of graph ops (bnncli/graph/opset.py) against everything that implements or documents an op."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnncli.artifacts.onnx_file import ort_session
from bnncli.deploy import lowering, onnx_export, pack
from bnncli.deploy.lowering import fold, lower
from bnncli.errors import ArtifactError
from bnncli.graph import opset
from bnncli.graph.graph import Graph, Node
from bnncli.graph.opset import OPSET, SPECS
from bnncli.models import create_model, list_models
from bnncli.nn import BinaryConv2d, ChannelScale, ChannelSlice
from bnncli.runtime import OP_TYPES, OPS, Model, ops

FORMAT_MD = Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md"
TINY = [n for n in list_models() if "_tiny" in n]


def _format_table() -> dict[str, tuple[int | None, dict[str, bool], set[str]]]:
    """docs/FORMAT.md's op table: op -> (inputs, {param: optional}, attrs)."""
    text = FORMAT_MD.read_text()
    header = "| op | inputs | attrs | params | computes |"
    assert header in text, f"docs/FORMAT.md lost its op table header {header!r}"
    rows = {}
    for line in text[text.index(header):].splitlines()[2:]:
        if not line.startswith("|"):
            break
        op, inputs, attrs, params = (cell.strip() for cell in line.strip("|").split("|")[:4])
        name = op.strip("`")
        arity = None if inputs == "1 or more" else int(inputs)
        roles = {m[1]: bool(m[2]) for m in re.finditer(r"`([a-z_]+)`(\??)", params)}
        rows[name] = (arity, roles, set(re.findall(r"`([a-z_]+)`", attrs)))
    return rows


def test_every_declared_op_has_a_runtime_class_an_onnx_emission_and_a_format_row():
    declared = [s.name for s in OPSET]
    assert len(set(declared)) == len(declared)
    assert set(OP_TYPES) == set(declared), "runtime classes (bnncli/runtime/ops.py) and the op list differ"
    assert list(OP_TYPES) == declared, "OPS follows the order of the op list"
    assert set(onnx_export.EMITTERS) == set(declared), "ONNX emissions and the op list differ"
    assert set(_format_table()) == set(declared), "docs/FORMAT.md's op table and the op list differ"


def test_runtime_classes_take_inputs_params_and_attrs_from_their_spec():
    for cls in OPS:
        spec = SPECS[cls.type]
        assert cls.spec is spec
        assert (cls.arity, cls.params, cls.optional_params, cls.attrs) == \
            (spec.arity, spec.params, spec.optional_params, spec.attrs), cls.__name__


def test_every_public_op_class_is_registered():
    """A class written without ``op=`` would never be built: the runtime would not know its op."""
    classes = [c for c in vars(ops).values() if isinstance(c, type) and issubclass(c, ops.Op) and c is not ops.Op
               and c.__module__ == ops.__name__ and not c.__name__.startswith("_")]
    assert set(classes) == set(OPS)


def test_format_table_lists_each_ops_inputs_params_and_attrs():
    table = _format_table()
    for spec in OPSET:
        arity, roles, attrs = table[spec.name]
        assert arity == spec.arity, spec.name
        assert roles == {**dict.fromkeys(spec.params, False), **dict.fromkeys(spec.optional_params, True)}, spec.name
        assert attrs == set(spec.attrs), spec.name


@pytest.mark.parametrize("arch", ["binarydensenet_tiny", "resnete_tiny"])
def test_the_packer_stores_the_declared_float_weights_in_float_dtype(arch):
    """In a float16 file exactly the params the op list declares are float16 (float16-valued models)."""
    torch.manual_seed(0)
    g = pack.packed_graph(lower(create_model(arch).eval()), "float16")
    for node in g.nodes:
        for role, name in node.params.items():
            t = g.tensors[name]
            if (node.op, role) in opset.FLOAT_DTYPE_PARAMS:
                assert t.dtype == np.float16, (node.name, role)
            elif t.dtype.kind == "f":
                assert t.dtype == np.float32, (node.name, role)


@pytest.mark.parametrize("arch", TINY)
def test_lowering_and_folding_make_only_declared_ops(arch):
    torch.manual_seed(0)
    graph = lower(create_model(arch).eval())
    for g in (graph, fold(graph), fold(graph, into_float_convs=False)):
        for node in g.nodes:
            assert node.op in SPECS, node.op
            assert SPECS[node.op].mismatch(node) is None, (node.name, SPECS[node.op].mismatch(node))


class _EveryLowering(nn.Module):
    """One of each module type and function that the lowering registry handles."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.binary = BinaryConv2d(8, 8, 3, padding=1, scaling="xnor")
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)  # GroupConv
        self.head, self.tail = ChannelSlice(0, 4), ChannelSlice(4, 16)
        self.same = nn.Identity()
        self.max_pool = nn.MaxPool2d(2)
        self.avg_pool = nn.AvgPool2d(2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 4)
        self.prelu = nn.PReLU(16)
        self.squeeze = nn.Linear(16, 16, bias=False)
        self.sigmoid = nn.Sigmoid()
        self.scale = ChannelScale()

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.grouped(torch.cat([x, self.binary(torch.relu(x))], dim=1))
        x = torch.cat([self.head(x), self.tail(x) + self.tail(x)], dim=1)
        x = self.prelu(self.scale(x, self.sigmoid(self.squeeze(self.flatten(self.pool(x))))))
        x = self.same(self.max_pool(x)) + F.relu(self.avg_pool(x))
        return self.fc(self.drop(self.flatten(self.pool(x)))) + self.fc(torch.flatten(self.pool(x), 1))


def test_every_registered_lowering_runs_on_every_backend():
    torch.manual_seed(0)
    model = _EveryLowering().eval()
    types = {type(m) for m in model.modules()} - {_EveryLowering}
    assert set(lowering._MODULES) <= types, "add the newly lowered module type to _EveryLowering"
    called = {n.target for n in lowering.trace(model).nodes if n.op == "call_function"}
    assert {label for label, _ in lowering._FUNCTIONS.values()} == \
        {lowering._FUNCTIONS[t][0] for t in called}, "add a call of the newly lowered function to _EveryLowering"
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    graph = lower(model)
    meta = {"arch": "every_lowering", "arch_kwargs": {}, "class_names": list("abcd"),
            "preprocessing": {"image_size": 8, "channels": 3}}
    ort = ort_session(onnx_export.to_onnx(graph, meta)).run(None, {"input": x.numpy()})[0]
    for got in (ort, Model(graph, threads=1)(x.numpy()), Model(fold(graph), threads=1)(x.numpy())):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_supported_lists_the_registry():
    assert lowering.SUPPORTED[0].startswith("Conv2d")
    assert set(lowering.SUPPORTED) == {label for label, _ in (*lowering._MODULES.values(),
                                                               *lowering._FUNCTIONS.values())}


def test_an_op_outside_the_list_cannot_be_registered():
    with pytest.raises(LookupError, match="'Gelu' is not declared in bnncli/graph/opset.py"):
        class Gelu(ops.Op, op="Gelu"):
            pass
    with pytest.raises(LookupError, match="not declared"):
        onnx_export.emits("Gelu")
    assert "Gelu" not in ops._REGISTERED and "Gelu" not in onnx_export.EMITTERS


def test_nodes_are_checked_against_their_spec():
    conv = SPECS["Conv"]
    assert conv.mismatch(Node("Conv", "c", ["x"], ["y"], {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]},
                              {"weight": "w"})) is None
    assert conv.mismatch(Node("Conv", "c", ["x", "z"], ["y"])) == "takes 1 input(s), not 2"
    assert SPECS["Concat"].mismatch(Node("Concat", "c", [], ["y"], {"axis": 1})) == "takes at least one input"
    assert conv.mismatch(Node("Conv", "c", ["x"], ["y"], {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]},
                              {"weight": "w", "scale": "s"})) == \
        "has params ['scale', 'weight']; expected ['weight'] and optionally ['bias']"
    assert SPECS["Relu"].mismatch(Node("Relu", "r", ["x"], ["y"], {"axis": 1})) == \
        "has attributes ['axis']; expected []"
    with pytest.raises(ArtifactError, match="lowering made node 'g' \\(Gelu\\), which has an op that"):
        lowering._declared(Node("Gelu", "g", ["x"], ["y"]))


def test_onnx_export_refuses_an_op_it_cannot_emit():
    graph = Graph([Node("Gelu", "g", ["input"], ["logits"])], {})
    with pytest.raises(ArtifactError, match="the ONNX exporter has no mapping for op 'Gelu'"):
        onnx_export.to_onnx(graph, {})

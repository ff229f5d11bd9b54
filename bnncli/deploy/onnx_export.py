"""ONNX export: the shared graph written as standard ONNX (opset 17) with ``onnx.helper``.

No exporter magic: every graph op maps to a few standard ONNX ops, so binarization is exact and
visible in the file.

* sign with sign(0) = +1: ``Where(Less(x, 0), -1, 1)``; a folded threshold compares against ``t``
  instead (``x * d < t * d`` with d = -1 for negated channels). ``Less`` rather than
  ``GreaterOrEqual``: converters such as onnx2torch know ``Less`` at every opset and
  ``GreaterOrEqual`` only at opset 12. The one difference from ``x >= t``: a NaN input binarizes to
  +1 here, to -1 in PyTorch and the packed runtime.
* the binarized input is padded with ``Pad(constant, pad_value)`` for pad values -1 and +1, and by
  the convolution's own zero padding for 0;
* binary weights are stored as float +-1 (ONNX has no 1-bit type), the XNOR scale as a Mul.

The batch dimension is dynamic; height and width are those of the model's preprocessing, so a
layer padded by TensorFlow's "same" rule (``padding="same"``) gets the explicit, possibly uneven,
``pads`` that rule gives at that size (bnncli.graph.padding).
The metadata (``metadata_props``) is written and read by :mod:`bnncli.artifacts.onnx_file`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bnncli import __version__
from bnncli.artifacts.onnx_file import metadata_props
from bnncli.errors import ArtifactError
from bnncli.graph import bits as B
from bnncli.graph import opset
from bnncli.graph import padding as P
from bnncli.graph.graph import Graph, Node

OPSET = 17
IR_VERSION = 8  # the IR version that introduced opset 17; widely readable

# graph op (bnncli.graph.opset) -> the _Emitter method that writes its ONNX nodes.
EMITTERS: dict[str, Callable[[_Emitter, Node], None]] = {}


def emits(op: str):
    """Register the decorated ``_Emitter`` method as the emission of the declared graph op ``op``."""
    opset.spec(op)  # LookupError for an op the list does not declare

    def register(method: Callable[[_Emitter, Node], None]) -> Callable[[_Emitter, Node], None]:
        if op in EMITTERS:
            raise LookupError(f"two ONNX emissions for op {op!r}")
        EMITTERS[op] = method
        return method

    return register


def _kernel(graph: Graph, node: Node) -> list[int]:
    if node.op in ("Conv", "GroupConv"):
        return list(graph.tensor(node, "weight").shape[2:])
    return node.attrs["kernel_size"]


def spatial_sizes(graph: Graph, size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """(H, W) of every feature map ``graph`` computes from an input of ``size``, by value name."""
    sizes: dict[str, tuple[int, int]] = {graph.inputs[0]: (int(size[0]), int(size[1]))}
    for node in graph.nodes:
        hw = sizes.get(node.inputs[0])
        if hw is None or node.op in ("Flatten", "Linear"):
            continue
        if node.op in ("Conv", "GroupConv", "BinaryConv", "MaxPool", "AvgPool"):
            kernel, stride = _kernel(graph, node), node.attrs["stride"]
            dilation = node.attrs.get("dilation", [1, 1])
            pads = P.resolve(node.attrs.get("padding", [0, 0]), hw, kernel, stride, dilation)
            hw = P.output_hw(hw, kernel, stride, pads, dilation)
        elif node.op == "GlobalAvgPool":
            hw = (1, 1)
        sizes[node.outputs[0]] = hw
    return sizes


class _Emitter:
    def __init__(self, graph: Graph, size: tuple[int, int]) -> None:
        self.graph = graph
        self.sizes = spatial_sizes(graph, size)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._consts: dict[tuple, str] = {}

    def init(self, name: str, array: np.ndarray) -> str:
        if name in self._names:
            raise ArtifactError(f"duplicate initializer {name}")
        self._names.add(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value: float) -> str:
        """A shared float32 scalar initializer."""
        key = ("scalar", float(value))
        if key not in self._consts:
            self._consts[key] = self.init(f"const_{len(self._consts)}", np.array(value, dtype=np.float32))
        return self._consts[key]

    def emit(self, op: str, inputs: list[str], output: str, name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def param(self, node: Node, role: str) -> np.ndarray | None:
        return self.graph.param(node, role)

    def tensor(self, node: Node, role: str) -> np.ndarray:
        return self.graph.tensor(node, role)

    def pads(self, node: Node) -> list[int]:
        """ONNX ``pads`` (top, left, bottom, right) of a padded node at the export size."""
        a = node.attrs
        return list(P.resolve(a["padding"], self.sizes[node.inputs[0]], _kernel(self.graph, node), a["stride"],
                              a.get("dilation", [1, 1])))

    def channel_vector(self, node: Node, role: str, array: np.ndarray) -> str:
        return self.init(f"{node.name}.{role}", np.asarray(array, np.float32).reshape(1, -1, 1, 1))

    # One method per graph op, registered in EMITTERS.
    @emits("Conv")
    def conv(self, node: Node) -> None:
        self.float_conv(node, groups=1)

    @emits("GroupConv")
    def group_conv(self, node: Node) -> None:
        self.float_conv(node, groups=int(node.attrs["groups"]))

    def float_conv(self, node: Node, groups: int) -> None:
        """ONNX's Conv (its ``group`` attribute covers both graph ops), weights and optional bias as initializers."""
        w = self.tensor(node, "weight").astype(np.float32)
        inputs = [node.inputs[0], self.init(f"{node.name}.weight", w)]
        b = self.param(node, "bias")
        if b is not None:
            inputs.append(self.init(f"{node.name}.bias", b.astype(np.float32)))
        self.emit("Conv", inputs, node.outputs[0], node.name, kernel_shape=list(w.shape[2:]),
                  strides=node.attrs["stride"], pads=self.pads(node), dilations=node.attrs["dilation"], group=groups)

    @emits("Slice")
    def slice(self, node: Node) -> None:
        a = node.attrs
        starts = self.init(f"{node.name}.starts", np.array([a["start"]], np.int64))
        ends = self.init(f"{node.name}.ends", np.array([a["stop"]], np.int64))
        axes = self.init(f"{node.name}.axes", np.array([1], np.int64))
        self.emit("Slice", [node.inputs[0], starts, ends, axes], node.outputs[0], node.name)

    @emits("PRelu")
    def prelu(self, node: Node) -> None:
        """ONNX's PRelu, its slope ``[C, 1, 1]`` (broadcast over the batch, height and width)."""
        slope = self.tensor(node, "slope").astype(np.float32).reshape(-1, 1, 1)
        self.emit("PRelu", [node.inputs[0], self.init(f"{node.name}.slope", slope)], node.outputs[0], node.name)

    @emits("Sigmoid")
    def sigmoid(self, node: Node) -> None:
        self.emit("Sigmoid", node.inputs, node.outputs[0], node.name)

    @emits("ChannelMul")
    def channel_mul(self, node: Node) -> None:
        """``Mul(x, Unsqueeze(s, [2, 3]))``: the [N, C] scales as [N, C, 1, 1], broadcast over H and W."""
        x, s = node.inputs
        axes = self.init(f"{node.name}.axes", np.array([2, 3], np.int64))
        s4 = self.emit("Unsqueeze", [s, axes], f"{node.name}.scales", f"{node.name}.unsqueeze")
        self.emit("Mul", [x, s4], node.outputs[0], node.name)

    @emits("BinaryConv")
    def binary_conv(self, node: Node) -> None:
        a = node.attrs
        x, name, out = node.inputs[0], node.name, node.outputs[0]
        t = self.param(node, "in_threshold")
        if t is None:
            cond = self.emit("Less", [x, self.const(0.0)], f"{name}.negative", f"{name}.sign_test")
        else:
            negate = self.param(node, "in_negate")
            d = np.ones_like(t) if negate is None else np.where(negate.astype(bool), -1.0, 1.0).astype(np.float32)
            td = (t * d).astype(np.float32)  # infinite thresholds (always/never +1) flip sign with d
            xd = self.emit("Mul", [x, self.channel_vector(node, "in_direction", d)], f"{name}.directed",
                           f"{name}.direct")
            cond = self.emit("Less", [xd, self.channel_vector(node, "in_threshold", td)],
                             f"{name}.negative", f"{name}.sign_test")
        xb = self.emit("Where", [cond, self.const(-1.0), self.const(1.0)], f"{name}.sign", f"{name}.sign")
        pads = self.pads(node)
        if any(pads) and a["pad_value"] != 0:
            top, left, bottom, right = pads
            pad_spec = self.init(f"{name}.pads", np.array([0, 0, top, left, 0, 0, bottom, right], dtype=np.int64))
            xb = self.emit("Pad", [xb, pad_spec, self.const(float(a["pad_value"]))], f"{name}.padded",
                           f"{name}.pad", mode="constant")
            pads = [0, 0, 0, 0]
        w32 = self.tensor(node, "weight")
        bits = B.unpack_bits(w32, a["in_channels"])  # [Cout, kh, kw, Cin]
        w = np.where(bits, 1.0, -1.0).astype(np.float32).transpose(0, 3, 1, 2)
        scale, bias = self.param(node, "out_scale"), self.param(node, "out_bias")
        conv_out = out if scale is None and bias is None else f"{name}.dot"
        y = self.emit("Conv", [xb, self.init(f"{name}.weight_pm1", np.ascontiguousarray(w))], conv_out, name,
                      kernel_shape=a["kernel_size"], strides=a["stride"], pads=pads, dilations=a["dilation"], group=1)
        if scale is not None:
            y = self.emit("Mul", [y, self.channel_vector(node, "out_scale", scale)],
                          out if bias is None else f"{name}.scaled", f"{name}.scale")
        if bias is not None:
            self.emit("Add", [y, self.channel_vector(node, "out_bias", bias)], out, f"{name}.bias")

    @emits("BatchNorm")
    def batchnorm(self, node: Node) -> None:
        inputs = [node.inputs[0]] + [self.init(f"{node.name}.{r}", self.tensor(node, r).astype(np.float32))
                                     for r in ("weight", "bias", "running_mean", "running_var")]
        self.emit("BatchNormalization", inputs, node.outputs[0], node.name, epsilon=float(node.attrs["eps"]))

    @emits("Affine")
    def affine(self, node: Node) -> None:
        y = self.emit("Mul", [node.inputs[0], self.channel_vector(node, "scale", self.tensor(node, "scale"))],
                      f"{node.name}.scaled", f"{node.name}.scale")
        self.emit("Add", [y, self.channel_vector(node, "shift", self.tensor(node, "shift"))], node.outputs[0],
                  f"{node.name}.shift")

    @emits("Relu")
    def relu(self, node: Node) -> None:
        self.emit("Relu", node.inputs, node.outputs[0], node.name)

    @emits("MaxPool")
    def max_pool(self, node: Node) -> None:
        self.emit("MaxPool", node.inputs, node.outputs[0], node.name, kernel_shape=node.attrs["kernel_size"],
                  strides=node.attrs["stride"], pads=self.pads(node))

    @emits("AvgPool")
    def avg_pool(self, node: Node) -> None:
        self.emit("AveragePool", node.inputs, node.outputs[0], node.name, kernel_shape=node.attrs["kernel_size"],
                  strides=node.attrs["stride"])

    @emits("GlobalAvgPool")
    def global_avg_pool(self, node: Node) -> None:
        self.emit("GlobalAveragePool", node.inputs, node.outputs[0], node.name)

    @emits("Flatten")
    def flatten(self, node: Node) -> None:
        self.emit("Flatten", node.inputs, node.outputs[0], node.name, axis=1)

    @emits("Linear")
    def linear(self, node: Node) -> None:
        inputs = [node.inputs[0], self.init(f"{node.name}.weight", self.tensor(node, "weight").astype(np.float32))]
        b = self.param(node, "bias")
        if b is not None:
            inputs.append(self.init(f"{node.name}.bias", b.astype(np.float32)))
        self.emit("Gemm", inputs, node.outputs[0], node.name, transB=1)

    @emits("Concat")
    def concat(self, node: Node) -> None:
        self.emit("Concat", node.inputs, node.outputs[0], node.name, axis=1)

    @emits("Add")
    def add(self, node: Node) -> None:
        self.emit("Add", node.inputs, node.outputs[0], node.name)


def to_onnx(graph: Graph, meta: dict[str, Any]) -> onnx.ModelProto:
    """The ONNX model of ``graph``; ``meta`` holds arch, arch_kwargs, class_names, preprocessing."""
    graph.check()
    unknown = next((node.op for node in graph.nodes if node.op not in EMITTERS), None)
    if unknown is not None:
        raise ArtifactError(f"the ONNX exporter has no mapping for op {unknown!r}")
    pp = meta["preprocessing"]
    size, channels = int(pp["image_size"]), int(pp["channels"])
    em = _Emitter(graph, (size, size))
    for node in graph.nodes:
        EMITTERS[node.op](em, node)
    x = helper.make_tensor_value_info(graph.inputs[0], TensorProto.FLOAT, ["batch", channels, size, size])
    y = helper.make_tensor_value_info(graph.outputs[0], TensorProto.FLOAT, ["batch", len(meta["class_names"])])
    onnx_graph = helper.make_graph(em.nodes, meta["arch"], [x], [y], em.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bnncli", producer_version=__version__)
    model.ir_version = IR_VERSION
    model.doc_string = (f"{meta['arch']} exported by bnncli {__version__}: input float32 NCHW preprocessed as "
                        f"bnncli.preprocessing says; output logits over bnncli.class_names.")
    helper.set_model_props(model, metadata_props(meta))
    onnx.checker.check_model(model, full_check=True)
    return model

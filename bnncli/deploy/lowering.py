"""Lower a model to the shared graph, and fold it for the packed runtime.

:func:`lower` traces the model -- a registry model, or any module built from bnncli's and torch's
layers -- with torch.fx (bnncli.nn.tracing: ``BinaryConv2d`` is a leaf) and maps each module,
function and tensor method to one graph node, keeping the model's structure: BatchNorm stays BatchNorm, a
binary conv keeps its +-1 weights (packed) and pad value (one on float input, BinaryAlexNet's
first conv, is a float Conv with +-1 weights). The ONNX exporter emits this graph.
Each module type and function has one registered lowering (``@lowers``, ``@lowers_function``)
returning a node of an op that bnncli/graph/opset.py declares; :data:`SUPPORTED` lists them.

:func:`fold` rewrites it for the packer and runtime without changing what it computes:

* BatchNorm after a float conv, grouped or not (the ImageNet stems) -> into the conv's weights and bias.
* BatchNorm whose output only binary convs read (every BinaryDenseNet dense layer) -> a
  per-channel threshold of those convs' binarization: sign(s * x + b) = +1 iff x >= -b / s
  (s > 0), x <= -b / s (s < 0), or always / never (s = 0, by the sign of b).
* BatchNorm right after a binary conv (ResNetE) -> the conv's per-channel output scale and bias,
  together with the XNOR scale alpha when the model uses one.
* Any other BatchNorm -> an Affine node (scale, shift), as PyTorch computes it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from bnncli.errors import ArtifactError
from bnncli.graph import bits as B
from bnncli.graph.graph import Graph, Node
from bnncli.graph.numerics import batchnorm_affine
from bnncli.graph.opset import SPECS
from bnncli.graph.padding import SAME
from bnncli.nn import BinaryConv2d, ChannelScale, ChannelSlice, is_float_layer
from bnncli.nn.padding import PaddingRule
from bnncli.nn.tracing import trace


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _param(m: nn.Module, name: str) -> np.ndarray:
    """A float layer's parameter as the layer computes with it (float16-valued weights rounded)."""
    t = getattr(m, name)
    deployed = getattr(m, "deployed", None) if is_float_layer(m) else None
    return _np(deployed(t) if deployed is not None else t)


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]


def _padding(m: nn.Module) -> str | list[int]:
    """A layer's padding attribute: ``"same"`` for TensorFlow's rule, else ``[ph, pw]``."""
    return SAME if isinstance(m, PaddingRule) and m.tf_same else _pair(m.padding)


def pack_binary_weight(weight: torch.Tensor) -> np.ndarray:
    """sign(W) with sign(0) = +1, ``[Cout, Cin, kh, kw]`` -> uint32 words ``[Cout, kh, kw, ceil(Cin/32)]``."""
    w = weight.detach().cpu().numpy()
    return B.pack_bits(w.transpose(0, 2, 3, 1) >= 0, B.FILE_WORD_BITS)


@dataclass
class Lowered:
    """What one fx node becomes: a graph node of a declared op (bnncli.graph.opset).

    :func:`lower` names the node, its output and its tensors (``<node>.<role>``) after the fx node.
    """

    op: str
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    args: list | None = None  # a function lowering's: the fx arguments it reads (a module reads its input)


# The lowering registry: module type (subclasses included) or function -> (its name in SUPPORTED,
# lowering). A module lowering is ``fn(module, fx_node) -> Lowered | None`` (None: the module is the
# identity); a function lowering is ``fn(fx_node) -> Lowered`` with ``args`` set. SUPPORTED, at the
# end of this section, lists them.
_MODULES: dict[type[nn.Module], tuple[str, Callable[[Any, fx.Node], Lowered | None]]] = {}
_FUNCTIONS: dict[Any, tuple[str, Callable[[fx.Node], Lowered]]] = {}


def lowers(module_type: type[nn.Module], supported: str):
    """Register the decorated function as the lowering of ``module_type``; ``supported`` names it in errors."""
    def register(fn):
        _MODULES[module_type] = (supported, fn)
        return fn
    return register


def lowers_function(supported: str, *functions):
    """Register the decorated function as the lowering of calls to any of ``functions``."""
    def register(fn):
        _FUNCTIONS.update((f, (supported, fn)) for f in functions)
        return fn
    return register


def lower(model: nn.Module) -> Graph:
    """The graph of a model in eval mode. Raises ArtifactError naming anything it cannot lower."""
    model = model.eval()
    try:
        fx_graph = trace(model)
    except Exception as e:
        raise ArtifactError(f"cannot trace {type(model).__name__} for export: {e}") from None
    modules = dict(model.named_modules())
    nodes: list[Node] = []
    tensors: dict[str, np.ndarray] = {}
    alias: dict[str, str] = {}  # fx node name -> graph value name
    graph_input = None

    def value(arg) -> str:
        if not isinstance(arg, fx.Node):
            raise ArtifactError(f"cannot lower a constant argument {arg!r}")
        return alias[arg.name]

    def add(fx_node: fx.Node, lowered: Lowered | None, inputs: list[str]) -> None:
        name = fx_node.name
        if lowered is None:  # the identity
            alias[name] = inputs[0]
            return
        refs = {}
        for role, array in lowered.params.items():
            tensors[f"{name}.{role}"] = array
            refs[role] = f"{name}.{role}"
        nodes.append(_declared(Node(lowered.op, name, inputs, [name], lowered.attrs, refs)))
        alias[name] = name

    for n in fx_graph.nodes:
        if n.op == "placeholder":
            if graph_input is not None:
                raise ArtifactError("models with more than one input cannot be exported")
            graph_input = n.name
            alias[n.name] = "input"
        elif n.op == "call_module":  # a module reads its arguments (ChannelScale: a map and its scales)
            if n.kwargs:
                raise ArtifactError(f"cannot export module {n.target} called with keyword arguments")
            add(n, _lower_module(modules[n.target], n), [value(a) for a in n.args])
        elif n.op in ("call_function", "call_method"):
            lowered = _lower_function(n)
            add(n, lowered, [value(a) for a in lowered.args or []])
        elif n.op == "output":
            out = n.args[0]
            if not isinstance(out, fx.Node):
                raise ArtifactError("the model must return one tensor")
            _rename_output(nodes, alias[out.name], "logits")
        else:
            raise ArtifactError(f"cannot export fx node kind {n.op!r} ({n.target})")
    graph = Graph(nodes, tensors)
    graph.check()
    return graph


def _declared(node: Node) -> Node:
    """``node``, checked against its op's spec (a failure is a bug in a lowering, not in the model)."""
    spec = SPECS.get(node.op)
    problem = spec.mismatch(node) if spec else "has an op that bnncli/graph/opset.py does not declare"
    if problem:
        raise ArtifactError(f"lowering made node {node.name!r} ({node.op}), which {problem}")
    return node


def _rename_output(nodes: list[Node], old: str, new: str) -> None:
    if old == "input":
        raise ArtifactError("the model returns its input unchanged")
    for node in nodes:
        node.outputs = [new if v == old else v for v in node.outputs]
        node.inputs = [new if v == old else v for v in node.inputs]


def _lower_module(m: nn.Module, n: fx.Node) -> Lowered | None:
    """The registered lowering of the nearest class of ``m`` (in its MRO) that has one."""
    entry = next((_MODULES[t] for t in type(m).__mro__ if t in _MODULES), None)
    if entry is None:
        raise ArtifactError(f"cannot export module {n.target} ({type(m).__name__}); "
                            f"supported: {', '.join(SUPPORTED)}")
    return entry[1](m, n)


# Tensor methods lowered as the function of the same name (``x.flatten(1)`` as ``torch.flatten(x, 1)``).
_METHODS = {"flatten": torch.flatten, "relu": torch.relu, "add": torch.add}


def _lower_function(n: fx.Node) -> Lowered:
    entry = _FUNCTIONS.get(_METHODS.get(str(n.target)) if n.op == "call_method" else n.target)
    if entry is None:
        raise _unsupported_function(n)
    return entry[1](n)


def _unsupported_function(n: fx.Node) -> ArtifactError:
    name = getattr(n.target, "__name__", n.target)
    what = f"tensor method {n.target}" if n.op == "call_method" else f"function {name}"
    return ArtifactError(f"cannot export the {what}; "
                         f"supported: {', '.join(SUPPORTED)}")


def _optional_bias(m: nn.Module, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if m.bias is not None:
        params["bias"] = _param(m, "bias")
    return params


@lowers(nn.Conv2d, "Conv2d (zero padding; groups: GroupConv)")
def _conv(m: nn.Conv2d, n: fx.Node) -> Lowered:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise ArtifactError(f"{n.target}: only convolutions with numeric zero padding export")
    attrs = {"stride": _pair(m.stride), "padding": _padding(m), "dilation": _pair(m.dilation)}
    params = _optional_bias(m, {"weight": _param(m, "weight")})
    if m.groups != 1:  # depthwise (QuickNet's stem, its blur pools) or grouped convolutions
        return Lowered("GroupConv", {**attrs, "groups": int(m.groups)}, params)
    return Lowered("Conv", attrs, params)


@lowers(BinaryConv2d, "BinaryConv2d")
def _binary_conv(m: BinaryConv2d, n: fx.Node) -> Lowered:
    alpha = m.scale()
    if not m.binary_input:
        # Binary weights on a float map (BinaryAlexNet's first conv): an ordinary float convolution
        # whose weights are +-1 (times alpha when scaled), zero padded as the layer pads.
        weight = np.where(_np(m.weight) >= 0, np.float32(1), np.float32(-1))
        if alpha is not None:
            weight = (weight * _np(alpha)[:, None, None, None]).astype(np.float32)
        return Lowered("Conv", {"stride": _pair(m.stride), "padding": _padding(m), "dilation": _pair(m.dilation)},
                       {"weight": weight})
    params = {"weight": pack_binary_weight(m.weight)}
    if alpha is not None:
        params["out_scale"] = _np(alpha)
    return Lowered("BinaryConv", {
        "in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": _pair(m.kernel_size),
        "stride": _pair(m.stride), "padding": _padding(m), "dilation": _pair(m.dilation),
        "pad_value": int(m.pad_value),
    }, params)


@lowers(nn.BatchNorm2d, "BatchNorm2d")
def _batchnorm(m: nn.BatchNorm2d, n: fx.Node) -> Lowered:
    if m.running_mean is None or m.running_var is None:
        raise ArtifactError(f"{n.target}: BatchNorm without running statistics cannot be exported")
    c = m.num_features
    gamma = _np(m.weight) if m.weight is not None else np.ones(c, np.float32)
    beta = _np(m.bias) if m.bias is not None else np.zeros(c, np.float32)
    return Lowered("BatchNorm", {"eps": float(m.eps)}, {
        "weight": gamma, "bias": beta, "running_mean": _np(m.running_mean), "running_var": _np(m.running_var)})


@lowers(nn.ReLU, "ReLU")
def _relu(m: nn.ReLU, n: fx.Node) -> Lowered:
    return Lowered("Relu")


@lowers(nn.MaxPool2d, "MaxPool2d")
def _max_pool(m: nn.MaxPool2d, n: fx.Node) -> Lowered:
    if m.ceil_mode or _pair(m.dilation) != [1, 1] or m.return_indices:
        raise ArtifactError(f"{n.target}: MaxPool2d with ceil_mode, dilation or indices cannot be exported")
    stride = m.stride if m.stride is not None else m.kernel_size
    return Lowered("MaxPool", {"kernel_size": _pair(m.kernel_size), "stride": _pair(stride),
                               "padding": _padding(m)})


@lowers(nn.AvgPool2d, "AvgPool2d")
def _avg_pool(m: nn.AvgPool2d, n: fx.Node) -> Lowered:
    if m.ceil_mode or _pair(m.padding) != [0, 0] or m.divisor_override is not None:
        raise ArtifactError(f"{n.target}: only AvgPool2d without padding, ceil_mode or divisor exports")
    stride = m.stride if m.stride is not None else m.kernel_size
    return Lowered("AvgPool", {"kernel_size": _pair(m.kernel_size), "stride": _pair(stride)})


@lowers(nn.AdaptiveAvgPool2d, "AdaptiveAvgPool2d(1)")
def _global_avg_pool(m: nn.AdaptiveAvgPool2d, n: fx.Node) -> Lowered:
    if _pair(m.output_size) != [1, 1]:
        raise ArtifactError(f"{n.target}: only AdaptiveAvgPool2d(1) exports")
    return Lowered("GlobalAvgPool")


@lowers(nn.Flatten, "Flatten(1)")
def _flatten(m: nn.Flatten, n: fx.Node) -> Lowered:
    if m.start_dim != 1 or m.end_dim != -1:
        raise ArtifactError(f"{n.target}: only Flatten(1) exports")
    return Lowered("Flatten")


@lowers(nn.Linear, "Linear")
def _linear(m: nn.Linear, n: fx.Node) -> Lowered:
    return Lowered("Linear", {}, _optional_bias(m, {"weight": _param(m, "weight")}))


@lowers(ChannelSlice, "ChannelSlice")
def _slice(m: ChannelSlice, n: fx.Node) -> Lowered:
    return Lowered("Slice", {"axis": 1, "start": int(m.start), "stop": int(m.stop)})


@lowers(nn.PReLU, "PReLU")
def _prelu(m: nn.PReLU, n: fx.Node) -> Lowered:
    return Lowered("PRelu", {}, {"slope": _np(m.weight).reshape(-1)})


@lowers(nn.Sigmoid, "Sigmoid")
def _sigmoid(m: nn.Sigmoid, n: fx.Node) -> Lowered:
    return Lowered("Sigmoid")


@lowers(ChannelScale, "ChannelScale")
def _channel_scale(m: ChannelScale, n: fx.Node) -> Lowered:
    return Lowered("ChannelMul")


@lowers(nn.Identity, "Identity")
def _identity(m: nn.Identity, n: fx.Node) -> None:
    return None


@lowers(nn.Dropout, "Dropout")
def _dropout(m: nn.Dropout, n: fx.Node) -> None:
    return None  # the identity in eval mode, which is what is exported


@lowers_function("relu", torch.relu, F.relu)
def _relu_function(n: fx.Node) -> Lowered:
    return Lowered("Relu", args=[n.args[0]])


@lowers_function("torch.flatten(x, 1)", torch.flatten)
def _flatten_function(n: fx.Node) -> Lowered:
    start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
    end = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
    if start != 1 or end != -1:
        raise ArtifactError(f"torch.flatten from dim {start} to {end} cannot be exported (only flatten(x, 1))")
    return Lowered("Flatten", args=[n.args[0]])


@lowers_function("torch.cat(dim=1)", torch.cat)
def _cat(n: fx.Node) -> Lowered:
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    if dim != 1:
        raise ArtifactError(f"torch.cat along dim {dim} cannot be exported (only channels, dim 1)")
    parts = n.args[0]
    if not isinstance(parts, (list, tuple)):
        raise _unsupported_function(n)
    return Lowered("Concat", {"axis": 1}, args=list(parts))


@lowers_function("+", operator.add, torch.add)
def _add(n: fx.Node) -> Lowered:
    if len(n.args) != 2 or n.kwargs:
        raise _unsupported_function(n)
    return Lowered("Add", args=list(n.args))


# What error messages say the lowering supports: the registry's modules, then its functions.
SUPPORTED: tuple[str, ...] = tuple(dict.fromkeys(label for label, _ in (*_MODULES.values(), *_FUNCTIONS.values())))


# ---------------------------------------------------------------------------------------------
# Folding


def _only_reader(graph: Graph, value: str) -> Node | None:
    readers = graph.consumers(value)
    if len(readers) == 1 and value not in graph.outputs:
        return readers[0]
    return None


def _remove(graph: Graph, node: Node, replacement: str) -> None:
    """Drop ``node`` (whose output is not a graph output); its readers read ``replacement`` instead."""
    graph.nodes.remove(node)
    old = node.outputs[0]
    for other in graph.nodes:
        other.inputs = [replacement if v == old else v for v in other.inputs]


def _set(graph: Graph, node: Node, role: str, array: np.ndarray) -> None:
    name = f"{node.name}.{role}"
    graph.tensors[name] = array
    node.params[role] = name


def threshold_from_affine(scale: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (t, negate) such that s * x + b >= 0 iff (x >= t, or x <= t where negate)."""
    s = scale.astype(np.float64)
    b = shift.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(s != 0, -b / s, np.where(b >= 0, -np.inf, np.inf))
    return t.astype(np.float32), (s < 0).astype(np.uint8)


def fold(graph: Graph, into_float_convs: bool = True) -> Graph:
    """A copy of ``graph`` with every BatchNorm folded away or turned into an Affine (see module doc).

    ``into_float_convs=False`` keeps BatchNorms after float convs as Affine nodes.
    """
    g = Graph([Node(n.op, n.name, list(n.inputs), list(n.outputs), dict(n.attrs), dict(n.params))
               for n in graph.nodes], dict(graph.tensors), list(graph.inputs), list(graph.outputs))
    for bn in [n for n in g.nodes if n.op == "BatchNorm"]:
        scale, shift = batchnorm_affine(g.tensor(bn, "weight"), g.tensor(bn, "bias"),
                                        g.tensor(bn, "running_mean"), g.tensor(bn, "running_var"),
                                        bn.attrs["eps"])
        x = bn.inputs[0]
        producer = g.producer(x)
        readers = g.consumers(bn.outputs[0])
        foldable = bn.outputs[0] not in g.outputs and producer is not None and _only_reader(g, x) is bn
        if foldable and producer is not None and producer.op in ("Conv", "GroupConv") and into_float_convs:
            w = g.tensor(producer, "weight")
            bias = g.param(producer, "bias")
            bias = np.zeros(w.shape[0], np.float32) if bias is None else bias
            _set(g, producer, "weight", (w * scale[:, None, None, None]).astype(np.float32))
            _set(g, producer, "bias", (bias * scale + shift).astype(np.float32))
            _remove(g, bn, x)
        elif foldable and producer is not None and producer.op == "BinaryConv":
            alpha = g.param(producer, "out_scale")
            out_scale = scale if alpha is None else (alpha * scale).astype(np.float32)
            old_bias = g.param(producer, "out_bias")
            out_bias = shift if old_bias is None else (old_bias * scale + shift).astype(np.float32)
            _set(g, producer, "out_scale", out_scale)
            _set(g, producer, "out_bias", out_bias)
            _remove(g, bn, x)
        elif readers and bn.outputs[0] not in g.outputs and all(
                r.op == "BinaryConv" and "in_threshold" not in r.params for r in readers):
            t, negate = threshold_from_affine(scale, shift)
            for r in readers:
                _set(g, r, "in_threshold", t)
                if negate.any():
                    _set(g, r, "in_negate", negate)
            _remove(g, bn, x)
        else:
            bn.op = "Affine"
            bn.attrs = {}
            bn.params = {}
            _set(g, bn, "scale", scale)
            _set(g, bn, "shift", shift)
    g.prune()
    g.check()
    return g

"""The architecture of any model built from bnncli's layers, recorded as data in its checkpoint.

A registry model is rebuilt from its name and options (``create_model``). Any other
``nn.Module`` -- a researcher's own network of ``BinaryConv2d`` and float layers -- is traced
with torch.fx (:mod:`bnncli.nn.tracing`) and recorded as plain data: its leaf modules (type and
constructor arguments, by qualified name) and the fx graph that calls them (modules, a few
functions such as ``torch.cat`` and ``+``). :func:`rebuild` turns the record back into an
``fx.GraphModule`` with the same state-dict keys, so the checkpoint's weights load into it and
it trains, evaluates, exports and packs like the original. No code is pickled: a record names
only the module types and functions listed here (:data:`MODULES`, :data:`FUNCTIONS`), and a
reader refuses anything else, naming it.

A record looks like::

    {"format": "bnncli-fx", "version": 1, "class_name": "MyBNN",
     "modules": {"conv1": {"type": "BinaryConv2d", "args": {"in_channels": 16, ...}, "attrs": {}}, ...},
     "nodes": [{"name": "x", "op": "placeholder", "target": "x", "args": [], "kwargs": {}},
               {"name": "conv1", "op": "call_module", "target": "conv1", "args": [{"node": "x"}], "kwargs": {}},
               ..., {"name": "output", "op": "output", "target": "output", "args": [{"node": "fc"}], "kwargs": {}}]}
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from bnncli.artifacts.identify import reason
from bnncli.errors import ArtifactError, BnnError
from bnncli.nn import FLOAT_WEIGHTS, PADDINGS, BinaryConv2d, FloatConv2d, FloatLinear, MaxPool2d
from bnncli.nn.tracing import trace

FORMAT = "bnncli-fx"
VERSION = 1


@dataclass(frozen=True)
class ModuleSpec:
    """A module type a record may name: its constructor arguments, read back from an instance's
    attributes of the same names, and the attributes set after construction."""

    cls: type[nn.Module]
    args: tuple[str, ...]
    attrs: tuple[str, ...] = ()


_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
         "padding_mode")
_POOL = ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")
_SPECS = (
    ModuleSpec(BinaryConv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                              "pad_value", "clip_threshold", "activation_gradient", "weight_gradient", "scaling"),
               ("padding_rule",)),
    ModuleSpec(FloatConv2d, _CONV, ("float_weights", "padding_rule")),
    ModuleSpec(FloatLinear, ("in_features", "out_features", "bias"), ("float_weights",)),
    ModuleSpec(MaxPool2d, _POOL, ("padding_rule",)),
    ModuleSpec(nn.Conv2d, _CONV),
    ModuleSpec(nn.Linear, ("in_features", "out_features", "bias")),
    ModuleSpec(nn.BatchNorm2d, ("num_features", "eps", "momentum", "affine", "track_running_stats")),
    ModuleSpec(nn.ReLU, ("inplace",)),
    ModuleSpec(nn.MaxPool2d, _POOL),
    ModuleSpec(nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                              "divisor_override")),
    ModuleSpec(nn.AdaptiveAvgPool2d, ("output_size",)),
    ModuleSpec(nn.Flatten, ("start_dim", "end_dim")),
    ModuleSpec(nn.Identity, ()),
    ModuleSpec(nn.Dropout, ("p", "inplace")),
)
# The module types a record may hold, by the name it stores (bnncli's layers by class name,
# torch's as nn.<Name>). Exact types: a subclass may compute something else in its forward.
MODULES: dict[str, ModuleSpec] = {
    (s.cls.__name__ if s.cls.__module__.startswith("bnncli") else f"nn.{s.cls.__name__}"): s for s in _SPECS}
_NAME_OF = {s.cls: name for name, s in MODULES.items()}
# The functions a record may call, by the name it stores.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "torch.cat": torch.cat, "operator.add": operator.add, "torch.add": torch.add, "torch.flatten": torch.flatten,
    "torch.relu": torch.relu, "torch.nn.functional.relu": F.relu,
}
_FUNCTION_NAMES = {fn: name for name, fn in FUNCTIONS.items()}
# Tensor methods a record may call (``x.flatten(1)``, ``x.relu()``).
METHODS = ("flatten", "relu", "add")
# Attributes set after construction, and the values they may take.
_ATTR_VALUES = {"padding_rule": PADDINGS, "float_weights": FLOAT_WEIGHTS}


def supported() -> str:
    """What a record may hold, for error messages."""
    return ", ".join([*MODULES, *FUNCTIONS, *(f"Tensor.{m}" for m in METHODS)])


# ---- recording ---------------------------------------------------------------------------------------------


def _plain(value: Any, where: str) -> Any:
    """A constructor argument as JSON-like data (tuples become lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v, where) for v in value]
    raise ArtifactError(f"{where} holds {type(value).__name__} {value!r}, which a checkpoint cannot record")


def _module_args(m: nn.Module, spec: ModuleSpec, where: str) -> dict[str, Any]:
    args = {}
    for name in spec.args:
        value = getattr(m, name)
        if name == "bias":
            value = value is not None
        args[name] = _plain(value, f"{where}.{name}")
    return args


def _encode(arg: Any, where: str) -> Any:
    """An fx argument as data: a node as ``{"node": name}``, sequences as lists, plain values as they are."""
    if isinstance(arg, fx.Node):
        return {"node": arg.name}
    if isinstance(arg, (tuple, list)):
        return [_encode(a, where) for a in arg]
    if arg is None or isinstance(arg, (bool, int, float, str)):
        return arg
    raise ArtifactError(f"{where} passes {type(arg).__name__} {arg!r}, which a checkpoint cannot record")


def _unsupported_module(model: nn.Module, name: str, m: nn.Module) -> ArtifactError:
    return ArtifactError(f"cannot record the architecture of {type(model).__name__}: module {name!r} is "
                         f"{type(m).__module__}.{type(m).__name__}, which bnncli cannot rebuild; "
                         f"supported: {supported()}")


def record(model: nn.Module) -> dict[str, Any]:
    """The architecture record of ``model`` (see the module doc); ArtifactError naming the first
    module, function or construct it cannot hold. The record is checked by rebuilding it (without
    allocating weights) and comparing the state-dict keys with the model's."""
    try:
        graph = trace(model)
    except BnnError:
        raise
    except Exception as e:
        raise ArtifactError(f"cannot trace {type(model).__name__} with torch.fx (data-dependent control flow in "
                            f"forward?): {reason(e)}") from None
    named = dict(model.named_modules())
    modules: dict[str, Any] = {}
    nodes: list[dict[str, Any]] = []
    for n in graph.nodes:
        where = f"{type(model).__name__}: {n.op} {n.name}"
        target = str(n.target)
        if n.op == "call_module":
            m = named[target]
            type_name = _NAME_OF.get(type(m))
            if type_name is None:
                raise _unsupported_module(model, target, m)
            spec = MODULES[type_name]
            if isinstance(m, BinaryConv2d) and not m.binary_input:
                raise ArtifactError(f"cannot record the architecture of {type(model).__name__}: module {target!r} "
                                    f"is a binary conv on float input (binary_input=False), which a record "
                                    f"does not hold; register the model instead (bnncli.register_model)")
            modules.setdefault(target, {"type": type_name, "args": _module_args(m, spec, target),
                                        "attrs": {a: getattr(m, a) for a in spec.attrs}})
        elif n.op == "call_function":
            if n.target not in _FUNCTION_NAMES:
                name = getattr(n.target, "__name__", str(n.target))
                raise ArtifactError(f"cannot record the architecture of {type(model).__name__}: it calls the function "
                                    f"{name}, which bnncli cannot rebuild; supported: {supported()}")
            target = _FUNCTION_NAMES[n.target]
        elif n.op == "call_method":
            if n.target not in METHODS:
                raise ArtifactError(f"cannot record the architecture of {type(model).__name__}: it calls the tensor "
                                    f"method {n.target}, which bnncli cannot rebuild; supported: {supported()}")
        elif n.op == "get_attr":
            raise ArtifactError(f"cannot record the architecture of {type(model).__name__}: forward reads "
                                f"{target} directly; put parameters in layers ({', '.join(MODULES)})")
        elif n.op not in ("placeholder", "output"):
            raise ArtifactError(f"cannot record {where}")
        if n.op == "placeholder" and (n.args or n.kwargs):
            raise ArtifactError(f"cannot record the architecture of {type(model).__name__}: forward's argument "
                                f"{n.target} has a default value")
        nodes.append({"name": n.name, "op": n.op, "target": target, "args": _encode(list(n.args), where),
                      "kwargs": {k: _encode(v, where) for k, v in n.kwargs.items()}})
    rec = {"format": FORMAT, "version": VERSION, "class_name": type(model).__name__, "modules": modules,
           "nodes": nodes}
    rebuilt = set(rebuild(rec, device="meta").state_dict())
    own = set(model.state_dict())
    if rebuilt != own:
        extra = sorted(own - rebuilt)[:3] or sorted(rebuilt - own)[:3]
        raise ArtifactError(f"cannot record the architecture of {type(model).__name__}: its state holds "
                            f"{', '.join(extra)}, which no traced layer owns (parameters outside layers, or "
                            "layers that forward never calls)")
    return rec


# ---- rebuilding ---------------------------------------------------------------------------------------------


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ArtifactError(f"architecture record: {message}")


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(_is_plain(v) for v in value)


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _build_module(name: str, entry: Any) -> nn.Module:
    _require(isinstance(entry, dict) and set(entry) == {"type", "args", "attrs"},
             f"module {name!r} must hold type, args and attrs")
    spec = MODULES.get(entry["type"]) if isinstance(entry["type"], str) else None
    _require(spec is not None, f"module {name!r} has type {entry['type']!r}, which bnncli does not rebuild "
             f"(it rebuilds {', '.join(MODULES)})")
    assert spec is not None
    args, attrs = entry["args"], entry["attrs"]
    _require(isinstance(args, dict) and set(args) == set(spec.args) and all(_is_plain(v) for v in args.values()),
             f"module {name!r} ({entry['type']}) must give exactly the arguments {', '.join(spec.args)}")
    _require(isinstance(attrs, dict) and set(attrs) == set(spec.attrs),
             f"module {name!r} ({entry['type']}) must set exactly the attributes {', '.join(spec.attrs) or 'none'}")
    for key, value in attrs.items():
        _require(value in _ATTR_VALUES[key], f"module {name!r}: {key} must be one of {', '.join(_ATTR_VALUES[key])}")
    try:
        m = spec.cls(**{k: _as_tuples(v) for k, v in args.items()})
    except BnnError as e:
        raise ArtifactError(f"architecture record: module {name!r} ({entry['type']}): {e}") from None
    except Exception as e:
        raise ArtifactError(f"architecture record: module {name!r} ({entry['type']}) cannot be built: "
                            f"{reason(e)}") from None
    for key, value in attrs.items():
        setattr(m, key, value)
    return m


def _install(root: nn.Module, qualname: str, m: nn.Module) -> None:
    """Put ``m`` at ``qualname`` (``a.b.c``) under ``root``, with empty containers on the way."""
    *path, last = qualname.split(".")
    parent = root
    for part in path:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    _require(last not in parent._modules, f"module {qualname!r} is given twice")
    parent.add_module(last, m)


def _decode(arg: Any, env: dict[str, fx.Node]) -> Any:
    if isinstance(arg, dict):
        _require(set(arg) == {"node"} and arg["node"] in env, f"argument {arg!r} names no earlier node")
        return env[arg["node"]]
    if isinstance(arg, (list, tuple)):
        return tuple(_decode(a, env) for a in arg)
    _require(_is_plain(arg), f"argument {arg!r} is not plain data")
    return arg


def rebuild(rec: Any, device: str | torch.device | None = None) -> fx.GraphModule:
    """The model a record describes, freshly initialised (in train mode), as an ``fx.GraphModule``.

    ``device="meta"`` builds it without allocating weights (``load_state_dict(..., assign=True)``
    then gives it a checkpoint's). ArtifactError says what in the record is wrong.
    """
    _require(isinstance(rec, dict), "must be an object")
    _require(rec.get("format") == FORMAT, f"format must be {FORMAT!r}")
    _require(rec.get("version") == VERSION, f"version {rec.get('version')!r}; this bnncli reads {VERSION}")
    modules, nodes, class_name = rec.get("modules"), rec.get("nodes"), rec.get("class_name")
    _require(isinstance(modules, dict) and all(isinstance(k, str) and k and all(k.split("."))
                                               for k in modules), "modules must map qualified names to layers")
    _require(isinstance(nodes, list) and bool(nodes), "nodes must be a non-empty list")
    _require(isinstance(class_name, str) and class_name.isidentifier(), "class_name must be an identifier")
    root = nn.Module()
    with torch.device(device) if device is not None else contextlib.nullcontext():
        for qualname, entry in modules.items():
            _install(root, qualname, _build_module(qualname, entry))
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    placeholders = outputs = 0
    for entry in nodes:
        _require(isinstance(entry, dict) and set(entry) == {"name", "op", "target", "args", "kwargs"},
                 "each node must hold name, op, target, args and kwargs")
        name, op, target = entry["name"], entry["op"], entry["target"]
        _require(isinstance(name, str) and name not in env, f"node name {name!r} is not a new name")
        _require(isinstance(target, str), f"node {name!r}: target must be a string")
        _require(isinstance(entry["args"], list) and isinstance(entry["kwargs"], dict),
                 f"node {name!r}: args must be a list and kwargs an object")
        args = _decode(entry["args"], env)
        kwargs = {str(k): _decode(v, env) for k, v in entry["kwargs"].items()}
        if op == "placeholder":
            _require(not args and not kwargs and target.isidentifier(), f"node {name!r}: a bad input")
            placeholders += 1
            node = graph.placeholder(target)
        elif op == "call_module":
            _require(target in modules, f"node {name!r} calls module {target!r}, which the record does not hold")
            node = graph.call_module(target, args, kwargs)
        elif op == "call_function":
            _require(target in FUNCTIONS, f"node {name!r} calls {target!r}; bnncli rebuilds the functions "
                     f"{', '.join(FUNCTIONS)}")
            node = graph.call_function(FUNCTIONS[target], args, kwargs)
        elif op == "call_method":
            _require(target in METHODS, f"node {name!r} calls the method {target!r}; bnncli rebuilds "
                     f"{', '.join(METHODS)}")
            node = graph.call_method(target, args, kwargs)
        elif op == "output":
            _require(len(args) == 1 and not kwargs, f"node {name!r}: the output must be one value")
            outputs += 1
            node = graph.output(args[0])
        else:
            raise ArtifactError(f"architecture record: node {name!r} has op {op!r}")
        env[name] = node
    _require(placeholders == 1, f"the model must take one input, not {placeholders}")
    _require(outputs == 1 and len(graph.nodes) > 0 and next(reversed(graph.nodes)).op == "output",
             "the record must end with one output")
    try:
        graph.lint()
        return fx.GraphModule(root, graph, class_name=class_name)
    except BnnError:
        raise
    except Exception as e:
        raise ArtifactError(f"architecture record: {reason(e)}") from None


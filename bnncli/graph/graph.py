"""The graph every deployment backend shares: a list of nodes over named arrays.

``bnncli.deploy.lowering`` turns a registry model into a :class:`Graph`; the ONNX emitter, the
packer and the NumPy runtime all consume it. A node has an op type (declared, with its inputs,
params and attributes, in :mod:`bnncli.graph.opset`), the names of the values it reads and
writes, plain JSON attributes, and ``params``: role -> name of a tensor in ``Graph.tensors``.
Shapes and layouts follow PyTorch (NCHW feature maps, ``[N, F]`` after Flatten) everywhere in
the graph; only the runtime's internals use another layout.

This module imports NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnncli.errors import ArtifactError
from bnncli.metadata import MAX_IMAGE_SIZE

NODE_KEYS = ("op", "name", "inputs", "outputs", "attrs", "params")
# No kernel window (kernel, stride, dilation) may reach further than the largest input a model file
# may ask for, and a convolution pads at most the window's reach, dilation * (kernel - 1), on each
# side (more would only add outputs that read no input): the padded map stays within a few times
# the input, whatever a file says.
MAX_WINDOW = MAX_IMAGE_SIZE
# Ops whose output has a different rank than their first input (every other op keeps it).
_RANK_OUT = {"Flatten": 2, "Linear": 2}
_RANK_IN = {"Linear": 2, "Conv": 4, "GroupConv": 4, "BinaryConv": 4, "MaxPool": 4, "AvgPool": 4,
            "GlobalAvgPool": 4, "BatchNorm": 4, "Affine": 4, "Concat": 4, "Slice": 4, "PRelu": 4}
# Ops whose inputs have different ranks: the rank of each input.
_RANKS_IN = {"ChannelMul": (4, 2)}


def _pair(v: Any) -> tuple[int, int] | None:
    """Two integers >= 0, or None for anything else (a malformed value, "same")."""
    if isinstance(v, list) and len(v) == 2 and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                   for i in v):
        return int(v[0]), int(v[1])
    return None


@dataclass
class Node:
    """One operation: ``outputs[0] = op(*inputs)`` with ``attrs`` and named ``params``."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "name": self.name, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "attrs": dict(self.attrs), "params": dict(self.params)}

    @classmethod
    def from_json(cls, d: Any) -> Node:
        if not isinstance(d, dict):
            raise ArtifactError(f"graph node must be an object, not {type(d).__name__}")
        missing = [k for k in NODE_KEYS if k not in d]
        if missing:
            raise ArtifactError(f"graph node {d.get('name', '?')!r} lacks {', '.join(missing)}")
        extra = sorted(set(d) - set(NODE_KEYS))
        if extra:
            raise ArtifactError(f"graph node {d['name']!r} has unknown keys {', '.join(map(repr, extra))}")
        if not isinstance(d["op"], str) or not isinstance(d["name"], str):
            raise ArtifactError("graph node op and name must be strings")
        for key in ("inputs", "outputs"):
            if not isinstance(d[key], list) or not all(isinstance(v, str) for v in d[key]):
                raise ArtifactError(f"graph node {d['name']!r}: {key} must be a list of names")
        if not isinstance(d["attrs"], dict):
            raise ArtifactError(f"graph node {d['name']!r}: attrs must be an object")
        params = d["params"]
        if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in params.items()):
            raise ArtifactError(f"graph node {d['name']!r}: params must map roles to tensor names")
        return cls(d["op"], d["name"], list(d["inputs"]), list(d["outputs"]), dict(d["attrs"]), dict(params))


@dataclass
class Graph:
    """Nodes in execution order, the graph's input and output names, and its tensors."""

    nodes: list[Node]
    tensors: dict[str, np.ndarray]
    inputs: list[str] = field(default_factory=lambda: ["input"])
    outputs: list[str] = field(default_factory=lambda: ["logits"])

    def consumers(self, value: str) -> list[Node]:
        """Nodes that read ``value``."""
        return [n for n in self.nodes if value in n.inputs]

    def producer(self, value: str) -> Node | None:
        for n in self.nodes:
            if value in n.outputs:
                return n
        return None

    def param(self, node: Node, role: str) -> np.ndarray | None:
        """The tensor a node uses in ``role``, or None when it has none."""
        name = node.params.get(role)
        return None if name is None else self.tensors[name]

    def tensor(self, node: Node, role: str) -> np.ndarray:
        """The tensor a node requires in ``role`` (its op's spec says which); ArtifactError when absent."""
        array = self.param(node, role)
        if array is None:
            raise ArtifactError(f"node {node.name!r} ({node.op}) lacks its {role}")
        return array

    def check(self) -> None:
        """Every value is written once before it is read; every param names a tensor; node names are
        unique; kernel windows and padding are within bounds (:data:`MAX_WINDOW`)."""
        defined, names = set(self.inputs), set()
        for node in self.nodes:
            if node.name in names:
                raise ArtifactError(f"two graph nodes are named {node.name!r}")
            names.add(node.name)
            for v in node.inputs:
                if v not in defined:
                    raise ArtifactError(f"node {node.name!r} reads {v!r} before anything writes it")
            if len(node.outputs) != 1:
                raise ArtifactError(f"node {node.name!r} must write exactly one value")
            if node.outputs[0] in defined:
                raise ArtifactError(f"value {node.outputs[0]!r} is written twice")
            defined.add(node.outputs[0])
            for role, name in node.params.items():
                if name not in self.tensors:
                    raise ArtifactError(f"node {node.name!r} uses tensor {name!r} ({role}), which does not exist")
        for v in self.outputs:
            if v not in defined:
                raise ArtifactError(f"graph output {v!r} is never written")
        for node in self.nodes:
            self._check_window(node)

    def _check_window(self, node: Node) -> None:
        """Bounds of a windowed node's kernel, stride, dilation and padding (their types are the op's to check)."""
        if node.op in ("Conv", "GroupConv"):
            weight = self.param(node, "weight")
            kernel = tuple(weight.shape[2:]) if weight is not None and weight.ndim == 4 else None
        elif node.op in ("BinaryConv", "MaxPool", "AvgPool"):
            kernel = _pair(node.attrs.get("kernel_size"))
        else:
            return
        dilation = _pair(node.attrs.get("dilation", [1, 1]))
        if kernel is None or dilation is None:
            return
        reach = [d * (k - 1) for k, d in zip(kernel, dilation)]
        stride = _pair(node.attrs.get("stride")) or (1, 1)
        if max(reach) + 1 > MAX_WINDOW or max(stride) > MAX_WINDOW:
            raise ArtifactError(f"node {node.name!r} ({node.op}): kernel {list(kernel)}, stride {list(stride)} "
                                f"and dilation {list(dilation)} reach beyond {MAX_WINDOW} positions")
        padding = _pair(node.attrs.get("padding"))
        if node.op in ("Conv", "GroupConv", "BinaryConv") and padding is not None \
                and any(p > r for p, r in zip(padding, reach)):
            raise ArtifactError(f"node {node.name!r} ({node.op}): padding {list(padding)} is more than the kernel's "
                                f"reach {reach} (dilation * (kernel - 1))")

    def ranks(self) -> dict[str, int]:
        """The rank of every value (4 for NCHW maps, 2 for ``[N, F]``); ArtifactError where an op
        reads a value of a rank it cannot take."""
        ranks = {v: 4 for v in self.inputs}
        for node in self.nodes:
            got = [ranks[v] for v in node.inputs if v in ranks]
            want = _RANK_IN.get(node.op)
            bad = [r for r in got if want is not None and r != want]
            if bad:
                raise ArtifactError(f"node {node.name!r} ({node.op}) reads a {bad[0]}-D value; it takes {want}-D")
            each = _RANKS_IN.get(node.op)
            if each is not None and len(got) == len(node.inputs) and tuple(got) != each[:len(got)]:
                raise ArtifactError(f"node {node.name!r} ({node.op}) reads {' and '.join(f'{r}-D' for r in got)} "
                                    f"values; it takes {' and '.join(f'{r}-D' for r in each)}")
            if node.op == "Add" and len(set(got)) > 1:
                raise ArtifactError(f"node {node.name!r} (Add) adds values of different ranks")
            if got:
                ranks[node.outputs[0]] = _RANK_OUT.get(node.op, got[0])
        return ranks

    def prune(self) -> Graph:
        """Drop tensors no node uses."""
        used = {name for n in self.nodes for name in n.params.values()}
        self.tensors = {k: v for k, v in self.tensors.items() if k in used}
        return self

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

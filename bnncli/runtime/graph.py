"""The graph every deployment backend shares: a list of nodes over named arrays.

``bnncli.deploy.lower`` turns a registry model into a :class:`Graph`; the ONNX emitter, the
packer and the NumPy runtime all consume it. A node has an op type (declared, with its inputs,
params and attributes, in :mod:`bnncli.runtime.opset`), the names of the values it reads and
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
        missing = [k for k in ("op", "name", "inputs", "outputs", "attrs", "params") if k not in d]
        if missing:
            raise ArtifactError(f"graph node {d.get('name', '?')!r} lacks {', '.join(missing)}")
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

    def check(self) -> None:
        """Every value is written once before it is read; every param names a tensor."""
        defined = set(self.inputs)
        for node in self.nodes:
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

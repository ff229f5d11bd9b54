"""The shared graph: what the lowering writes and every backend reads (NumPy only, never torch).

* :mod:`bnncli.graph.graph`: :class:`Graph` and :class:`Node`, the checks every file passes;
* :mod:`bnncli.graph.opset`: the one declared list of graph ops;
* :mod:`bnncli.graph.padding`: padding rules (symmetric and TensorFlow's "same");
* :mod:`bnncli.graph.bits`: the bit layout of binary weights and activations;
* :mod:`bnncli.graph.numerics`: float rules that the lowering and the backends share;
* :mod:`bnncli.graph.format`: the packed ``.bnn`` file (docs/FORMAT.md).

Running a graph is bnncli.runtime's job; writing one from PyTorch is bnncli.deploy's.
"""

from __future__ import annotations

from bnncli.graph.graph import Graph, Node
from bnncli.graph.opset import OPSET, SPECS, OpSpec

__all__ = ["OPSET", "SPECS", "Graph", "Node", "OpSpec"]

"""The in-place concatenation planner never lets two readers of one prefix extend one buffer.

The probe of issue 21: two binary convs of one prefix (itself a concatenation, whose buffer has
room to grow), each read by its own Concat. Planned naively, both convs write their output into
the same channels after the prefix and the second overwrites the first, silently. PyTorch, the
NumPy runtime, the compiled backend and onnxruntime must agree on it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bnncli.deploy.lowering import fold, lower
from bnncli.nn import BinaryConv2d
from bnncli.runtime import Model
from bnncli.runtime.backends import available


class Probe(nn.Module):
    """stem -> p = cat(stem, binary(stem)); c1 = b1(p), c2 = b2(p); cat(p, c1) + cat(p, c2) -> head.

    ``order`` is the order the graph computes them in: both convs before both concatenations
    (the overwrite), or each concatenation right after its conv."""

    def __init__(self, order: str) -> None:
        super().__init__()
        self.order = order
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pre = BinaryConv2d(8, 8, 3, padding=1)
        self.b1 = BinaryConv2d(16, 8, 3, padding=1)
        self.b2 = BinaryConv2d(16, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        s = self.stem(x)
        p = torch.cat([s, self.pre(s)], 1)
        if self.order == "convs first":
            c1 = self.b1(p)
            c2 = self.b2(p)
            a = torch.cat([p, c1], 1)
            b = torch.cat([p, c2], 1)
        else:
            a = torch.cat([p, self.b1(p)], 1)
            b = torch.cat([p, self.b2(p)], 1)
        return self.fc(self.flat(self.pool(a + b)))


def _probe(order: str) -> Probe:
    torch.manual_seed(0)
    model = Probe(order).eval()
    with torch.no_grad():  # weights far from zero, so the two branches differ clearly
        for m in (model.b1, model.b2, model.pre):
            m.weight.copy_(torch.randn_like(m.weight))
    return model


@pytest.mark.parametrize("order", ["convs first", "interleaved"])
def test_two_readers_of_one_prefix_keep_their_own_outputs(order):
    model = _probe(order)
    graph = fold(lower(model))
    ops = [n.op for n in graph.nodes]
    assert ops.count("Concat") == 3 and ops.count("BinaryConv") == 3
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for backend in available():
        got = Model(graph, threads=1, backend=backend)(x)
        assert np.abs(got - expected).max() < 1e-4, (backend, np.abs(got - expected).max())
        twice = Model(graph, threads=1, backend=backend)
        twice(x)
        assert np.abs(twice(x) - expected).max() < 1e-4, backend  # buffers reused on a second call


@pytest.mark.parametrize("order", ["convs first", "interleaved"])
def test_onnxruntime_agrees_on_the_probe(order):
    pytest.importorskip("onnxruntime")
    from bnncli.artifacts.onnx_file import ort_session
    from bnncli.deploy.onnx_export import to_onnx

    model = _probe(order)
    graph = lower(model)
    meta = {"arch": "probe", "arch_kwargs": {"num_classes": 5}, "class_names": list("abcde"),
            "preprocessing": {"preset": "x", "image_size": 12, "resize": 12, "mean": [0.0] * 3, "std": [1.0] * 3,
                              "channels": 3, "interpolation": "bilinear"}}
    session = ort_session(to_onnx(graph, meta), 1)
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    onnx_logits = session.run(None, {"input": x})[0]
    for backend in available():
        packed = Model(fold(graph), threads=1, backend=backend)(x)
        assert np.abs(packed - onnx_logits).max() < 1e-4, backend

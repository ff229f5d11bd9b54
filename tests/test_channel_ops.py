"""Graph ops PRelu, Sigmoid and ChannelMul (Real-to-Binary Net's scaled binary convs): PyTorch,
onnxruntime and both runtime backends agree, the backends bit for bit; malformed nodes are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bnncli.artifacts.onnx_file import ort_session
from bnncli.deploy import onnx_export
from bnncli.deploy.lowering import fold, lower
from bnncli.errors import ArtifactError
from bnncli.graph.graph import Graph, Node
from bnncli.nn import ChannelScale
from bnncli.runtime import Model

BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("numba"), reason="numba not installed"))]


class _Scaled(nn.Module):
    """A squeeze-and-excite-style scale of a map by factors computed from itself, then a PReLU and a residual."""

    def __init__(self, c: int, shared_slope: bool = False) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.reduce = nn.Linear(c, max(c // 4, 1), bias=False)
        self.relu = nn.ReLU()
        self.expand = nn.Linear(max(c // 4, 1), c, bias=False)
        self.sigmoid = nn.Sigmoid()
        self.scale = ChannelScale()
        self.prelu = nn.PReLU(1 if shared_slope else c)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        s = self.sigmoid(self.expand(self.relu(self.reduce(self.flatten(self.pool(x))))))
        y = self.prelu(self.scale(x, s)) + x
        return self.head(self.flatten(self.pool(y)))


def _model(c=8, shared_slope=False, seed=0):
    torch.manual_seed(seed)
    m = _Scaled(c, shared_slope).eval()
    with torch.no_grad():  # slopes of both signs and zero
        m.prelu.weight.copy_(torch.linspace(-0.5, 1.5, m.prelu.weight.numel()))
        m.expand.weight.mul_(4)  # some scales near 0 and 1
    return m


@pytest.mark.parametrize("shared_slope", [False, True])
def test_the_scaled_block_agrees_in_pytorch_onnx_and_both_backends(shared_slope):
    model = _model(shared_slope=shared_slope)
    x = torch.randn(3, 8, 6, 5)
    x[0, :, 0, 0] = 0.0  # exact zeros through the PReLU
    with torch.no_grad():
        expected = model(x).numpy()
    graph = lower(model)
    assert {"PRelu", "Sigmoid", "ChannelMul"} <= set(graph.op_counts())
    meta = {"arch": "scaled", "arch_kwargs": {}, "class_names": list("abc"),
            "preprocessing": {"image_size": 6, "channels": 8}}
    sq = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected_sq = model(sq).numpy()
    got_ort = ort_session(onnx_export.to_onnx(graph, meta)).run(None, {"input": sq.numpy()})[0]
    np.testing.assert_allclose(got_ort, expected_sq, rtol=1e-5, atol=1e-6)
    outputs = {}
    for backend in ("numpy", "numba"):
        if backend == "numba":
            pytest.importorskip("numba")
        for g in (graph, fold(graph)):
            got = Model(g, threads=1, backend=backend)(x.numpy())
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        outputs[backend] = Model(fold(graph), threads=1, backend=backend).run(x.numpy(), intermediates=True)
    if "numba" in outputs:
        for name, value in outputs["numpy"].items():
            assert np.array_equal(value, outputs["numba"][name]), name


def _graph(nodes, tensors=None, output="logits"):
    return Graph(nodes, tensors or {}, ["input"], [output])


@pytest.mark.parametrize("backend", BACKENDS)
def test_prelu_keeps_non_negative_values_and_scales_negative_ones(backend):
    slope = np.array([0.25, -1.0, 0.0], np.float32)
    g = _graph([Node("PRelu", "p", ["input"], ["logits"], {}, {"slope": "s"})], {"s": slope})
    x = np.array([[-2.0, -0.0, 0.0, 3.0], [-2.0, -1.0, 0.0, 3.0], [-2.0, -1e-30, 1e-30, 3.0]], np.float32)
    x = x.reshape(1, 3, 2, 2)
    got = Model(g, threads=1, backend=backend).run(x, intermediates=True)["logits"]
    want = np.where(x >= 0, x, x * slope[None, :, None, None])
    assert np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want))
    assert got[0, 1, 0, 0] == 2.0 and got[0, 0, 0, 0] == -0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_channel_mul_scales_each_image_and_channel_by_its_own_factor(backend):
    nodes = [Node("GlobalAvgPool", "g", ["input"], ["pooled"]), Node("Flatten", "f", ["pooled"], ["flat"]),
             Node("Sigmoid", "s", ["flat"], ["scales"]), Node("ChannelMul", "m", ["input", "scales"], ["logits"])]
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    values = Model(_graph(nodes), threads=1, backend=backend).run(x, intermediates=True)
    s = values["scales"]
    assert s.shape == (2, 3) and s.dtype == np.float32
    one = np.float32(1)
    assert np.array_equal(s, one / (one + np.exp(-x.mean(axis=(2, 3), dtype=np.float32))))
    assert np.array_equal(values["logits"], x * s[:, :, None, None])


def test_sigmoid_saturates_without_warnings():
    g = _graph([Node("Sigmoid", "s", ["input"], ["logits"])])
    x = np.array([-1000.0, -89.0, 0.0, 89.0, 1000.0], np.float32).reshape(1, 5, 1, 1)
    with np.errstate(all="raise"):
        got = Model(g, threads=1).run(x, intermediates=True)["logits"].ravel()
    assert got[0] == 0.0 and got[2] == 0.5 and got[4] == 1.0


def test_malformed_nodes_are_refused_with_the_node_named():
    x = np.zeros((1, 4, 2, 2), np.float32)
    prelu = _graph([Node("PRelu", "p", ["input"], ["logits"], {}, {"slope": "s"})], {"s": np.ones(3, np.float32)})
    with pytest.raises(ArtifactError, match="node 'p' \\(PRelu\\) has 3 slopes; it takes a feature map of 3 channels"):
        Model(prelu, threads=1).run(x, intermediates=True)
    matrix = _graph([Node("PRelu", "p", ["input"], ["logits"], {}, {"slope": "s"})],
                    {"s": np.ones((4, 1), np.float32)})
    with pytest.raises(ArtifactError, match="tensor slope has shape \\[4, 1\\], expected 1 dimensions"):
        Model(matrix, threads=1)
    both_maps = _graph([Node("ChannelMul", "m", ["input", "input"], ["logits"])])
    with pytest.raises(ArtifactError, match="node 'm' \\(ChannelMul\\) reads 4-D and 4-D values; it takes 4-D and 2-D"):
        both_maps.ranks()
    wrong = _graph([Node("GlobalAvgPool", "g", ["input"], ["p"]), Node("Flatten", "f", ["p"], ["s"]),
                    Node("Slice", "c", ["input"], ["x3"], {"axis": 1, "start": 0, "stop": 3}),
                    Node("ChannelMul", "m", ["x3", "s"], ["logits"])])
    with pytest.raises(ArtifactError, match="node 'm' \\(ChannelMul\\) scales a feature map by \\[N, C\\] values; "
                                            "got shapes \\[1, 3, 2, 2\\] \\(NCHW\\) and \\[1, 4\\]"):
        Model(wrong, threads=1).run(x, intermediates=True)
    with pytest.raises(ArtifactError, match="takes 2 input\\(s\\), not 1"):
        Model(_graph([Node("ChannelMul", "m", ["input"], ["logits"])]), threads=1)


def test_a_reader_that_predates_the_ops_refuses_them_as_unknown():
    from bnncli.runtime import ops

    known = dict(ops.OP_TYPES)
    try:
        del ops.OP_TYPES["PRelu"]
        g = _graph([Node("PRelu", "p", ["input"], ["logits"], {}, {"slope": "s"})], {"s": np.ones(4, np.float32)})
        with pytest.raises(ArtifactError, match="node 'p' has unknown op 'PRelu'; the runtime knows Conv"):
            Model(g, threads=1)
    finally:
        ops.OP_TYPES.clear()
        ops.OP_TYPES.update(known)

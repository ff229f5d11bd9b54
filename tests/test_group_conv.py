"""The grouped (depthwise) float convolution, graph op GroupConv: the NumPy reference against
PyTorch, the compiled kernel against the reference bit for bit, and its checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnncli.errors import ArtifactError
from bnncli.graph.graph import Graph, Node
from bnncli.graph.padding import output_hw
from bnncli.runtime import Model
from bnncli.runtime.backends import GroupConvLayer
from bnncli.runtime.backends.numpy import group_conv_reference

# (cin, cout, groups, kernel, stride, pads (top, left, bottom, right), dilation, bias, batch, size)
CASES = [
    (8, 8, 8, 3, 2, (0, 0, 1, 1), 1, False, 1, (16, 16)),  # depthwise, stride 2, TensorFlow "same" at 16 px
    (8, 8, 8, 3, 2, (1, 1, 1, 1), 1, True, 2, (15, 13)),  # depthwise, symmetric, odd sizes, batch 2
    (12, 24, 4, 3, 1, (1, 1, 1, 1), 1, True, 2, (9, 9)),  # grouped, 3 in / 6 out per group
    (6, 6, 3, 3, 1, (2, 2, 2, 2), 2, False, 1, (11, 7)),  # dilated
    (4, 8, 4, 1, 1, (0, 0, 0, 0), 1, False, 3, (5, 5)),  # 1x1, a depth multiplier of 2
    (32, 32, 32, 3, 2, (0, 0, 1, 1), 1, True, 2, (128, 128)),  # large enough to be split across threads
]


def _case(cin, cout, groups, k, s, pads, d, bias, n, hw, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cin, n, *hw)).astype(np.float32)
    w = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) if bias else None
    out_hw = output_hw(hw, (k, k), (s, s), pads, (d, d))
    return x, GroupConvLayer(w, b, groups, (s, s), (d, d)), out_hw


def _torch(x, layer, pads):
    xt = torch.from_numpy(x.transpose(1, 0, 2, 3).copy())
    top, left, bottom, right = pads
    xt = F.pad(xt, (left, right, top, bottom))
    b = None if layer.bias is None else torch.from_numpy(layer.bias)
    y = F.conv2d(xt, torch.from_numpy(layer.weight), b, layer.stride, 0, layer.dilation, layer.groups)
    return y.numpy().transpose(1, 0, 2, 3)


@pytest.mark.parametrize("case", CASES)
def test_reference_equals_pytorch(case):
    x, layer, out_hw = _case(*case)
    pads = case[5]
    got = group_conv_reference(x, layer.weight, layer.bias, layer.groups, layer.stride, pads, layer.dilation, out_hw)
    np.testing.assert_allclose(got, _torch(x, layer, pads), rtol=1e-5, atol=1e-5)


def test_reference_sums_in_the_declared_order():
    """One depthwise output summed by hand, from 0, tap by tap in float32: the same bits."""
    x, layer, out_hw = _case(4, 4, 4, 3, 1, (1, 1, 1, 1), 1, True, 1, (5, 5), seed=3)
    got = group_conv_reference(x, layer.weight, layer.bias, 4, (1, 1), (1, 1, 1, 1), (1, 1), out_hw)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    c, oy, ox = 2, 1, 3
    acc = np.float32(0)
    for ky in range(3):
        for kx in range(3):
            acc = np.float32(acc + np.float32(layer.weight[c, 0, ky, kx] * xp[c, 0, oy + ky, ox + kx]))
    assert got[c, 0, oy, ox] == np.float32(acc + layer.bias[c])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("case", CASES)
def test_every_backend_equals_the_reference_bit_for_bit(case, backend):
    """On one thread and on two (the groups, or the output planes, split across threads)."""
    if backend == "numba":
        pytest.importorskip("numba")
    from bnncli.runtime.context import Context

    x, layer, out_hw = _case(*case)
    pads = case[5]
    expected = group_conv_reference(x, layer.weight, layer.bias, layer.groups, layer.stride, pads, layer.dilation,
                                    out_hw)
    for threads in (1, 2):
        ctx = Context(threads=threads, backend=backend)
        assert ctx.kernels.name == backend
        try:
            got = ctx.kernels.group_conv(layer)(x, pads, out_hw)
        finally:
            ctx.kernels.close()
        assert got.dtype == np.float32 and np.array_equal(got, expected), threads


def _graph(weight, groups, padding="same", bias=None):
    tensors = {"g.weight": weight}
    params = {"weight": "g.weight"}
    if bias is not None:
        tensors["g.bias"] = bias
        params["bias"] = "g.bias"
    node = Node("GroupConv", "g", ["input"], ["logits"],
                {"stride": [2, 2], "padding": padding, "dilation": [1, 1], "groups": groups}, params)
    return Graph([node], tensors)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_runtime_op_pads_by_tensorflows_rule(backend):
    if backend == "numba":
        pytest.importorskip("numba")
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 6, 10, 10)).astype(np.float32)
    got = Model(_graph(w, 6), threads=1, backend=backend)(x)
    expected = F.conv2d(F.pad(torch.from_numpy(x), (0, 1, 0, 1)), torch.from_numpy(w), None, 2, 0, 1, 6).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_runtime_refuses_groups_that_do_not_divide_the_outputs():
    w = np.zeros((6, 1, 3, 3), np.float32)
    with pytest.raises(ArtifactError, match="6 output channels, not a multiple of its 4 groups"):
        Model(_graph(w, 4), threads=1)
    with pytest.raises(ArtifactError, match="attribute groups must be an integer >= 1"):
        Model(_graph(w, 0), threads=1)

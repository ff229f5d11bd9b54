"""Graph op Slice (MeliusNet's improvement blocks): a channel range, in every backend and ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnncli.deploy.lowering import lower
from bnncli.errors import ArtifactError
from bnncli.graph.graph import Graph, Node
from bnncli.models.common import BinaryOptions
from bnncli.models.meliusnet import ImprovementBlock
from bnncli.runtime import Model


def _graph(start, stop, axis=1):
    return Graph([Node("Slice", "s", ["input"], ["logits"], {"axis": axis, "start": start, "stop": stop})], {})


def test_slice_takes_a_channel_range_in_every_backend():
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 4)).astype(np.float32)
    for backend in ("numpy", "numba"):
        if backend == "numba":
            pytest.importorskip("numba")
        assert np.array_equal(Model(_graph(2, 5), threads=1, backend=backend)(x), x[:, 2:5])


def test_an_improvement_block_lowers_to_slices_and_runs_alike_everywhere():
    torch.manual_seed(0)
    block = ImprovementBlock(12, 4, BinaryOptions()).eval()
    x = torch.randn(2, 12, 6, 6)
    with torch.no_grad():
        expected = block(x).numpy()
    graph = lower(block)
    assert [n.op for n in graph.nodes].count("Slice") == 2
    graph.outputs = [graph.nodes[-1].outputs[0]]
    got = Model(graph, threads=1)(x.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # ONNX emission (opset Slice) runs in tests/test_opset.py's every-lowering model and in
    # tests/test_import.py's MeliusNet checks through onnxruntime.


def test_slice_refuses_an_empty_range_and_other_axes():
    x = np.zeros((1, 4, 2, 2), np.float32)
    with pytest.raises(ArtifactError, match="takes channels 3 to 2: none"):
        Model(_graph(3, 3), threads=1)
    with pytest.raises(ArtifactError, match="supports only axis 1"):
        Model(_graph(0, 2, axis=2), threads=1)
    with pytest.raises(ArtifactError, match="takes channels up to 5"):
        Model(_graph(0, 6), threads=1)(x)

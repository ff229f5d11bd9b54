"""`bnn export`: standard ONNX, exact binarization and padding, metadata, verification."""

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bnncli.artifacts.onnx_file import FORMAT, ort_session, read_metadata
from bnncli.cli.app import main
from bnncli.data.presets import preprocessing
from bnncli.deploy.export import export_onnx
from bnncli.deploy.lowering import lower
from bnncli.deploy.onnx_export import OPSET, to_onnx
from bnncli.errors import ArtifactError
from bnncli.nn import BinaryConv2d


def _binary_probe(pad_value: float, stride: int = 1, dilation: int = 1, channels: int = 5):
    """One binary conv and a Flatten: outputs are the exact integer sums, nothing hides a mistake."""
    torch.manual_seed(0)
    model = nn.Sequential(BinaryConv2d(channels, 3, 3, stride=stride, padding=dilation, dilation=dilation,
                                       pad_value=pad_value), nn.Flatten(1)).eval()
    with torch.no_grad():
        model[0].weight[0, :2] = 0.0  # sign(0) = +1 for weights
    return model


@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_binarization_and_padding_are_exact_in_onnx(pad_value, stride, dilation):
    model = _binary_probe(pad_value, stride, dilation)
    x = torch.randn(3, 5, 8, 8)
    x[0] = 0.0  # all exact zeros: every input binarizes to +1
    x[1, :, ::2] = 0.0
    expected = model(x).detach().numpy()
    meta = {"arch": "probe", "arch_kwargs": {}, "class_names": [str(i) for i in range(expected.shape[1])],
            "preprocessing": preprocessing("small", 8, in_channels=5)}
    session = ort_session(to_onnx(lower(model), meta))
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.array_equal(got, expected)
    # Zero binarizes as a positive number does (ONNX's own Sign would give 0 there).
    tiny = session.run(None, {"input": np.full((1, 5, 8, 8), 1e-30, np.float32)})[0]
    assert np.array_equal(got[0], tiny[0])


@pytest.mark.parametrize("name", ["binarydensenet_tiny", "resnete_tiny", "birealnet_tiny"])
def test_onnx_runs_in_the_onnx_reference_and_converts_with_onnx2torch(name):
    """The export needs no runtime-specific op: onnx's own reference evaluator and onnx2torch's
    converter (which knows GreaterOrEqual only at opset 12) give onnxruntime's result."""
    from onnx.reference import ReferenceEvaluator

    from bnncli import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=4, scaling="xnor" if name == "resnete_tiny" else "none").eval()
    meta = {"arch": name, "arch_kwargs": model.bnn_kwargs, "class_names": list("abcd"),
            "preprocessing": preprocessing("small", 16)}
    proto = to_onnx(lower(model), meta)
    x = torch.randn(2, 3, 16, 16)  # no exact ties: evaluators that sum in another order may round them apart
    expected = ort_session(proto).run(None, {"input": x.numpy()})[0]
    reference = ReferenceEvaluator(proto).run(None, {"input": x.numpy()})[0]
    assert np.allclose(reference, expected, rtol=1e-4, atol=1e-4)
    onnx2torch = pytest.importorskip("onnx2torch")
    with torch.no_grad():
        converted = onnx2torch.convert(proto).eval()(x).numpy()
    assert np.allclose(converted, expected, rtol=1e-4, atol=1e-4)
    assert np.array_equal(converted.argmax(1), expected.argmax(1))


def test_onnx_graph_is_standard_and_self_describing(tmp_path, tiny_checkpoint):
    path = tmp_path / "m.onnx"
    result = export_onnx(tiny_checkpoint, path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert result.opset == OPSET >= 17
    assert {o.domain for o in model.opset_import} == {""}  # the default domain only: no custom ops
    ops = {n.op_type for n in model.graph.node}
    assert {"Where", "Less", "Conv", "BatchNormalization", "Concat"} <= ops and "Sign" not in ops
    meta = read_metadata(model)
    assert meta["arch"] == "binarydensenet_tiny" and meta["class_names"] == ["a", "b", "c", "d"]
    assert meta["preprocessing"] == preprocessing("small", 32) and meta["format_version"] == 1
    props = {p.key: p.value for p in model.metadata_props}
    assert props["bnncli.format"] == FORMAT and json.loads(props["bnncli.arch_kwargs"])["num_classes"] == 4
    # Binary weights are stored as exact +-1.
    pm1 = [i for i in model.graph.initializer if i.name.endswith("weight_pm1")]
    assert pm1 and all(set(np.unique(onnx.numpy_helper.to_array(i))) <= {-1.0, 1.0} for i in pm1)
    # Dynamic batch.
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    session = ort_session(path)
    for n in (1, 5):
        assert session.run(None, {"input": np.zeros((n, 3, 32, 32), np.float32)})[0].shape == (n, 4)
    p = result.parity
    assert p.max_rel_diff <= 1e-3 and p.top1_agree == p.samples == 4


def test_export_fails_loudly_and_writes_nothing_on_disagreement(tmp_path, tiny_checkpoint, monkeypatch):
    import bnncli.deploy.export as export_module

    class Skewed:
        def __init__(self, session):
            self.session = session

        def run(self, names, feed):
            return [self.session.run(names, feed)[0] + 0.5]

    real = export_module.ort_session
    monkeypatch.setattr(export_module, "ort_session", lambda model, threads=None: Skewed(real(model, threads)))
    with pytest.raises(ArtifactError, match="disagrees with PyTorch: largest difference 0.5.*nothing written"):
        export_onnx(tiny_checkpoint, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_export_cli_prints_the_largest_difference(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(tiny_checkpoint), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "largest difference" in text and "top-1 equal on 4/4" in text
    assert main(["export", str(tiny_checkpoint), "-o", str(out), "--json", "--samples", "2", "--force"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["opset"] == OPSET and report["verification"]["samples"] == 2
    assert report["verification"]["max_rel_diff"] <= 1e-3


def test_a_foreign_onnx_model_is_refused(tmp_path):
    from onnx import TensorProto, helper

    from bnncli.artifacts.open import open_model

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ArtifactError, match="ONNX model without bnncli metadata"):
        open_model(path)


def test_unsupported_modules_are_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU())
    with pytest.raises(ArtifactError, match=r"cannot export module 1 \(GELU\); supported: Conv2d"):
        lower(model)

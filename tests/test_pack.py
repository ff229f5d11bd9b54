"""`bnn pack`: 1-bit sizes, float16 storage, verification, the CLI."""

import json

import numpy as np
import pytest
import torch
from conftest import write_checkpoint

from bnncli.artifacts.checkpoint import load_model
from bnncli.cli.app import main
from bnncli.deploy.pack import pack_model
from bnncli.errors import ArtifactError, UsageError
from bnncli.graph import format as fmt
from bnncli.runtime import load

# Trainable parameters with binary weights at 1 bit and the rest at 32 / 16 bits (zoo spec).
BDN28_FP32_BOUND = 4_241_312
BDN28_FP16_BOUND = 2_383_312


@pytest.fixture(scope="module")
def bdn28_checkpoint(tmp_path_factory):
    from bnncli.images.labels import imagenet_names

    return write_checkpoint(tmp_path_factory.mktemp("bdn28") / "bdn28.pt", "binarydensenet28",
                            class_names=tuple(imagenet_names()), image_size=224)


@pytest.mark.parametrize("float_dtype,limit,bound", [("float32", 4_300_000, BDN28_FP32_BOUND),
                                                     ("float16", 2_440_000, BDN28_FP16_BOUND)])
def test_binarydensenet28_fits_the_size_bound(tmp_path, bdn28_checkpoint, float_dtype, limit, bound):
    result = pack_model(bdn28_checkpoint, tmp_path / "m.bnn", float_dtype, samples=1)
    size = (tmp_path / "m.bnn").stat().st_size
    assert size == result.bytes <= limit
    assert result.binary_params == 4_202_496
    assert result.sizes["binary_weights"] == 4_202_496 // 8  # exactly 1 bit per binary weight
    if float_dtype == "float32":
        # Everything but the header is within the zoo's count of 1 bit + 32 bits per parameter:
        # folded BatchNorms take no more room than their gammas and betas.
        assert size - result.sizes["header"] <= bound
    else:
        # float16 keeps the per-channel vectors (thresholds, BatchNorm affines) in float32 and
        # everything else at 16 bits, the first convolution included: the model computes with
        # float16-valued weights (float_weights=float16), so nothing is rounded.
        assert result.lossless and result.rounded == []
        assert size - result.sizes["header"] - result.sizes["per_channel"] // 2 <= bound
    assert result.sizes["header"] < 20_000
    if float_dtype == "float32":
        assert result.parity.max_rel_diff <= 1e-3 and result.parity.top1_agree == 1


def test_float16_is_lossless_for_a_model_with_float16_valued_weights(tmp_path):
    """The default float_weights=float16: the float16 file stores exactly what the model computes with."""
    path = write_checkpoint(tmp_path / "t.pt", "resnete_tiny", seed=4)
    r32 = pack_model(path, tmp_path / "a.bnn", "float32")
    r16 = pack_model(path, tmp_path / "b.bnn", "float16")
    assert r16.bytes < r32.bytes and r16.lossless
    graph, meta = fmt.read_packed(tmp_path / "b.bnn")
    assert meta["float_dtype"] == "float16"
    stored = {(n.op, role, n.inputs[0] == "input"): graph.tensors[t].dtype
              for n in graph.nodes for role, t in n.params.items()}
    assert stored[("Conv", "weight", True)] == np.float16  # the first convolution too
    assert stored[("Conv", "weight", False)] == np.float16 and stored[("Linear", "weight", False)] == np.float16
    assert stored[("BinaryConv", "weight", False)] == np.uint32
    assert stored[("BinaryConv", "out_bias", False)] == np.float32
    # The stored float16 values are the model's own: the deployed weights of every float layer.
    model, _ = load_model(path)
    first = [t for n in graph.nodes if n.op == "Conv" and n.inputs[0] == "input" for r, t in n.params.items()
             if r == "weight"][0]
    assert np.array_equal(graph.tensors[first].astype(np.float32), model.stem[0].deployed(model.stem[0].weight)
                          .detach().numpy())
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    a, b = load(tmp_path / "a.bnn")(x), load(tmp_path / "b.bnn")(x)
    assert np.allclose(a, b, rtol=1e-5, atol=1e-5) and (a.argmax(1) == b.argmax(1)).all()
    assert r16.parity.max_rel_diff <= 1e-3


def test_float16_rounds_a_model_with_float32_weights_and_says_so(tmp_path, capsys):
    path = write_checkpoint(tmp_path / "t.pt", "resnete_tiny", seed=4, float_weights="float32")
    r16 = pack_model(path, tmp_path / "b.bnn", "float16")
    assert not r16.lossless and r16.rounded
    graph, _ = fmt.read_packed(tmp_path / "b.bnn")
    first = [n for n in graph.nodes if n.op == "Conv" and n.inputs[0] == "input"][0]
    assert graph.tensors[first.params["weight"]].dtype == np.float32  # the first conv is not rounded
    assert first.params["weight"] not in r16.rounded
    assert main(["pack", str(path), "-o", str(tmp_path / "c.bnn"), "--float-dtype", "float16"]) == 0
    assert "float16 rounded" in capsys.readouterr().out


def test_the_default_float_dtype_is_float16_exactly_when_it_is_lossless(tmp_path, capsys):
    """bnn pack's default (auto) stores float16 for a model trained with float16-valued weights (the
    default) and float32 for one trained with float32 weights, which float16 would round."""
    exact = write_checkpoint(tmp_path / "a.pt", "resnete_tiny", seed=4)
    rounded = write_checkpoint(tmp_path / "b.pt", "resnete_tiny", seed=4, float_weights="float32")
    for ckpt, want in ((exact, "float16"), (rounded, "float32")):
        assert main(["pack", str(ckpt), "-o", str(tmp_path / f"{ckpt.stem}.bnn"), "--samples", "1", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["float_dtype"] == want and report["lossless"]
        assert fmt.read_packed(tmp_path / f"{ckpt.stem}.bnn")[1]["float_dtype"] == want
    assert pack_model(exact, tmp_path / "c.bnn", "auto", samples=1).float_dtype == "float16"
    with pytest.raises(UsageError, match="float dtype must be one of float32, float16, auto"):
        pack_model(exact, tmp_path / "d.bnn", "float64")


def test_float16_overflow_is_refused(tmp_path):
    from bnncli.artifacts.checkpoint import load_checkpoint, save_checkpoint

    path = write_checkpoint(tmp_path / "big.pt", "resnete_tiny", float_weights="float32")
    ckpt = load_checkpoint(path)
    ckpt["model"]["fc.weight"][0, 0] = 1e6
    save_checkpoint(path, ckpt)
    with pytest.raises(ArtifactError, match="exceeds the float16 range"):
        pack_model(path, tmp_path / "big.bnn", "float16")


def test_pack_fails_loudly_and_writes_nothing_when_the_runtime_disagrees(tmp_path, tiny_checkpoint, monkeypatch):
    from bnncli.runtime.model import Model

    original = Model.__call__
    monkeypatch.setattr(Model, "__call__", lambda self, x: original(self, x) * 1.01)
    with pytest.raises(ArtifactError, match="disagrees with PyTorch.*nothing written"):
        pack_model(tiny_checkpoint, tmp_path / "x.bnn")
    assert not (tmp_path / "x.bnn").exists()


def test_pack_cli(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "cli.bnn"
    assert main(["pack", str(tiny_checkpoint), "-o", str(out), "--float-dtype", "float16", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and report["bytes"] == out.stat().st_size
    assert report["float_dtype"] == "float16" and report["verification"]["samples"] == 4
    assert main(["pack", str(tiny_checkpoint), "-o", str(tmp_path / "b.bnn")]) == 0
    text = capsys.readouterr().out
    assert "binary weights at 1 bit" in text and "largest difference" in text
    assert main(["pack", str(tiny_checkpoint), "--float-dtype", "bfloat16"]) == 2
    assert "--float-dtype must be float32, float16 or auto" in capsys.readouterr().err


def test_pack_refuses_a_missing_or_foreign_checkpoint(tmp_path, capsys):
    assert main(["pack", str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "x.pt").write_bytes(b"garbage")
    assert main(["pack", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "x.pt is a text file; bnn pack needs a checkpoint" in err and len(err.strip().splitlines()) == 1


def test_packing_keeps_torch_out_of_the_numbers():
    # The checkpoint's binary weights are exactly the packed bits (sign(0) = +1 included).
    from bnncli.deploy.lowering import pack_binary_weight
    from bnncli.graph import bits as B

    w = torch.randn(5, 37, 3, 3)
    w[0, :4] = 0.0
    words = pack_binary_weight(w)
    assert words.dtype == np.uint32 and words.shape == (5, 3, 3, 2)
    assert np.array_equal(B.unpack_bits(words, 37), (w >= 0).numpy().transpose(0, 2, 3, 1))

"""Any model built from bnncli's layers: checkpointed with its architecture as data, reloaded
without its class, exported and packed (bnncli.artifacts.architecture); one message otherwise."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import bnncli
from bnncli.artifacts import architecture
from bnncli.artifacts.checkpoint import load_checkpoint, model_checkpoint, save_checkpoint
from bnncli.cli.app import main
from bnncli.errors import ArtifactError
from bnncli.models import _registry
from bnncli.nn import BinaryConv2d, FloatConv2d, FloatLinear, MaxPool2d

PRE = bnncli.preprocessing("small", 16)


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.conv = BinaryConv2d(c, c, 3, padding=1, pad_value=-1.0, scaling="xnor")

    def forward(self, x):
        return x + self.conv(self.bn(x))


class OwnNet(nn.Module):
    """Residual adds, concatenation, functions and methods, bnncli's float layers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = FloatConv2d(3, 8, 3, padding=1)
        self.pool = MaxPool2d(3, 2, 1)
        self.res = Residual(8)
        self.side = nn.Conv2d(8, 8, 1)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.1)
        self.fc = FloatLinear(16, 3)

    def forward(self, x):
        x = self.pool(torch.relu(self.stem(x)))
        x = torch.cat([self.res(x), self.side(x).relu()], dim=1)
        return self.fc(self.drop(self.avg(x).flatten(1)))


def _trained(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    model.train()
    for _ in range(2):  # BatchNorm statistics away from their initial values
        model(torch.randn(4, 3, 16, 16))
    return model.eval()


def test_an_own_model_reloads_without_its_class_and_packs(tmp_path, capsys):
    model = _trained(OwnNet())
    model.stem.float_weights = "float16"
    path = bnncli.save(model, tmp_path / "own.pt", class_names=["a", "b", "c"], preprocessing=PRE)
    ckpt = load_checkpoint(path)
    assert ckpt["format_version"] == 2 and ckpt["arch"] == "OwnNet" and ckpt["arch_kwargs"] == {}
    assert ckpt["architecture"]["modules"]["res.conv"]["args"]["pad_value"] == -1.0
    again = bnncli.load(path)
    assert type(again).__name__ == "OwnNet" and not again.training
    assert again.stem.float_weights == "float16" and isinstance(again.res.conv, BinaryConv2d)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    # the CLI takes it like any checkpoint: pack (verified), then predict on the packed file
    assert main(["pack", str(path), "-o", str(tmp_path / "own.bnn"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verification"]["top1_agreement"] == 1.0
    assert main(["export", str(path), "-o", str(tmp_path / "own.onnx")]) == 0
    # and it trains on: the rebuilt model has gradients and saves again
    again.train()
    again(x).sum().backward()
    assert again.res.conv.weight.grad is not None
    assert load_checkpoint(bnncli.save(again, tmp_path / "again.pt", class_names=["a", "b", "c"],
                                       preprocessing=PRE))["architecture"]["modules"].keys() == \
        ckpt["architecture"]["modules"].keys()


class WithSign(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(self.conv(x)).mean((2, 3))


class WithParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.conv(x).flatten(1) * self.scale


def test_what_cannot_be_recorded_gets_one_message_naming_it(tmp_path):
    with pytest.raises(ArtifactError, match=r"module 'act' is torch\.nn\.modules\.activation\.Tanh.*supported: "
                                            r"BinaryConv2d"):
        bnncli.save(WithSign(), tmp_path / "x.pt", class_names=["a"] * 4, preprocessing=PRE)
    with pytest.raises(ArtifactError, match="reads scale directly"):
        model_checkpoint(WithParameter(), ["a"] * 4, PRE)
    assert not (tmp_path / "x.pt").exists()


def test_a_record_naming_anything_else_is_refused(tmp_path):
    ckpt = model_checkpoint(_trained(OwnNet()), ["a", "b", "c"], PRE)
    rec = ckpt["architecture"]
    bad_type = json.loads(json.dumps(rec))
    bad_type["modules"]["side"]["type"] = "os.system"
    bad_function = json.loads(json.dumps(rec))
    next(n for n in bad_function["nodes"] if n["op"] == "call_function")["target"] = "builtins.eval"
    bad_args = json.loads(json.dumps(rec))
    bad_args["modules"]["side"]["args"]["evil"] = 1
    for record, message in ((bad_type, "type 'os.system', which bnncli does not rebuild"),
                            (bad_function, "calls 'builtins.eval'"),
                            (bad_args, "must give exactly the arguments")):
        save_checkpoint(tmp_path / "bad.pt", {**ckpt, "architecture": record})
        with pytest.raises(ArtifactError, match=message):
            bnncli.load(tmp_path / "bad.pt")
    assert set(architecture.MODULES) >= {"BinaryConv2d", "nn.Conv2d", "nn.BatchNorm2d", "nn.Linear"}


def test_a_model_registered_elsewhere_reloads_where_it_is_not(tmp_path, capsys, monkeypatch):
    @bnncli.register_model("mine")
    def my_registered_bnn(*, num_classes: int = 3, in_channels: int = 3) -> nn.Module:
        return nn.Sequential(BinaryConv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    try:
        model = _trained(bnncli.create_model("my_registered_bnn"))
        path = bnncli.save(model, tmp_path / "mine.pt", class_names=["a", "b", "c"], preprocessing=PRE)
        ckpt = load_checkpoint(path)
        assert ckpt["arch"] == "my_registered_bnn" and "architecture" in ckpt
    finally:  # a later process: the factory is not registered there
        del _registry._FACTORIES["my_registered_bnn"]
        del _registry._FAMILIES["my_registered_bnn"]
    assert main(["pack", str(path), "-o", str(tmp_path / "mine.bnn")]) == 0
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(bnncli.load(path)(x), model(x))
    # a registry checkpoint without a record names what is missing
    del ckpt["architecture"]
    save_checkpoint(tmp_path / "bare.pt", {**ckpt, "format_version": 1})
    with pytest.raises(ArtifactError, match="unknown model 'my_registered_bnn'.*register_model"):
        bnncli.load(tmp_path / "bare.pt")


def test_deploy_names_are_the_functions_even_after_their_modules_load():
    import bnncli.deploy.lowering  # noqa: F401  (the modules are loaded first)
    import bnncli.deploy.verification  # noqa: F401
    from bnncli.deploy import lower, verify

    assert callable(lower) and lower.__name__ == "lower" and verify.__name__ == "verify"

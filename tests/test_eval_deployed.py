"""`bnn eval` measures ONNX and packed models like checkpoints, on the same images."""

import json

import pytest
from conftest import FOLDER_CLASSES, write_checkpoint

from bnncli.cli.app import main


@pytest.fixture(scope="module")
def three_kinds(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalkinds")
    ckpt = write_checkpoint(d / "model.pt", arch="resnete_tiny", class_names=FOLDER_CLASSES, image_size=24)
    assert main(["export", str(ckpt), "-o", str(d / "model.onnx")]) == 0
    assert main(["pack", str(ckpt), "-o", str(d / "model.bnn")]) == 0
    # Names that say nothing: eval tells the kinds apart by content.
    (d / "model.onnx").rename(d / "a")
    (d / "model.bnn").rename(d / "b")
    return {"checkpoint": ckpt, "onnx": d / "a", "packed": d / "b"}


def test_eval_agrees_across_checkpoint_onnx_and_packed(three_kinds, image_folder, capsys):
    results = {}
    for kind, path in three_kinds.items():
        capsys.readouterr()
        assert main(["eval", str(path), "--data", str(image_folder / "val"), "--json"]) == 0
        results[kind] = json.loads(capsys.readouterr().out)
    ref = results["checkpoint"]
    assert ref["images"] == 12
    for kind in ("onnx", "packed"):
        r = results[kind]
        assert (r["top1"], r["top5"], r["images"], r["per_class"]) == (
            ref["top1"], ref["top5"], ref["images"], ref["per_class"]), kind
        assert r["loss"] == pytest.approx(ref["loss"], rel=1e-4)


def test_min_top1_gate_on_a_packed_model(three_kinds, image_folder, capsys):
    args = ["eval", str(three_kinds["packed"]), "--data", str(image_folder / "val")]
    assert main([*args, "--json"]) == 0
    top1 = json.loads(capsys.readouterr().out)["top1"]
    assert top1 < 1.0  # a random model
    capsys.readouterr()
    assert main([*args, "--min-top1", str(top1)]) == 0
    assert f"gate passed: top-1 {top1:.4f} >= --min-top1 {top1:g}" in capsys.readouterr().err
    assert main([*args, "--min-top1", str(min(1.0, top1 + 0.05))]) == 1


def test_a_foreign_file_is_refused(tmp_path, image_folder, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 definitely not a model")
    assert main(["eval", str(junk), "--data", str(image_folder / "val")]) == 2

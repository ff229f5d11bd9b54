"""`bnn predict` end to end: every model kind, every image format, bad files, default model."""

import json
import os
from pathlib import Path

import pytest
from conftest import FOLDER_CLASSES, write_checkpoint

from bnncli.cli.app import main
from bnncli.deploy.export import export_onnx
from bnncli.deploy.pack import pack_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same network as checkpoint, ONNX and packed file, with misleading names."""
    root = tmp_path_factory.mktemp("predict")
    ckpt = write_checkpoint(root / "model.pt", "binarydensenet_tiny", class_names=FOLDER_CLASSES, image_size=24,
                            seed=5)
    export_onnx(ckpt, root / "model.onnx", samples=1)
    pack_model(ckpt, root / "model.bnn", samples=1)
    (root / "packed.onnx").write_bytes((root / "model.bnn").read_bytes())
    return {"checkpoint": ckpt, "onnx": root / "model.onnx", "packed": root / "packed.onnx"}


def _val_images(image_folder: Path) -> list[str]:
    return sorted(str(p) for p in (image_folder / "val").rglob("*") if p.is_file())


def _predict_json(capsys, *args) -> tuple[int, list, str]:
    code = main(["predict", *map(str, args), "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_every_model_kind_gives_the_same_top1_on_a_held_out_folder(models, image_folder, capsys):
    images = _val_images(image_folder)
    assert len(images) == 12 and {Path(p).suffix for p in images} >= {".png", ".jpg", ".jpeg"}
    top1 = {}
    for kind, path in models.items():
        code, results, _ = _predict_json(capsys, *images, "--model", path, "--top-k", "3", "--batch-size", "5")
        assert code == 0
        assert [r["path"] for r in results] == images
        for r in results:
            probs = [t["probability"] for t in r["top_k"]]
            assert len(r["top_k"]) == 3 and probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5
            assert {t["label"] for t in r["top_k"]} == set(FOLDER_CLASSES)
            assert all(FOLDER_CLASSES[t["index"]] == t["label"] for t in r["top_k"])
        top1[kind] = [r["top_k"][0]["index"] for r in results]
    assert top1["checkpoint"] == top1["onnx"] == top1["packed"]


def test_a_bad_image_gets_one_line_and_the_others_are_predicted(models, image_folder, tmp_path, capsys):
    good = _val_images(image_folder)[:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    missing = tmp_path / "missing.png"
    code, results, err = _predict_json(capsys, good[0], broken, good[1], missing, "--model", models["packed"],
                                       "-k", "1")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "broken.jpg" in lines[0] and "missing.png" in lines[1]
    assert "Traceback" not in err
    assert [r["path"] for r in results] == [good[0], str(broken), good[1], str(missing)]
    assert "error" in results[1] and "error" in results[3]
    assert len(results[0]["top_k"]) == len(results[2]["top_k"]) == 1


def test_table_output_and_top_k_larger_than_the_classes(models, image_folder, capsys):
    images = _val_images(image_folder)[:2]
    assert main(["predict", *images, "--model", str(models["onnx"]), "--top-k", "10"]) == 0
    captured = capsys.readouterr()
    assert "top-3" in captured.out and all(name in captured.out for name in FOLDER_CLASSES)
    assert "onnx model" in captured.err


def test_no_model_anywhere_says_how_to_get_one(tmp_path, monkeypatch, capsys, image_folder):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BNN_MODEL", raising=False)
    assert main(["predict", _val_images(image_folder)[0]]) == 2
    err = capsys.readouterr().err
    assert "no model given" in err and "--model" in err and "BNN_MODEL" in err and "bnn train" in err
    assert len(err.strip().splitlines()) == 1


def test_default_model_is_bnn_model_else_the_newest_run(tmp_path, monkeypatch, capsys, models, image_folder):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BNN_MODEL", raising=False)
    image = _val_images(image_folder)[0]
    old, new = tmp_path / "runs" / "old", tmp_path / "runs" / "new"
    old.mkdir(parents=True)
    (old / "best.pt").write_bytes(models["checkpoint"].read_bytes())
    new.mkdir()
    (new / "last.pt").write_bytes(models["checkpoint"].read_bytes())
    (new / "metrics.jsonl").write_text("{}\n")
    os.utime(old, (1, 1))
    assert main(["predict", image]) == 0
    assert "checkpoint model runs/new/last.pt" in capsys.readouterr().err
    (new / "best.pt").write_bytes(models["checkpoint"].read_bytes())
    os.utime(new, (2**31, 2**31))
    assert main(["predict", image]) == 0
    assert "runs/new/best.pt" in capsys.readouterr().err
    monkeypatch.setenv("BNN_MODEL", str(models["packed"]))
    assert main(["predict", image]) == 0
    assert "packed model" in capsys.readouterr().err
    assert main(["predict", image, "--model", str(old)]) == 0  # a run directory: its best.pt
    assert "runs/old/best.pt" in capsys.readouterr().err


def test_imagenet_synsets_are_shown_as_names(tmp_path, image_folder, capsys):
    from bnncli.images.labels import imagenet_names

    synsets = ("n01440764", "n02102040", "n02979186")
    ckpt = write_checkpoint(tmp_path / "syn.pt", "resnete_tiny", class_names=synsets, image_size=24)
    code, results, _ = _predict_json(capsys, _val_images(image_folder)[0], "--model", ckpt, "-k", "3")
    assert code == 0
    top = results[0]["top_k"]
    assert {t["label"] for t in top} == {imagenet_names()[s] for s in synsets} == {
        "tench", "English springer", "cassette player"}
    assert {t["class_name"] for t in top} == set(synsets)


def test_a_model_that_is_not_one_is_refused(tmp_path, image_folder, capsys):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("definitely not a model")
    assert main(["predict", _val_images(image_folder)[0], "--model", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert "not a bnncli checkpoint, ONNX model or packed model" in err and len(err.strip().splitlines()) == 1


def test_a_model_of_the_builtin_toy_data_says_so(tmp_path, capsys, models, image_folder):
    import bnncli
    from bnncli.data.builtin import SHAPE_CLASSES

    ckpt = write_checkpoint(tmp_path / "shapes.pt", "binarydensenet_tiny", class_names=SHAPE_CLASSES)
    images = bnncli.sample_images(tmp_path / "samples", count=2)
    assert [p.name for p in images] == ["0-circle.png", "1-ring.png"]
    assert main(["predict", *map(str, images), "--model", str(ckpt)]) == 0
    err = capsys.readouterr().err
    assert "trained on builtin:shapes, synthetic images of 10 shapes" in err
    # a model of other classes gets no such note
    assert main(["predict", _val_images(image_folder)[0], "--model", str(models["checkpoint"])]) == 0
    assert "synthetic" not in capsys.readouterr().err

"""`bnn eval` and the evaluation engine: metrics of any callable, anchors for ImageNet models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FOLDER_CLASSES

from bnncli.artifacts.checkpoint import model_checkpoint, save_checkpoint
from bnncli.artifacts.rundir import resolve_model_path as resolve_checkpoint
from bnncli.cli.app import main
from bnncli.data.builtin import SHAPE_CLASSES
from bnncli.data.presets import preprocessing
from bnncli.engine.evaluate import evaluate, load_eval_model
from bnncli.errors import ArtifactError
from bnncli.models import create_model

CLASSES = ["a", "b", "c", "d", "e", "f"]


def batches():
    """Two batches of labelled 'images'; the image tensor carries the logits the fake model returns."""
    logits = torch.tensor([
        [9.0, 1, 2, 3, 4, 5],   # label 0: top-1 hit
        [2.0, 1, 9, 3, 4, 5],   # label 1: rank 6 of 6, top-5 miss
        [1.0, 2, 9, 3, 4, 5],   # label 2: top-1 hit
        [5.0, 4, 3, 9, 2, 1],   # label 4: top-5 hit only
    ])
    labels = torch.tensor([0, 1, 2, 4])
    yield logits[:2], labels[:2], []
    yield None, None, ["unreadable.jpg"]
    yield logits[2:], labels[2:], []


def test_metrics_of_a_plain_callable():
    res = evaluate(lambda x: x, batches(), CLASSES)
    assert res["top1"] == 0.5 and res["top5"] == 0.75 and res["images"] == 4 and res["skipped"] == 1
    expect_loss = torch.nn.functional.cross_entropy(
        torch.cat([b[0] for b in batches() if b[0] is not None]), torch.tensor([0, 1, 2, 4])).item()
    assert res["loss"] == pytest.approx(expect_loss)
    assert res["per_class"] == {"a": {"images": 1, "top1": 1.0}, "b": {"images": 1, "top1": 0.0},
                                "c": {"images": 1, "top1": 1.0}, "e": {"images": 1, "top1": 0.0}}
    assert res["images_per_s"] > 0


def test_numpy_logits_and_bad_shapes():
    res = evaluate(lambda x: x.numpy().astype(np.float64), batches(), CLASSES)
    assert res["top1"] == 0.5
    with pytest.raises(ArtifactError, match="logits of shape"):
        evaluate(lambda x: x[:, :3], batches(), CLASSES)


def test_run_directory_resolves_to_best(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path) == tmp_path / "last.pt"
    (tmp_path / "best.pt").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path) == tmp_path / "best.pt"


@pytest.fixture(scope="module")
def imagenet_checkpoint(tmp_path_factory):
    """An untrained binarydensenet28 with a 1000-class head whose first classes are the folder's."""
    torch.manual_seed(0)
    model = create_model("binarydensenet28", thumbnail=True)
    names = list(FOLDER_CLASSES) + [f"class{i:03d}" for i in range(3, 1000)]
    path = tmp_path_factory.mktemp("ckpt") / "bdn28.pt"
    save_checkpoint(path, model_checkpoint(model, names, preprocessing("small", 16)))
    return path


def test_imagenet_architecture_shows_the_published_numbers(imagenet_checkpoint, image_folder, capsys):
    code = main(["eval", str(imagenet_checkpoint), "--data", str(image_folder), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["images"] == 12 and res["arch"] == "binarydensenet28"
    assert res["published"]["paper"]["top1"] == pytest.approx(0.607)
    assert res["published"]["larq_zoo"] == {"top1": pytest.approx(0.6091), "top5": pytest.approx(0.8283)}
    assert main(["eval", str(imagenet_checkpoint), "--data", str(image_folder)]) == 0
    table = capsys.readouterr().out
    assert "published (larq zoo, ImageNet)" in table and "60.91%" in table and "this model" in table


def test_eval_model_loader_gives_a_callable(imagenet_checkpoint):
    em = load_eval_model(imagenet_checkpoint)
    assert em.kind == "checkpoint" and len(em.class_names) == 1000 and em.preprocessing["image_size"] == 16
    logits = em.predict(torch.zeros(2, 3, 16, 16))
    assert logits.shape == (2, 1000)


def test_eval_on_the_builtin_dataset(tmp_path, capsys):
    model = create_model("binarydensenet_tiny")
    save_checkpoint(tmp_path / "best.pt", model_checkpoint(model, list(SHAPE_CLASSES), preprocessing("small", 32)))
    assert main(["eval", str(tmp_path), "--data", "builtin:shapes-mini", "--json", "--batch-size", "16"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["images"] == 40 and set(res["per_class"]) == set(SHAPE_CLASSES)
    assert {"top1", "top5", "loss", "images", "images_per_s", "per_class"} <= set(res)


def test_a_model_for_other_classes_is_refused(imagenet_checkpoint, capsys):
    assert main(["eval", str(imagenet_checkpoint), "--data", "builtin:shapes-mini"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classes are not those of builtin:shapes-mini" in err[0]


def test_confusion_matrix_counts_every_prediction(tmp_path, capsys):
    """--confusion (friction item 14): rows are true classes, columns top-1 predictions."""
    res = evaluate(lambda x: x, batches(), CLASSES, confusion=True)
    counts = res["confusion"]["counts"]
    assert res["confusion"]["classes"] == CLASSES and len(counts) == 6 and all(len(r) == 6 for r in counts)
    assert {(i, j): c for i, row in enumerate(counts) for j, c in enumerate(row) if c} == \
        {(0, 0): 1, (1, 2): 1, (2, 2): 1, (4, 3): 1}
    assert "confusion" not in evaluate(lambda x: x, batches(), CLASSES)
    model = create_model("binarydensenet_tiny", num_classes=10)
    save_checkpoint(tmp_path / "best.pt", model_checkpoint(model, list(SHAPE_CLASSES), preprocessing("small", 32)))
    assert main(["eval", str(tmp_path), "--data", "builtin:shapes-mini", "--confusion", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    counts = r["confusion"]["counts"]
    assert sum(map(sum, counts)) == r["images"] == 40
    assert sum(counts[i][i] for i in range(10)) == round(r["top1"] * 40)
    assert main(["eval", str(tmp_path), "--data", "builtin:shapes-mini", "--confusion"]) == 0
    shown = capsys.readouterr().out
    assert "confusion (rows: true class, columns: predicted)" in shown and "0 circle" in shown

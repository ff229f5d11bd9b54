"""The model-file layer: the run-directory rule, the model description, the one verification."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from conftest import write_checkpoint

from bnncli.artifacts import find_default_model, open_model, resolve_model_path
from bnncli.artifacts.onnx_file import metadata_props, read_metadata
from bnncli.deploy.verification import TOLERANCE, VerificationError, compare, sample_inputs, verify
from bnncli.errors import ArtifactError
from bnncli.fileio import write_text
from bnncli.graph.format import PREAMBLE_SIZE, header_size
from bnncli.metadata import MODEL_KEYS, check_model_meta, model_meta

PRE = {"preset": "small", "image_size": 8, "resize": 8, "mean": [0.5], "std": [0.25], "channels": 1,
       "interpolation": "bilinear"}
META = {"arch": "resnete_tiny", "arch_kwargs": {"num_classes": 2}, "class_names": ["a", "b"], "preprocessing": PRE}


def test_a_run_directory_stands_for_best_then_last(tmp_path):
    with pytest.raises(ArtifactError, match="holds no checkpoint"):
        resolve_model_path(tmp_path)
    with pytest.raises(ArtifactError, match="checkpoint not found"):
        resolve_model_path(tmp_path / "nope.pt", what="checkpoint")
    (tmp_path / "last.pt").write_bytes(b"x")
    assert resolve_model_path(tmp_path) == tmp_path / "last.pt"
    (tmp_path / "best.pt").write_bytes(b"x")
    assert resolve_model_path(tmp_path) == tmp_path / "best.pt"
    assert resolve_model_path(tmp_path / "last.pt") == tmp_path / "last.pt"


def test_the_default_model_is_the_newest_runs(tmp_path):
    assert find_default_model(tmp_path / "runs") is None
    old, new = tmp_path / "runs" / "old", tmp_path / "runs" / "new"
    for run in (old, new):
        run.mkdir(parents=True)
    (old / "best.pt").write_bytes(b"x")
    (new / "epoch3.pt").write_bytes(b"x")
    past = time.time() - 100
    os.utime(old, (past, past))
    assert find_default_model(tmp_path / "runs") == new / "epoch3.pt"  # no best/last: its newest *.pt
    (new / "last.pt").write_bytes(b"x")
    assert find_default_model(tmp_path / "runs") == new / "last.pt"


def test_open_model_follows_the_rule_for_checkpoints(tmp_path):
    write_checkpoint(tmp_path / "last.pt")
    predictor = open_model(tmp_path)
    assert predictor.kind == "checkpoint" and predictor.path == tmp_path / "last.pt"
    assert set(MODEL_KEYS) <= set(predictor.meta)


def test_model_description_is_checked_with_one_message_each():
    assert check_model_meta({**META, "extra": 1}) == META
    assert model_meta({**META, "model": {}}) == META
    for broken, message in [
        ({k: v for k, v in META.items() if k != "arch_kwargs"}, "model lacks arch_kwargs"),
        ({**META, "arch": ""}, "model arch must be a name"),
        ({**META, "class_names": []}, "class_names must be a non-empty list"),
        ({**META, "preprocessing": {**PRE, "std": [0.0]}}, "preprocessing std must be positive"),
        ({**META, "preprocessing": {**PRE, "mean": [0.5, 0.5]}}, "preprocessing mean must be 1 numbers"),
    ]:
        with pytest.raises(ArtifactError, match=message):
            check_model_meta(broken)


def test_onnx_metadata_round_trips_and_is_validated():
    import onnx
    from onnx import helper

    model = helper.make_model(helper.make_graph([], "g", [], []))
    helper.set_model_props(model, metadata_props(META))
    assert {k: v for k, v in read_metadata(model).items() if k != "format_version"} == META
    props = {p.key: p.value for p in model.metadata_props}
    props["bnncli.class_names"] = json.dumps([1, 2])
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    del bad.metadata_props[:]
    helper.set_model_props(bad, props)
    with pytest.raises(ArtifactError, match="x.onnx: class_names must be a non-empty list of strings"):
        read_metadata(bad, "x.onnx")


def test_packed_header_size_is_read_from_the_preamble():
    from bnncli.graph.format import encode
    from bnncli.graph.graph import Graph, Node

    graph = Graph([Node("Relu", "r", ["input"], ["logits"])], {})
    data = encode(graph, {**META, "float_dtype": "float32"})
    assert PREAMBLE_SIZE < header_size(data) == len(data)  # no tensors: nothing after the header
    with pytest.raises(ArtifactError, match="not a bnncli packed model"):
        header_size(b"PK\x03\x04" + data[4:])


def test_verification_says_what_disagreed_and_by_how_much():
    x_pre = {**PRE, "channels": 2}
    assert sample_inputs(x_pre, 3).shape == (3, 2, 8, 8) and not sample_inputs(x_pre, 3)[-1].any()

    def reference(x):
        return np.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3))], axis=1)

    same = verify(reference, reference, x_pre, what="the copy")
    assert same.within() and same.max_abs_diff == 0 and same.samples == 4
    with pytest.raises(VerificationError, match=r"the skewed copy disagrees with PyTorch: largest difference 0\.5"):
        verify(reference, lambda x: reference(x) + 0.5, x_pre, what="the skewed copy")
    loose = verify(reference, lambda x: reference(x) * (1 + 10 * TOLERANCE), x_pre, what="a rounded copy",
                   enforce=False)
    assert not loose.within() and loose.max_rel_diff == pytest.approx(10 * TOLERANCE, rel=1e-3)
    flipped = compare(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert flipped.top1_agree == 0 and not flipped.within(tolerance=10.0)


def test_the_one_atomic_writer_leaves_no_temp_file(tmp_path):
    path = write_text(tmp_path / "sub" / "metrics.jsonl", "{}\n")
    assert path.read_text() == "{}\n" and [p.name for p in path.parent.iterdir()] == ["metrics.jsonl"]

"""CPU threads (bnncli.threads): one default and one --threads for every pool a command uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bnncli import threads as T
from bnncli.cli.app import main
from bnncli.nn.threads import use_torch_threads


@pytest.fixture
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_default_is_the_affinity_set(monkeypatch):
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity sets on this OS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert T.available_cpus() == 1 and T.resolve(None) == 1 and T.resolve(4) == 4
    from bnncli.runtime.ops import Context

    assert Context(None, "numpy").threads == 1


def test_torch_threads_follow_the_option_and_respect_omp_num_threads(monkeypatch, keep_torch_threads):
    assert use_torch_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(T, "available_cpus", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert use_torch_threads(None) == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's choice for several processes wins over the default
    torch.set_num_threads(1)
    assert use_torch_threads(None) == 1 and torch.get_num_threads() == 1


def test_idle_openmp_threads_sleep_unless_the_environment_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    T.prefer_sleeping_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    T.prefer_sleeping_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_bnn_command_sets_the_wait_policy_before_torch_loads(tmp_path):
    code = ("import os, sys; from bnncli.cli.app import main; rc = main(['models', 'resnete_tiny', '--json']); "
            "import torch; sys.stderr.write(os.environ.get('OMP_WAIT_POLICY', '-'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and res.stderr.endswith("PASSIVE"), res.stderr


def test_train_eval_export_and_pack_take_threads(image_folder, tmp_path, capsys, keep_torch_threads, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--arch", "binarydensenet_tiny", "--data", str(image_folder), "--epochs", "1",
                 "--batch-size", "8", "--image-size", "16", "--workers", "0", "--threads", "1", "--out", str(run),
                 "--json"]) == 0
    assert torch.get_num_threads() == 1
    assert json.loads((run / "config.json").read_text())["config"]["threads"] == 1
    capsys.readouterr()
    torch.set_num_threads(2)
    assert main(["eval", str(run), "--data", str(image_folder), "--threads", "1", "--json"]) == 0
    assert torch.get_num_threads() == 1
    from bnncli.artifacts import onnx_file

    seen = []
    real = onnx_file.ort_session
    monkeypatch.setattr("bnncli.deploy.export.ort_session", lambda m, t=None: seen.append(t) or real(m, t))
    assert main(["export", str(run), "-o", str(tmp_path / "m.onnx"), "--threads", "1"]) == 0
    assert seen == [1]
    assert main(["pack", str(run), "-o", str(tmp_path / "m.bnn"), "--threads", "1", "--json"]) == 0
    capsys.readouterr()
    assert main(["train", "--arch", "binarydensenet_tiny", "--data", str(image_folder), "--threads", "0"]) == 2


def test_predict_and_open_model_set_torch_threads_for_checkpoints(tiny_checkpoint, image_folder, capsys,
                                                                  keep_torch_threads):
    """One inference seam (bnncli.artifacts.open_model) applies --threads to every kind, checkpoints included."""
    import bnncli

    image = next(p for p in sorted(image_folder.rglob("*.png")) if p.is_file())
    torch.set_num_threads(2)
    assert main(["predict", str(image), "--model", str(tiny_checkpoint), "--threads", "1", "--json"]) == 0
    assert torch.get_num_threads() == 1
    assert json.loads(capsys.readouterr().out)[0]["model"] == str(tiny_checkpoint)
    torch.set_num_threads(2)
    predictor = bnncli.open_model(tiny_checkpoint, threads=1)
    assert torch.get_num_threads() == 1 and predictor.kind == "checkpoint"

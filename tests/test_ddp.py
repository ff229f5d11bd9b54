"""Two CPU processes under torchrun (gloo): identical weights on both ranks, one set of files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bnncli.artifacts.checkpoint import load_model
from bnncli.engine.rng import weights_digest


def test_torchrun_two_processes_on_cpu(image_folder, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bnncli", "train", "-a", "binarydensenet_tiny", "-d", str(image_folder), "--image-size", "16",
           "-b", "8", "--epochs", "2", "--seed", "3", "--device", "cpu", "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # timeout: a guard against a hang (two processes training), not a time limit for a busy machine
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]

    # Rank 0 alone reports and writes: one start line, one set of files, nothing else anywhere.
    assert res.stderr.count("training binarydensenet_tiny") == 1 and "2 processes on cpu" in res.stderr
    assert res.stderr.count("epoch 2/2  train loss") == 1  # the epoch's summary line (stderr is a log here)
    assert res.stderr.count("epoch 2/2  validating") == 1
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "curves.png", "last.pt",
                                                     "metrics.jsonl"]
    assert not (tmp_path / "runs").exists()

    # Each rank hashed its own final weights and BatchNorm statistics; all equal the saved ones.
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in history] == [1, 2]
    model, ckpt = load_model(run / "last.pt")
    digests = history[-1]["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] == weights_digest(model)
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 2
    # Both shards together cover the data once per epoch (the broken file counted once).
    assert all(m["images"] + m["skipped"] >= 31 and m["skipped"] >= 1 and m["val_images"] == 12 for m in history)

"""One output rule for every command (artifacts.rundir.check_command_output): no command but
`bnn train` writes a run directory's files or its lock, not even with --force; and the temp
files a killed write leaves are removed by the next write of the same name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import write_checkpoint

from bnncli import fileio
from bnncli.artifacts.rundir import LOCK_FILE, RunLock, check_output_dir
from bnncli.cli.app import main
from bnncli.errors import UsageError


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, needle: str, *args) -> str:
    code, out, err = bnn(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and needle in lines[0], err
    return lines[0]


def fake_run(folder: Path, seed: int = 0, top1: float = 0.5) -> Path:
    """A run directory as bnn train leaves it (a real checkpoint, config and metrics)."""
    write_checkpoint(folder / "last.pt", seed=seed)
    shutil.copy(folder / "last.pt", folder / "best.pt")
    config = {"config": {"arch": "binarydensenet_tiny", "seed": seed, "lr": 0.01},
              "arch": "binarydensenet_tiny", "arch_kwargs": {"num_classes": 4},
              "class_names": ["a", "b", "c", "d"],
              "preprocessing": {"image_size": 16}, "world_size": 1}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_top1": top1, "val_top5": None,
                                                      "images_per_s": 100.0}) + "\n")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("name", ["last.pt", "best.pt", "metrics.jsonl", "config.json"])
def test_compare_plot_never_replaces_a_run_file(tmp_path, capsys, name):
    pytest.importorskip("matplotlib")
    a, b = fake_run(tmp_path / "a"), fake_run(tmp_path / "b", seed=1)
    before = snapshot(a), snapshot(b)
    for target in (a / name, b / name):
        refused(capsys, "only bnn train writes it", "compare", a, b, "--plot", target, "--force")
    assert (snapshot(a), snapshot(b)) == before


def test_no_command_writes_over_a_run_lock(tmp_path, capsys, tiny_checkpoint):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):  # a training holds it
        lock_bytes = (run / LOCK_FILE).read_bytes()
        for args in (("pack", tiny_checkpoint), ("export", tiny_checkpoint)):
            refused(capsys, "is the lock of a training run", *args, "-o", run / LOCK_FILE, "--force")
        assert (run / LOCK_FILE).read_bytes() == lock_bytes
        with pytest.raises(UsageError, match="another bnn train"):
            RunLock(run).acquire()  # still locked: a second training is refused
    # A lock's name is refused in any folder, a run's or not.
    refused(capsys, "is the lock of a training run", "pack", tiny_checkpoint, "-o", tmp_path / LOCK_FILE, "--force")


def test_run_files_are_named_through_dot_dot_and_links(tmp_path, capsys, tiny_checkpoint):
    run = fake_run(tmp_path / "run")
    (tmp_path / "alias").symlink_to(run)
    before = snapshot(run)
    for target in (tmp_path / "run" / ".." / "run" / "best.pt", tmp_path / "alias" / "metrics.jsonl"):
        refused(capsys, "only bnn train writes it", "pack", tiny_checkpoint, "-o", target, "--force")
    assert snapshot(run) == before


def test_tensorboard_dir_is_never_a_run_file_lock_or_run(tmp_path):
    run = fake_run(tmp_path / "run")
    for target in (run / "last.pt", run / LOCK_FILE):
        with pytest.raises(UsageError, match="only bnn train writes it"):
            check_output_dir(target, "--tensorboard-dir")
    with pytest.raises(UsageError, match="is a run directory"):
        check_output_dir(run, "--tensorboard-dir")
    assert check_output_dir(run / "tensorboard", "--tensorboard-dir") == run / "tensorboard"


def test_tensorboard_dir_on_a_run_file_is_refused_by_train(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    run = fake_run(tmp_path / "run")
    before = snapshot(run)
    refused(capsys, "only bnn train writes it", "train", "-a", "binarydensenet_tiny", "-d", "builtin:shapes-mini",
            "--epochs", "1", "--out", tmp_path / "new", "--tensorboard-dir", run / "best.pt")
    assert snapshot(run) == before and not (tmp_path / "new").exists()


def _stale(folder: Path, name: str) -> Path:
    """A temp file as a write of ``name`` killed before its rename leaves it."""
    stale = folder / f".{name}.k1ll3d_x.tmp"
    stale.write_bytes(b"half a file")
    return stale


def test_the_next_write_removes_a_killed_writes_temp_files(tmp_path, capsys, tiny_checkpoint):
    out = tmp_path / "m.bnn"
    stale, other = _stale(tmp_path, "m.bnn"), _stale(tmp_path, "m.bnn.old")  # another name's: kept
    code, _, err = bnn(capsys, "pack", tiny_checkpoint, "-o", out, "--samples", "1")
    assert code == 0, err
    assert not stale.exists() and other.exists() and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, other.name])


def test_a_live_writes_temp_file_is_left_alone(tmp_path):
    import fcntl

    target = tmp_path / "x.bin"
    live = _stale(tmp_path, "x.bin")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a write in progress holds its temp file's lock
        fileio.write_bytes(target, b"new")
        assert live.exists() and target.read_bytes() == b"new"
    finally:
        os.close(fd)
    fileio.write_bytes(target, b"newer")
    assert not live.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]

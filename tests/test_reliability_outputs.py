"""Nothing a user has is lost: where commands may write, locked run directories, a best.pt that
always matches the run's record, and failed writes (full disk, no permission) as one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import write_checkpoint

from bnncli import fileio
from bnncli.artifacts.checkpoint import load_checkpoint, save_checkpoint
from bnncli.artifacts.rundir import LOCK_FILE
from bnncli.cli.app import main
from bnncli.engine import resume as resume_mod
from bnncli.engine import train as train_mod
from bnncli.engine.config import resolve_config
from bnncli.engine.progress import Reporter
from bnncli.engine.resume import load_resume
from bnncli.errors import ArtifactError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "larq"
TRAIN = ("train", "-a", "binarydensenet_tiny", "-d", "builtin:shapes-mini", "--image-size", "16", "-b", "40",
         "--epochs", "1")


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, needle: str, *args, after_progress: bool = False) -> str:
    """Run ``bnn ARGS``; it must fail with exit 2 and one error line holding ``needle``: the only
    stderr line, or with ``after_progress`` the last one (a training reports progress first)."""
    code, out, err = bnn(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and out == "", err
    assert (after_progress or len(lines) == 1) and "Traceback" not in err, err
    assert lines[-1].startswith("bnn: error: ") and needle in lines[-1], err
    return lines[-1]


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    """A run directory as `bnn train` leaves it: last.pt, best.pt (another model), metrics, config."""
    run = tmp_path / "run"
    write_checkpoint(run / "last.pt", seed=1)
    write_checkpoint(run / "best.pt", seed=2)
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (run / "config.json").write_text("{}\n")
    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- 1. never over the command's own input or a run's files; an existing file needs --force -------------


@pytest.mark.parametrize("args,needle", [
    (["pack", "{run}", "-o", "{run}/last.pt"], "is this command's input ({run})"),
    (["pack", "{run}", "-o", "{run}/best.pt", "--force"], "is this command's input ({run})"),
    (["export", "{run}/last.pt", "-o", "{run}/last.pt"], "is this command's input"),
    (["export", "{run}/last.pt", "-o", "{run}/last.pt", "--force"], "not even with --force"),
    (["pack", "{run}/best.pt", "-o", "{run}/best.pt", "--force"], "is this command's input"),
    (["pack", "{run}/best.pt", "-o", "{run}/last.pt", "--force"], "is a file of the run directory {run}"),
    (["export", "{run}", "-o", "{run}/metrics.jsonl", "--force"], "only bnn train writes it"),
    (["import", "larq", str(FIXTURES / "resnete_tiny.h5"), "-o", "{run}/last.pt", "--force"],
     "is a file of the run directory"),
])
def test_pack_export_and_import_never_write_over_their_input_or_a_run(run_dir, capsys, args, needle):
    before = snapshot(run_dir)
    refused(capsys, needle.format(run=run_dir), *(a.format(run=run_dir) for a in args))
    assert snapshot(run_dir) == before


def test_an_existing_output_needs_force_default_paths_included(tmp_path, capsys, tiny_checkpoint):
    ckpt = tmp_path / "tiny.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    for command, suffix in (("pack", ".bnn"), ("export", ".onnx")):
        default = ckpt.with_suffix(suffix)
        default.write_bytes(b"precious")
        refused(capsys, f"{default} exists; pass --force to replace it", command, ckpt)
        explicit = tmp_path / f"other{suffix}"
        explicit.write_bytes(b"precious")
        refused(capsys, f"{explicit} exists; pass --force", command, ckpt, "-o", explicit)
        assert default.read_bytes() == explicit.read_bytes() == b"precious"
        code, _, err = bnn(capsys, command, ckpt, "-o", explicit, "--force", "--samples", "1")
        assert code == 0, err
        assert explicit.read_bytes() != b"precious" and default.read_bytes() == b"precious"


# --- 13. unusable output paths and failed writes: one line, exit 2, the previous file kept ----------------


@pytest.mark.parametrize("command", ["pack", "export"])
def test_unusable_output_paths_are_one_line(tmp_path, capsys, tiny_checkpoint, command):
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "plain.txt").write_text("a file, not a folder\n")
    refused(capsys, "/dev/null is not a regular file", command, tiny_checkpoint, "-o", "/dev/null", "--force")
    assert Path("/dev/null").is_char_device()
    refused(capsys, f"{folder} is a directory; give a file name such as {folder / 'model'}", command,
            tiny_checkpoint, "-o", folder, "--force")
    refused(capsys, "plain.txt is not a directory", command, tiny_checkpoint, "-o", tmp_path / "plain.txt" / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "plain.txt"] and not any(folder.iterdir())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_named(tmp_path, capsys, tiny_checkpoint):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        refused(capsys, f"cannot write {locked / 'm.bnn'}: {locked} is not writable", "pack", tiny_checkpoint,
                "-o", locked / "m.bnn")
    finally:
        locked.chmod(0o755)


def test_permission_denied_while_writing_is_one_line(tmp_path, capsys, tiny_checkpoint, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", denied)
    target = tmp_path / "m.bnn"
    refused(capsys, f"cannot write {target}: Permission denied (nothing was written)", "pack", tiny_checkpoint,
            "-o", target, "--samples", "1")
    assert not target.exists()


def full_disk(monkeypatch, names: tuple[str, ...] = ()) -> None:
    """Make the fsync of every atomic write (of files called one of ``names``, if given) fail with ENOSPC."""
    real_fsync = os.fsync

    def fsync(fd):
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name if Path("/proc/self/fd").is_dir() else ""
        if not names or any(name.startswith(f".{n}.") for n in names):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)


@pytest.mark.parametrize("command", ["pack", "export"])
def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, capsys, tiny_checkpoint, monkeypatch,
                                                             command):
    target = tmp_path / "model.out"
    full_disk(monkeypatch)
    refused(capsys, f"cannot write {target}: No space left on device (nothing was written)", command,
            tiny_checkpoint, "-o", target, "--samples", "1")
    assert not any(tmp_path.iterdir())
    target.write_bytes(b"the previous file")
    refused(capsys, f"cannot write {target}: No space left on device (the previous file is kept)", command,
            tiny_checkpoint, "-o", target, "--force", "--samples", "1")
    assert target.read_bytes() == b"the previous file" and [p.name for p in tmp_path.iterdir()] == ["model.out"]


def test_a_full_disk_during_a_checkpoint_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "last.pt")
    before = path.read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(ArtifactError, match=r"cannot write .*last\.pt: No space left on device \(the previous"):
        save_checkpoint(path, load_checkpoint(path))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names the file being synced via /proc")
def test_training_on_a_full_disk_stops_with_one_line(tmp_path, capsys, monkeypatch):
    full_disk(monkeypatch, names=("last.pt",))
    run = tmp_path / "run"
    refused(capsys, f"cannot write {run / 'last.pt'}: No space left on device (nothing was written)", *TRAIN,
            "-o", run, after_progress=True)
    assert not (run / "last.pt").exists() and not any(p.name.endswith(".tmp") for p in run.iterdir())


# --- 2. a new run needs a new or empty directory -------------------------------------------------------------


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.json", "best.pt", "curves.png", "notes.txt",
                                  ".last.pt.x1y2.tmp"])
def test_a_new_run_refuses_a_directory_holding_anything(tmp_path, capsys, name):
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_bytes(b"someone's file")
    refused(capsys, f"{run} is not empty (it holds", *TRAIN, "-o", run)
    assert snapshot(run) == {name: b"someone's file"}


def test_train_out_must_be_a_directory(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    refused(capsys, "is not a directory", *TRAIN, "-o", tmp_path / "f")
    refused(capsys, "is not a directory", *TRAIN, "-o", "/dev/null")


# --- 3. one training per run directory: a lock; distinct default names ---------------------------------------


HOLD_LOCK = """
import sys
from bnncli.artifacts.rundir import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the run directory's lock until its stdin closes or it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_run_directory_in_use_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run)
    try:
        refused(capsys, f"{run} is in use by another bnn train (pid {holder.pid})", *TRAIN, "-o", run)
        assert [p.name for p in run.iterdir()] == [LOCK_FILE]
    finally:
        holder.send_signal(signal.SIGKILL)  # as a kill -9 would: the lock file stays, the lock goes
        holder.wait()
    assert (run / LOCK_FILE).exists()
    code, _, err = bnn(capsys, *TRAIN, "-o", run)
    assert code == 0, err
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "curves.png", "last.pt",
                                                     "metrics.jsonl"]  # lock released and removed

    holder = hold_lock(run)
    try:
        before = snapshot(run)
        refused(capsys, "is in use by another bnn train", "train", "--resume", run, "--epochs", "2")
        assert snapshot(run) == before
    finally:
        holder.stdin.close()
        holder.wait()
    code, _, err = bnn(capsys, "train", "--resume", run, "--epochs", "2")
    assert code == 0, err
    assert load_checkpoint(run / "last.pt")["epoch"] == 2 and not (run / LOCK_FILE).exists()


def test_default_run_names_in_the_same_second_differ(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    class SameSecond(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2024, 1, 1, 12, 0, 0)

    monkeypatch.setattr(resume_mod, "datetime", SameSecond)
    cfg = resolve_config(overrides=dict(arch="binarydensenet_tiny", data="builtin:shapes-mini", epochs=1,
                                        batch_size=40, image_size=16))
    first, second = train_mod.train(cfg), train_mod.train(cfg)
    assert first.run_dir != second.run_dir
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["binarydensenet_tiny-20240101-120000",
                                                                     "binarydensenet_tiny-20240101-120000-2"]
    assert (first.run_dir / "last.pt").is_file() and (second.run_dir / "last.pt").is_file()


def test_a_run_that_fails_before_writing_leaves_no_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(capsys, "data folder not found", "train", "-a", "binarydensenet_tiny", "-d", tmp_path / "nope")
    refused(capsys, "data folder not found", "train", "-a", "binarydensenet_tiny", "-d", tmp_path / "nope",
            "-o", tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --- 4. best.pt always holds the epoch the run records as best --------------------------------------------


class Killed(BaseException):
    """Stands for a kill -9: nothing after it runs."""


class Notes(Reporter):
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, text):
        self.warnings.append(text)


def test_a_kill_between_last_and_best_is_repaired_on_resume(image_folder, tmp_path, monkeypatch):
    real_validate, real_save = train_mod.validate, train_mod.save_checkpoint
    scores = {1: 0.2, 2: 0.5, 3: 0.1}  # epoch 2 is the best

    def validate(run, epoch):
        return {**real_validate(run, epoch), "val_top1": scores[epoch + 1]}

    def killed_before_best(path, state):
        if Path(path).name == "best.pt" and state["epoch"] == 2:
            raise Killed
        return real_save(path, state)

    monkeypatch.setattr(train_mod, "validate", validate)
    monkeypatch.setattr(train_mod, "save_checkpoint", killed_before_best)
    out = tmp_path / "run"
    cfg = resolve_config(overrides=dict(arch="binarydensenet_tiny", data=str(image_folder), epochs=3, batch_size=8,
                                        image_size=16, seed=7, workers=0))
    with pytest.raises(Killed):
        train_mod.train(cfg, out)
    assert load_checkpoint(out / "last.pt")["best"]["epoch"] == 2 and load_checkpoint(out / "best.pt")["epoch"] == 1
    # Until resumed, best.pt and metrics.jsonl agree: epoch 2 is not logged yet.
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    (out / ".last.pt.k1ll3d.tmp").write_bytes(b"PK\x03\x04 half a zip")  # what a kill mid-write leaves
    assert not (out / LOCK_FILE).exists()

    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    ckpt = load_resume(out)
    notes = Notes()
    result = train_mod.train(resolve_config(base=ckpt["config"]), out, resume=ckpt, reporter=notes)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best_logged = max(logged, key=lambda m: m["val_top1"])["epoch"]
    best = load_checkpoint(out / "best.pt")
    assert result.best["epoch"] == best_logged == best["epoch"] == 2
    assert best["metrics"]["val_top1"] == 0.5 and best["history"] == logged[:2]
    assert any("restored it from last.pt" in w for w in notes.warnings), notes.warnings
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "curves.png", "last.pt",
                                                     "metrics.jsonl"]


@pytest.mark.parametrize("command", ["pack", "export"])
def test_an_output_path_that_looks_like_markup_is_printed_as_it_is(tmp_path, capsys, tiny_checkpoint, command):
    """Rich used to parse '[/x]' in the 'wrote PATH' line as a closing tag and fail after writing."""
    target = tmp_path / f"[/x]\x1b[2J.{'bnn' if command == 'pack' else 'onnx'}"
    assert main([command, str(tiny_checkpoint), "-o", str(target)]) == 0
    printed = capsys.readouterr().out
    assert target.exists() and "[/x]\\x1b[2J." in printed and "\x1b" not in printed

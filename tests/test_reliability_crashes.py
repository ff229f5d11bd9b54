"""Inputs and settings that crashed with a traceback now end in one line (issue 21 items 5 and 6):
deep ONNX metadata, deep folders, long symlink targets, empty tensors, absurd thread counts, numba's
environment variables, a full disk under a checkpoint, numba's cache or TensorBoard's logs, a
Ctrl-C inside a checkpoint write, and a tiny --val-split reported as what was held out."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bnncli import fileio, threads
from bnncli.artifacts.checkpoint import save_checkpoint
from bnncli.cli.app import main
from bnncli.data.folder import images_under
from bnncli.data.presets import preprocessing
from bnncli.errors import ArtifactError, UsageError
from bnncli.graph.format import write_packed
from bnncli.graph.graph import Graph, Node
from bnncli.runtime import backends, load

REPO = Path(__file__).resolve().parents[1]
LARQ = REPO / "tests" / "fixtures" / "larq" / "resnete_tiny.h5"


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str, needle: str) -> str:
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("bnn: error: ") and needle in lines[-1], err
    assert "Traceback" not in err and "internal error" not in err, err
    return lines[-1]


def _tmpfs(folder: Path, room: int):
    """A 64 KiB tmpfs at ``folder``, filled to its last ``room`` bytes (root only; skipped where it
    cannot be mounted); yields the folder, then unmounts it."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 512)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)
        if room:
            os.truncate(folder / "filler", max(0, (folder / "filler").stat().st_size - room))
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.fixture
def full_disk(tmp_path):
    """A tmpfs with no room left."""
    yield from _tmpfs(tmp_path / "full", 0)


@pytest.fixture
def nearly_full_disk(tmp_path):
    """A tmpfs with 8 KiB left: a write starts, then fails."""
    yield from _tmpfs(tmp_path / "nearly", 8 << 10)


class _Filling:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.f, name)


# ---- the disk fills under a checkpoint: the system's words, not torch's ----------------------------------


def test_a_full_disk_under_a_checkpoint_says_so(tmp_path, monkeypatch):
    real = os.fdopen
    monkeypatch.setattr(fileio.os, "fdopen", lambda fd, mode="r", *a, **k: _Filling(real(fd, mode, *a, **k), 700))
    target = tmp_path / "c.pt"
    with pytest.raises(ArtifactError) as info:
        save_checkpoint(target, {"w": torch.zeros(10_000)})
    message = str(info.value)
    assert message == f"cannot write {target}: No space left on device (nothing was written)", message
    assert "enforce fail" not in message and list(tmp_path.iterdir()) == []


def test_a_checkpoint_onto_a_real_full_disk_says_so(nearly_full_disk, capsys):
    # A tensor larger than the file's buffer goes to the disk inside torch's writer, which
    # reported "[enforce fail at inline_container.cc:672]" for it.
    with pytest.raises(ArtifactError, match="No space left on device"):
        save_checkpoint(nearly_full_disk / "c.pt", {"w": torch.zeros(100_000)})
    code, _, err = bnn(capsys, "import", "larq", LARQ, "-o", nearly_full_disk / "r.pt")
    assert code == 2
    one_line(err, "No space left on device")
    assert sorted(p.name for p in nearly_full_disk.iterdir()) == ["filler"]


def test_a_ctrl_c_inside_a_checkpoint_write_is_an_interrupt(tmp_path, monkeypatch):
    real = os.fdopen

    class Interrupted(_Filling):
        def write(self, data):
            raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "fdopen", lambda fd, mode="r", *a, **k: Interrupted(real(fd, mode, *a, **k), 0))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(10)})
    assert list(tmp_path.iterdir()) == []


# ---- TensorBoard's writer thread on a full disk -------------------------------------------------------------


def test_tensorboard_on_a_full_disk_is_one_line(full_disk, tmp_path):
    pytest.importorskip("tensorboard")
    # In a process of its own: pytest would catch the writer thread's traceback itself.
    out = subprocess.run([sys.executable, "-m", "bnncli", "train", "-a", "binarydensenet_tiny", "-d",
                          "builtin:shapes-mini", "--image-size", "16", "-b", "40", "--epochs", "2", "--out",
                          str(tmp_path / "run"), "--tensorboard-dir", str(full_disk / "tb")],
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr
    one_line(out.stderr, f"cannot write TensorBoard logs to {full_disk / 'tb'}: No space left on device")
    assert "Exception in thread" not in out.stderr


def test_the_writer_threads_failure_is_kept_not_printed():
    from bnncli.engine.tensorboard import _WriterThreadErrors

    class EventThread(threading.Thread):  # as tensorboard's own writer thread is named
        pass
    EventThread.__module__ = "tensorboard.summary.writer.event_file_writer"

    def fail():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    errors = _WriterThreadErrors()
    errors.install()
    try:
        t = EventThread(target=fail)
        t.start()
        t.join()
    finally:
        errors.uninstall()
    assert isinstance(errors.error, OSError) and errors.error.errno == errno.ENOSPC
    assert threading.excepthook is not errors.hook


# ---- numba's environment ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "abc", "-2"])
def test_a_bad_numba_thread_count_is_one_line(monkeypatch, value, capsys, tmp_path):
    monkeypatch.setenv("NUMBA_NUM_THREADS", value)
    with pytest.raises(UsageError, match=f"NUMBA_NUM_THREADS is '{value}'"):
        backends.resolve("auto")
    code, _, err = bnn(capsys, "predict", "--model", tmp_path / "absent.bnn", tmp_path / "x.png", "--backend", "auto")
    assert code == 2


def test_numba_without_its_jit_falls_back_or_says_why(monkeypatch):
    monkeypatch.setenv("NUMBA_DISABLE_JIT", "1")
    assert backends.resolve("auto") == "numpy" and backends.available() == ("numpy",)
    with pytest.raises(UsageError, match="NUMBA_DISABLE_JIT is set, and the compiled kernels need numba's JIT"):
        backends.resolve("numba")


def test_no_room_for_numbas_cache_is_one_line(monkeypatch):
    numba_backend = backends._numba_backend()
    if numba_backend is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(numba_backend, "cache_is_warm", lambda: False)

    class NoRoom:
        f_bavail, f_frsize = 3, 4096
    monkeypatch.setattr(backends.os, "statvfs", lambda path: NoRoom())
    with pytest.raises(UsageError, match="has no room to compile the kernels .No space left on device."):
        backends.create("numba", 1, None)


def test_numba_cache_on_a_full_disk_is_one_line(full_disk, tmp_path):
    if backends._numba_backend() is None:
        pytest.skip("numba is not installed")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(full_disk / "cache"), "PYTHONPATH": str(REPO)}
    code = ("from bnncli.runtime import backends\n"
            "try:\n    backends.create('numba', 1, None)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if "UsageError" not in out.stdout and "Error" not in out.stdout:
        pytest.skip("the kernels were cached already where this numba looks")  # nothing to compile
    assert out.stdout.startswith("UsageError") and "No space left on device" in out.stdout, out


# ---- thread counts ------------------------------------------------------------------------------------------


def test_absurd_thread_counts_are_capped(capsys, tmp_path, tiny_checkpoint):
    assert threads.resolve(100_000) == threads.MAX_THREADS and threads.resolve(0) == 1
    code, _, err = bnn(capsys, "pack", tiny_checkpoint, "-o", tmp_path / "m.bnn", "--threads", "100000",
                       "--samples", "1")
    assert code == 0, err
    assert f"--threads 100000 is more than the {threads.available_cpus()} CPUs" in err


# ---- malformed files and folders ----------------------------------------------------------------------------


def test_a_packed_conv_of_zero_size_is_one_line(tmp_path):
    graph = Graph([Node("Conv", "c", ["input"], ["c"], {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]},
                        {"weight": "w"}),
                   Node("GlobalAvgPool", "g", ["c"], ["g"]), Node("Flatten", "f", ["g"], ["logits"])],
                  {"w": np.zeros((0, 3, 3, 3), np.float32)})
    path = tmp_path / "zero.bnn"
    write_packed(path, graph, {"arch": "x", "arch_kwargs": {}, "class_names": ["a"],
                               "preprocessing": preprocessing("small", 16), "float_dtype": "float32"})
    with pytest.raises(ArtifactError, match=r"tensor weight is empty \(shape \[0, 3, 3, 3\]\)") as info:
        load(path, backend="numpy")
    assert str(path) in str(info.value)


def test_onnx_metadata_nested_deep_is_one_line(tmp_path, capsys, tiny_checkpoint):
    onnx = pytest.importorskip("onnx")
    from bnncli.artifacts.open import open_model

    path = tmp_path / "m.onnx"
    code, _, err = bnn(capsys, "export", tiny_checkpoint, "-o", path, "--samples", "1")
    assert code == 0, err
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "bnncli.arch_kwargs":
            prop.value = "[" * 100_000 + "]" * 100_000
    onnx.save(model, str(path))
    with pytest.raises(ArtifactError, match="metadata bnncli.arch_kwargs nests deeper than 32 levels"):
        open_model(path)
    code, _, err = bnn(capsys, "predict", "--model", path, tmp_path / "x.png")
    assert code == 2
    one_line(err, "nests deeper than 32 levels")


def _deep(root: Path, depth: int) -> Path:
    """``depth`` nested folders below ``root`` (made one level at a time, relative, so no path is too long)."""
    here = os.getcwd()
    root.mkdir(parents=True)
    os.chdir(root)
    try:
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        Image.new("RGB", (20, 20), (200, 10, 10)).save("deep.png")
    finally:
        os.chdir(here)
    return root / Path(*["d"] * depth) / "deep.png"


def _remove_deep(root: Path) -> None:
    """Remove what :func:`_deep` made, bottom up (shutil.rmtree recurses, and fails at this depth)."""
    here = os.getcwd()
    os.chdir(root)
    try:
        depth = 0
        while os.path.isdir("d"):
            os.chdir("d")
            depth += 1
        for name in os.listdir("."):
            os.unlink(name)
        for _ in range(depth):
            os.chdir("..")
            os.rmdir("d")
    finally:
        os.chdir(here)


def test_folders_1500_deep_are_walked_without_recursion(tmp_path, capsys, tiny_checkpoint):
    image = _deep(tmp_path / "photos", 1500)
    try:
        assert images_under(tmp_path / "photos") == [str(image)]
        code, out, err = bnn(capsys, "predict", "--model", tiny_checkpoint, tmp_path / "photos", "--json")
        assert code == 0, err
        assert "deep.png" in out
    finally:
        _remove_deep(tmp_path / "photos")


def test_a_link_whose_target_name_is_too_long_is_one_line(tmp_path, capsys, tiny_checkpoint):
    link = tmp_path / "long.png"
    link.symlink_to("x" * 300)  # stat: "File name too long"
    code, _, err = bnn(capsys, "predict", "--model", tiny_checkpoint, link)
    assert code == 1 and "internal error" not in err and "Traceback" not in err
    assert f"cannot read {link}: File name too long" in err
    # As a class folder, or an image in one, it is skipped like any unreadable entry.
    from bnncli.data.folder import ImageFolderDataset

    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        Image.new("RGB", (20, 20)).save(data / cls / "0.png")
    (data / "c").symlink_to("y" * 300)
    (data / "a" / "long.png").symlink_to("z" * 300)
    ds = ImageFolderDataset(data)
    assert ds.classes == ["a", "b"] and len(ds) == 3


# ---- --val-split reported as what was held out --------------------------------------------------------------


def test_a_tiny_val_split_is_reported_as_held_out():
    from bnncli.cli.progress import _start_line

    info = {"world_size": 1, "device": "cpu", "resumed": False, "val_split": 1e-9, "arch": "x", "params": 1,
            "data": "d", "train_images": 990, "val_images": 10, "classes": 10, "image_size": 16, "preset": "small",
            "batch_size": 8, "run_dir": "r"}
    line = _start_line(info)
    assert "held out by seed: 10 of 1,000 images, 1%" in line and "e-07" not in line


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_recipe_must_be_a_regular_file(tmp_path, capsys, kind):
    recipe = Path(kind)
    if kind == "fifo":
        recipe = tmp_path / "r.toml"
        os.mkfifo(recipe)
    code, _, err = bnn(capsys, "train", "--recipe", recipe, "--out", tmp_path / "run")
    assert code == 2
    one_line(err, "a FIFO (named pipe), not a recipe" if kind == "fifo" else "a character device, not a recipe")
    assert not (tmp_path / "run").exists()

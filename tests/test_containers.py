"""What the Docker image relies on, tested without Docker (issue 22): any uid and folders it cannot
write, numba's cache compiled once (warm-up) and reported truthfully, DataLoader workers fitted to
the shared memory, and lost workers ending the run with one line."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bnncli import fileio
from bnncli.cli.app import main
from bnncli.data import loading, shm
from bnncli.errors import DataError
from tests.conftest import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
needs_numba = pytest.mark.skipif(__import__("importlib").util.find_spec("numba") is None, reason="numba missing")


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- 1. folders the user mounts -------------------------------------------------------------------------------


@pytest.mark.parametrize("container", [False, True])
def test_an_unwritable_run_folder_is_one_line_that_names_the_fix(tmp_path, capsys, monkeypatch, container):
    runs = tmp_path / "runs"
    runs.mkdir()
    real_mkdir = Path.mkdir

    def denied(self, *args, **kwargs):
        if self.parent == runs:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    if container:
        monkeypatch.setenv("BNNCLI_CONTAINER", "1")
    else:
        monkeypatch.delenv("BNNCLI_CONTAINER", raising=False)
    code, out, err = bnn(capsys, "train", "--arch", "binarydensenet_tiny", "--data", "builtin:shapes-mini",
                         "--epochs", "1", "-o", runs / "demo")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"cannot use {runs / 'demo'} as the run directory: {runs} is not writable by uid {os.getuid()} " \
           f"(it belongs to uid {runs.stat().st_uid})" in lines[0]
    fix = 'docker run -u "$(id -u):$(id -g)"' if container else "choose a folder you can write to"
    assert fix in lines[0]


def test_a_read_only_folder_is_named_as_such(tmp_path, monkeypatch):
    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(fileio.os, "statvfs", lambda path: ReadOnly)
    monkeypatch.setenv("BNNCLI_CONTAINER", "1")
    expected = f"{tmp_path} is on a read-only filesystem: mount it without :ro"
    assert fileio.unwritable(tmp_path / "runs" / "x") == expected


def _entrypoint(tmp_path, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """docker/entrypoint.sh run in ``cwd`` with stand-ins for bnn and setpriv that print their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("bnn", "setpriv"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho {name} "$@"\n')
        (bin_dir / name).chmod(0o755)
    r = subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), "predict", "x y.png"], cwd=cwd,
                       capture_output=True, text=True, timeout=30,
                       env={"PATH": f"{bin_dir}:{os.environ['PATH']}", **(env or {})})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()


@pytest.mark.skipif(os.name != "posix" or shutil.which("stat") is None, reason="a POSIX shell and stat")
def test_the_entrypoint_runs_bnn_as_the_owner_of_runs(tmp_path):
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    if os.geteuid() != 0:  # started as a user (docker run -u): bnn as that user, no switch
        assert _entrypoint(tmp_path, home) == ["bnn predict x y.png"]
        return
    assert _entrypoint(tmp_path, home) == ["bnn predict x y.png"]  # a root-owned folder keeps root
    os.chown(home / "runs", 1234, 2345)
    # setpriv's first call only probes that the switch is allowed
    assert _entrypoint(tmp_path, home)[-1] == "setpriv --reuid=1234 --regid=2345 --clear-groups -- bnn predict x y.png"
    shutil.rmtree(home / "runs")
    os.chown(home, 4321, 4321)  # no runs/: the working directory's owner
    assert _entrypoint(tmp_path, home)[-1].startswith("setpriv --reuid=4321 --regid=4321")
    assert _entrypoint(tmp_path, home, {"BNN_RUN_AS": "0:0"}) == ["bnn predict x y.png"]


# --- 2. numba's cache: compiled once, reported truthfully ------------------------------------------------------


def _numba_run(cache: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("BNN_BACKEND", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)


@needs_numba
@pytest.mark.slow
def test_after_the_warm_up_no_model_compiles_anything(tmp_path):
    cache = tmp_path / "numba-cache"
    packed = []
    for arch in ("binarydensenet_tiny", "resnete_tiny"):
        ckpt = write_checkpoint(tmp_path / f"{arch}.pt", arch=arch)
        assert main(["pack", str(ckpt), "-o", str(tmp_path / f"{arch}.bnn"),
                     "--samples", "1"]) == 0
        packed.append(str(tmp_path / f"{arch}.bnn"))
    r = _numba_run(cache, """
        from bnncli.runtime.backends.numba import cache_is_warm
        print(cache_is_warm())
    """)
    assert r.returncode == 0 and r.stdout.split() == ["False"], r.stderr
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "bnncli.runtime.backends.numba.warmup"], capture_output=True, text=True,
                       timeout=600, cwd=ROOT, env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # A new process: warm, and every model on one thread and on two loads all it runs from the cache.
    r = _numba_run(cache, f"""
        import numpy as np
        from bnncli.runtime import load
        from bnncli.runtime.backends.numba import cache_is_warm, intrinsics
        warm = cache_is_warm()
        for path in {packed!r}:
            for threads in (1, 2):
                m = load(path, backend="numba", threads=threads)
                m(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
                m.close() if hasattr(m, "close") else None
        from numba.core.dispatcher import Dispatcher
        misses = {{}}
        import bnncli.runtime.backends.numba as nb
        for mod in (nb.binary_conv, nb.float_ops, nb.crew, intrinsics):
            for name, f in vars(mod).items():
                if isinstance(f, Dispatcher) and sum(f.stats.cache_misses.values()):
                    misses[name] = dict(f.stats.cache_misses)
        print(warm, misses or "none", intrinsics.UNCACHED or "cached")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "none", "cached"], r.stdout


@needs_numba
@pytest.mark.slow
def test_the_first_cold_run_compiles_everything_and_the_next_says_nothing(tmp_path, tiny_checkpoint, image_folder):
    """Issue 22 item 6: a model that compiles only some kernels left the cache 'cold' for ever."""
    packed = tmp_path / "m.bnn"
    assert main(["pack", str(tiny_checkpoint), "-o", str(packed), "--samples", "1"]) == 0
    image = next(iter(sorted(image_folder.rglob("*.png"))))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    runs = [subprocess.run([sys.executable, "-m", "bnncli", "predict", "--model", str(packed), str(image),
                            "--backend", "numba", "--threads", "1"], capture_output=True, text=True, timeout=600,
                           env=env, cwd=tmp_path) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert "compiling the numba kernels: once per machine" in runs[0].stderr
    assert "compiling" not in runs[1].stderr, runs[1].stderr


@needs_numba
def test_a_stale_index_is_not_warm(monkeypatch):
    from bnncli.runtime.backends.numba import float_ops, intrinsics

    fn = float_ops._affine_share
    x = torch.zeros(4, 4).numpy()
    float_ops.affine(x.reshape(2, 2, 2, 2).copy(), torch.ones(2).numpy(), torch.zeros(2).numpy())
    assert intrinsics.functions_cached([fn])
    # the source changed since (numba stamps the index with a hash of the file)
    monkeypatch.setattr(fn._cache._cache_file, "_source_stamp", b"another source")
    assert not intrinsics.functions_cached([fn])


@needs_numba
def test_jit_without_a_writable_cache_compiles_in_memory(monkeypatch):
    import numba.core.caching as caching

    from bnncli.runtime.backends.numba import intrinsics

    def nowhere(self):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(caching._CacheLocator, "ensure_cache_path", nowhere)
    monkeypatch.setattr(intrinsics, "UNCACHED", [])

    def add_one(x):
        return x + 1

    compiled = intrinsics.jit(add_one)
    assert compiled(41) == 42 and intrinsics.UNCACHED == ["add_one"]
    assert not intrinsics.functions_cached([compiled])


@pytest.mark.parametrize("state,line", [
    ("cold", "compiling the numba kernels: once per machine"),
    ("unwritable", "numba cannot write its cache (/ro/cache), so the kernels compile in every run"),
    ("warm", None),
])
def test_the_cli_says_what_compiling_will_happen(monkeypatch, capsys, state, line):
    from bnncli.cli import common
    from bnncli.runtime import backends

    warmed = []
    monkeypatch.setattr(backends, "compiled_cache_state", lambda: state)
    monkeypatch.setattr(backends, "warm_compiled_cache", lambda: warmed.append(True))
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/ro/cache")
    monkeypatch.setenv("BNNCLI_CONTAINER", "1")
    common.note_compiling("numba")
    err = capsys.readouterr().err
    if line is None:
        assert err == "" and not warmed
    else:
        assert line in err and len(err.strip().splitlines()) == 1
        assert warmed == ([True] if state == "cold" else [])
    if state == "unwritable":
        assert "a volume on it keeps them" in err
    common.note_compiling("numpy")
    assert capsys.readouterr().err == ""


# --- 3. shared memory and DataLoader workers -------------------------------------------------------------------


def test_workers_fit_the_shared_memory():
    mb = 10**6
    assert shm.fit_workers(2, 77 * mb, free=10_000 * mb) == (2, shm.PREFETCH, None)
    assert shm.fit_workers(0, 77 * mb, free=1)[2] is None
    assert shm.fit_workers(2, 77 * mb, free=None if shm.shared_memory_free() is None else 10**15)[2] is None
    workers, prefetch, note = shm.fit_workers(2, 77 * mb, free=int(5 * 77 * mb / shm.BUDGET) + 1)
    assert (workers, prefetch) == (2, 2) and "2 batches in flight per worker instead of 4" in note
    workers, prefetch, note = shm.fit_workers(4, 77 * mb, free=int(3 * 77 * mb / shm.BUDGET) + 1)
    assert (workers, prefetch) == (3, 1) and "3 workers with 1 batch in flight each instead of 4" in note
    workers, prefetch, note = shm.fit_workers(2, 77 * mb, free=64 * mb)  # docker's default, a 224 px batch of 128
    assert workers == 0 and note == (
        "shared memory (/dev/shm) has 64 MB free, too little for 2 DataLoader workers with 4 batches of 77 MB each "
        "in flight: loading in the training process instead (slower); give it more (docker run --shm-size 1g, "
        "or --ipc=host)")


def test_train_with_too_little_shared_memory_says_so_and_trains(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shm, "shared_memory_free", lambda path=shm.SHM_PATH: 100_000)
    run = tmp_path / "run"
    code, out, err = bnn(capsys, "train", "--arch", "binarydensenet_tiny", "--data", "builtin:shapes-mini",
                         "--epochs", "1", "--batch-size", "16", "--image-size", "32", "--workers", "2", "-o", run)
    assert code == 0, err
    note = next(line for line in err.splitlines() if "shared memory (/dev/shm) has 0 MB free" in line)
    assert "loading in the training process instead" in note and "--shm-size 1g" in note
    assert (run / "best.pt").is_file()
    import json

    assert json.loads((run / "config.json").read_text())["config"]["workers"] == 2  # asked for; 0 were used


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, action: str) -> None:
        self.action = action

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index):
        if torch.utils.data.get_worker_info() is not None:
            if self.action == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.action == "hang":
                time.sleep(120)
        return torch.zeros(3)


@pytest.mark.skipif(os.name != "posix", reason="fork and SIGKILL")
@pytest.mark.parametrize("action,needle", [
    ("die", r"DataLoader worker \(pid.*: out of memory\? \(fewer --workers"),
    ("hang", "no batch from the DataLoader workers in 2 s: a worker is stuck or cannot hand its batch over"),
])
def test_a_lost_worker_ends_the_iteration_with_one_line(monkeypatch, action, needle):
    monkeypatch.setattr(loading, "LOADER_TIMEOUT", 2)
    loader = loading.make_loader(_Dataset(action), torch.utils.data.SequentialSampler(range(8)), 4, 1,
                                 collate_fn=torch.utils.data.default_collate)
    with pytest.raises(DataError, match=needle):
        list(loader)
    del loader


def test_a_loader_without_workers_is_a_plain_one():
    loader = loading.make_loader(_Dataset("hang"), torch.utils.data.SequentialSampler(range(8)), 4, 0,
                                 collate_fn=torch.utils.data.default_collate)
    assert [b.shape for b in loader] == [torch.Size([4, 3])] * 2 and loader.timeout == 0


def test_the_dependency_layers_stand_in_package_states_its_version(tmp_path):
    """The Dockerfile installs the dependencies from pyproject.toml with a stand-in package (so code
    changes keep that layer); pyproject reads the version from bnncli.__version__, so the stand-in
    must state one, or the image's build fails before it installs anything."""
    import re

    from setuptools.config.expand import read_attr

    root = Path(__file__).resolve().parents[1]
    dockerfile = (root / "Dockerfile").read_text()
    stub = re.search(r"echo '([^']*)' > /src/bnncli/__init__\.py", dockerfile)
    assert stub is not None, "the dependency layer's stand-in bnncli/__init__.py is not written as expected"
    (tmp_path / "bnncli").mkdir()
    (tmp_path / "bnncli" / "__init__.py").write_text(stub.group(1) + "\n")
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    assert 'version = { attr = "bnncli.__version__" }' in (tmp_path / "pyproject.toml").read_text()
    assert read_attr("bnncli.__version__", root_dir=str(tmp_path))

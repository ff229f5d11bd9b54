"""The run directory: what `bnn train` writes where, and which file a run directory stands for.

    runs/NAME/
      last.pt        checkpoint after the latest epoch (or the step a stop happened at)
      best.pt        checkpoint of the epoch with the best selection metric
      metrics.jsonl  one JSON line per epoch
      curves.png     loss and accuracy per epoch
      config.json    the resolved training configuration, classes and preprocessing
      tensorboard/   TensorBoard event files, with `bnn train --tensorboard`
      .bnn-train.lock  while a `bnn train` writes here (:class:`RunLock`)

Wherever a command takes a model file, a run directory stands for its ``best.pt``, else its
``last.pt`` (:func:`resolve_model_path`); that rule is written here only. No command writes
over a run's files or its lock but `bnn train` (:func:`check_command_output`, the one rule for every
command's outputs).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bnncli.errors import ArtifactError, UsageError
from bnncli.fileio import check_output, same_file

# The checkpoints a run directory stands for, in order of preference.
MODEL_FILES = ("best.pt", "last.pt")
# Every file `bnn train` writes in a run directory.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "config.json")
LOCK_FILE = ".bnn-train.lock"


@dataclass(frozen=True)
class RunFiles:
    """The paths inside one run directory."""

    dir: Path

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.dir / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.dir / "curves.png"

    @property
    def config(self) -> Path:
        return self.dir / "config.json"

    @property
    def tensorboard(self) -> Path:
        return self.dir / "tensorboard"

    @property
    def lock(self) -> Path:
        return self.dir / LOCK_FILE

    def holds_run(self) -> bool:
        """Whether the directory holds files of a training run (a checkpoint, metrics or config)."""
        return any((self.dir / name).is_file() for name in RUN_FILES)


def resolve_model_path(path: str | os.PathLike, what: str = "model") -> Path:
    """A model file as given, or the checkpoint a run directory stands for (best.pt, else last.pt).

    Raises ArtifactError when ``path`` does not exist ("``what`` not found") or is a directory
    holding neither.
    """
    path = Path(path)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name
        raise ArtifactError(f"{path} holds no checkpoint ({' or '.join(MODEL_FILES)})")
    if not path.exists():
        raise ArtifactError(f"{what} not found: {path}")
    return path


def find_default_model(runs: str | os.PathLike = "runs") -> Path | None:
    """The model of the most recently changed run under ``runs`` (see :func:`resolve_model_path`;
    a run with neither checkpoint offers its newest ``*.pt``), or None when there is none."""
    runs = Path(runs)
    run_dirs = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True) \
        if runs.is_dir() else []
    for run in run_dirs:
        if any((run / name).is_file() for name in MODEL_FILES):
            return resolve_model_path(run)
        models = sorted(run.glob("*.pt"), key=lambda f: f.stat().st_mtime, reverse=True)
        if models:
            return models[0]
    return None


def _run_of(path: Path) -> Path | None:
    """The run directory whose file (or lock) ``path`` names, else None; the folder is resolved, so
    ``A/../A/last.pt`` and a link to ``A`` name ``A``'s files too."""
    if path.name not in (*RUN_FILES, LOCK_FILE):
        return None
    try:
        folder = path.absolute().parent.resolve()
    except (OSError, RuntimeError):  # a symlink loop: nothing can be written there anyway
        return None
    files = RunFiles(folder)
    return folder if path.name == LOCK_FILE or files.holds_run() or files.lock.exists() else None


def check_run_files(output: str | os.PathLike, option: str = "--output") -> None:
    """Refuse, even with --force, an output that is a file of any run directory (last.pt, best.pt,
    metrics.jsonl, curves.png, config.json) or a run's lock (``.bnn-train.lock``, in any folder):
    only `bnn train` writes those. The one rule for every command's outputs."""
    output = Path(output)
    run = _run_of(output)
    if run is None:
        return
    what = "the lock of a training run" if output.name == LOCK_FILE else f"a file of the run directory {run}"
    raise UsageError(f"{output} is {what}; only bnn train writes it, never another command, not even with "
                     f"--force: choose another {option}")


def check_command_output(output: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (),
                         force: bool = False, suffix: str = "", option: str = "--output") -> Path:
    """Check, before any work, where a command may write a file: never over a run's files or lock
    (:func:`check_run_files`), then :func:`bnncli.fileio.check_output` (never over an input,
    a directory or a device; an existing file only with ``force``)."""
    check_run_files(output, option)
    return check_output(output, inputs=inputs, force=force, suffix=suffix)


def check_output_dir(directory: str | os.PathLike, option: str) -> Path:
    """Check a folder a command will write files into (``--tensorboard-dir``): never a run's file or
    lock, nor a run directory itself (its files are `bnn train`'s)."""
    directory = Path(directory)
    check_run_files(directory, option)
    try:
        resolved = directory.resolve()
    except (OSError, RuntimeError):
        raise UsageError(f"cannot use {directory} for {option}: a symlink loop") from None
    if RunFiles(resolved).holds_run() and resolved.is_dir():
        raise UsageError(f"{directory} is a run directory; its files are bnn train's: give {option} a folder of "
                         f"its own, such as {directory / 'tensorboard'}")
    return directory


def check_model_output(output: str | os.PathLike, source: str | os.PathLike, force: bool = False,
                       suffix: str = "") -> Path:
    """Check where a command that reads the model ``source`` may write (:func:`check_command_output`).

    Never over ``source`` nor, when it is a run directory, the checkpoints it stands for; never over
    a file or lock of any run directory, not even with ``force``.
    """
    output, source = Path(output), Path(source)
    inputs = [source, *(source / name for name in MODEL_FILES)] if source.is_dir() else [source]
    if any(same_file(output, s) for s in inputs):
        raise UsageError(f"{output} is this command's input ({source}); it is never overwritten, not even with "
                         f"--force: choose another --output")
    return check_command_output(output, force=force, suffix=suffix)


class RunLock:
    """An exclusive lock on a run directory, held by the one `bnn train` writing there.

    ``flock`` on ``RUN/.bnn-train.lock`` (``msvcrt.locking`` on Windows), never waiting: a second
    training is refused at once. The kernel drops the lock when its process ends, however it ends,
    so a lock file left by a killed process is simply taken over. The file holds the holder's pid
    and is removed on release; ``remove_dir`` also removes the directory if it is then empty (a
    run that failed before writing anything leaves nothing behind).
    """

    def __init__(self, directory: str | os.PathLike, remove_dir: bool = False) -> None:
        self.files = RunFiles(Path(directory))
        self.remove_dir = remove_dir
        self.fd: int | None = None
        self.held = False
        self.supported = True  # False on a filesystem without locks: the run goes on unlocked

    def acquire(self) -> RunLock:
        """Take the lock; UsageError naming the holder when another process has it."""
        while self.fd is None:
            fd = os.open(self.files.lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _lock(fd)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"another bnn train (pid {holder})" if holder else "another bnn train"
                raise UsageError(f"{self.files.dir} is in use by {who}; wait for it to end or choose another "
                                 f"--out") from None
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                self.files.lock.unlink(missing_ok=True)
                self.supported, self.held = False, True
                return self
            if _is_current(fd, self.files.lock):  # not a file a releasing holder just removed
                self.fd = fd
            else:
                os.close(fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        self.held = True
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (the removal happens while it is held)."""
        if not self.held:
            return
        if self.fd is not None:
            with contextlib.suppress(OSError):  # Windows cannot remove an open file: it stays, unlocked
                self.files.lock.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None
        self.held = False
        if self.remove_dir:
            with contextlib.suppress(OSError):  # not empty: the run wrote files
                self.files.dir.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _is_current(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


try:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except ImportError:  # Windows
    import msvcrt

    def _lock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]  # Windows only
        except OSError as e:
            raise BlockingIOError(*e.args) from None

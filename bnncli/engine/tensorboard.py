"""TensorBoard logging of a training run (the ``tensorboard`` extra), as a progress reporter.

:class:`TensorBoardReporter` wraps the :class:`~bnncli.engine.progress.Reporter` that shows
progress, passes every call on to it and writes the numbers it sees with
``torch.utils.tensorboard.SummaryWriter``. The training loop gives its real reporter to rank 0
only (:func:`bnncli.engine.train.train`), so under torchrun one process writes. What it writes,
all against one step axis, the optimizer steps so far (``(epoch - 1) * steps_per_epoch + step``):

* ``epoch/<key>`` for the keys of ``metrics.jsonl`` below, at the epoch's last step;
* ``step/train_loss`` (the epoch's running average, as the progress line shows) and ``step/lr``,
  at most every ``every`` seconds and at the end of each epoch.

A resumed run appends to the same directory. Its writer starts with ``purge_step`` one past the
step it resumes from: what a killed process wrote after its last checkpoint is hidden, so no step
appears twice. SummaryWriter is imported when a reporter is made, never otherwise; without the
extra that is a :class:`~bnncli.errors.UsageError`, raised before training starts.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from bnncli.artifacts.rundir import RunFiles, check_output_dir
from bnncli.engine.progress import Reporter
from bnncli.errors import ArtifactError, UsageError
from bnncli.fileio import os_reason

INSTALL_HINT = "--tensorboard needs the tensorboard extra: pip install 'bnncli[tensorboard]'"
# The metrics.jsonl numbers written once per epoch, as epoch/<key> (val_top5 is None for <= 5 classes).
EPOCH_KEYS = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "images_per_s", "seconds")
STEP_EVERY = 1.0  # seconds between step/... points
FLUSH_SECONDS = 10  # how stale the event file may get between epochs


def summary_writer() -> type:
    """``torch.utils.tensorboard.SummaryWriter``, or a UsageError saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # not installed, blocked, or too old a tensorboard (torch says which)
        why = "" if isinstance(e, ModuleNotFoundError) else f" ({e})"
        raise UsageError(INSTALL_HINT + why) from None
    return SummaryWriter


def check_log_dir(path: Path) -> None:
    """Refuse, before training, a log directory that cannot be made: the nearest existing part of
    ``path`` must be a writable directory."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write TensorBoard logs to {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write TensorBoard logs to {path}: {existing} is not writable")


class _WriterThreadErrors:
    """While installed, an OSError that TensorBoard's event-writer thread dies of is kept here
    (:meth:`TensorBoardReporter._writing` reports it in one line) instead of being printed as a
    thread traceback; every other thread's exception goes to the previous hook."""

    def __init__(self) -> None:
        self.error: OSError | None = None
        self.previous: Any = None

    def install(self) -> None:
        if self.previous is None:
            self.previous = threading.excepthook
            threading.excepthook = self.hook

    def uninstall(self) -> None:
        if self.previous is not None and threading.excepthook == self.hook:
            threading.excepthook = self.previous
        self.previous = None

    def hook(self, args) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__module__.startswith("tensorboard"):
            self.error = self.error or args.exc_value
            return
        (self.previous or threading.__excepthook__)(args)


class TensorBoardReporter:
    """``inner``'s progress (a :class:`Reporter`), plus TensorBoard scalars in ``log_dir`` (None:
    ``RUN/tensorboard``). Every call and attribute it does not use itself goes to ``inner`` as is.

    A context manager: leaving it (normally, on an error or on Ctrl-C) closes the event file and
    then leaves ``inner``'s context. :meth:`close` does the first part for library use.
    """

    def __init__(self, inner: Any | None = None, log_dir: str | os.PathLike | None = None,
                 every: float = STEP_EVERY) -> None:
        self.writer_class = summary_writer()
        self.inner = inner if inner is not None else Reporter()
        self.log_dir = Path(log_dir) if log_dir is not None else None
        if self.log_dir is not None:
            check_output_dir(self.log_dir, "--tensorboard-dir")
            check_log_dir(self.log_dir)
        self.every = every
        self.writer = None
        self.dir: Path | None = None  # where the events go, known once the run starts
        self.steps = 0  # per epoch
        self.shown_at = self.written_at = -math.inf
        self._thread_errors = _WriterThreadErrors()

    def __getattr__(self, name: str) -> Any:  # what is not here: inner's (its run_dir, a newer callback)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def interval(self) -> float:  # the loop calls step() this often; each side takes what it asked for
        return min(self.inner.interval, self.every)

    def __enter__(self) -> TensorBoardReporter:
        if hasattr(self.inner, "__enter__"):
            self.inner.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.close()
        finally:
            if hasattr(self.inner, "__exit__"):
                self.inner.__exit__(*exc)

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                with self._writing():
                    writer.close()
            finally:
                self._thread_errors.uninstall()

    @contextlib.contextmanager
    def _writing(self):
        """Around every call into the writer: its background thread's failure (a full disk), which
        would otherwise print a thread traceback, or the call's own, becomes one line."""
        try:
            yield
        except OSError as e:
            self._thread_errors.error = self._thread_errors.error or e
        error = self._thread_errors.error
        if error is not None:
            self._thread_errors.error = None
            self._thread_errors.uninstall()
            self.writer = None  # nothing more is written
            raise ArtifactError(f"cannot write TensorBoard logs to {self.dir}: {os_reason(error)}")

    def start(self, info: dict[str, Any]) -> None:
        self.inner.start(info)
        self.steps = info["steps_per_epoch"]
        here = info["start_epoch"] * self.steps + info["start_step"]
        self.dir = self.log_dir if self.log_dir is not None else RunFiles(Path(info["run_dir"])).tensorboard
        self._thread_errors.install()
        try:
            self.writer = self.writer_class(log_dir=str(self.dir), purge_step=here + 1 if info["resumed"] else None,
                                            flush_secs=FLUSH_SECONDS)
        except OSError as e:
            self._thread_errors.uninstall()
            raise UsageError(f"cannot write TensorBoard logs to {self.dir}: {os_reason(e)}") from None

    def epoch_start(self, epoch: int, epochs: int, steps: int, first_step: int) -> None:
        self.shown_at = self.written_at = time.perf_counter()
        self.inner.epoch_start(epoch, epochs, steps, first_step)

    def step(self, epoch: int, step: int, steps: int, loss: float, top1: float, images_per_s: float,
             lr: float) -> None:
        now, last = time.perf_counter(), step >= steps
        # Whichever side set the interval is called every time (the loop timed it); the other when due.
        if last or self.inner.interval <= self.interval or now - self.shown_at >= self.inner.interval:
            self.shown_at = now
            self.inner.step(epoch, step, steps, loss, top1, images_per_s, lr)
        if self.writer is not None and (last or self.every <= self.interval or now - self.written_at >= self.every):
            self.written_at = now
            at = (epoch - 1) * steps + step
            with self._writing():
                self.writer.add_scalar("step/train_loss", loss, at)
                self.writer.add_scalar("step/lr", lr, at)

    def epoch_end(self, metrics: dict[str, Any], is_best: bool) -> None:
        if self.writer is not None:
            at = metrics["epoch"] * self.steps
            with self._writing():
                for key in EPOCH_KEYS:
                    if metrics.get(key) is not None:
                        self.writer.add_scalar(f"epoch/{key}", metrics[key], at)
                self.writer.flush()
        self.inner.epoch_end(metrics, is_best)

    def stopping(self, reason: str) -> None:
        if self.writer is not None:
            with self._writing():
                self.writer.flush()
        self.inner.stopping(reason)

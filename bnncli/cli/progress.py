"""Progress on stderr: rich bars on a terminal, plain lines in a log file.

On a terminal, :class:`RichReporter` draws bars; when stderr is not a terminal (CI, nohup, Slurm,
``2> log``) or ``--log-every`` / ``$BNN_LOG_EVERY`` asks for it, :class:`LineReporter` prints one
plain line every so many seconds (epoch, step/steps, loss, accuracy, img/s, ETA). Both print one
summary line per epoch. They implement :class:`bnncli.engine.progress.Reporter` by duck typing,
so that importing the CLI does not import torch. :func:`eval_progress` is the same choice for
``bnn eval``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from bnncli.cli.common import err, from_environment, info, printable, warn
from bnncli.errors import UsageError

LOG_EVERY_ENV = "BNN_LOG_EVERY"
LOG_EVERY_DEFAULT = 10.0  # seconds between lines when stderr is not a terminal


def _parse_log_every(value: float | None, source: str = "") -> float | None:
    """The log interval, checked; ``source`` says where it came from (`` (from $BNN_LOG_EVERY)``)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise UsageError(f"--log-every{source} must be a number of seconds >= 0, not {value!r}")
    return value


def _check_log_every(ctx: typer.Context, param: Any, value: float | None) -> float | None:
    """``--log-every`` or ``$BNN_LOG_EVERY`` (Typer reads the variable)."""
    return _parse_log_every(value, from_environment(ctx, param))


LogEveryOpt = Annotated[float | None, typer.Option(
    "--log-every", metavar="SECONDS", envvar=LOG_EVERY_ENV, show_envvar=True, callback=_check_log_every,
    help=f"Print a plain progress line every SECONDS instead of bars; 0: one line per epoch only [default: "
         f"bars on a terminal and a line every {LOG_EVERY_DEFAULT:g} s otherwise, as in CI, nohup or Slurm "
         f"logs].")]


def line_interval(log_every: float | None) -> float | None:
    """Seconds between plain progress lines, or None for rich bars (a terminal and nothing asked)."""
    if log_every is not None:
        return log_every
    return None if err.is_terminal else LOG_EVERY_DEFAULT


def make_reporter(log_every: float | None):
    """The training reporter for stderr: bars on a terminal, else (or when asked) plain lines."""
    every = line_interval(log_every)
    return RichReporter() if every is None else LineReporter(every)


def _clock(seconds: float) -> str:
    """``1:02:03``, ``2:03``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _percent(fraction: float) -> str:
    """0.1 -> "10%", 0.00123 -> "0.12%": two significant digits, never "1e-07%"."""
    value = 100 * fraction
    return f"{value:.2g}%" if value >= 0.01 else "under 0.01%"


def _start_line(i: dict[str, Any]) -> str:
    where = f"{i['world_size']} processes on {i['device']}" if i["world_size"] > 1 else i["device"]
    resumed = f", resuming at epoch {i['start_epoch'] + 1} step {i['start_step']}" if i["resumed"] else ""
    held = ""
    if i.get("val_split") and i["val_images"]:  # what was held out, not what was asked: at least 1 per class
        held = (f" (held out by seed: {i['val_images']:,} of {i['train_images'] + i['val_images']:,} images, "
                f"{_percent(i['val_images'] / (i['train_images'] + i['val_images']))})")
    loader = f", --loader {i['loader']}" if i.get("loader", "pil") != "pil" else ""
    return (f"training {i['arch']} ({i['params']:,} params) on {i['data']}: {i['train_images']:,} train / "
            f"{i['val_images']:,} val images{held}, {i['classes']} classes, {i['image_size']} px ({i['preset']}), "
            f"batch {i['batch_size']}{loader}, {where}{resumed} -> {i['run_dir']}")


def _epoch_line(m: dict[str, Any], epochs: int, is_best: bool) -> str:
    parts = [f"epoch {m['epoch']}/{epochs}", f"train loss {m['train_loss']:.4f} acc {m['train_top1']:.2%}"]
    if "val_top1" in m:
        top5 = f" top-5 {m['val_top5']:.2%}" if m.get("val_top5") is not None else ""  # None: <= 5 classes
        parts.append(f"val loss {m['val_loss']:.4f} top-1 {m['val_top1']:.2%}{top5}")
    parts.append(f"{m['images_per_s']:,.0f} img/s  {m['seconds']:.1f}s")
    if m["skipped"]:
        parts.append(f"{m['skipped']} unreadable file(s) skipped")
    if is_best:
        parts.append("best")
    return printable("  ".join(parts))


class LineReporter:
    """Training progress for log files: a line at start, one every ``every`` seconds during an epoch
    (``every`` 0: none), one when validation starts and one summary per epoch. Only rank 0's
    reporter is ever called."""

    def __init__(self, every: float) -> None:
        self.is_main = int(os.environ.get("RANK", "0")) == 0
        self.every = every
        self.interval = every if every > 0 else math.inf  # the engine calls step() at most this often
        self.run_dir: str | None = None
        self.epochs = 0
        self.steps_per_epoch = 0
        self.epoch_started = 0.0
        self.first_step = 0

    def __enter__(self) -> LineReporter:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def start(self, i: dict[str, Any]) -> None:
        self.run_dir = i["run_dir"]
        self.epochs, self.steps_per_epoch = i["epochs"], i["steps_per_epoch"]
        info(_start_line(i))

    def epoch_start(self, epoch: int, epochs: int, steps: int, first_step: int) -> None:
        self.epoch_started, self.first_step = time.perf_counter(), first_step

    def step(self, epoch: int, step: int, steps: int, loss: float, top1: float, images_per_s: float,
             lr: float) -> None:
        if step >= steps:
            return  # the epoch's summary line follows
        elapsed = time.perf_counter() - self.epoch_started
        per_step = elapsed / max(step - self.first_step, 1)
        later = (self.epochs - epoch) * self.steps_per_epoch
        info(f"epoch {epoch}/{self.epochs}  step {step}/{steps}  loss {loss:.4f}  acc {top1:.2%}  "
             f"{images_per_s:,.0f} img/s  lr {lr:.2e}  ETA epoch {_clock((steps - step) * per_step)}, "
             f"run {_clock((steps - step + later) * per_step)}")

    def validating(self, epoch: int, images: int) -> None:
        info(f"epoch {epoch}/{self.epochs}  validating on {images:,} images")

    def epoch_end(self, m: dict[str, Any], is_best: bool) -> None:
        info(_epoch_line(m, self.epochs, is_best))

    def stopping(self, reason: str) -> None:
        info(f"{reason}: stopping after this step and saving")

    def warning(self, text: str) -> None:
        warn(text)


class RichReporter:
    """Training progress on a terminal: a bar for the run and one for the epoch (step, loss, accuracy,
    img/s, ETA), then one summary line per epoch. Only rank 0's reporter is ever called.
    """

    interval = 0.25  # seconds between step updates

    def __init__(self) -> None:
        self.is_main = int(os.environ.get("RANK", "0")) == 0
        self.run_dir: str | None = None
        self.progress: Any = None  # a rich Progress while the bars show
        self.run_task = None
        self.epoch_task = None
        self.epochs = 0
        self.epoch_step = 0
        self.narrow = False

    def __enter__(self) -> RichReporter:
        return self

    def __exit__(self, *exc) -> None:
        self._stop_progress()

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    # Reporter interface (duck-typed, see bnncli.engine.progress.Reporter)
    def start(self, i: dict[str, Any]) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.run_dir = i["run_dir"]
        self.epochs = i["epochs"]
        info(_start_line(i))
        # Below 120 columns (an 80-column terminal) the bar is shorter and a step shows loss and accuracy
        # only (img/s and lr are in each epoch's summary line), so the step count, elapsed time and ETA fit.
        self.narrow = err.width < 120
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=8 if self.narrow else 30), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err, transient=True,
        )
        self.progress.start()
        total = i["epochs"] * i["steps_per_epoch"]
        done = i["start_epoch"] * i["steps_per_epoch"] + i["start_step"]
        self.run_task = self.progress.add_task("run", total=total, completed=done, stats="")

    def epoch_start(self, epoch: int, epochs: int, steps: int, first_step: int) -> None:
        if self.progress is None:
            return
        if self.epoch_task is not None:
            self.progress.remove_task(self.epoch_task)
        self.epoch_task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, completed=first_step,
                                                 stats="")
        self.epoch_step = first_step

    def step(self, epoch: int, step: int, steps: int, loss: float, top1: float, images_per_s: float,
             lr: float) -> None:
        if self.progress is None:
            return
        stats = (f"loss {loss:.3f} acc {top1:5.1%}" if self.narrow else
                 f"loss {loss:.4f}  acc {top1:6.2%}  {images_per_s:,.0f} img/s  lr {lr:.2e}")
        self.progress.update(self.epoch_task, completed=step, stats=stats)
        self.progress.advance(self.run_task, step - self.epoch_step)
        self.epoch_step = step

    def validating(self, epoch: int, images: int) -> None:
        if self.progress is not None:
            self.progress.update(self.epoch_task, description=f"epoch {epoch}/{self.epochs} (validating)")

    def epoch_end(self, m: dict[str, Any], is_best: bool) -> None:
        line = _epoch_line(m, self.epochs, is_best)
        (self.progress.console if self.progress is not None else err).print(line, markup=False, highlight=False)

    def stopping(self, reason: str) -> None:
        self._stop_progress()
        info(f"{reason}: stopping after this step and saving")

    def warning(self, text: str) -> None:
        """One line above the bars; ``text`` (it names files) is shown literally, never as markup."""
        warn(text)  # the bars' console is ``err``: rich prints above live bars


@contextlib.contextmanager
def eval_progress(log_every: float | None) -> Iterator[tuple[Any, Any]]:
    """``(on_start(total), on_batch(images))`` for ``bnn eval``: a bar on a terminal, else plain lines
    (images done, img/s, ETA) every ``log_every`` seconds (see :func:`line_interval`)."""
    every = line_interval(log_every)
    if every is None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err, transient=True) as progress:
            task = progress.add_task("eval", total=None)
            yield (lambda n: progress.update(task, total=n)), (lambda n: progress.advance(task, n))
        return
    lines = _EvalLines(every)
    yield lines.start, lines.batch


class _EvalLines:
    """``bnn eval`` progress as a line every ``every`` seconds (none when 0)."""

    def __init__(self, every: float) -> None:
        self.every, self.total, self.done = every, 0, 0
        self.started = self.last = time.perf_counter()

    def start(self, total: int) -> None:
        self.total = total
        self.started = self.last = time.perf_counter()

    def batch(self, images: int) -> None:
        self.done += images
        now = time.perf_counter()
        if self.every <= 0 or now - self.last < self.every or self.done >= self.total:
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        info(f"eval  {self.done:,}/{self.total:,} images  {rate:,.0f} img/s  "
             f"ETA {_clock((self.total - self.done) / rate)}")

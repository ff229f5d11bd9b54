"""Training progress for people: rich bars on stderr, one summary line per epoch.

:class:`RichReporter` implements :class:`bnncli.engine.progress.Reporter` by duck typing, so
that importing the CLI does not import torch.
"""

from __future__ import annotations

import os
from typing import Any

from bnncli.cli.common import err, info, printable, warn


class RichReporter:
    """Training progress on stderr: a bar for the run and one for the epoch (step, loss, accuracy,
    img/s, ETA), then one summary line per epoch. Only rank 0's reporter is ever called.
    """

    interval = 0.25  # seconds between step updates

    def __init__(self) -> None:
        self.is_main = int(os.environ.get("RANK", "0")) == 0
        self.run_dir: str | None = None
        self.progress = None
        self.run_task = None
        self.epoch_task = None
        self.epochs = 0
        self.epoch_step = 0

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
        where = f"{i['world_size']} processes on {i['device']}" if i["world_size"] > 1 else i["device"]
        resumed = f", resuming at epoch {i['start_epoch'] + 1} step {i['start_step']}" if i["resumed"] else ""
        info(f"training {i['arch']} ({i['params']:,} params) on {i['data']}: {i['train_images']:,} train / "
             f"{i['val_images']:,} val images, {i['classes']} classes, {i['image_size']} px ({i['preset']}), "
             f"batch {i['batch_size']}, {where}{resumed} -> {i['run_dir']}")
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
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
        stats = f"loss {loss:.4f}  acc {top1:6.2%}  {images_per_s:,.0f} img/s  lr {lr:.2e}"
        self.progress.update(self.epoch_task, completed=step, stats=stats)
        self.progress.advance(self.run_task, step - self.epoch_step)
        self.epoch_step = step

    def validating(self, epoch: int, images: int) -> None:
        if self.progress is not None:
            self.progress.update(self.epoch_task, description=f"epoch {epoch}/{self.epochs} (validating)")

    def epoch_end(self, m: dict[str, Any], is_best: bool) -> None:
        parts = [f"epoch {m['epoch']}/{self.epochs}", f"train loss {m['train_loss']:.4f} acc {m['train_top1']:.2%}"]
        if "val_top1" in m:
            parts.append(f"val loss {m['val_loss']:.4f} top-1 {m['val_top1']:.2%} top-5 {m['val_top5']:.2%}")
        parts.append(f"{m['images_per_s']:,.0f} img/s  {m['seconds']:.1f}s")
        if m["skipped"]:
            parts.append(f"{m['skipped']} unreadable file(s) skipped")
        if is_best:
            parts.append("best")
        line = printable("  ".join(parts))
        (self.progress.console if self.progress is not None else err).print(line, markup=False, highlight=False)

    def stopping(self, reason: str) -> None:
        self._stop_progress()
        info(f"{reason}: stopping after this step and saving")

    def warning(self, text: str) -> None:
        """One line above the bars; ``text`` (it names files) is shown literally, never as markup."""
        warn(text)  # the bars' console is ``err``: rich prints above live bars

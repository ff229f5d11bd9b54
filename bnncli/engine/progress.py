"""What a run reports while it trains: the :class:`Reporter` interface and an epoch's running sums.

The library never prints; the CLI implements :class:`Reporter` with rich (and a log file). The
base class sends warnings to the ``bnncli`` logger (stdlib logging), so a library user routes or
silences them like any other library's.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from bnncli.engine import distributed

log = logging.getLogger("bnncli.engine")


class Reporter:
    """Progress callbacks; the CLI draws them with rich. Only rank 0 gets a real reporter.

    ``step`` is called at most every ``interval`` seconds (and at the end of each epoch): reading
    the running loss makes a GPU wait, so it is not done on every step.
    """

    interval = 0.25

    def start(self, info: dict[str, Any]) -> None: ...

    def epoch_start(self, epoch: int, epochs: int, steps: int, first_step: int) -> None: ...

    def step(self, epoch: int, step: int, steps: int, loss: float, top1: float, images_per_s: float,
             lr: float) -> None: ...

    def validating(self, epoch: int, images: int) -> None: ...

    def epoch_end(self, metrics: dict[str, Any], is_best: bool) -> None: ...

    def stopping(self, reason: str) -> None: ...

    def warning(self, text: str) -> None:
        """One line for people. ``text`` names user files and classes: a reporter shows it literally
        (never as markup, control characters escaped); it is not for JSON. Here: a warning of the
        ``bnncli.engine`` logger."""
        log.warning("%s", text)


class EpochSums:
    """An epoch's running loss, correct predictions, images and unreadable files.

    Loss and hits accumulate on the device, so a step does not wait for the GPU; ``start`` is the
    saved sums of an interrupted epoch.
    """

    def __init__(self, device: torch.device, start: list[float] | None = None) -> None:
        self.base = list(start or [0.0, 0.0, 0.0, 0.0])
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.float64, device=device)
        self.local_images = 0
        self.skipped = 0
        self.seconds = 0.0  # this process's training time in the epoch, set when the epoch ends

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss.detach().double() * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.local_images += len(y)

    def local(self) -> list[float]:
        b = self.base
        return [b[0] + self.loss.item(), b[1] + self.correct.item(), b[2] + self.local_images, b[3] + self.skipped]

    def averages(self) -> tuple[float, float]:
        loss, correct, images, _ = self.local()
        return loss / max(images, 1), correct / max(images, 1)

    def totals(self, ctx: distributed.Context) -> list[float]:
        """Summed over processes (a collective: every rank must call it)."""
        t = torch.tensor(self.local(), dtype=torch.float64, device=self.loss.device)
        return distributed.all_reduce(t, "sum", ctx).tolist()

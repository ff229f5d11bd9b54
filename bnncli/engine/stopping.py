"""Stopping a run cleanly: a stop request that signals (Ctrl-C, SIGTERM) or tests set.

The loop polls :class:`StopRequest` between steps; under torchrun the processes agree on it
(:func:`bnncli.engine.distributed.any_rank`), so every process stops at the same step.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class StopRequest:
    """Set by a signal handler (or a test); the loop stops at the next step boundary and saves."""

    def __init__(self) -> None:
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str = "stop requested") -> None:
        if self.reason is None:
            self.reason = reason


@contextlib.contextmanager
def graceful_interrupts(stop: StopRequest) -> Iterator[StopRequest]:
    """First Ctrl-C (or SIGTERM, which torchrun and schedulers send) asks for a clean stop:
    finish the step, save ``last.pt``, return. A second Ctrl-C aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: Any) -> None:
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.request("interrupted (Ctrl-C)" if signum == signal.SIGINT else f"received {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

"""Helper threads that wake in microseconds: how the compiled kernels use a second core at batch 1.

At batch 1 a binary convolution of BinaryDenseNet28 or ResNetE18 takes 0.1-0.3 ms on one core.
Handing half of it to a thread of a ThreadPoolExecutor costs about as much as it saves: the
helper sleeps on a futex and needs 50-100 us to wake (measured on the 2-core VM), so calls on
two threads were no faster than on one. A :class:`Crew` keeps its helpers awake between calls
for a bounded time instead:

* a helper that has finished a job polls the crew's job counter in compiled code without the
  GIL (:func:`_await_job`), yielding the CPU every 64 polls, for about :data:`SPIN_ROUNDS`
  rounds (a few milliseconds, longer than the float ops between two binary convolutions of a
  forward pass); then it sleeps on a condition variable until the next job is published;
* :meth:`Crew.run` publishes a job (a compiled ``nogil`` function and its arguments), bumps the
  counter (waking sleepers only when there are any) and runs the job on the calling thread too.

Jobs split their work through atomic task counters of their own (bnncli.runtime.backends.numba.binary_conv):
the caller never waits for a helper, only for the job's tasks, so a helper that wakes late, or
whose core another process keeps busy, takes fewer tasks (or none) instead of stalling the call.
A helper that picks up a job after newer ones were published runs the newest: the older ones are
done by then. The polling costs a core for at most a few milliseconds after the last call.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import numpy as np

from bnncli.runtime.backends.numba.intrinsics import fetch_add, jit, load_acquire, wait_for, yield_cpu

# Rounds of 64 polls a helper makes after its last job before it sleeps (each round ends with a
# sched_yield: about a microsecond on an idle core, so a few milliseconds in all).
SPIN_ROUNDS = 4000


@jit
def _await_job(control, seen, rounds):
    """Poll ``control[0]`` until it differs from ``seen`` or ``rounds`` rounds of 64 polls pass;
    return its last value (``seen`` when nothing came)."""
    for _ in range(rounds):
        for _ in range(64):
            value = load_acquire(control, 0)
            if value != seen:
                return value
        yield_cpu()
    return load_acquire(control, 0)


@jit
def _claim(counters):
    """The next task of a Python job (``counters[0]``, then bumped)."""
    return fetch_add(counters, 0)


@jit
def _finish(counters):
    """Count a Python job's task done (``counters[8]``)."""
    fetch_add(counters, 8)


@jit
def _publish(control):
    """Bump the job counter ``control[0]``; return the new value."""
    return fetch_add(control, 0) + 1


class Crew:
    """``helpers`` threads that run every job :meth:`run` publishes, beside the calling thread.

    Threads are daemons; they stop when the crew is closed (:meth:`close`, or when the owner
    given to :meth:`for_owner` is collected).
    """

    def __init__(self, helpers: int, spin_rounds: int = SPIN_ROUNDS) -> None:
        self.helpers = max(0, int(helpers))
        self.spin_rounds = int(spin_rounds)
        self._control = np.zeros(8, np.int64)  # [0]: the number of jobs published
        # Compiled (or loaded from the cache) now, not in close(): close() may run from a garbage
        # collector's finalizer, which can fire while numba is compiling something else.
        _publish(np.zeros(8, np.int64))
        self._job: tuple[Callable, tuple] | None = None
        self._cond = threading.Condition()
        self._sleepers = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._serve, name=f"bnn-crew-{i}", daemon=True)
                         for i in range(self.helpers)]
        for t in self._threads:
            t.start()

    @classmethod
    def for_owner(cls, owner: object, helpers: int) -> Crew:
        """A crew closed when ``owner`` is garbage-collected."""
        crew = cls(helpers)
        weakref.finalize(owner, crew.close)
        return crew

    @property
    def threads(self) -> int:
        """Threads a job runs on: the helpers and the caller."""
        return self.helpers + 1

    def run(self, fn: Callable, args: tuple) -> None:
        """``fn(*args)`` on every helper and on the calling thread; returns when the caller's share is done.

        ``fn`` takes its work from shared counters in ``args`` (a compiled ``nogil`` function, or
        see :meth:`run_python`) and must not raise: when it returns on the calling thread, helpers
        may still be finishing tasks they took, and the caller waits for those through the
        counters, not here.
        """
        if self.helpers and not self._closed:
            self._job = (fn, args)
            _publish(self._control)
            if self._sleepers:
                with self._cond:
                    self._cond.notify_all()
        fn(*args)

    def run_python(self, fn: Callable, tasks: list) -> None:
        """``fn(task)`` for every task, on the calling thread and the helpers, each taking the next
        task from shared counters; returns when every task is done. For NumPy work that releases
        the GIL (products, copies). An error raised by any task is raised here, after every task
        that started has finished (they may write into the caller's arrays)."""
        counters = np.zeros(16, np.int64)
        errors: list[BaseException] = []
        count = len(tasks)

        def share() -> None:
            while True:
                i = _claim(counters)
                if i >= count:
                    return
                try:
                    fn(tasks[i])
                except BaseException as e:  # kept for the caller: a helper thread must not die
                    errors.append(e)
                finally:
                    _finish(counters)

        self.run(share, ())
        wait_for(counters, 8, count)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Stop the helpers (they finish the job they are in)."""
        with self._cond:
            self._closed = True
            _publish(self._control)
            self._cond.notify_all()

    def _serve(self) -> None:
        seen = 0
        while True:
            value = _await_job(self._control, seen, self.spin_rounds)
            if value == seen:
                with self._cond:
                    self._sleepers += 1
                    while self._control[0] == seen and not self._closed:
                        self._cond.wait()
                    self._sleepers -= 1
                continue
            if self._closed:
                return
            seen = value
            job = self._job
            if job is not None:
                job[0](*job[1])


COMPILED = [_await_job, _publish, _claim, _finish]

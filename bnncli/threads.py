"""CPU threads: how many every pool gets by default, and how idle threads wait.

bnncli runs on shared machines (CI runners, workstations, containers with a CPU quota), where a
thread pool sized for the whole machine, whose idle threads spin, collapses as soon as another
process keeps a core busy: measured on 2 cores, `bnn eval` ran at 38 img/s with PyTorch's default
threads against 327 img/s with one. Two rules, applied by every command that computes:

* the default thread count is the CPUs in the process's affinity set (what ``taskset``, cgroups'
  cpusets and container runtimes restrict), not the machine's core count; ``--threads N`` sets it
  for PyTorch (intra- and inter-op), onnxruntime and the packed runtime alike;
* OpenMP's idle threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, set by the ``bnn``
  command before PyTorch loads, unless the environment already chose a policy). onnxruntime's
  sessions are made with spinning off (bnncli.artifacts.onnx_file), and the packed runtime's
  helpers yield the CPU (bnncli.runtime.backends.numba.crew).

This module imports only the standard library: the runtime uses it too.
"""

from __future__ import annotations

import os

WAIT_POLICY_VAR = "OMP_WAIT_POLICY"
# The most threads any pool gets, whatever is asked (``--threads 100000`` would fail to start
# them: "can't start new thread"); the CLI caps --threads at the CPUs, with a warning.
MAX_THREADS = 256


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity set where the OS has one, else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def resolve(threads: int | None) -> int:
    """``threads``, or :func:`available_cpus` when None; from 1 to :data:`MAX_THREADS`."""
    return min(max(1, int(threads)), MAX_THREADS) if threads is not None else min(available_cpus(), MAX_THREADS)


def prefer_sleeping_waits() -> None:
    """Make OpenMP's idle threads sleep rather than spin, unless ``$OMP_WAIT_POLICY`` is set.

    It takes effect only when called before the OpenMP runtime loads (before ``import torch``).
    """
    os.environ.setdefault(WAIT_POLICY_VAR, "PASSIVE")

"""Which kernels the runtime computes with: ``numpy`` (the reference) or ``numba`` (compiled).

The NumPy kernels (:mod:`bnncli.runtime.backends.numpy`) are the reference and the fallback: the
runtime runs with NumPy alone. With the ``fast`` extra installed (``pip install "bnncli[fast]"``,
numba), the binary convolutions, pooling and affine ops run as compiled kernels
(:mod:`bnncli.runtime.backends.numba`) that give bit-identical results. The choice is made once
per model, at one seam: :func:`create` makes the model's :class:`Kernels`, which its context
holds and its ops call; no op asks which backend it runs on.

* ``load(path, backend=...)`` / ``Model(..., backend=...)``: ``"numpy"``, ``"numba"`` or ``"auto"``;
* else the environment variable ``BNN_BACKEND``;
* else ``auto``: numba when it imports, NumPy otherwise.

Asking for ``numba`` where it is not installed is an error that says how to install it.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from bnncli.errors import UsageError
from bnncli.runtime.backends.base import BinaryConvLayer, ConvLayer, GroupConvLayer, Kernels

__all__ = ["BACKENDS", "CHOICES", "BinaryConvLayer", "ConvLayer", "GroupConvLayer", "Kernels", "available",
           "compiled_cache_is_warm", "compiled_cache_state", "create", "resolve", "warm_compiled_cache"]

BACKENDS = ("numpy", "numba")
CHOICES = ("auto", *BACKENDS)
ENV_VAR = "BNN_BACKEND"
INSTALL_HINT = "pip install 'bnncli[fast]' (numba)"


# Free space numba's cache folder needs to compile the kernels (they take about 6 MB there).
MIN_CACHE_FREE = 32 << 20


def check_numba_environment() -> str | None:
    """Refuse (UsageError) numba settings that would crash it, before numba is imported:
    ``NUMBA_NUM_THREADS`` that is not a whole number from 1. Returns why the compiled backend
    cannot run here although numba may import (``NUMBA_DISABLE_JIT``: the kernels need the JIT), else None."""
    threads = os.environ.get("NUMBA_NUM_THREADS")
    if threads is not None and threads.strip():
        try:
            valid = int(threads) >= 1
        except ValueError:
            valid = False
        if not valid:
            raise UsageError(f"$NUMBA_NUM_THREADS is {threads!r}; numba needs a whole number of threads from 1 "
                             f"(or leave it unset)")
    if os.environ.get("NUMBA_DISABLE_JIT", "0").strip() not in ("", "0"):
        return "$NUMBA_DISABLE_JIT is set, and the compiled kernels need numba's JIT"
    return None


def _numba_backend() -> ModuleType | None:
    """bnncli.runtime.backends.numba, or None when numba cannot be imported or run here."""
    if check_numba_environment() is not None:
        return None
    try:
        from bnncli.runtime.backends import numba
    except ImportError:
        return None
    return numba


def _check_cache_space(module: ModuleType) -> None:
    """Where the kernels must still be compiled, numba writes them to its cache folder and fails
    with a traceback when that disk is full: refuse at once, in one line, instead."""
    if module.cache_is_warm():
        return
    for f in module.intrinsics.COMPILED:
        index = getattr(getattr(getattr(f, "_cache", None), "_cache_file", None), "_index_path", None)
        if index is None:
            continue
        folder = os.path.dirname(index)
        while folder and not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        try:
            info = os.statvfs(folder)
        except (OSError, AttributeError):  # no statvfs (Windows), or nothing to ask
            return
        if info.f_bavail * info.f_frsize < MIN_CACHE_FREE:
            raise UsageError(f"numba's cache folder {folder} has no room to compile the kernels (No space left on "
                             f"device); free some, set $NUMBA_CACHE_DIR to another folder, or use --backend numpy")
        return


def available() -> tuple[str, ...]:
    """The backends that run here: always ``numpy``, and ``numba`` where it imports."""
    return BACKENDS if _numba_backend() is not None else ("numpy",)


def resolve(name: str | None = None) -> str:
    """The backend to use for ``name`` (None: ``$BNN_BACKEND``, else ``auto``)."""
    choice = (name or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if choice not in CHOICES:
        source = "" if name else f" (from ${ENV_VAR})"
        raise UsageError(f"unknown runtime backend {choice!r}{source}; choose one of {', '.join(CHOICES)}")
    if choice == "numpy":
        return "numpy"
    if _numba_backend() is not None:
        return "numba"
    if choice == "numba":
        why = check_numba_environment()
        if why is not None:
            raise UsageError(f"the numba backend cannot run: {why}; unset it or use --backend numpy")
        raise UsageError(f"the numba backend needs numba, which does not import here: {INSTALL_HINT}")
    return "numpy"


def create(name: str | None, threads: int, buffers: Any) -> Kernels:
    """The kernels of backend ``name`` (as :func:`resolve` takes it) on ``threads`` threads, taking
    outputs and scratch from ``buffers`` (the model's context)."""
    if resolve(name) == "numba":
        module = _numba_backend()
        _check_cache_space(module)
        return module.NumbaKernels(threads, buffers)
    from bnncli.runtime.backends.numpy import NumpyKernels

    return NumpyKernels(threads, buffers)


def compiled_cache_is_warm() -> bool:
    """Whether numba's on-disk cache holds the compiled kernels (False: the first call compiles them,
    several seconds). The cache is ``$NUMBA_CACHE_DIR`` when set, else ``__pycache__`` next to
    bnncli/runtime/backends/numba/, else numba's user-wide cache directory (``~/.cache/numba``)."""
    module = _numba_backend()
    return module is not None and module.cache_is_warm()


def compiled_cache_state() -> str:
    """The compiled kernels' cache: ``"absent"`` (numba does not import), ``"warm"`` (a run
    compiles nothing), ``"cold"`` (they compile once, then load from the cache) or ``"unwritable"``
    (numba has nowhere to write its cache: every process compiles them)."""
    module = _numba_backend()
    if module is None:
        return "absent"
    if not module.cache_is_writable():
        return "unwritable"
    return "warm" if module.cache_is_warm() else "cold"


def warm_compiled_cache() -> None:
    """Compile every numba kernel once (into numba's cache where it has one), so that no model
    compiles anything later: bnncli.runtime.backends.numba.warmup. Nothing where numba is missing."""
    if _numba_backend() is None:
        return
    from bnncli.runtime.backends.numba import warmup

    warmup.compile_all()

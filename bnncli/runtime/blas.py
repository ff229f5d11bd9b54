"""Keep OpenBLAS to one thread while the runtime runs (the runtime splits the work itself).

NumPy's OpenBLAS starts its own threads for every matrix product. The runtime already runs the
binary kernels on its own thread pool, and OpenBLAS threads that wait for busy cores cost far
more than they save on the small products of a BNN (measured here: a 160x448 @ 448x784 product
takes 0.8 ms on one thread and 6-16 ms on two while another process keeps a core busy). So
:func:`single_threaded` sets OpenBLAS to one thread for the duration of a forward pass and
restores the previous count afterwards; the runtime then splits large products across its own
pool. Found through ctypes in the libraries this process has loaded (as threadpoolctl does);
where no OpenBLAS is found (MKL, Accelerate, another OS) it does nothing and :data:`available`
is False, and the runtime leaves threading of products to the BLAS.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
            "openblas_get_num_threads")


def _find() -> tuple[object, object] | None:
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, s) for s in _SETTERS if hasattr(lib, s)), None)
        getter = next((getattr(lib, s) for s in _GETTERS if hasattr(lib, s)), None)
        if setter is not None and getter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            return setter, getter
    return None


import numpy  # noqa: E402,F401  (load NumPy's BLAS before looking for it)

_FUNCS = _find()
available = _FUNCS is not None
_lock = threading.Lock()
_depth = 0
_saved = 1


@contextmanager
def single_threaded() -> Iterator[None]:
    """OpenBLAS on one thread inside the block (nested and concurrent blocks are fine)."""
    global _depth, _saved
    if _FUNCS is None:
        yield
        return
    setter, getter = _FUNCS
    with _lock:
        if _depth == 0:
            _saved = getter()
            setter(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                setter(_saved)

"""What a model's ops share at run time: its kernels, its buffers, and BLAS held to one thread.

One :class:`Context` per model (bnncli.runtime.model.Model): the backend's :class:`Kernels`
(bnncli.runtime.backends, chosen once, with the threads they compute on), the float32 buffers of
dead values kept for reuse, and the buffers concatenations append to.

NumPy's BLAS starts its own threads for every matrix product. The runtime splits its work across
its own threads, and BLAS threads that wait for busy cores cost far more than they save on the
small products of a BNN (measured here: a 160x448 @ 448x784 product took 0.8 ms on one thread and
6-16 ms on two while another process kept a core busy). So :func:`blas_single_threaded` holds
every BLAS library NumPy loaded to one thread for a forward pass (through threadpoolctl, which
knows OpenBLAS, MKL, BLIS and the others on every OS), and restores the previous count afterwards.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from bnncli.runtime import backends
from bnncli.threads import resolve as resolve_threads

# Released buffers kept per size (Context.release): a forward pass has few live maps of one size.
MAX_FREE_PER_SIZE = 4


class Context:
    """The kernels (``kernels``, named by ``backend``), the thread count and the buffers of one model."""

    def __init__(self, threads: int | None = None, backend: str | None = None) -> None:
        self.threads = resolve_threads(threads)
        self.kernels: backends.Kernels = backends.create(backend, self.threads, self)
        self.backend = self.kernels.name
        # Large matrix products are split across the kernels' threads where BLAS is held to one.
        self.kernels.split_products = self.threads > 1 and blas_controllable()
        # Buffers concatenations may append to, by data address; reset for every forward pass.
        self.arena: dict[int, tuple[np.ndarray, int]] = {}
        # Float32 buffers of dead values, by size in bytes, for ops to reuse (empty/release): a
        # fresh buffer of some megabytes costs its page faults and the kernel's zeroing each time.
        self._free: dict[int, list[np.ndarray]] = {}

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialized C-contiguous float32 array: a released buffer of the same size when there is one."""
        nbytes = 4 * math.prod(shape)
        free = self._free.get(nbytes)
        if free:
            return free.pop().reshape(shape)
        return np.empty(shape, dtype=np.float32)

    def release(self, x: np.ndarray) -> None:
        """Offer ``x``'s memory for reuse; the caller guarantees that nothing reads ``x`` (or
        anything sharing its memory) again. Only a whole, writable float32 buffer owned by the
        runtime qualifies (a reshaped view of one included); anything else is left alone."""
        root = x
        while isinstance(root.base, np.ndarray):
            root = root.base
        if root.base is not None or root.dtype != np.float32 or root.nbytes != x.nbytes \
                or not (root.flags.c_contiguous and root.flags.writeable and root.flags.owndata):
            return
        if self.arena:
            self.arena.pop(root.ctypes.data, None)  # no concatenation appends to it any more
        free = self._free.setdefault(root.nbytes, [])
        if len(free) < MAX_FREE_PER_SIZE and not any(b is root for b in free):
            free.append(root)

    def drop_buffers(self) -> None:
        """Forget every released buffer (their memory goes back to the allocator)."""
        self._free.clear()


_blas: Any = None  # threadpoolctl's controller of the BLAS libraries loaded, once looked up; False: none
_blas_lock = threading.Lock()
_depth = 0
_saved: list[int] = []


def _blas_controller() -> Any:
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # the runtime runs without it; BLAS then threads products itself
            _blas = False
        else:
            controller = ThreadpoolController().select(user_api="blas")
            _blas = controller if controller.lib_controllers else False
    return _blas


def blas_controllable() -> bool:
    """Whether the BLAS libraries NumPy uses can be held to one thread here."""
    return bool(_blas_controller())


@contextmanager
def blas_single_threaded() -> Iterator[None]:
    """Every BLAS library NumPy loaded on one thread inside the block (nested and concurrent blocks are fine)."""
    global _depth, _saved
    controller = _blas_controller()
    if not controller:
        yield
        return
    libs = controller.lib_controllers
    with _blas_lock:
        if _depth == 0:
            _saved = [lib.num_threads for lib in libs]
            for lib in libs:
                lib.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _depth -= 1
            if _depth == 0:
                for lib, n in zip(libs, _saved):
                    lib.set_num_threads(n)

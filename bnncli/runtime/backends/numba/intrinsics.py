"""What every compiled kernel of the numba backend builds on: the ``jit`` decorator, popcount,
atomic task counters, and polite waiting.

``jit`` is numba's ``njit`` with ``nogil=True`` and no ``fastmath`` (which would let LLVM contract
a multiply and an add into an FMA and change the rounding), caching the machine code on disk
where numba finds a writable place for it: ``$NUMBA_CACHE_DIR`` when set, else ``__pycache__``
next to these files, else numba's user-wide cache directory (``~/.cache/numba``, or under
``$XDG_CACHE_HOME``). Where there is none (a read-only install with no writable home), the
kernels compile in every process instead of failing: :data:`UNCACHED` then names them.
"""

from __future__ import annotations

import sys

from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# The jitted functions that could not be cached on disk (compiled anew in every process).
UNCACHED: list[str] = []


def jit(fn=None, **options):
    """``njit(cache=True, nogil=True, **options)``, without the cache where numba has nowhere to put it."""
    def wrap(f):
        try:
            return njit(cache=True, nogil=True, **options)(f)
        except RuntimeError as e:  # "cannot cache function ...: no locator available for file ..."
            if "cannot cache" not in str(e):
                raise
            UNCACHED.append(f.__name__)
            return njit(cache=False, nogil=True, **options)(f)

    return wrap if fn is None else wrap(fn)


def functions_cached(functions) -> bool:
    """Whether numba's disk cache, where this process's numba looks for it, holds each of these
    jitted functions as a call will load it: an index written by this numba version for the
    source file as it is now, with an entry compiled for this CPU from the function's current code.

    (Which argument types are cached is not checked: bnncli.runtime.backends.numba.warmup compiles
    the ones the runtime's ops pass, and a function in no index at all is compiled on first use.)
    """
    from numba.core.registry import cpu_target

    codegen = cpu_target.target_context.codegen()
    for f in functions:
        cache = getattr(f, "_cache", None)
        cache_file = getattr(cache, "_cache_file", None)
        if cache_file is None:  # cache=False (UNCACHED), or not a jitted function
            return False
        try:
            overloads = cache_file._load_index()
            wanted = cache._index_key(None, codegen)[1:]  # (CPU and target, hashes of the code)
        except Exception:  # an unreadable or foreign index: numba would compile
            return False
        if not any(isinstance(key, tuple) and key[1:] == wanted for key in overloads):
            return False
    return True


@intrinsic
def popcount(typingctx, x):
    """The number of bits set in a uint64 (LLVM ctpop: POPCNT, or VPOPCNTQ when vectorized)."""
    if not isinstance(x, types.Integer):
        return None
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


def _counter_intrinsic(counters, atomic_op):
    """Typing and code of an atomic operation on ``counters[index]`` (an int64 array):
    ``atomic_op(context, builder, pointer)`` emits it and returns the int64 result."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64):
        return None
    sig = types.int64(counters, types.intp)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        return atomic_op(context, builder, ptr)

    return sig, codegen


@intrinsic
def fetch_add(typingctx, counters, index):
    """Atomically ``counters[index] += 1`` (int64 array, acquire-release); returns the value before."""
    return _counter_intrinsic(counters, lambda context, builder, ptr: builder.atomic_rmw(
        "add", ptr, context.get_constant(types.int64, 1), "acq_rel"))


@intrinsic
def load_acquire(typingctx, counters, index):
    """``counters[index]`` as an atomic load (acquire): re-read on every call, never hoisted."""
    return _counter_intrinsic(counters, lambda context, builder, ptr: builder.load_atomic(ptr, "acquire", 8))


if sys.platform == "win32":

    @jit
    def yield_cpu():
        """Nothing (Windows): pollers spin."""

else:
    _sched_yield = types.ExternalFunction("sched_yield", types.intc())  # libc, resolved by name: cache-safe

    @jit
    def yield_cpu():
        """Let another runnable thread have this core (sched_yield)."""
        _sched_yield()


@jit
def wait_for(counters, index, target):
    """Spin until ``counters[index] >= target``, yielding the CPU every 64 polls."""
    polls = 0
    while load_acquire(counters, index) < target:
        polls += 1
        if polls % 64 == 0:
            yield_cpu()


COMPILED = [yield_cpu, wait_for]

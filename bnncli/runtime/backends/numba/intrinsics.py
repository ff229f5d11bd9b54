"""What every compiled kernel of the numba backend builds on: the ``jit`` decorator, popcount,
atomic task counters, and polite waiting.

``U64x8`` is a vector of eight uint64 words held in registers (LLVM's ``<8 x i64>``), with the
few operations the binary convolution needs (:func:`vload`, :func:`vsplat`, :func:`vzero`,
:func:`vxor_popcount_add`, :func:`vstore`): written as explicit vectors, they compile to 512-bit
instructions (``vpxorq``, ``vpopcntq``, ``vpaddq`` on zmm registers) where the CPU has AVX-512, which
LLVM's loop vectorizer does not choose on its own (it prefers 256-bit vectors on these CPUs), and to
pairs of 256-bit instructions, or narrower ones, elsewhere.

``jit`` is numba's ``njit`` with ``nogil=True`` and no ``fastmath`` (which would let LLVM contract
a multiply and an add into an FMA and change the rounding), caching the machine code on disk
where numba finds a writable place for it: ``$NUMBA_CACHE_DIR`` when set, else ``__pycache__``
next to these files, else numba's user-wide cache directory (``~/.cache/numba``, or under
``$XDG_CACHE_HOME``). Where there is none (a read-only install with no writable home), the
kernels compile in every process instead of failing: :data:`UNCACHED` then names them.
"""

from __future__ import annotations

import sys

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

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
        if cache is None or cache_file is None:  # cache=False (UNCACHED), or not a jitted function
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


_I64 = ir.IntType(64)
_V8 = ir.VectorType(_I64, 8)


class U64x8Type(types.Type):
    """Eight uint64 words in one (virtual) vector register."""

    def __init__(self) -> None:
        super().__init__(name="U64x8")


U64x8 = U64x8Type()


@register_model(U64x8Type)
class _U64x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V8)


def _vector_pointer(context, builder, aryty, ary, index):
    """A ``<8 x i64>*`` to ``ary[index]`` (a 1-D uint64 array; no bounds check: the callers' loops keep in bounds)."""
    a = context.make_array(aryty)(context, builder, ary)
    ptr = cgutils.get_item_pointer(context, builder, aryty, a, [index], wraparound=False)
    return builder.bitcast(ptr, _V8.as_pointer())


def _is_words(arr) -> bool:
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype in (types.uint64, types.int64)


@intrinsic
def vload(typingctx, arr, index):
    """``arr[index:index + 8]`` of a 1-D uint64 or int64 array, as a vector."""
    if not _is_words(arr):
        return None
    sig = U64x8(arr, types.intp)

    def codegen(context, builder, signature, args):
        return builder.load(_vector_pointer(context, builder, signature.args[0], args[0], args[1]), align=8)

    return sig, codegen


@intrinsic
def vstore(typingctx, arr, index, value):
    """``arr[index:index + 8] = value`` (a 1-D uint64 or int64 array)."""
    if not _is_words(arr):
        return None
    sig = types.void(arr, types.intp, U64x8)

    def codegen(context, builder, signature, args):
        builder.store(args[2], _vector_pointer(context, builder, signature.args[0], args[0], args[1]), align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def vsplat(typingctx, word):
    """A vector of eight copies of ``word`` (uint64)."""
    sig = U64x8(types.uint64)

    def codegen(context, builder, signature, args):
        v = builder.insert_element(ir.Constant(_V8, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), 8), [0] * 8))

    return sig, codegen


@intrinsic
def vzero(typingctx):
    """A vector of zeros."""
    sig = U64x8()

    def codegen(context, builder, signature, args):
        return ir.Constant(_V8, [0] * 8)

    return sig, codegen


@intrinsic
def vxor_popcount_add(typingctx, acc, x, w):
    """``acc + popcount(x ^ w)``, lane by lane (LLVM's ctpop: VPOPCNTQ where the CPU has it)."""
    sig = U64x8(U64x8, U64x8, U64x8)

    def codegen(context, builder, signature, args):
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8]), "llvm.ctpop.v8i64")
        return builder.add(args[0], builder.call(ctpop, [builder.xor(args[1], args[2])]))

    return sig, codegen


# Four uint64 words (one 256-bit register), for CPUs without AVX-512: byte-wise popcounts are added
# up in bytes over up to 31 words (31 x 8 bits fit a byte) and only then summed into the words'
# 64-bit lanes, one VPSADBW per flush instead of one per word.
_V4 = ir.VectorType(_I64, 4)
_B32 = ir.VectorType(ir.IntType(8), 32)
BYTE_COUNT_WORDS = 31


class U64x4Type(types.Type):
    """Four uint64 words in one 256-bit vector register (or 32 byte counts, see vxor_popcount_bytes_add)."""

    def __init__(self) -> None:
        super().__init__(name="U64x4")


U64x4 = U64x4Type()


@register_model(U64x4Type)
class _U64x4Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V4)


@intrinsic
def vload4(typingctx, arr, index):
    """``arr[index:index + 4]`` of a 1-D uint64 or int64 array, as a vector."""
    if not _is_words(arr):
        return None
    sig = U64x4(arr, types.intp)

    def codegen(context, builder, signature, args):
        ptr = builder.bitcast(_vector_pointer(context, builder, signature.args[0], args[0], args[1]), _V4.as_pointer())
        return builder.load(ptr, align=8)

    return sig, codegen


@intrinsic
def vstore4(typingctx, arr, index, value):
    """``arr[index:index + 4] = value`` (a 1-D uint64 or int64 array)."""
    if not _is_words(arr):
        return None
    sig = types.void(arr, types.intp, U64x4)

    def codegen(context, builder, signature, args):
        ptr = builder.bitcast(_vector_pointer(context, builder, signature.args[0], args[0], args[1]), _V4.as_pointer())
        builder.store(args[2], ptr, align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def vsplat4(typingctx, word):
    """A vector of four copies of ``word`` (uint64)."""
    sig = U64x4(types.uint64)

    def codegen(context, builder, signature, args):
        v = builder.insert_element(ir.Constant(_V4, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), 4), [0] * 4))

    return sig, codegen


@intrinsic
def vzero4(typingctx):
    """A vector of zeros (four words, or 32 byte counts)."""
    sig = U64x4()

    def codegen(context, builder, signature, args):
        return ir.Constant(_V4, [0] * 4)

    return sig, codegen


@intrinsic
def vadd4(typingctx, a, b):
    """``a + b`` in 64-bit lanes."""
    sig = U64x4(U64x4, U64x4)

    def codegen(context, builder, signature, args):
        return builder.add(args[0], args[1])

    return sig, codegen


@intrinsic
def vxor_popcount_bytes_add(typingctx, counts, x, w):
    """``counts + popcount(x ^ w)`` byte by byte (32 byte counts in one vector; LLVM's ctpop on
    bytes: VPSHUFB nibble lookups on AVX2). A byte holds at most 255: add at most
    :data:`BYTE_COUNT_WORDS` words before :func:`vbyte_sums`."""
    sig = U64x4(U64x4, U64x4, U64x4)

    def codegen(context, builder, signature, args):
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_B32, [_B32]), "llvm.ctpop.v32i8")
        bits = builder.bitcast(builder.xor(args[1], args[2]), _B32)
        total = builder.add(builder.bitcast(args[0], _B32), builder.call(ctpop, [bits]))
        return builder.bitcast(total, _V4)

    return sig, codegen


@intrinsic
def vbyte_sums(typingctx, counts):
    """The sum of each 64-bit lane's eight byte counts, as four uint64 (VPSADBW against zero)."""
    sig = U64x4(U64x4)

    def codegen(context, builder, signature, args):
        psad = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V4, [_B32, _B32]),
                                              "llvm.x86.avx2.psad.bw")
        return builder.call(psad, [builder.bitcast(args[0], _B32), ir.Constant(_B32, [0] * 32)])

    return sig, codegen


def _target_features() -> set[str]:
    """The CPU features numba compiles for ($NUMBA_CPU_FEATURES, else the host's, as numba decides)."""
    from numba.core import config

    features = getattr(config, "CPU_FEATURES", None)
    if features is None:
        import llvmlite.binding as ll

        features = ll.get_host_cpu_features().flatten()
    return {f[1:] for f in features.split(",") if f.startswith("+")}


_FEATURES = _target_features()
# Which micro-kernel the binary convolution compiles: "avx512" (eight-word vectors, 32 registers),
# "avx2" (four-word vectors, 16 registers, byte-wise counts), or "generic" (eight-word vectors,
# whatever LLVM makes of them on other CPUs).
VECTOR_ISA = "avx512" if "avx512f" in _FEATURES else "avx2" if "avx2" in _FEATURES else "generic"

COMPILED = [yield_cpu, wait_for]

"""Compiled (numba) binary convolution: binarize, pack, XOR + popcount and epilogue in one kernel.

:class:`BinaryConvKernel` (built once per layer) and :func:`binary_conv` (one call) do what
``BinaryConv.__call__`` does with the NumPy kernels (bnncli.runtime.kernels), bit for bit::

    K.binary_conv_fast(K.pack_planar(K.sign_bits(x, threshold, negate)).reshape(-1, n, h, w), wbits,
                       channels, stride, pads, dilation, pad_value, dtype=np.float32, scale=scale, bias=bias)

from the float32 input ``[C, N, H, W]`` to the float32 output ``[Cout, N, Ho, Wo]``:

1. **Pack.** Chunks of input positions are binarized (``x >= 0``; ``x >= t[c]``, or ``x <= t[c]``
   where ``negate[c]``: the comparisons of :func:`K.sign_bits`, computed as ``x * s >= t * s``
   with s = +-1, which is exact) and packed into uint64 words (channel ``c`` is bit ``c % 64``
   of word ``c // 64``, tail bits 0) in a position-major buffer ``[N, top + H + bottom,
   left + W + right, Wc]`` whose border holds the padding pattern (all valid bits for pad
   value +1, zero words otherwise), so the inner loops check no bounds.
2. **XOR + popcount.** The ``K = kh * kw * Wc`` words an output position reads lie at fixed
   offsets from its first word (:func:`tap_offsets`). Weights are transposed to ``[K, Cout]``
   in blocks of at most 64 output channels (:func:`prepare_weights`), so the innermost loop runs
   over output channels: an input word, broadcast, is XOR-ed with a vector of weight words and
   the popcounts of four words are summed before they are added to an int32 count (AVX-512
   VPOPCNTQ where the CPU has it: LLVM compiles for the host). Two output positions share
   every load of weights. Tasks are chunks of output positions x blocks of output channels.
3. **Epilogue**, per output element, in float32 and in the NumPy kernel's order:
   ``(half_offset[o, p] - mismatches) * (2 * scale[o]) + bias[o]`` (``K.half_dot_offset``;
   the addition only where there is a bias, so that a -0.0 stays -0.0).

No ``fastmath`` anywhere: it would let LLVM contract the multiply and add into an FMA and change
the rounding. Every jitted function has ``cache=True``: the machine code is kept on disk, in
``$NUMBA_CACHE_DIR`` when set, else in ``__pycache__`` next to this file, else (a read-only
install) in numba's user-wide cache directory (``~/.cache/numba``, or under
``$XDG_CACHE_HOME``); with none writable numba warns and compiles in every process. The first
call compiles for several seconds; a later process loads the code in well under a second.

Threads (``threads`` > 1, on layers with enough work, :data:`PARALLEL_MIN_WORK`): the calling
thread and ``threads - 1`` helpers on a ThreadPoolExecutor (the caller's ``pool``, else one of
this module's) each run the nogil task loop :func:`_binary_conv_share`, taking tasks from shared
atomic counters. The caller starts at once and waits only for tasks, never for a helper: one
that wakes late finds less (or nothing) to do, and a thread slowed down by another process on
its core takes fewer tasks instead of holding the others up. ``PARALLEL = "prange"`` runs the
same loop in a ``parallel=True`` build instead (a separately named function: numba's disk cache
does not tell the two builds of one function apart) on numba's threading layer, set here to
``workqueue`` unless ``NUMBA_THREADING_LAYER`` chose one: its threads sleep when idle, where the
OpenMP layer's spinning threads stalled calls for scheduler ticks (4-11x slower) under a busy
second core. Measured on a 2-core VM, the pool is as fast or faster than the threading layers
(every workqueue call wakes its threads twice while the caller waits). Calls into the
workqueue layer are serialized by a lock: it must not be entered from two threads at once.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from bnncli.runtime import kernels as K
from bnncli.runtime.padding import as_pads, output_hw

THREADING_LAYER = "workqueue"
if numba.config.THREADING_LAYER == "default":  # set before the first parallel call; an explicit choice wins
    numba.config.THREADING_LAYER = THREADING_LAYER

# Output channels per block of transposed weights: the block's K x 64 words (36 KB for 512 input
# channels, 3 x 3) stay in L1/L2 while a row of positions is XOR-ed against them.
BLOCK_CHANNELS = 64
# Work (output elements x words per element) below which a call stays on one thread, about
# 0.3 ms of it: a sleeping helper thread took 50-100 us to wake on the 2-core VM measured.
PARALLEL_MIN_WORK = 1 << 21
# The same for helpers of a bnncli.runtime.numba_crew.Crew, which wake in about 20 us: layers of
# some 0.1 ms gain from a second thread.
CREW_MIN_WORK = 1 << 19
# Output positions per task of the popcount loop, and input positions per task of the packing.
CONV_CHUNK = 64
PACK_CHUNK = 1024

# How calls on more than one thread run (module docstring): "pool" or "prange".
PARALLEL = "pool"

_PARALLEL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


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
def _fetch_add(typingctx, counters, index):
    """Atomically ``counters[index] += 1`` (int64 array, acquire-release); returns the value before."""
    return _counter_intrinsic(counters, lambda context, builder, ptr: builder.atomic_rmw(
        "add", ptr, context.get_constant(types.int64, 1), "acq_rel"))


@intrinsic
def _load_acquire(typingctx, counters, index):
    """``counters[index]`` as an atomic load (acquire): re-read on every call, never hoisted."""
    return _counter_intrinsic(counters, lambda context, builder, ptr: builder.load_atomic(ptr, "acquire", 8))


if sys.platform == "win32":

    @njit(cache=True, nogil=True)
    def _yield_cpu():
        """Nothing (Windows): pollers spin."""

else:
    _sched_yield = types.ExternalFunction("sched_yield", types.intc())  # libc, resolved by name: cache-safe

    @njit(cache=True, nogil=True)
    def _yield_cpu():
        """Let another runnable thread have this core (sched_yield)."""
        _sched_yield()


@njit(cache=True, nogil=True)
def _wait_for(counters, index, target):
    """Spin until ``counters[index] >= target``, yielding the CPU every 64 polls."""
    polls = 0
    while _load_acquire(counters, index) < target:
        polls += 1
        if polls % 64 == 0:
            _yield_cpu()


class ConvWeights:
    """Packed weights transposed for the kernel: ``wt`` uint64 ``[blocks, kh * kw * Wc, block]``.

    :func:`binary_conv` given these keeps the :class:`BinaryConvKernel` it builds from the
    other arguments here, keyed by their identity: do not modify those arrays in place.
    """

    __slots__ = ("wt", "cout", "kernel", "words", "kernels")

    def __init__(self, wt: np.ndarray, cout: int, kernel: tuple[int, int], words: int) -> None:
        self.wt, self.cout, self.kernel, self.words = wt, cout, kernel, words
        self.kernels: dict[tuple, tuple[tuple, BinaryConvKernel]] = {}


def prepare_weights(wbits: np.ndarray) -> ConvWeights:
    """``wbits`` uint64 ``[Cout, kh, kw, Wc]`` (K.widen_words) -> :class:`ConvWeights`; do it once per layer.

    Output channels are split into near-equal blocks of at most :data:`BLOCK_CHANNELS`, each
    rounded up to a multiple of 8 (a vector of words); the padding channels' weights are 0 and
    their results are never written.
    """
    wbits = np.ascontiguousarray(wbits, dtype=np.uint64)
    cout, kh, kw, wc = wbits.shape
    nb = -(-cout // BLOCK_CHANNELS)
    ob = -(-cout // nb)
    ob = -(-ob // 8) * 8
    flat = np.zeros((nb * ob, kh * kw * wc), dtype=np.uint64)
    flat[:cout] = wbits.reshape(cout, -1)
    wt = np.ascontiguousarray(flat.reshape(nb, ob, -1).transpose(0, 2, 1))
    return ConvWeights(wt, cout, (kh, kw), wc)


@njit(cache=True, boundscheck=False, nogil=True)
def _fill_border(xf, h, w, hp, wp, wc, top, left, fill):
    """The padding of the packed buffer ``xf`` [N, Hp * Wp * Wc]: ``fill`` in every word of every border position."""
    for n in range(xf.shape[0]):
        img = xf[n]
        for yp in range(hp):
            inside = top <= yp < top + h
            for i in range(wp):
                if inside and left <= i < left + w:
                    continue
                base = (yp * wp + i) * wc
                for k in range(wc):
                    img[base + k] = fill[k]


@njit(cache=True, boundscheck=False, nogil=True)
def _pack_task(xs, xf, task, chunk, h, w, hp, wp, wc, top, left, sign, thr, buf):
    """Word ``task % Wc`` of a chunk of input positions (of N * H * W): binarize, pack, store into ``xf``.

    ``xs`` is the input [C, N * H * W]; a channel's bit is ``xs[c] * sign[c] >= thr[c]``, where
    ``sign`` is -1 for a negated channel and ``thr`` its threshold negated: -x >= -t is x <= t
    exactly (negation is exact; NaN compares false either way).
    """
    channels = xs.shape[0]
    k = task % wc
    p0 = (task // wc) * chunk
    p1 = min(xs.shape[1], p0 + chunk)
    m = p1 - p0
    for i in range(m):
        buf[i] = 0
    c0 = k * 64
    c1 = min(channels, c0 + 64)
    zero = np.uint64(0)
    c = c0
    while c + 4 <= c1:  # four channels per pass over the buffer
        r0 = xs[c, p0:p1]
        r1 = xs[c + 1, p0:p1]
        r2 = xs[c + 2, p0:p1]
        r3 = xs[c + 3, p0:p1]
        s0, s1, s2, s3 = sign[c], sign[c + 1], sign[c + 2], sign[c + 3]
        t0, t1, t2, t3 = thr[c], thr[c + 1], thr[c + 2], thr[c + 3]
        b0 = np.uint64(1) << np.uint64(c - c0)
        b1 = b0 << np.uint64(1)
        b2 = b0 << np.uint64(2)
        b3 = b0 << np.uint64(3)
        for i in range(m):
            buf[i] |= ((b0 if r0[i] * s0 >= t0 else zero) | (b1 if r1[i] * s1 >= t1 else zero)
                       | (b2 if r2[i] * s2 >= t2 else zero) | (b3 if r3[i] * s3 >= t3 else zero))
        c += 4
    while c < c1:
        r0 = xs[c, p0:p1]
        s0 = sign[c]
        t0 = thr[c]
        b0 = np.uint64(1) << np.uint64(c - c0)
        for i in range(m):
            buf[i] |= b0 if r0[i] * s0 >= t0 else zero
        c += 1
    hw = h * w
    n = p0 // hw
    rest = p0 - n * hw
    y = rest // w
    x = rest - y * w
    idx = ((n * hp + y + top) * wp + x + left) * wc + k
    for i in range(m):
        xf[idx] = buf[i]
        idx += wc
        x += 1
        if x == w:
            x = 0
            y += 1
            idx += (wp - w) * wc
            if y == h:
                y = 0
                idx += (hp - h) * wp * wc


@njit(cache=True, boundscheck=False, nogil=True)
def _conv_task(xf, wt, off, task, chunk, hp, wp, wc, ho, wo, sy, sx, hoff, factor, bias, has_bias, out, acc):
    """A chunk of output positions (of N * Ho * Wo) x a block of output channels (``task % blocks``).

    Mismatch counts go to ``acc`` [chunk + 1, block] (int32), two positions at a time, then the
    float32 epilogue writes ``out`` [Cout, N * Ho * Wo].
    """
    nb = wt.shape[0]
    kk = wt.shape[1]
    ob = wt.shape[2]
    cout = out.shape[0]
    blk = task % nb
    q0 = (task // nb) * chunk
    q1 = min(out.shape[1], q0 + chunk)
    wb = wt[blk]
    how = ho * wo
    img = hp * wp * wc
    n = q0 // how
    rest = q0 - n * how
    oy = rest // wo
    ox = rest - oy * wo
    for q in range(q0, q1, 2):
        b = n * img + (oy * sy * wp + ox * sx) * wc
        ox += 1
        if ox == wo:
            ox = 0
            oy += 1
            if oy == ho:
                oy = 0
                n += 1
        if q + 1 < q1:  # the second position of the pair (an odd last one is computed twice, once discarded)
            d = n * img + (oy * sy * wp + ox * sx) * wc - b
            ox += 1
            if ox == wo:
                ox = 0
                oy += 1
                if oy == ho:
                    oy = 0
                    n += 1
        else:
            d = 0
        ud = np.uint64(d)  # unsigned indices: no negative-index wrap-around code in the loads
        a = acc[q - q0]
        c = acc[q - q0 + 1]
        g = 0
        if kk >= 4:  # the first four words set the counts (no pass to zero them)
            i0 = np.uint64(b + off[0])
            i1 = np.uint64(b + off[1])
            i2 = np.uint64(b + off[2])
            i3 = np.uint64(b + off[3])
            x0 = xf[i0]
            x1 = xf[i1]
            x2 = xf[i2]
            x3 = xf[i3]
            y0 = xf[i0 + ud]
            y1 = xf[i1 + ud]
            y2 = xf[i2 + ud]
            y3 = xf[i3 + ud]
            w0 = wb[0]
            w1 = wb[1]
            w2 = wb[2]
            w3 = wb[3]
            for o in range(ob):
                v0 = w0[o]
                v1 = w1[o]
                v2 = w2[o]
                v3 = w3[o]
                a[o] = np.int32(popcount(x0 ^ v0) + popcount(x1 ^ v1) + popcount(x2 ^ v2) + popcount(x3 ^ v3))
                c[o] = np.int32(popcount(y0 ^ v0) + popcount(y1 ^ v1) + popcount(y2 ^ v2) + popcount(y3 ^ v3))
            g = 4
        else:
            for o in range(ob):
                a[o] = 0
                c[o] = 0
        while g + 4 <= kk:
            i0 = np.uint64(b + off[g])
            i1 = np.uint64(b + off[g + 1])
            i2 = np.uint64(b + off[g + 2])
            i3 = np.uint64(b + off[g + 3])
            x0 = xf[i0]
            x1 = xf[i1]
            x2 = xf[i2]
            x3 = xf[i3]
            y0 = xf[i0 + ud]
            y1 = xf[i1 + ud]
            y2 = xf[i2 + ud]
            y3 = xf[i3 + ud]
            w0 = wb[g]
            w1 = wb[g + 1]
            w2 = wb[g + 2]
            w3 = wb[g + 3]
            for o in range(ob):
                v0 = w0[o]
                v1 = w1[o]
                v2 = w2[o]
                v3 = w3[o]
                a[o] += np.int32(popcount(x0 ^ v0) + popcount(x1 ^ v1) + popcount(x2 ^ v2) + popcount(x3 ^ v3))
                c[o] += np.int32(popcount(y0 ^ v0) + popcount(y1 ^ v1) + popcount(y2 ^ v2) + popcount(y3 ^ v3))
            g += 4
        while g < kk:
            i0 = np.uint64(b + off[g])
            x0 = xf[i0]
            y0 = xf[i0 + ud]
            w0 = wb[g]
            for o in range(ob):
                v0 = w0[o]
                a[o] += np.int32(popcount(x0 ^ v0))
                c[o] += np.int32(popcount(y0 ^ v0))
            g += 1
    # The epilogue runs over positions (contiguous in ``out`` and ``hoff``) in stretches within
    # one image, indexed from 0 (numba's negative-index wrap-around would otherwise turn the
    # vector stores into scatters).
    o0 = blk * ob
    per_position = hoff.shape[1] > 1
    for o in range(o0, min(cout, o0 + ob)):
        f = factor[o]
        bo = bias[o]
        j = o - o0
        q = q0
        p = q0 % how
        while q < q1:
            m = min(q1 - q, how - p)
            dst = out[o, q:q + m]
            src = acc[q - q0:q - q0 + m, j]
            if per_position:
                hrow = hoff[o, p:p + m]
                if has_bias:
                    for i in range(m):
                        dst[i] = (hrow[i] - np.float32(src[i])) * f + bo
                else:
                    for i in range(m):
                        dst[i] = (hrow[i] - np.float32(src[i])) * f
            else:
                h0 = hoff[o, 0]
                if has_bias:
                    for i in range(m):
                        dst[i] = (h0 - np.float32(src[i])) * f + bo
                else:
                    for i in range(m):
                        dst[i] = (h0 - np.float32(src[i])) * f
            q += m
            p = 0


@njit(cache=True, boundscheck=False, nogil=True)
def _binary_conv_serial(xs, xf, wt, off, fill, sign, thr, h, w, hp, wp, top, left, ho, wo, sy, sx,
                        hoff, factor, bias, has_bias, out, pack_chunk, conv_chunk):
    """The whole op on the calling thread: border, packing tasks, popcount tasks in order."""
    wc = fill.shape[0]
    _fill_border(xf.reshape(-1, hp * wp * wc), h, w, hp, wp, wc, top, left, fill)
    buf = np.empty(pack_chunk, np.uint64)
    for task in range(-(-xs.shape[1] // pack_chunk) * wc):
        _pack_task(xs, xf, task, pack_chunk, h, w, hp, wp, wc, top, left, sign, thr, buf)
    acc = np.empty((conv_chunk + 1, wt.shape[2]), np.int32)
    for task in range(-(-out.shape[1] // conv_chunk) * wt.shape[0]):
        _conv_task(xf, wt, off, task, conv_chunk, hp, wp, wc, ho, wo, sy, sx, hoff, factor, bias, has_bias,
                   out, acc)


@njit(cache=True, boundscheck=False, nogil=True)
def _binary_conv_share(xs, xf, wt, off, fill, sign, thr, h, w, hp, wp, top, left, ho, wo, sy, sx,
                       hoff, factor, bias, has_bias, out, pack_chunk, conv_chunk, counters):
    """One thread's share of the op: tasks taken from the shared atomic ``counters``.

    ``counters`` (int64, zeroed, a cache line per counter): [0] next packing task, [8] packing
    tasks done, [16] next popcount task, [24] popcount tasks done. A thread out of packing
    tasks waits until all are done (it reads words others packed); every popcount task is
    counted done, so the caller can wait for the last one. Any number of threads may run this,
    starting at any time: one that comes late finds no tasks and returns.
    """
    wc = fill.shape[0]
    pack_tasks = -(-xs.shape[1] // pack_chunk) * wc
    conv_tasks = -(-out.shape[1] // conv_chunk) * wt.shape[0]
    buf = np.empty(pack_chunk, np.uint64)
    while True:
        task = _fetch_add(counters, 0)
        if task >= pack_tasks:
            break
        _pack_task(xs, xf, task, pack_chunk, h, w, hp, wp, wc, top, left, sign, thr, buf)
        _fetch_add(counters, 8)
    _wait_for(counters, 8, pack_tasks)
    acc = np.empty((conv_chunk + 1, wt.shape[2]), np.int32)
    while True:
        task = _fetch_add(counters, 16)
        if task >= conv_tasks:
            break
        _conv_task(xf, wt, off, task, conv_chunk, hp, wp, wc, ho, wo, sy, sx, hoff, factor, bias, has_bias,
                   out, acc)
        _fetch_add(counters, 24)


@njit(cache=True, boundscheck=False, nogil=True, parallel=True)
def _binary_conv_parallel(xs, xf, wt, off, fill, sign, thr, h, w, hp, wp, top, left, ho, wo, sy, sx,
                          hoff, factor, bias, has_bias, out, pack_chunk, conv_chunk, workers):
    """The op on numba's threading layer: ``workers`` shares (:func:`_binary_conv_share`) in one prange."""
    wc = fill.shape[0]
    _fill_border(xf.reshape(-1, hp * wp * wc), h, w, hp, wp, wc, top, left, fill)
    counters = np.zeros(32, np.int64)
    for _ in prange(workers):
        _binary_conv_share(xs, xf, wt, off, fill, sign, thr, h, w, hp, wp, top, left, ho, wo, sy, sx,
                           hoff, factor, bias, has_bias, out, pack_chunk, conv_chunk, counters)


def _module_pool(helpers: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < helpers:
            _POOL = ThreadPoolExecutor(helpers, thread_name_prefix="bnn-numba")
        return _POOL


def _run_shared(args: tuple, workers: int, pool, tasks: int) -> None:
    """:func:`_binary_conv_share` on this thread and helpers; returns when all ``tasks`` are done.

    ``pool`` is a :class:`bnncli.runtime.numba_crew.Crew` (its helpers, awake between calls,
    run the share), an executor (``workers - 1`` shares are submitted to it), or None (an
    executor of this module's). ``args`` ends with the zeroed counters. Helpers are not waited
    for, only the tasks: one that starts after the work is done finds none left, so a busy or
    slow-waking helper costs nothing but its share of the work.
    """
    if hasattr(pool, "run"):
        pool.run(_binary_conv_share, args)
    else:
        if pool is None:
            pool = _module_pool(workers - 1)
        try:
            for _ in range(workers - 1):
                pool.submit(_binary_conv_share, *args)
        except RuntimeError:  # a pool shut down: the tasks not taken are this thread's
            pass
        _binary_conv_share(*args)
    _wait_for(args[-1], 24, tasks)


def functions_cached(functions) -> bool:
    """Whether numba's disk cache has an index for each of these jitted functions."""
    for f in functions:
        index = getattr(getattr(getattr(f, "_cache", None), "_cache_file", None), "_index_path", None)
        if index is None or not os.path.exists(index):
            return False
    return True


def cache_is_warm() -> bool:
    """Whether numba's disk cache has an index for every function a call compiles (with the current
    :data:`PARALLEL`): False means the next first call compiles for several seconds. The
    parallel=True build is compiled only when ``PARALLEL == "prange"``, so it is not asked for
    otherwise."""
    functions = [_binary_conv_serial, _binary_conv_share, _fill_border, _pack_task, _conv_task, _wait_for,
                 _yield_cpu]
    if PARALLEL == "prange":
        functions.append(_binary_conv_parallel)
    return functions_cached(functions)


def tap_offsets(kernel, dilation, wp: int, wc: int) -> np.ndarray:
    """int64 ``[kh * kw * Wc]``: where word (ky, kx, j) of a position's receptive field is, from its first word."""
    kh, kw = kernel
    ky = np.arange(kh)[:, None, None] * (dilation[0] * wp * wc)
    kx = np.arange(kw)[None, :, None] * (dilation[1] * wc)
    return (ky + kx + np.arange(wc)[None, None, :]).astype(np.int64).ravel()


class _Geometry(NamedTuple):
    pads: tuple[int, int, int, int]
    ho: int
    wo: int
    hp: int
    wp: int
    offsets: np.ndarray  # tap_offsets


class BinaryConvKernel:
    """One binary conv layer, prepared once (weights transposed, thresholds and scales in the kernel's form).

    ``kernel(x, pads, threads=1, half_offset=None, out=None, pool=None)`` is :func:`binary_conv`
    on a float32 map ``x`` [C, N, H, W], with the per-size work (output size, tap offsets,
    ``half_offset`` when not given) cached per input size and padding. Arguments as
    :func:`binary_conv`; the arrays are copied into the kernel's form when it is built, so
    changing them afterwards changes nothing: build a new kernel.
    """

    def __init__(self, wbits: np.ndarray, channels: int, stride=(1, 1), dilation=(1, 1), pad_value: float = 0.0,
                 threshold: np.ndarray | None = None, negate: np.ndarray | None = None,
                 scale: np.ndarray | None = None, bias: np.ndarray | None = None,
                 weights: ConvWeights | None = None) -> None:
        if pad_value not in (0, -1, 1):
            raise ValueError(f"pad_value must be 0, -1 or 1, not {pad_value!r}")
        self.wbits = np.ascontiguousarray(wbits, dtype=np.uint64)
        self.weights = prepare_weights(self.wbits) if weights is None else weights
        self.channels = int(channels)
        self.cout = self.weights.cout
        self.kernel = self.weights.kernel
        self.words = self.weights.words
        if self.words != K.n_words(self.channels) or self.wbits.shape != (self.cout, *self.kernel, self.words):
            raise ValueError(f"weights of shape {self.wbits.shape} do not fit {self.channels} input channels")
        self.stride = (int(stride[0]), int(stride[1]))
        self.dilation = (int(dilation[0]), int(dilation[1]))
        self.pad_value = float(pad_value)
        c = self.channels
        if threshold is None:  # negate without a threshold means nothing (as in K.sign_bits)
            self.threshold = np.zeros(c, dtype=np.float32)
            self.sign = np.ones(c, dtype=np.float32)
        else:
            # -x >= -t is x <= t exactly; a float64 threshold is compared in float64, as NumPy does
            dtype = np.float64 if threshold.dtype == np.float64 else np.float32
            self.sign = np.ones(c, dtype=dtype)
            if negate is not None:
                self.sign[np.asarray(negate, dtype=bool).reshape(c)] = -1
            self.threshold = np.asarray(threshold, dtype=dtype).reshape(c) * self.sign
        ones = np.ones(self.cout, np.float32)
        self.factor = np.float32(2) * (ones if scale is None else np.asarray(scale, np.float32).reshape(self.cout))
        self.has_bias = bias is not None
        self.bias = np.ascontiguousarray(bias, dtype=np.float32).reshape(self.cout) if self.has_bias else ones
        self.fill = K.valid_bits_words(c) if self.pad_value == 1 else np.zeros(self.words, dtype=np.uint64)
        self._geometries: dict[tuple, _Geometry] = {}
        self._half_offsets: dict[tuple, np.ndarray] = {}

    def geometry(self, h: int, w: int, pads) -> _Geometry:
        key = (h, w, tuple(pads))
        g = self._geometries.get(key)
        if g is None:
            top, left, bottom, right = p4 = tuple(int(p) for p in as_pads(tuple(pads)))
            ho, wo = output_hw((h, w), self.kernel, self.stride, p4, self.dilation)
            if ho < 1 or wo < 1:
                raise ValueError(f"input {h}x{w} is too small for the layer")
            hp, wp = top + h + bottom, left + w + right
            g = _Geometry(p4, ho, wo, hp, wp, tap_offsets(self.kernel, self.dilation, wp, self.words))
            self._geometries[key] = g
        return g

    def half_offset(self, h: int, w: int, pads) -> np.ndarray:
        """K.half_dot_offset(K.dot_offset(...)) for an input size and padding ([Cout, Ho * Wo] or [Cout, 1]), cached."""
        key = (h, w, tuple(pads))
        half = self._half_offsets.get(key)
        if half is None:
            half = K.half_dot_offset(K.dot_offset(self.wbits, self.channels, h, w, self.stride,
                                                  self.geometry(h, w, pads).pads, self.dilation, self.pad_value))
            self._half_offsets[key] = half
        return half

    def __call__(self, x: np.ndarray, pads=(0, 0, 0, 0), threads: int = 1, half_offset: np.ndarray | None = None,
                 out: np.ndarray | None = None, pool: Executor | None = None) -> np.ndarray:
        if x.dtype != np.float32 or x.ndim != 4:
            raise TypeError(f"binary_conv takes a float32 map [C, N, H, W], not {x.dtype} of shape {x.shape}")
        c, n, h, w = x.shape
        if c != self.channels:
            raise ValueError(f"input has {c} channels, the layer {self.channels}")
        if not (x.flags.c_contiguous and x.flags.writeable):  # numba compiles read-only arrays separately
            x = np.array(x, order="C")
        g = self.geometry(h, w, pads)
        cout, ho, wo = self.cout, g.ho, g.wo
        if half_offset is None:
            half_offset = self.half_offset(h, w, pads)
        elif half_offset.dtype != np.float32 or half_offset.shape not in ((cout, 1), (cout, ho * wo)):
            raise ValueError(f"half_offset must be float32 {(cout, 1)} or {(cout, ho * wo)}, not "
                             f"{half_offset.dtype} {half_offset.shape}")
        elif not (half_offset.flags.c_contiguous and half_offset.flags.writeable):
            half_offset = np.array(half_offset, order="C")
        if out is None:
            out = np.empty((cout, n, ho, wo), dtype=np.float32)
        elif (out.shape != (cout, n, ho, wo) or out.dtype != np.float32 or not out.flags.c_contiguous
              or not out.flags.writeable):
            raise ValueError(f"out must be a writable C-contiguous float32 {(cout, n, ho, wo)}")
        wt = self.weights.wt
        blocks = wt.shape[0]
        positions = n * ho * wo
        crew = hasattr(pool, "run")
        workers = pool.threads if crew else min(int(threads), numba.config.NUMBA_NUM_THREADS)
        if workers > 1 and cout * positions * g.offsets.shape[0] < (CREW_MIN_WORK if crew else PARALLEL_MIN_WORK):
            workers = 1
        # Chunks of output positions: at most CONV_CHUNK, small enough for every worker to get
        # about four tasks, and even (positions go in pairs).
        conv_chunk = min(CONV_CHUNK, max(2, -(-positions * blocks // (4 * max(workers, 1)))))
        conv_chunk += conv_chunk % 2
        pack_chunk = max(1, min(PACK_CHUNK, n * h * w))
        xf = np.empty(n * g.hp * g.wp * self.words, dtype=np.uint64)
        args = (x.reshape(c, n * h * w), xf, wt, g.offsets, self.fill, self.sign, self.threshold, h, w, g.hp, g.wp,
                g.pads[0], g.pads[1], ho, wo, self.stride[0], self.stride[1], half_offset, self.factor, self.bias,
                self.has_bias, out.reshape(cout, positions), pack_chunk, conv_chunk)
        if workers <= 1:
            _binary_conv_serial(*args)
        elif PARALLEL == "prange":
            with _PARALLEL_LOCK:  # numba's workqueue layer must not be entered from two threads at once
                numba.set_num_threads(workers)
                _binary_conv_parallel(*args, workers)
        else:
            _fill_border(xf.reshape(n, -1), h, w, g.hp, g.wp, self.words, g.pads[0], g.pads[1], self.fill)
            _run_shared((*args, np.zeros(32, np.int64)), workers, pool, -(-positions // conv_chunk) * blocks)
        return out


def binary_conv(x: np.ndarray, wbits: np.ndarray | None, channels: int, kernel=None, stride=(1, 1),
                pads4=(0, 0, 0, 0), dilation=(1, 1), pad_value: float = 0.0, threshold: np.ndarray | None = None,
                negate: np.ndarray | None = None, half_offset: np.ndarray | None = None,
                scale: np.ndarray | None = None, bias: np.ndarray | None = None, threads: int = 1, *,
                weights: ConvWeights | None = None, out: np.ndarray | None = None,
                pool: Executor | None = None) -> np.ndarray:
    """Binarize, pack and binary-convolve a float32 map ``x`` [C, N, H, W]; float32 ``[Cout, N, Ho, Wo]``.

    Bit-identical to the NumPy path of ``BinaryConv`` (module docstring). A layer called many
    times is better served by a :class:`BinaryConvKernel`, built once.

    Args:
        x: float32 ``[channels, N, H, W]`` (made C-contiguous if it is not).
        wbits: packed weights, uint64 ``[Cout, kh, kw, Wc]`` (K.widen_words).
        channels: input channels.
        kernel: (kh, kw), checked against the weights; None: from the weights.
        stride, dilation: pairs. pads4: ``(top, left, bottom, right)`` or ``(ph, pw)``.
        pad_value: 0, -1 or +1.
        threshold: float32 ``[channels]`` or None (``x >= 0``); negate: bool/uint8 ``[channels]``
            or None (ignored without a threshold, as in K.sign_bits).
        half_offset: float32 ``[Cout, Ho * Wo]`` or ``[Cout, 1]`` (K.half_dot_offset of
            K.dot_offset); None: computed here.
        scale, bias: float32 ``[Cout]`` or None.
        threads: 1 runs the serial build; more: the calling thread and ``threads - 1`` helpers
            (:data:`PARALLEL`; capped at numba's thread count, the CPUs by default; layers with
            less work than :data:`PARALLEL_MIN_WORK` stay on the calling thread).
        weights: :func:`prepare_weights` of ``wbits``, made once per layer: it also keeps the
            kernel built from the other arguments (by their identity), so that a call costs a few
            microseconds of Python instead of some tens.
        out: optional C-contiguous float32 ``[Cout, N, Ho, Wo]`` to write into (returned).
        pool: with ``threads`` > 1, an executor with at least ``threads - 1`` threads to run the
            helpers on (the runtime's); None: a pool of this module's.
    """
    if wbits is None:
        raise ValueError("binary_conv needs wbits")
    if kernel is not None and tuple(kernel) != tuple(wbits.shape[1:3]):
        raise ValueError(f"kernel {tuple(kernel)} does not match the weights' {tuple(wbits.shape[1:3])}")
    if x.ndim == 4 and x.shape[0] != channels:
        raise ValueError(f"input has {x.shape[0]} channels, the layer {channels}")
    if weights is None:
        kern = BinaryConvKernel(wbits, channels, stride, dilation, pad_value, threshold, negate, scale, bias)
    else:  # a layer called again: its kernel is kept with its weights
        arrays = (wbits, threshold, negate, scale, bias)
        key = (channels, tuple(stride), tuple(dilation), float(pad_value), *map(id, arrays))
        entry = weights.kernels.get(key)
        if entry is None or any(a is not b for a, b in zip(entry[0], arrays)):
            if len(weights.kernels) >= 16:
                weights.kernels.clear()
            entry = arrays, BinaryConvKernel(wbits, channels, stride, dilation, pad_value, threshold, negate, scale,
                                             bias, weights)
            weights.kernels[key] = entry
        kern = entry[1]
    return kern(x, pads4, threads, half_offset, out, pool)

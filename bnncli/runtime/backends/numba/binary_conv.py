"""Compiled (numba) binary convolution: binarize, pack, XOR + popcount and epilogue in one kernel.

:class:`BinaryConvKernel` (built once per layer) does what the NumPy backend's binary convolution
does (bnncli.runtime.backends.numpy, ``ref`` below), bit for bit::

    ref.binary_conv_fast(ref.pack_planar(ref.sign_bits(x, threshold, negate)).reshape(-1, n, h, w), wbits,
                         channels, stride, pads, dilation, pad_value, dtype=np.float32, scale=scale, bias=bias)

from the float32 input ``[C, N, H, W]`` to the float32 output ``[Cout, N, Ho, Wo]``:

1. **Pack.** Chunks of input positions are binarized (``x >= 0``; ``x >= t[c]``, or ``x <= t[c]``
   where ``negate[c]``: the comparisons of :func:`ref.sign_bits`, computed as ``x * s >= t * s``
   with s = +-1, which is exact) and packed into uint64 words (channel ``c`` is bit ``c % 64``
   of word ``c // 64``, tail bits 0) in a position-major buffer ``[N, top + H + bottom,
   left + W + right, Wc]`` whose border holds the padding pattern (all valid bits for pad
   value +1, zero words otherwise), so the inner loops check no bounds.
2. **XOR + popcount.** The ``K = kh * kw * Wc`` words an output position reads lie at fixed
   offsets from its first word (:func:`tap_offsets`). Weights are transposed to ``[K, Cout]``
   in blocks of 32 output channels (:func:`prepare_weights`). The micro-kernel, chosen by the CPU
   numba compiles for (``intrinsics.VECTOR_ISA``), keeps its counts in vector registers for the
   whole field: with AVX-512, four output positions x 32 channels in 16 eight-word accumulators
   (VPXORQ / VPOPCNTQ / VPADDQ on zmm, :func:`_counts_avx512`); with AVX2, two positions x eight
   channels, popcounts added up byte-wise (VPSHUFB lookups) and widened every 31 words
   (:func:`_counts_avx2`). Tasks are chunks of output positions x blocks of output channels.
3. **Epilogue**, per output element, in float32 and in the NumPy kernel's order:
   ``(half_offset[o, p] - mismatches) * (2 * scale[o]) + bias[o]`` (``ref.half_dot_offset``;
   the addition only where there is a bias, so that a -0.0 stays -0.0). The table is read only
   where zero padding makes it differ from one value per channel (:class:`HalfOffsets`).

No ``fastmath`` anywhere, and every function cached on disk (bnncli.runtime.backends.numba.intrinsics).

Threads: with a :class:`bnncli.runtime.backends.numba.crew.Crew` on layers with enough work
(:data:`CREW_MIN_WORK`), the calling thread and the crew's helpers each run the nogil task loop
:func:`_binary_conv_share`, taking tasks from shared atomic counters. The caller starts at once
and waits only for tasks, never for a helper: one that wakes late finds less (or nothing) to do,
and a thread slowed down by another process on its core takes fewer tasks instead of holding
the others up.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bnncli.graph.bits import n_words, valid_bits_words
from bnncli.graph.padding import as_pads, output_hw
from bnncli.runtime.backends import numpy as ref
from bnncli.runtime.backends.numba.intrinsics import (
    BYTE_COUNT_WORDS,
    VECTOR_ISA,
    fetch_add,
    jit,
    vadd4,
    vbyte_sums,
    vload,
    vload4,
    vsplat,
    vsplat4,
    vstore,
    vstore4,
    vxor_popcount_add,
    vxor_popcount_bytes_add,
    vzero,
    vzero4,
    wait_for,
)

# Output channels per block of transposed weights (the micro-kernel's four vectors of eight): the
# block's K x 32 words (18 KB for 512 input channels, 3 x 3) stay in L1 while a chunk of positions
# is XOR-ed against them.
BLOCK_CHANNELS = 32
# Work (output elements x words per element) below which a call stays on the calling thread: the
# helpers of a Crew wake in about 20 us, so layers of some 0.1 ms gain from a second thread.
CREW_MIN_WORK = 1 << 19
# Output positions per task of the popcount loop, and input positions per task of the packing.
# (128 rather than 64: the epilogue's loops over a channel's positions are twice as long for the
# same overhead each; BinaryDenseNet28 and ResNetE18 ran 3-7% faster on one thread, the same or
# faster on two.)
CONV_CHUNK = 128
PACK_CHUNK = 1024


class ConvWeights(NamedTuple):
    """Packed weights transposed for the kernel: ``wt`` uint64 ``[blocks, kh * kw * Wc, block]``."""

    wt: np.ndarray
    cout: int
    kernel: tuple[int, int]
    words: int


def prepare_weights(wbits: np.ndarray) -> ConvWeights:
    """``wbits`` uint64 ``[Cout, kh, kw, Wc]`` (graph.bits.widen_words) -> :class:`ConvWeights`, once per layer.

    Output channels go in blocks of :data:`BLOCK_CHANNELS` (four vectors of eight words); the last
    block's missing channels have weights 0 and their results are never written.
    """
    wbits = np.ascontiguousarray(wbits, dtype=np.uint64)
    cout, kh, kw, wc = wbits.shape
    nb = -(-cout // BLOCK_CHANNELS)
    flat = np.zeros((nb * BLOCK_CHANNELS, kh * kw * wc), dtype=np.uint64)
    flat[:cout] = wbits.reshape(cout, -1)
    wt = np.ascontiguousarray(flat.reshape(nb, BLOCK_CHANNELS, -1).transpose(0, 2, 1))
    return ConvWeights(wt, cout, (kh, kw), wc)


@jit(boundscheck=False)
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


@jit(boundscheck=False)
def _pack_range(xs, row0, xf, p0, p1, k, c0, c1, h, w, hp, wp, wc, top, left, sign, thr, buf, merge):
    """Bits ``c0 .. c1 - 1`` (channels of the layer's input, all in word ``k``) of input positions
    ``p0 .. p1`` (of N * H * W) into ``xf``: binarized and packed, then stored, or with ``merge``
    written into the words' other bits kept (the channels' mask).

    ``xs`` holds channel ``c`` in row ``c - row0``, [rows, N * H * W]; a channel's bit is
    ``xs[c - row0] * sign[c] >= thr[c]``, where ``sign`` is -1 for a negated channel and ``thr``
    its threshold negated: -x >= -t is x <= t exactly (negation is exact; NaN compares false
    either way).
    """
    m = p1 - p0
    for i in range(m):
        buf[i] = 0
    base = k * 64
    zero = np.uint64(0)
    c = c0
    while c + 4 <= c1:  # four channels per pass over the buffer
        r0 = xs[c - row0, p0:p1]
        r1 = xs[c + 1 - row0, p0:p1]
        r2 = xs[c + 2 - row0, p0:p1]
        r3 = xs[c + 3 - row0, p0:p1]
        s0, s1, s2, s3 = sign[c], sign[c + 1], sign[c + 2], sign[c + 3]
        t0, t1, t2, t3 = thr[c], thr[c + 1], thr[c + 2], thr[c + 3]
        b0 = np.uint64(1) << np.uint64(c - base)
        b1 = b0 << np.uint64(1)
        b2 = b0 << np.uint64(2)
        b3 = b0 << np.uint64(3)
        for i in range(m):
            buf[i] |= ((b0 if r0[i] * s0 >= t0 else zero) | (b1 if r1[i] * s1 >= t1 else zero)
                       | (b2 if r2[i] * s2 >= t2 else zero) | (b3 if r3[i] * s3 >= t3 else zero))
        c += 4
    while c < c1:
        r0 = xs[c - row0, p0:p1]
        s0 = sign[c]
        t0 = thr[c]
        b0 = np.uint64(1) << np.uint64(c - base)
        for i in range(m):
            buf[i] |= b0 if r0[i] * s0 >= t0 else zero
        c += 1
    keep = zero
    if merge:
        width = c1 - c0
        ones = ~zero if width == 64 else (np.uint64(1) << np.uint64(width)) - np.uint64(1)
        keep = ~(ones << np.uint64(c0 - base))
    _store_words(xf, buf, m, p0, k, h, w, hp, wp, wc, top, left, keep, merge)


@jit(boundscheck=False, inline="always")
def _store_words(xf, buf, m, p0, k, h, w, hp, wp, wc, top, left, keep, merge):
    """Word ``k`` of input positions ``p0 .. p0 + m - 1`` (of N * H * W) in the padded buffer
    ``xf``: ``buf[i]``, or with ``merge`` ``buf[i]`` in the bits ``keep`` leaves free."""
    hw = h * w
    n = p0 // hw
    rest = p0 - n * hw
    y = rest // w
    x = rest - y * w
    idx = ((n * hp + y + top) * wp + x + left) * wc + k
    for i in range(m):
        if merge:
            xf[idx] = (xf[idx] & keep) | buf[i]
        else:
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


@jit(boundscheck=False)
def _pack_task(xs, xf, task, chunk, h, w, hp, wp, wc, top, left, sign, thr, buf):
    """Word ``task % Wc`` of a chunk of input positions (of N * H * W): every channel of the word
    binarized, packed and stored into ``xf`` (:func:`_pack_range`; ``xs`` is the whole input
    [C, N * H * W])."""
    k = task % wc
    p0 = (task // wc) * chunk
    p1 = min(xs.shape[1], p0 + chunk)
    _pack_range(xs, 0, xf, p0, p1, k, k * 64, min(xs.shape[0], k * 64 + 64), h, w, hp, wp, wc, top, left, sign,
                thr, buf, False)


@jit(boundscheck=False)
def _fan_out_share(xs, xfs, signs, thrs, meta, chunk, h, w, counters):
    """One thread's share of packing a map ``xs`` [rows, N * H * W] as a segment of the input of
    each of several binary convolutions: for reader r, as its channels ``meta[r, 0] ..`` into
    its packed input ``xfs[r]`` (Wc, Hp, Wp, top, left: ``meta[r, 1:6]``; thresholds
    ``signs[r]``, ``thrs[r]``), the other bits of its words kept (:func:`_pack_range`).

    Tasks are chunks of positions taken from ``counters`` ([0] next, [8] done); a task packs its
    positions for every reader in turn, so the map is read from memory once, then from the L1
    cache. Each word of each position is written by one task only.
    """
    rows = xs.shape[0]
    tasks = -(-xs.shape[1] // chunk)
    buf = np.empty(chunk, np.uint64)
    while True:
        task = fetch_add(counters, 0)
        if task >= tasks:
            break
        p0 = task * chunk
        p1 = min(xs.shape[1], p0 + chunk)
        for r in range(len(xfs)):
            first = meta[r, 0]
            end = first + rows
            for k in range(first // 64, (end - 1) // 64 + 1):
                _pack_range(xs, first, xfs[r], p0, p1, k, max(first, k * 64), min(end, k * 64 + 64), h, w,
                            meta[r, 2], meta[r, 3], meta[r, 1], meta[r, 4], meta[r, 5], signs[r], thrs[r], buf, True)
        fetch_add(counters, 8)


@jit(boundscheck=False)
def _counts_avx512(xf, wb, off, bases, count, acc):
    """Mismatch counts of positions ``bases[:count]`` (first words in ``xf``) x the 32 channels of
    the weight block ``wb`` [K * 32] into ``acc`` [position * 32 + channel], four positions at a
    time: for each word k of the field, the block's four weight vectors are loaded once, XOR-ed
    with each position's word (broadcast), and the popcounts added to 16 eight-word accumulators
    held in registers for the whole field (VPOPCNTQ on zmm with AVX-512 VPOPCNTDQ)."""
    kk = off.shape[0]
    for q in range(0, count, 4):
        b0 = np.uint64(bases[q])
        b1 = np.uint64(bases[q + 1])
        b2 = np.uint64(bases[q + 2])
        b3 = np.uint64(bases[q + 3])
        a00 = vzero()
        a01 = vzero()
        a02 = vzero()
        a03 = vzero()
        a10 = vzero()
        a11 = vzero()
        a12 = vzero()
        a13 = vzero()
        a20 = vzero()
        a21 = vzero()
        a22 = vzero()
        a23 = vzero()
        a30 = vzero()
        a31 = vzero()
        a32 = vzero()
        a33 = vzero()
        for k in range(kk):
            o = np.uint64(off[k])  # unsigned indices: no negative-index wrap-around code in the loads
            w = k * 32
            w0 = vload(wb, w)
            w1 = vload(wb, w + 8)
            w2 = vload(wb, w + 16)
            w3 = vload(wb, w + 24)
            x = vsplat(xf[b0 + o])
            a00 = vxor_popcount_add(a00, x, w0)
            a01 = vxor_popcount_add(a01, x, w1)
            a02 = vxor_popcount_add(a02, x, w2)
            a03 = vxor_popcount_add(a03, x, w3)
            x = vsplat(xf[b1 + o])
            a10 = vxor_popcount_add(a10, x, w0)
            a11 = vxor_popcount_add(a11, x, w1)
            a12 = vxor_popcount_add(a12, x, w2)
            a13 = vxor_popcount_add(a13, x, w3)
            x = vsplat(xf[b2 + o])
            a20 = vxor_popcount_add(a20, x, w0)
            a21 = vxor_popcount_add(a21, x, w1)
            a22 = vxor_popcount_add(a22, x, w2)
            a23 = vxor_popcount_add(a23, x, w3)
            x = vsplat(xf[b3 + o])
            a30 = vxor_popcount_add(a30, x, w0)
            a31 = vxor_popcount_add(a31, x, w1)
            a32 = vxor_popcount_add(a32, x, w2)
            a33 = vxor_popcount_add(a33, x, w3)
        r = q * 32
        vstore(acc, r, a00)
        vstore(acc, r + 8, a01)
        vstore(acc, r + 16, a02)
        vstore(acc, r + 24, a03)
        vstore(acc, r + 32, a10)
        vstore(acc, r + 40, a11)
        vstore(acc, r + 48, a12)
        vstore(acc, r + 56, a13)
        vstore(acc, r + 64, a20)
        vstore(acc, r + 72, a21)
        vstore(acc, r + 80, a22)
        vstore(acc, r + 88, a23)
        vstore(acc, r + 96, a30)
        vstore(acc, r + 104, a31)
        vstore(acc, r + 112, a32)
        vstore(acc, r + 120, a33)


@jit(boundscheck=False)
def _counts_avx2(xf, wb, off, bases, count, acc):
    """:func:`_counts_avx512` for CPUs with 16 vector registers of four words and no vector
    popcount (AVX2): two positions x eight channels at a time, popcounts kept as 32 byte counts per
    register (VPSHUFB nibble lookups) and summed into 64-bit lanes (VPSADBW) only every
    BYTE_COUNT_WORDS words of the field."""
    kk = off.shape[0]
    for q in range(0, count, 2):
        b0 = np.uint64(bases[q])
        b1 = np.uint64(bases[q + 1])
        for sub in range(0, 32, 8):
            t00 = vzero4()
            t01 = vzero4()
            t10 = vzero4()
            t11 = vzero4()
            k0 = 0
            while k0 < kk:
                k1 = min(kk, k0 + BYTE_COUNT_WORDS)
                c00 = vzero4()
                c01 = vzero4()
                c10 = vzero4()
                c11 = vzero4()
                for k in range(k0, k1):
                    o = np.uint64(off[k])
                    w = k * 32 + sub
                    w0 = vload4(wb, w)
                    w1 = vload4(wb, w + 4)
                    x = vsplat4(xf[b0 + o])
                    c00 = vxor_popcount_bytes_add(c00, x, w0)
                    c01 = vxor_popcount_bytes_add(c01, x, w1)
                    x = vsplat4(xf[b1 + o])
                    c10 = vxor_popcount_bytes_add(c10, x, w0)
                    c11 = vxor_popcount_bytes_add(c11, x, w1)
                t00 = vadd4(t00, vbyte_sums(c00))
                t01 = vadd4(t01, vbyte_sums(c01))
                t10 = vadd4(t10, vbyte_sums(c10))
                t11 = vadd4(t11, vbyte_sums(c11))
                k0 = k1
            r = q * 32 + sub
            vstore4(acc, r, t00)
            vstore4(acc, r + 4, t01)
            vstore4(acc, r + 32, t10)
            vstore4(acc, r + 36, t11)


# The micro-kernel this CPU gets (intrinsics.VECTOR_ISA): only the chosen one is compiled.
_counts = _counts_avx2 if VECTOR_ISA == "avx2" else _counts_avx512


@jit(boundscheck=False)
def _conv_task(xf, wt, off, task, chunk, hp, wp, wc, ho, wo, sy, sx, offsets, factor, bias, has_bias, out, res,
               has_res, acc, tile):
    """A chunk of output positions (of N * Ho * Wo) x a block of 32 output channels (``task % blocks``).

    The micro-kernel (:func:`_counts_avx512` or :func:`_counts_avx2`) writes the chunk's mismatch
    counts to ``acc`` [chunk + 3, 32] (int64), and the float32 epilogue (:func:`_epilogue`, with
    ``offsets`` = (h0, hs, specials, nxt) of :class:`HalfOffsets` and ``tile`` [32 * (chunk + 3)]
    float32) writes ``out`` [Cout, N * Ho * Wo], adding ``res`` (same shape; may be ``out``) after
    the scale and bias where ``has_res``. A chunk whose length is not a multiple of the
    micro-kernel's positions computes its last position again for the missing ones.
    """
    nb = wt.shape[0]
    blk = task % nb
    q0 = (task // nb) * chunk
    q1 = min(out.shape[1], q0 + chunk)
    how = ho * wo
    img = hp * wp * wc
    n = q0 // how
    rest = q0 - n * how
    oy = rest // wo
    ox = rest - oy * wo
    bases = np.empty(chunk + 3, np.int64)
    for i in range(q1 - q0):
        bases[i] = n * img + (oy * sy * wp + ox * sx) * wc
        ox += 1
        if ox == wo:
            ox = 0
            oy += 1
            if oy == ho:
                oy = 0
                n += 1
    for i in range(q1 - q0, q1 - q0 + 3):
        bases[i] = bases[q1 - q0 - 1]
    _counts(xf, wt[blk].reshape(-1), off, bases, q1 - q0, acc)
    h0, hs, specials, nxt = offsets
    _epilogue(acc, tile, blk * 32, q0, q1, how, h0, hs, specials, nxt, factor, bias, has_bias, out, res, has_res)


@jit(boundscheck=False)
def _conv_task_for(xf, wt, off, task, chunk, hp, wp, wc, ho, wo, sy, sx, offsets, factor, bias, has_bias, out, res,
                   has_res, acc, tile):
    """:func:`_conv_task` with ``has_bias`` and ``has_res`` passed as constants, so that numba
    compiles a version of the task (and of its epilogue) for each case, without their branches:
    a 56 x 56 layer of 64 channels ran in about 0.26 ms instead of 0.37 ms."""
    if has_bias and has_res:
        _conv_task(xf, wt, off, task, chunk, hp, wp, wc, ho, wo, sy, sx, offsets, factor, bias, True, out, res, True,
                   acc, tile)
    elif has_bias:
        _conv_task(xf, wt, off, task, chunk, hp, wp, wc, ho, wo, sy, sx, offsets, factor, bias, True, out, res, False,
                   acc, tile)
    elif has_res:
        _conv_task(xf, wt, off, task, chunk, hp, wp, wc, ho, wo, sy, sx, offsets, factor, bias, False, out, res, True,
                   acc, tile)
    else:
        _conv_task(xf, wt, off, task, chunk, hp, wp, wc, ho, wo, sy, sx, offsets, factor, bias, False, out, res, False,
                   acc, tile)


@jit(boundscheck=False)
def _epilogue(acc, tile, o0, q0, q1, how, h0, hs, specials, nxt, factor, bias, has_bias, out, res, has_res):
    """Output channels ``o0 .. o0 + 31`` of positions ``q0 .. q1`` from their mismatch counts in
    ``acc``: ``(half_offset - count) * factor (+ bias) (residual +)`` in float32, in the NumPy
    kernel's order (the addition of the bias only where there is one, so that a -0.0 stays -0.0).

    The counts are first turned into float32 and transposed into ``tile`` [32, m] (channel-major,
    so every later loop runs over contiguous memory). The half offset of channel ``o`` at a
    position of an image is ``h0[o]``, except at the ``specials`` (sorted positions within an
    image, where zero padding changes it; ``nxt[p]``: the first of them at or after ``p``) where
    it is ``hs[o, k]``: the full table (:meth:`BinaryConvKernel.half_offset`) is never read, only
    the border's part of it. It runs over positions in stretches within one image, indexed from 0
    (numba's negative-index wrap-around would otherwise turn the vector stores into scatters).
    """
    cout = out.shape[0]
    m_all = q1 - q0
    for j in range(32):
        for i in range(m_all):
            tile[j * m_all + i] = np.float32(acc[i * 32 + j])
    hrow = np.empty(m_all, np.float32)
    saved = np.empty(m_all if has_res else 0, np.float32)
    n_special = specials.shape[0]
    for o in range(o0, min(cout, o0 + 32)):
        f = factor[o]
        bo = bias[o]
        cnt = tile[(o - o0) * m_all:(o - o0 + 1) * m_all]
        q = q0
        p = q0 % how
        while q < q1:
            m = min(q1 - q, how - p)
            t0 = q - q0
            dst = out[o, q:q + m]
            src = cnt[t0:t0 + m]
            hv = h0[o]
            for i in range(m):
                hrow[i] = hv
            if n_special > 0:  # (a [Cout, 1] table has none, and a one-entry ``nxt``)
                k = nxt[p]
                while k < n_special and specials[k] < p + m:
                    hrow[specials[k] - p] = hs[o, k]
                    k += 1
            if has_res:  # read before ``dst`` is written: the residual may be ``out`` itself
                rrow = res[o, q:q + m]
                for i in range(m):
                    saved[i] = rrow[i]
            if has_bias:
                for i in range(m):
                    dst[i] = (hrow[i] - src[i]) * f + bo
            else:
                for i in range(m):
                    dst[i] = (hrow[i] - src[i]) * f
            if has_res:  # the Add that follows the convolution: residual + conv, one rounding
                for i in range(m):
                    dst[i] = saved[i] + dst[i]
            q += m
            p = 0


@jit(boundscheck=False)
def _binary_conv_serial(xs, xf, wt, off, fill, sign, thr, h, w, hp, wp, top, left, ho, wo, sy, sx,
                        offsets, factor, bias, has_bias, out, res, has_res, pack_chunk, conv_chunk, packed):
    """The whole op on the calling thread: border, packing tasks (none where the input is
    ``packed`` already), popcount tasks in order."""
    wc = fill.shape[0]
    if not packed:
        _fill_border(xf.reshape(-1, hp * wp * wc), h, w, hp, wp, wc, top, left, fill)
        buf = np.empty(pack_chunk, np.uint64)
        for task in range(-(-xs.shape[1] // pack_chunk) * wc):
            _pack_task(xs, xf, task, pack_chunk, h, w, hp, wp, wc, top, left, sign, thr, buf)
    acc = np.empty((conv_chunk + 3) * 32, np.int64)
    tile = np.empty((conv_chunk + 3) * 32, np.float32)
    for task in range(-(-out.shape[1] // conv_chunk) * wt.shape[0]):
        _conv_task_for(xf, wt, off, task, conv_chunk, hp, wp, wc, ho, wo, sy, sx, offsets, factor, bias, has_bias,
                       out, res, has_res, acc, tile)


@jit(boundscheck=False)
def _binary_conv_share(xs, xf, wt, off, fill, sign, thr, h, w, hp, wp, top, left, ho, wo, sy, sx,
                       offsets, factor, bias, has_bias, out, res, has_res, pack_chunk, conv_chunk, packed, counters):
    """One thread's share of the op: tasks taken from the shared atomic ``counters``.

    ``counters`` (int64, zeroed, a cache line per counter): [0] next packing task, [8] packing
    tasks done, [16] next popcount task, [24] popcount tasks done. A thread out of packing
    tasks waits until all are done (it reads words others packed); every popcount task is
    counted done, so the caller can wait for the last one. Any number of threads may run this,
    starting at any time: one that comes late finds no tasks and returns. A ``packed`` input has
    no packing tasks.
    """
    wc = fill.shape[0]
    pack_tasks = 0 if packed else -(-xs.shape[1] // pack_chunk) * wc
    conv_tasks = -(-out.shape[1] // conv_chunk) * wt.shape[0]
    buf = np.empty(pack_chunk, np.uint64)
    while True:
        task = fetch_add(counters, 0)
        if task >= pack_tasks:
            break
        _pack_task(xs, xf, task, pack_chunk, h, w, hp, wp, wc, top, left, sign, thr, buf)
        fetch_add(counters, 8)
    wait_for(counters, 8, pack_tasks)
    acc = np.empty((conv_chunk + 3) * 32, np.int64)
    tile = np.empty((conv_chunk + 3) * 32, np.float32)
    while True:
        task = fetch_add(counters, 16)
        if task >= conv_tasks:
            break
        _conv_task_for(xf, wt, off, task, conv_chunk, hp, wp, wc, ho, wo, sy, sx, offsets, factor, bias, has_bias,
                       out, res, has_res, acc, tile)
        fetch_add(counters, 24)


def tap_offsets(kernel, dilation, wp: int, wc: int) -> np.ndarray:
    """int64 ``[kh * kw * Wc]``: where word (ky, kx, j) of a position's receptive field is, from its first word."""
    kh, kw = kernel
    ky = np.arange(kh)[:, None, None] * (dilation[0] * wp * wc)
    kx = np.arange(kw)[None, :, None] * (dilation[1] * wc)
    return (ky + kx + np.arange(wc)[None, None, :]).astype(np.int64).ravel()


class HalfOffsets(NamedTuple):
    """A half-offset table [Cout, P] (or [Cout, 1]) in the epilogue's form: ``h0`` [Cout], the value
    at most positions, and the positions where some channel differs (``specials``, sorted), their
    values ``hs`` [Cout, S] and ``nxt`` [P + 1] (the index of the first special at or after each
    position). Only zero padding makes specials, and only at the border."""

    h0: np.ndarray
    hs: np.ndarray
    specials: np.ndarray
    nxt: np.ndarray


def split_half_offsets(half: np.ndarray, wo: int) -> HalfOffsets:
    """:class:`HalfOffsets` of a float32 table ``[Cout, P]`` for maps ``wo`` wide (or ``[Cout, 1]``,
    which has no specials).

    Any column could serve as ``h0``, as a special is any position where a channel's value
    differs from it; the map's centre is interior wherever the map has an interior.
    """
    cout, positions = half.shape
    centre = (positions // wo) // 2 * wo + min(wo, positions) // 2 if positions > 1 else 0
    h0 = np.ascontiguousarray(half[:, centre])
    specials = np.flatnonzero((half != h0[:, None]).any(axis=0)).astype(np.int64)
    hs = np.ascontiguousarray(half[:, specials])
    nxt = np.searchsorted(specials, np.arange(positions + 1)).astype(np.int64)
    return HalfOffsets(h0, hs, specials, nxt)


class _Geometry(NamedTuple):
    pads: tuple[int, int, int, int]
    ho: int
    wo: int
    hp: int
    wp: int
    offsets: np.ndarray  # tap_offsets


class BinaryConvKernel:
    """One binary conv layer (bnncli.runtime.backends.base.BinaryConvLayer), prepared once: weights
    transposed, thresholds and scales in the kernel's form, per-size work cached.

    ``kernel(x, pads, out=None, crew=None, half_offset=None, residual=None)`` binarizes, packs and binary-convolves
    a float32 map ``x`` [C, N, H, W] padded by ``pads`` (top, left, bottom, right), into ``out``
    (a C-contiguous float32 ``[Cout, N, Ho, Wo]``, allocated when None), on the calling thread and
    the helpers of ``crew`` (bnncli.runtime.backends.numba.crew.Crew) when the layer has enough work.
    ``half_offset`` (float32 ``[Cout, Ho * Wo]`` or ``[Cout, 1]``, the NumPy kernels'
    ``half_dot_offset``) is computed and cached when None. ``residual`` (an array of the output's
    shape, which may be ``out`` itself) is added to the result, as an Add op after the convolution.
    The layer's arrays are copied into the kernel's form when it is built, so changing them
    afterwards changes nothing. ``buffers`` (the model's context: ``empty``/``release``), when
    given, lends the packed input's memory for the duration of a call.
    """

    def __init__(self, layer, weights: ConvWeights | None = None, buffers=None) -> None:
        pad_value = layer.pad_value
        if pad_value not in (0, -1, 1):
            raise ValueError(f"pad_value must be 0, -1 or 1, not {pad_value!r}")
        self.wbits = np.ascontiguousarray(layer.wbits, dtype=np.uint64)
        self.weights = prepare_weights(self.wbits) if weights is None else weights
        self.buffers = buffers
        self.channels = int(layer.channels)
        self.cout = self.weights.cout
        self.kernel = self.weights.kernel
        self.words = self.weights.words
        if self.words != n_words(self.channels) or self.wbits.shape != (self.cout, *self.kernel, self.words):
            raise ValueError(f"weights of shape {self.wbits.shape} do not fit {self.channels} input channels")
        self.stride = (int(layer.stride[0]), int(layer.stride[1]))
        self.dilation = (int(layer.dilation[0]), int(layer.dilation[1]))
        self.pad_value = float(pad_value)
        c = self.channels
        threshold, negate, scale, bias = layer.threshold, layer.negate, layer.scale, layer.bias
        if threshold is None:  # negate without a threshold means nothing (as in the NumPy sign_bits)
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
        self.fill = valid_bits_words(c) if self.pad_value == 1 else np.zeros(self.words, dtype=np.uint64)
        self._geometries: dict[tuple, _Geometry] = {}
        self._half_offsets: dict[tuple, np.ndarray] = {}
        self._split_offsets: dict[tuple, HalfOffsets] = {}
        self._prepacked: tuple[tuple, np.ndarray] | None = None

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
        """The NumPy kernels' half_dot_offset for an input size and padding ([Cout, Ho * Wo] or [Cout, 1]), cached."""
        key = (h, w, tuple(pads))
        half = self._half_offsets.get(key)
        if half is None:
            half = ref.half_dot_offset(ref.dot_offset(self.wbits, self.channels, h, w, self.stride,
                                                      self.geometry(h, w, pads).pads, self.dilation, self.pad_value))
            self._half_offsets[key] = half
        return half

    def prepacked_input(self, n: int, h: int, w: int, pads) -> np.ndarray:
        """The kernel's own packed-input buffer for ``n`` maps of ``h`` x ``w`` padded by ``pads``
        (uint64, its border holding the padding pattern, other bits 0 when new), for a
        :class:`FanOut` to fill and a call to read (``prepacked=``). One size is kept."""
        key = (n, h, w, tuple(pads))
        if self._prepacked is None or self._prepacked[0] != key:
            g = self.geometry(h, w, pads)
            xf = np.zeros(n * g.hp * g.wp * self.words, np.uint64)
            _fill_border(xf.reshape(n, -1), h, w, g.hp, g.wp, self.words, g.pads[0], g.pads[1], self.fill)
            self._prepacked = (key, xf)
        return self._prepacked[1]

    def _checked(self, x: np.ndarray, pads, out: np.ndarray | None, half_offset: np.ndarray | None,
                 residual: np.ndarray | None, prepacked: bool) -> tuple[np.ndarray, _Geometry, HalfOffsets, np.ndarray,
                                                                        np.ndarray]:
        """A call's arguments checked and in the kernel's form: the input (C-contiguous and writable,
        unless the call reads a ``prepacked`` input and only its shape), the geometry, the half
        offsets (cached, or split from the ones given), the output (made when None) and the
        residual (the output itself when None)."""
        if x.dtype != np.float32 or x.ndim != 4:
            raise TypeError(f"binary_conv takes a float32 map [C, N, H, W], not {x.dtype} of shape {x.shape}")
        c, n, h, w = x.shape
        if c != self.channels:
            raise ValueError(f"input has {c} channels, the layer {self.channels}")
        if not (x.flags.c_contiguous and x.flags.writeable) and not prepacked:
            x = np.array(x, order="C")  # (numba compiles read-only arrays separately)
        g = self.geometry(h, w, pads)
        shape = (self.cout, n, g.ho, g.wo)
        if half_offset is None:
            key = (h, w, tuple(pads))
            offsets = self._split_offsets.get(key)
            if offsets is None:
                offsets = self._split_offsets[key] = split_half_offsets(self.half_offset(h, w, pads), g.wo)
        elif half_offset.dtype != np.float32 or half_offset.shape not in ((self.cout, 1), (self.cout, g.ho * g.wo)):
            raise ValueError(f"half_offset must be float32 {(self.cout, 1)} or {(self.cout, g.ho * g.wo)}, not "
                             f"{half_offset.dtype} {half_offset.shape}")
        else:
            offsets = split_half_offsets(half_offset, g.wo)
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"out must be a writable C-contiguous float32 {shape}")
        if residual is None:
            res = out
        elif residual.shape == out.shape and residual.dtype == np.float32 and residual.flags.c_contiguous:
            res = residual
        else:
            raise ValueError(f"residual must be a C-contiguous float32 {shape}")
        return x, g, offsets, out, res

    def __call__(self, x: np.ndarray, pads=(0, 0, 0, 0), out: np.ndarray | None = None, crew=None,
                 half_offset: np.ndarray | None = None, residual: np.ndarray | None = None,
                 prepacked: np.ndarray | None = None) -> np.ndarray:
        x, g, offsets, out, res = self._checked(x, pads, out, half_offset, residual, prepacked is not None)
        c, n, h, w = x.shape
        cout, ho, wo = self.cout, g.ho, g.wo
        wt = self.weights.wt
        blocks = wt.shape[0]
        positions = n * ho * wo
        workers = crew.threads if crew is not None else 1
        if workers > 1 and cout * positions * g.offsets.shape[0] < CREW_MIN_WORK:
            workers = 1
        # Chunks of output positions: at most CONV_CHUNK, small enough for every worker to get
        # about four tasks, and a multiple of four (the micro-kernel's positions).
        conv_chunk = min(CONV_CHUNK, max(4, -(-positions * blocks // (4 * workers))))
        conv_chunk = -(-conv_chunk // 4) * 4
        pack_chunk = max(1, min(PACK_CHUNK, n * h * w))
        words = n * g.hp * g.wp * self.words
        # The packed input: given (every channel packed by its producer: no packing here), or a
        # float32 buffer of the model's (reused from call to call, no fresh pages to fault in)
        # seen as words, where the kernel has the model's buffers.
        scratch = None if self.buffers is None or prepacked is not None else self.buffers.empty((2 * words,))
        if prepacked is not None:
            if prepacked.shape != (words,) or prepacked.dtype != np.uint64:
                raise ValueError("the packed input does not fit the map")
            xf = prepacked
        else:
            xf = np.empty(words, dtype=np.uint64) if scratch is None else scratch.view(np.uint64)
        # A prepacked call reads no float input: it may be a stand-in of the right shape
        # (bnncli.runtime.model.Model._plan_pooled_chains), never materialized.
        xs = _NO_INPUT if prepacked is not None else x.reshape(c, n * h * w)
        args = (xs, xf, wt, g.offsets, self.fill, self.sign, self.threshold, h, w, g.hp, g.wp,
                g.pads[0], g.pads[1], ho, wo, self.stride[0], self.stride[1], tuple(offsets), self.factor, self.bias,
                self.has_bias, out.reshape(cout, positions), res.reshape(cout, positions), residual is not None,
                pack_chunk, conv_chunk, prepacked is not None)
        if workers <= 1:
            _binary_conv_serial(*args)
        else:
            # Helpers are not waited for, only the tasks: one that starts after the work is done
            # finds none left, so a busy or slow-waking helper costs nothing but its share.
            if prepacked is None:
                _fill_border(xf.reshape(n, -1), h, w, g.hp, g.wp, self.words, g.pads[0], g.pads[1], self.fill)
            counters = np.zeros(32, np.int64)
            crew.run(_binary_conv_share, (*args, counters))
            wait_for(counters, 24, -(-positions // conv_chunk) * blocks)
        if scratch is not None:
            self.buffers.release(scratch)
        return out


_NO_INPUT = np.zeros((1, 0), np.float32)  # the float input a prepacked call passes (unread)

# Positions per task of a FanOut: the map's rows of a task (64 channels: 32 KB) stay in L1 for every reader.
FAN_OUT_CHUNK = 512


class FanOut:
    """Packs one map as a segment of the input of several binary convolutions (the layers of a
    dense block that read it), right after it is computed: ``fan_out(x)`` writes ``x`` [count,
    N, H, W] as channels ``firsts[r] ..`` of ``kernels[r]``'s packed input
    (:meth:`BinaryConvKernel.prepacked_input`, ``buffers[r]``) for each reader r, the other
    bits kept. Once every segment of a reader's input is packed, the reader is called with
    ``prepacked=`` and reads no float input. Made per map size (``n``, ``h``, ``w``, each
    reader's ``pads``); the readers' thresholds must all be float32 (:meth:`usable`)."""

    def __init__(self, kernels: list[BinaryConvKernel], firsts: list[int], pads: list, n: int, h: int, w: int,
                 count: int) -> None:
        from numba import typed

        if not self.usable(kernels) or len(kernels) != len(firsts) or len(kernels) != len(pads):
            raise ValueError("a fan-out takes readers with float32 thresholds, one first channel and padding each")
        self.shape = (count, n, h, w)
        self.buffers = [k.prepacked_input(n, h, w, p) for k, p in zip(kernels, pads)]
        rows = []
        for k, first, p in zip(kernels, firsts, pads):
            if not 0 <= first <= k.channels - count:
                raise ValueError(f"channels {first}..{first + count - 1} are not inputs of a layer of {k.channels}")
            g = k.geometry(h, w, p)
            rows.append((first, k.words, g.hp, g.wp, g.pads[0], g.pads[1]))
        self.meta = np.array(rows, dtype=np.int64).reshape(len(kernels), 6)
        self.xfs = typed.List(self.buffers)
        self.signs = typed.List([k.sign for k in kernels])
        self.thresholds = typed.List([k.threshold for k in kernels])

    @staticmethod
    def usable(kernels: list[BinaryConvKernel]) -> bool:
        return bool(kernels) and all(k.threshold.dtype == np.float32 for k in kernels)

    def __call__(self, x: np.ndarray, crew=None) -> None:
        if x.shape != self.shape or x.dtype != np.float32 or not (x.flags.c_contiguous and x.flags.writeable):
            raise ValueError(f"the fan-out packs C-contiguous float32 maps {self.shape}, not {x.dtype} {x.shape}")
        count, n, h, w = x.shape
        tasks = -(-(n * h * w) // FAN_OUT_CHUNK)
        counters = np.zeros(16, np.int64)
        args = (x.reshape(count, n * h * w), self.xfs, self.signs, self.thresholds, self.meta, FAN_OUT_CHUNK, h, w,
                counters)
        if crew is None or tasks < 2 or x.size * len(self.buffers) < CREW_MIN_WORK // 8:
            _fan_out_share(*args)
        else:
            crew.run(_fan_out_share, args)
            wait_for(counters, 8, tasks)


COMPILED = [_binary_conv_serial, _binary_conv_share, _fill_border, _pack_range, _pack_task, _fan_out_share,
            _conv_task_for, _conv_task, _counts, _epilogue]

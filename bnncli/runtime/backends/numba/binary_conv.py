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
   in blocks of at most 64 output channels (:func:`prepare_weights`), so the innermost loop runs
   over output channels: an input word, broadcast, is XOR-ed with a vector of weight words and
   the popcounts of four words are summed before they are added to an int32 count (AVX-512
   VPOPCNTQ where the CPU has it: LLVM compiles for the host). Two output positions share
   every load of weights. Tasks are chunks of output positions x blocks of output channels.
3. **Epilogue**, per output element, in float32 and in the NumPy kernel's order:
   ``(half_offset[o, p] - mismatches) * (2 * scale[o]) + bias[o]`` (``ref.half_dot_offset``;
   the addition only where there is a bias, so that a -0.0 stays -0.0).

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
from bnncli.runtime.backends.numba.intrinsics import fetch_add, jit, popcount, wait_for

# Output channels per block of transposed weights: the block's K x 64 words (36 KB for 512 input
# channels, 3 x 3) stay in L1/L2 while a row of positions is XOR-ed against them.
BLOCK_CHANNELS = 64
# Work (output elements x words per element) below which a call stays on the calling thread: the
# helpers of a Crew wake in about 20 us, so layers of some 0.1 ms gain from a second thread.
CREW_MIN_WORK = 1 << 19
# Output positions per task of the popcount loop, and input positions per task of the packing.
CONV_CHUNK = 64
PACK_CHUNK = 1024


class ConvWeights(NamedTuple):
    """Packed weights transposed for the kernel: ``wt`` uint64 ``[blocks, kh * kw * Wc, block]``."""

    wt: np.ndarray
    cout: int
    kernel: tuple[int, int]
    words: int


def prepare_weights(wbits: np.ndarray) -> ConvWeights:
    """``wbits`` uint64 ``[Cout, kh, kw, Wc]`` (graph.bits.widen_words) -> :class:`ConvWeights`, once per layer.

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


@jit(boundscheck=False)
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


@jit(boundscheck=False)
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


@jit(boundscheck=False)
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
        task = fetch_add(counters, 0)
        if task >= pack_tasks:
            break
        _pack_task(xs, xf, task, pack_chunk, h, w, hp, wp, wc, top, left, sign, thr, buf)
        fetch_add(counters, 8)
    wait_for(counters, 8, pack_tasks)
    acc = np.empty((conv_chunk + 1, wt.shape[2]), np.int32)
    while True:
        task = fetch_add(counters, 16)
        if task >= conv_tasks:
            break
        _conv_task(xf, wt, off, task, conv_chunk, hp, wp, wc, ho, wo, sy, sx, hoff, factor, bias, has_bias,
                   out, acc)
        fetch_add(counters, 24)


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
    """One binary conv layer (bnncli.runtime.backends.base.BinaryConvLayer), prepared once: weights
    transposed, thresholds and scales in the kernel's form, per-size work cached.

    ``kernel(x, pads, out=None, crew=None, half_offset=None)`` binarizes, packs and binary-convolves
    a float32 map ``x`` [C, N, H, W] padded by ``pads`` (top, left, bottom, right), into ``out``
    (a C-contiguous float32 ``[Cout, N, Ho, Wo]``, allocated when None), on the calling thread and
    the helpers of ``crew`` (bnncli.runtime.backends.numba.crew.Crew) when the layer has enough work.
    ``half_offset`` (float32 ``[Cout, Ho * Wo]`` or ``[Cout, 1]``, the NumPy kernels'
    ``half_dot_offset``) is computed and cached when None. The layer's arrays are copied into the
    kernel's form when it is built, so changing them afterwards changes nothing.
    """

    def __init__(self, layer, weights: ConvWeights | None = None) -> None:
        pad_value = layer.pad_value
        if pad_value not in (0, -1, 1):
            raise ValueError(f"pad_value must be 0, -1 or 1, not {pad_value!r}")
        self.wbits = np.ascontiguousarray(layer.wbits, dtype=np.uint64)
        self.weights = prepare_weights(self.wbits) if weights is None else weights
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

    def __call__(self, x: np.ndarray, pads=(0, 0, 0, 0), out: np.ndarray | None = None, crew=None,
                 half_offset: np.ndarray | None = None) -> np.ndarray:
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
        workers = crew.threads if crew is not None else 1
        if workers > 1 and cout * positions * g.offsets.shape[0] < CREW_MIN_WORK:
            workers = 1
        # Chunks of output positions: at most CONV_CHUNK, small enough for every worker to get
        # about four tasks, and even (positions go in pairs).
        conv_chunk = min(CONV_CHUNK, max(2, -(-positions * blocks // (4 * workers))))
        conv_chunk += conv_chunk % 2
        pack_chunk = max(1, min(PACK_CHUNK, n * h * w))
        xf = np.empty(n * g.hp * g.wp * self.words, dtype=np.uint64)
        args = (x.reshape(c, n * h * w), xf, wt, g.offsets, self.fill, self.sign, self.threshold, h, w, g.hp, g.wp,
                g.pads[0], g.pads[1], ho, wo, self.stride[0], self.stride[1], half_offset, self.factor, self.bias,
                self.has_bias, out.reshape(cout, positions), pack_chunk, conv_chunk)
        if workers <= 1:
            _binary_conv_serial(*args)
        else:
            # Helpers are not waited for, only the tasks: one that starts after the work is done
            # finds none left, so a busy or slow-waking helper costs nothing but its share.
            _fill_border(xf.reshape(n, -1), h, w, g.hp, g.wp, self.words, g.pads[0], g.pads[1], self.fill)
            counters = np.zeros(32, np.int64)
            crew.run(_binary_conv_share, (*args, counters))
            wait_for(counters, 24, -(-positions // conv_chunk) * blocks)
        return out


COMPILED = [_binary_conv_serial, _binary_conv_share, _fill_border, _pack_task, _conv_task]

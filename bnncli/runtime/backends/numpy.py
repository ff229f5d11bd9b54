"""The NumPy kernels: the runtime's reference backend (imports NumPy only).

Every op of the runtime computes here when the backend is ``numpy``, and every compiled kernel
(bnncli.runtime.backends.numba) is checked against these, bit for bit. :class:`NumpyKernels` is
this backend's side of the seam (bnncli.runtime.backends.Kernels); the functions below it are
the kernels themselves.

Binary convolutions run on packed words (bit layout: bnncli.graph.bits):
:func:`binary_conv_reference` (one output position at a time, obviously right) and
:func:`binary_conv_fast` (im2col of packed words, a loop over words with an integer
accumulator, split across threads) return the same exact integers; the tests check one against
the other. Float ops (convolution, pooling, the per-channel affine) work on the runtime's
``[C, N, H, W]`` maps, split into channel blocks across a thread pool on large maps.

A ``padding`` argument is ``(ph, pw)`` (symmetric) or ``(top, left, bottom, right)``
(bnncli.graph.padding), as TensorFlow's "same" rule resolves it on stride-2 layers.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np

from bnncli.graph import padding as P
from bnncli.graph.bits import WORD_BITS, n_words, valid_bits_words
from bnncli.graph.padding import as_pads, output_hw
from bnncli.runtime.backends.base import Buffers

# Output channels x output positions per block of the fast kernel: about 1 MB of uint64 XOR
# results, which stay in a core's 2 MiB L2 with the block's counts and accumulator (measured: 64
# channels x 3136 positions in one block run 15% slower than in two). Much smaller blocks pay
# NumPy's per-call overhead more often.
_BLOCK_WORDS = 1 << 17
# Output positions x channels below which the fast kernel stays on one thread (per worker).
_PARALLEL_MIN_WORDS_PER_WORD_ROW = 65536


def sign_bits(x: np.ndarray, threshold: np.ndarray | None = None, negate: np.ndarray | None = None) -> np.ndarray:
    """The bit (True = +1) of each input channel on axis 0.

    Without a threshold: x >= 0 (sign(0) = +1). With per-channel ``threshold`` t: x >= t, or
    x <= t where ``negate`` is set (a BatchNorm with a negative scale folded in).
    """
    if threshold is None:
        return x >= 0
    shape = (-1,) + (1,) * (x.ndim - 1)
    t = threshold.reshape(shape)
    bits = x >= t
    if negate is not None and negate.any():
        # Only the negated channels are compared again (a third or so in trained models):
        # cheaper than flipping the sign of every channel, which writes a whole float copy.
        rows = np.flatnonzero(negate)
        bits[rows] = x[rows] <= t[rows]
    return bits


_BIT_SHIFTS = np.arange(8, dtype=np.uint8)[None, :, None]


def pack_planar(bits: np.ndarray) -> np.ndarray:
    """Bits ``[C, ...]`` (channel first) -> uint64 words ``[n_words(C), ...]`` (word first).

    Each channel row is shifted by its bit position within its byte and every eight rows are
    OR-ed into a byte row (bit i = channel 8k + i), in two NumPy calls; then the eight byte rows
    of each word are interleaved into little-endian words by one transposing copy. A few passes
    over contiguous rows, several times faster than ``np.packbits`` along the first axis, and
    with few calls, which matters on the small maps of late stages.
    """
    c = bits.shape[0]
    rest = bits.shape[1:]
    flat = np.ascontiguousarray(bits).reshape(c, -1).view(np.uint8)
    p = flat.shape[1]
    wc = n_words(c)
    if wc * WORD_BITS != c:
        flat = np.concatenate([flat, np.zeros((wc * WORD_BITS - c, p), np.uint8)])
    shifted = np.left_shift(flat.reshape(wc * 8, 8, p), _BIT_SHIFTS)
    byte_rows = np.bitwise_or.reduce(shifted, axis=1).reshape(wc, 8, p)  # byte i of word k: channels 64k + 8i ...
    words = np.ascontiguousarray(byte_rows.transpose(0, 2, 1)).view("<u8").astype(np.uint64, copy=False)
    return words.reshape((wc,) + rest)


def weight_sums(wbits: np.ndarray, channels: int) -> np.ndarray:
    """Sum over input channels of the +-1 weights, ``[Cout, kh, kw]`` (int64)."""
    plus = np.bitwise_count(wbits).sum(axis=-1, dtype=np.int64)  # tail bits are 0
    return 2 * plus - channels


def binary_conv_reference(xbits: np.ndarray, wbits: np.ndarray, channels: int, stride=(1, 1), padding=(0, 0),
                          dilation=(1, 1), pad_value: float = 0.0) -> np.ndarray:
    """Binary convolution, one output position at a time.

    Args:
        xbits: packed input, uint64 ``[Wc, N, H, W]``.
        wbits: packed weights, uint64 ``[Cout, kh, kw, Wc]``.
        channels: input channels (the number of valid bits per position).
        pad_value: what padded input positions are: 0, -1 or +1.

    Returns:
        int64 ``[Cout, N, Ho, Wo]``: the exact sum of x * w over channels and taps.
    """
    _, n, h, w = xbits.shape
    cout, kh, kw, _ = wbits.shape
    top, left, _, _ = pads = as_pads(padding)
    ho, wo = output_hw((h, w), (kh, kw), stride, pads, dilation)
    wsum = weight_sums(wbits, channels)
    pad = int(pad_value)
    out = np.zeros((cout, n, ho, wo), dtype=np.int64)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                acc = np.zeros(cout, dtype=np.int64)
                for ky in range(kh):
                    for kx in range(kw):
                        iy = oy * stride[0] - top + ky * dilation[0]
                        ix = ox * stride[1] - left + kx * dilation[1]
                        if 0 <= iy < h and 0 <= ix < w:
                            mismatches = np.bitwise_count(xbits[:, b, iy, ix] ^ wbits[:, ky, kx, :]).sum(axis=1)
                            acc += channels - 2 * mismatches.astype(np.int64)
                        else:  # a padded position holds pad_value in every channel
                            acc += pad * wsum[:, ky, kx]
                out[:, b, oy, ox] = acc
    return out


def _pad_planar(xbits: np.ndarray, padding, fill: np.ndarray) -> np.ndarray:
    """Pad a planar packed map ``[Wc, N, H, W]`` spatially with the per-word pattern ``fill``."""
    top, left, bottom, right = as_pads(padding)
    if not (top or left or bottom or right):
        return xbits
    wc, n, h, w = xbits.shape
    out = np.empty((wc, n, top + h + bottom, left + w + right), dtype=np.uint64)
    out[...] = fill.reshape(wc, 1, 1, 1)
    out[:, :, top:top + h, left:left + w] = xbits
    return out


def im2col_words(xbits: np.ndarray, kernel, stride, padding, dilation, fill: np.ndarray,
                 pool: Executor | None = None, workers: int = 1) -> tuple[np.ndarray, int, int]:
    """Packed input ``[Wc, N, H, W]`` -> columns ``[kh * kw * Wc, N * Ho * Wo]`` (tap-major)."""
    wc, n, h, w = xbits.shape
    kh, kw = kernel
    pads = as_pads(padding)
    ho, wo = output_hw((h, w), kernel, stride, pads, dilation)
    if (kh, kw) == (1, 1) and not any(pads):
        view = xbits[:, :, ::stride[0], ::stride[1]][:, :, :ho, :wo]
        return np.ascontiguousarray(view).reshape(wc, n * ho * wo), ho, wo
    xp = _pad_planar(xbits, pads, fill)
    cols = np.empty((kh, kw, wc, n, ho, wo), dtype=np.uint64)

    def fill_rows(kys) -> None:
        for ky in kys:
            for kx in range(kw):
                cols[ky, kx] = tap_view(xp, ky, kx, stride, dilation, (ho, wo))

    if kh > 1 and cols.size >= 1 << 18:
        run_tasks(fill_rows, [range(i, kh, workers) for i in range(workers)], pool, workers)
    else:
        fill_rows(range(kh))
    return cols.reshape(kh * kw * wc, n * ho * wo), ho, wo


def tap_view(x: np.ndarray, ky: int, kx: int, stride, dilation, out_hw) -> np.ndarray:
    """The strided view of a padded ``[C, N, H, W]`` map that kernel tap (ky, kx) reads."""
    ho, wo = out_hw
    y0, x0 = ky * dilation[0], kx * dilation[1]
    return x[:, :, y0:y0 + stride[0] * (ho - 1) + 1:stride[0], x0:x0 + stride[1] * (wo - 1) + 1:stride[1]]


def padding_mask(h: int, w: int, kernel, stride, padding, dilation) -> np.ndarray:
    """bool ``[kh * kw, Ho * Wo]``: True where tap t of output position p reads padding."""
    kh, kw = kernel
    top, left, _, _ = pads = as_pads(padding)
    ho, wo = output_hw((h, w), kernel, stride, pads, dilation)
    iy = np.arange(ho)[None, :] * stride[0] - top + np.arange(kh)[:, None] * dilation[0]  # [kh, Ho]
    ix = np.arange(wo)[None, :] * stride[1] - left + np.arange(kw)[:, None] * dilation[1]  # [kw, Wo]
    out_y = (iy < 0) | (iy >= h)
    out_x = (ix < 0) | (ix >= w)
    mask = out_y[:, None, :, None] | out_x[None, :, None, :]  # [kh, kw, Ho, Wo]
    return mask.reshape(kh * kw, ho * wo)


def _popcount_columns(a: np.ndarray, b: np.ndarray, acc: np.ndarray) -> None:
    """acc[r, c] += sum_j popcount(a[r, j] XOR b[j, c]) for a ``[R, J]``, b ``[J, C]``, acc ``[R, C]``.

    One XOR and one popcount per packed word into reused temporaries; the 8-bit counts of up to
    three words (at most 192) are summed in 8 bits before they are added to the wider accumulator.

    NumPy runs the XOR of a column against a row through its buffered iterator; with the default
    8192-element buffer, rows shorter than a few thousand words take a slow path (about 0.65 ns a
    word here instead of 0.22). A buffer no longer than a row avoids it, so the buffer size is set
    to the row length for this thread while the loop runs.
    """
    rows, kwords = a.shape
    n = b.shape[1]
    tmp = np.empty((rows, n), dtype=np.uint64)
    cnt = np.empty((rows, n), dtype=np.uint8)
    part = np.empty((rows, n), dtype=np.uint8)
    # The operands of word j as broadcastable views made once: late stages at batch 1 make a few
    # hundred calls on small arrays, where building views and looking up ufuncs show.
    a_cols = np.ascontiguousarray(a.T)[:, :, None]  # [J, R, 1]
    b_rows = b[:, None, :]  # [J, 1, C]
    xor, count, add = np.bitwise_xor, np.bitwise_count, np.add
    old = np.getbufsize()
    np.setbufsize(min(8192, max(16, n // 16 * 16)))
    try:
        for j0 in range(0, kwords, 3):
            xor(a_cols[j0], b_rows[j0], tmp)
            count(tmp, part)
            for j in range(j0 + 1, min(j0 + 3, kwords)):
                xor(a_cols[j], b_rows[j], tmp)
                count(tmp, cnt)
                add(part, cnt, part)
            add(acc, part, acc)
    finally:
        np.setbufsize(old)


def _blocks(size: int, target: int, minimum: int = 1) -> list[tuple[int, int]]:
    """Split range(size) into near-equal blocks of about ``target`` (at least ``minimum``)."""
    count = max(1, min(-(-size // max(target, 1)), size // max(minimum, 1)))
    edges = [round(i * size / count) for i in range(count + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def run_tasks(fn: Callable, tasks: list, pool: Executor | None = None, workers: int = 1) -> None:
    """``fn(task)`` for every task, on the calling thread and up to ``workers - 1`` pool threads.

    The calling thread takes tasks too rather than waiting for the pool: on a machine with as
    many cores as workers, one thread fewer is woken up and handed the GIL for every parallel
    step, which matters at batch 1, where a step takes about a millisecond. Tasks come from one
    shared iterator (a list iterator's ``next`` is atomic in CPython), so a thread that gets
    ahead takes more of them.
    """
    if pool is None or workers < 2 or len(tasks) < 2:
        for task in tasks:
            fn(task)
        return
    shared = iter(tasks)

    def drain() -> None:
        for task in shared:
            fn(task)

    helpers = [pool.submit(drain) for _ in range(min(workers, len(tasks)) - 1)]
    try:
        drain()
    finally:  # wait for the helpers even on an error: they write into the caller's arrays
        for future in helpers:
            future.result()


def dot_offset(wbits: np.ndarray, channels: int, h: int, w: int, stride, padding, dilation,
               pad_value: float) -> np.ndarray:
    """int32 ``[Cout, Ho * Wo]`` (``[Cout, 1]`` without zero padding): ``dot + 2 * mismatches``.

    That is the number of bits a position compares, plus, for pad value 0, what padding adds
    back (see :func:`binary_conv_fast`).
    """
    cout, kh, kw, _ = wbits.shape
    n_bits = kh * kw * channels
    if pad_value == 0 and any(as_pads(padding)):
        return zero_pad_correction(wbits, channels, h, w, stride, padding, dilation) + np.int32(n_bits)
    return np.full((cout, 1), n_bits, dtype=np.int32)


def half_dot_offset(offset: np.ndarray) -> np.ndarray:
    """:func:`dot_offset` / 2 in float32: exact, as the offsets are integers far below 2**23."""
    return (offset * 0.5).astype(np.float32)


def binary_conv_fast(xbits: np.ndarray, wbits: np.ndarray, channels: int, stride=(1, 1), padding=(0, 0),
                     dilation=(1, 1), pad_value: float = 0.0, *, pool: Executor | None = None, workers: int = 1,
                     half_offset: Callable[[int, int], np.ndarray] | None = None, fill: np.ndarray | None = None,
                     scale: np.ndarray | None = None, bias: np.ndarray | None = None,
                     dtype=np.int32, out: np.ndarray | None = None) -> np.ndarray:
    """The same result as :func:`binary_conv_reference`, by XNOR + popcount on columns.

    The packed input is unrolled into columns (one per output position, ``kh * kw * Wc`` words
    each), and every output channel's packed weights are XOR-ed against them word by word. Work is
    split into blocks of output channels x output positions, run on the calling thread and
    ``pool`` (:func:`run_tasks`): NumPy releases the GIL inside the XOR, popcount and add loops, so
    ``workers`` threads run at once. Each block also finishes its part of the output:
    ``dot = offset - 2 * mismatches`` (:func:`dot_offset`) in ``dtype`` (int32, or float32 for the
    runtime), then ``* scale + bias`` per output channel.

    Padded positions are filled with the +1 pattern for pad value +1 and with 0 (-1) otherwise;
    for pad value 0 the -1 that padding contributed, ``-sum_c w[o, c, tap]`` per padded tap, is
    added back (it depends only on the position and the weights). For a float ``dtype``,
    ``half_offset(h, w)`` may supply :func:`half_dot_offset` from a cache; ``fill`` is the per-word
    padding pattern. ``out``: a C-contiguous ``[Cout, N, Ho, Wo]`` of ``dtype`` to write into.
    """
    wc, n, h, w = xbits.shape
    cout, kh, kw, wcw = wbits.shape
    if wcw != wc:
        raise ValueError(f"input has {wc} words per position, weights {wcw}")
    if fill is None:
        fill = valid_bits_words(channels) if pad_value == 1 else np.zeros(wc, dtype=np.uint64)
    cols, ho, wo = im2col_words(xbits, (kh, kw), stride, padding, dilation, fill, pool=pool, workers=workers)
    wcols = np.ascontiguousarray(wbits.reshape(cout, kh * kw * wc))
    kwords, p = cols.shape
    acc_dtype = np.uint16 if kwords * WORD_BITS < 2**16 else np.uint32
    floating = np.issubdtype(dtype, np.floating)
    # Integers below 2**24 are exact in float32, so the dot stays exact before the scale. In
    # float, dot / 2 = offset / 2 - mismatches is formed in one pass (offset / 2 is a
    # half-integer, exact too) and then multiplied by 2 * scale, which rounds once, exactly as
    # dot * scale would. Folding the scale into the offset instead would save another pass but
    # make two large rounded terms cancel.
    if floating:
        offset = half_offset(h, w) if half_offset is not None else half_dot_offset(
            dot_offset(wbits, channels, h, w, stride, padding, dilation, pad_value))
        factor = np.float32(2) * (scale[:, None] if scale is not None else np.ones((cout, 1), np.float32))
    else:
        offset = dot_offset(wbits, channels, h, w, stride, padding, dilation, pad_value)
    if n > 1 and offset.shape[1] > 1:  # columns run over the batch, then positions
        offset = np.tile(offset, (1, n))
    out = np.empty((cout, p), dtype=dtype) if out is None else out.reshape(cout, p)
    # Threads pay off only on large blocks: every NumPy call hands the GIL over twice, which costs
    # about as much as a call on a few tens of thousands of words.
    if pool is None or cout * p < _PARALLEL_MIN_WORDS_PER_WORD_ROW * workers:
        workers = 1
    # The XOR loop runs along the longer of output positions and output channels: few positions
    # (late stages at batch 1: 49 in a 7x7 map) against many channels go channel-major.
    transposed = p < cout
    if transposed:
        wt = np.ascontiguousarray(wcols.T)  # [kwords, Cout]
        tasks = [((0, cout), c) for c in _blocks(p, -(-p // workers), minimum=8)]
    else:
        # Blocks of about _BLOCK_WORDS: whole rows (output channels) where they fit, as a block
        # of whole rows is contiguous in the output, which its epilogue then writes about twice
        # as fast; long rows (large batches) are split into blocks of 32 rows x a few thousand
        # columns, so that each word of the columns is XOR-ed against many rows while in cache.
        rows = min(max(_BLOCK_WORDS // p, 32), -(-cout // workers))
        row_blocks = _blocks(cout, rows, minimum=min(8, cout))
        tasks = [(r, c) for r in row_blocks for c in _blocks(p, _BLOCK_WORDS // rows, minimum=256)]

    def run(task) -> None:
        (r0, r1), (c0, c1) = task
        if transposed:
            acc_t = np.zeros((c1 - c0, r1 - r0), dtype=acc_dtype)
            _popcount_columns(np.ascontiguousarray(cols[:, c0:c1].T), wt[:, r0:r1], acc_t)
            acc = acc_t.T
        else:
            acc = np.zeros((r1 - r0, c1 - c0), dtype=acc_dtype)
            _popcount_columns(wcols[r0:r1], cols[:, c0:c1], acc)
        block = out[r0:r1, c0:c1]
        off = offset[r0:r1, c0:c1] if offset.shape[1] > 1 else offset[r0:r1]
        if floating:
            np.subtract(off, acc, out=block)
            block *= factor[r0:r1]
            if bias is not None:
                block += bias[r0:r1, None]
        else:
            np.multiply(acc, np.asarray(-2, dtype=dtype), out=block)
            block += off

    run_tasks(run, tasks, pool, workers)
    return out.reshape(cout, n, ho, wo)


def zero_pad_correction(wbits: np.ndarray, channels: int, h: int, w: int, stride, padding, dilation) -> np.ndarray:
    """int32 ``[Cout, Ho * Wo]``: what to add when padding was computed as -1 but means 0."""
    cout, kh, kw, _ = wbits.shape
    mask = padding_mask(h, w, (kh, kw), stride, padding, dilation)  # [K, P]
    wsum = weight_sums(wbits, channels).reshape(cout, kh * kw)  # [Cout, K]
    return (wsum @ mask.astype(np.int64)).astype(np.int32)


def pad_hw(x: np.ndarray, pads, value: float) -> np.ndarray:
    """Pad height and width of a ``[C, N, H, W]`` map by (top, left, bottom, right) with a constant
    (cheaper than np.pad)."""
    top, left, bottom, right = pads
    if not (top or left or bottom or right):
        return x
    c, n, h, w = x.shape
    out = np.empty((c, n, top + h + bottom, left + w + right), dtype=x.dtype)
    out[:, :, :top] = value
    out[:, :, top + h:] = value
    out[:, :, top:top + h, :left] = value
    out[:, :, top:top + h, left + w:] = value
    out[:, :, top:top + h, left:left + w] = x
    return out


def pool_axis(x: np.ndarray, axis: int, out_size: int, kernel: int, stride: int, padding: int, ufunc, fill: float,
               out: np.ndarray | None = None) -> np.ndarray:
    """``ufunc`` over the windows of one axis; taps that fall on padding are left out.

    ``padding`` is the padding before the map; ``out_size`` (computed with the padding after it) says the rest.

    Each tap t of the kernel is one strided view, combined into the outputs whose window holds
    it inside the map, so no padded copy of the map is made. The first two taps every output
    reads initialize the result (for no padding, taps 0 and 1); where there are none, ``fill`` does.
    """
    size = x.shape[axis]
    out_shape = x.shape[:axis] + (out_size,) + x.shape[axis + 1:]
    out = np.empty(out_shape, dtype=x.dtype) if out is None else out

    def along(a: np.ndarray, start: int, stop: int | None, step: int = 1) -> np.ndarray:
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, stop, step)
        return a[tuple(index)]

    spans = []  # (first output, last output + 1, view of the map) per tap
    for t in range(kernel):
        first = max(0, -(-(padding - t) // stride))
        last = min(out_size, (size - 1 + padding - t) // stride + 1)
        if last > first:
            start = first * stride - padding + t
            spans.append((first, last, along(x, start, start + stride * (last - first - 1) + 1, stride)))
    full = [i for i, (first, last, _) in enumerate(spans) if first == 0 and last == out_size][:2]
    if len(full) == 2:
        ufunc(spans[full[0]][2], spans[full[1]][2], out=out)
    elif full:
        np.copyto(out, spans[full[0]][2])
    else:
        out.fill(fill)
    for i, (first, last, view) in enumerate(spans):
        if i not in full:
            target = along(out, first, last)
            ufunc(target, view, out=target)
    return out


def pool(x: np.ndarray, kernel, stride, pads, ufunc, fill: float, out: np.ndarray | None = None) -> np.ndarray:
    """Separable pooling of a ``[C, N, H, W]`` map: ``ufunc`` over the kernel's rows, then its columns.

    Rows first: with a stride, the pass along the height reads whole contiguous rows and shrinks
    the map before the pass along the width, whose strided reads are the slow ones. Padding is
    left out of the windows, which for a max is padding with -inf (every window holds at least
    one element of the map when padding is at most half the kernel, and with TensorFlow's
    "same" rule). ``pads`` is (top, left, bottom, right).
    """
    ho, wo = P.output_hw(x.shape[2:], kernel, stride, pads)
    rows = pool_axis(x, 2, ho, kernel[0], stride[0], pads[0], ufunc, fill)
    return pool_axis(rows, 3, wo, kernel[1], stride[1], pads[1], ufunc, fill, out=out)


def conv_columns(xp: np.ndarray, kernel, stride, dilation, out_hw, cols: np.ndarray) -> np.ndarray:
    """Columns ``[Cin * kh * kw, N * Ho * Wo]`` of a padded map ``xp`` [Cin, N, Hp, Wp], in the
    weights' (c, ky, kx) order, written into ``cols`` (``[Cin, kh, kw, N, Ho, Wo]``, float32).

    With a stride, the map is first split into its stride phases (every s-th row and column,
    each offset), so that every tap copies unit-stride rows (a float convolution calls this per
    band of output rows, bands split across threads: NumpyConv).
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ho, wo = out_hw
    phases = {(ry, rx): np.ascontiguousarray(xp[:, :, ry::sh, rx::sw]) if (sh, sw) != (1, 1) else xp
              for ry in {ky * dh % sh for ky in range(kh)} for rx in {kx * dw % sw for kx in range(kw)}}

    for ky in range(kh):
        y0, ry = divmod(ky * dh, sh)
        for kx in range(kw):
            x0, rx = divmod(kx * dw, sw)
            cols[:, ky, kx] = phases[(ry, rx)][:, :, y0:y0 + ho, x0:x0 + wo]
    return cols.reshape(cols.shape[0] * kh * kw, -1)


# Work below this many elements runs on the calling thread: each NumPy call hands the GIL over
# twice, and on small arrays that costs more than a second core saves.
PARALLEL_MIN_ELEMENTS = 1 << 18
# Multiply-accumulates below which a matrix product stays on the calling thread (about 0.1 ms on
# one core): a BinaryDenseNet transition's 1x1 conv (166 x 448 @ 448 x 784 at 224 px, 58 M) has few
# output elements but is worth two threads.
PARALLEL_MIN_MACS = 1 << 22


class NumpyBinaryConv:
    """A binary convolution layer on the NumPy kernels: binarize and pack (column blocks in
    parallel), then :func:`binary_conv_fast`; the epilogue's offsets cached per input size."""

    def __init__(self, layer, kernels: NumpyKernels) -> None:
        self.layer = layer
        self.kernels = kernels
        self.fill = valid_bits_words(layer.channels) if layer.pad_value == 1 else np.zeros(
            layer.wbits.shape[-1], dtype=np.uint64)
        self._half_offsets: dict[tuple, np.ndarray] = {}

    def half_offset(self, h: int, w: int, pads) -> np.ndarray:
        key = (h, w, tuple(pads))
        if key not in self._half_offsets:
            L = self.layer
            self._half_offsets[key] = half_dot_offset(dot_offset(L.wbits, L.channels, h, w, L.stride, pads,
                                                                 L.dilation, L.pad_value))
        return self._half_offsets[key]

    def binarize(self, x: np.ndarray) -> np.ndarray:
        """The packed input, uint64 ``[words, N, H, W]``."""
        c, n, h, w = x.shape
        flat = x.reshape(c, n * h * w)
        p = flat.shape[1]
        L, k = self.layer, self.kernels
        if not k.parallel or c * p < PARALLEL_MIN_ELEMENTS:
            return pack_planar(sign_bits(flat, L.threshold, L.negate)).reshape(-1, n, h, w)
        words = np.empty((n_words(c), p), dtype=np.uint64)

        def pack(a: int, b: int) -> None:
            words[:, a:b] = pack_planar(sign_bits(flat[:, a:b], L.threshold, L.negate))

        k.split(pack, p)
        return words.reshape(-1, n, h, w)

    def __call__(self, x: np.ndarray, pads, out: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        L, k = self.layer, self.kernels
        h, w = x.shape[2:]
        if residual is not None and np.may_share_memory(residual, out):
            y = self(x, pads, k.buffers.empty(out.shape))
            np.add(residual, y, out=out)
            k.buffers.release(y)
            return out
        binary_conv_fast(self.binarize(x), L.wbits, L.channels, L.stride, pads, L.dilation, L.pad_value,
                         pool=k.pool, workers=k.threads, half_offset=lambda *_: self.half_offset(h, w, pads),
                         fill=self.fill, scale=L.scale, bias=L.bias, dtype=np.float32, out=out)
        if residual is not None:
            np.add(residual, out, out=out)
        return out


# The columns of one band of output rows of a float convolution (NumpyConv) are at most about
# this many bytes: they are written and then read by the matrix product while they are still in
# the core's L2 cache. All the columns of a 224 px stem (7.4 MB) went to memory and back.
BAND_BYTES = 1 << 20


class NumpyConv:
    """A float convolution layer on the NumPy kernels: zero padding, im2col, matrix products.

    A 1x1 convolution without padding is one product of the weights and the (strided) map. Other
    kernels take their columns (:func:`conv_columns`) and products per band of output rows of one
    image, each band's columns at most :data:`BAND_BYTES`; the bands are split across the
    kernels' threads. (Each output value is the same dot product of the weights' row and its
    column whatever the band: the bands change which products run, not what they compute.)
    """

    def __init__(self, layer, kernels: NumpyKernels) -> None:
        self.layer = layer
        self.kernels = kernels
        self.cout, self.cin = layer.weight.shape[:2]
        self.w2 = np.ascontiguousarray(layer.weight.reshape(self.cout, -1))

    def __call__(self, x: np.ndarray, pads, out_hw, bias: bool = True) -> np.ndarray:
        L, k = self.layer, self.kernels
        n = x.shape[1]
        if L.kernel == (1, 1) and not any(pads):
            cols = x[:, :, ::L.stride[0], ::L.stride[1]].reshape(self.cin, -1)
            y = k.matmul(self.w2, cols).reshape(self.cout, n, *out_hw)
        else:
            y = self._banded(pad_hw(x, pads, 0.0), out_hw)
        if L.bias is not None and bias:
            y += L.bias[:, None, None, None]
        return y

    def _banded(self, xp: np.ndarray, out_hw) -> np.ndarray:
        """The convolution of the padded map ``xp`` [Cin, N, Hp, Wp], band by band (see the class)."""
        L, k = self.layer, self.kernels
        (kh, kw), (sh, _), (dh, _) = L.kernel, L.stride, L.dilation
        n = xp.shape[1]
        ho, wo = out_hw
        taps = self.cin * kh * kw
        rows = max(1, min(ho, BAND_BYTES // (4 * taps * wo)))
        bands = [(i, r0, min(ho, r0 + rows)) for i in range(n) for r0 in range(0, ho, rows)]
        out = k.buffers.empty((self.cout, n, ho, wo))
        workers = min(k.threads if k.parallel else 1, len(bands))
        scratches = [k.buffers.empty((self.cin, kh, kw, 1, rows, wo)) for _ in range(workers)]

        def run(share: int) -> None:
            scratch = scratches[share]
            for i, r0, r1 in bands[share::workers]:
                # The input rows the band's output rows read, from a row that is a multiple of the
                # stride, so the band's stride phases are the map's.
                part = xp[:, i:i + 1, r0 * sh:(r1 - 1) * sh + (kh - 1) * dh + 1]
                buf = scratch
                if r1 - r0 < rows:  # the last band's columns: the front of the buffer, contiguous
                    buf = scratch.reshape(-1)[:taps * (r1 - r0) * wo].reshape(self.cin, kh, kw, 1, r1 - r0, wo)
                cols = k.columns(part, L.kernel, L.stride, L.dilation, (r1 - r0, wo), buf)
                np.matmul(self.w2, cols, out=out[:, i, r0:r1].reshape(self.cout, -1))

        k.run_tasks(run, list(range(workers)))
        for scratch in scratches:
            k.buffers.release(scratch)
        return out


# --- grouped (and depthwise) float convolution ------------------------------------------------


def group_conv_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, groups: int, stride, pads,
                         dilation, out_hw, group_range: tuple[int, int] | None = None,
                         out: np.ndarray | None = None) -> np.ndarray:
    """A convolution in ``groups`` groups of a ``[Cin, N, H, W]`` map, zero ``pads`` (top, left,
    bottom, right), in the one order every backend follows (bnncli.runtime.backends.base.GroupConvLayer):
    per output value, from 0, ``acc + w * x`` over the group's input channels, kernel rows and
    columns, then ``+ bias``, each product and sum rounded to float32.

    Vectorized over the groups, their output channels and the output positions; the loop runs over
    ``Cin / groups * kh * kw`` taps (9 for a depthwise 3x3). ``group_range`` (first, last + 1)
    computes those groups only, into ``out``'s matching channels. Returns ``[Cout, N, Ho, Wo]``.
    """
    cout, cin_g, kh, kw = weight.shape
    cout_g = cout // groups
    g0, g1 = group_range if group_range is not None else (0, groups)
    ng = g1 - g0
    _, n, _, _ = x.shape
    ho, wo = out_hw
    xs = x[g0 * cin_g:g1 * cin_g]
    xp = pad_hw(xs, pads, 0.0)
    xg = xp.reshape(ng, cin_g, n, xp.shape[2], xp.shape[3])
    wg = weight[g0 * cout_g:g1 * cout_g].reshape(ng, cout_g, cin_g, kh, kw)
    if out is None:
        out = np.empty((cout, n, ho, wo), np.float32)
    acc = out[g0 * cout_g:g1 * cout_g].reshape(ng, cout_g, n, ho, wo)
    acc.fill(0)
    product = np.empty_like(acc)
    for ci in range(cin_g):
        for ky in range(kh):
            for kx in range(kw):
                tap = tap_view(xg[:, ci], ky, kx, stride, dilation, (ho, wo))  # [ng, N, Ho, Wo]
                np.multiply(wg[:, :, ci, ky, kx, None, None, None], tap[:, None], out=product)
                acc += product
    if bias is not None:
        acc += bias[g0 * cout_g:g1 * cout_g].reshape(ng, cout_g, 1, 1, 1)
    return out


class NumpyGroupConv:
    """A grouped float convolution on the NumPy kernels (:func:`group_conv_reference`), the groups
    split across the pool on large maps."""

    def __init__(self, layer, kernels: NumpyKernels) -> None:
        self.layer = layer
        self.kernels = kernels

    def __call__(self, x: np.ndarray, pads, out_hw) -> np.ndarray:
        L, k = self.layer, self.kernels
        out = k.buffers.empty((L.weight.shape[0], x.shape[1], *out_hw))
        run = lambda a, b: group_conv_reference(x, L.weight, L.bias, L.groups, L.stride, pads,  # noqa: E731
                                                L.dilation, out_hw, (a, b), out)
        if k.pool is None or L.groups < 2 or out.size < PARALLEL_MIN_ELEMENTS:
            run(0, L.groups)
        else:
            k.split(run, L.groups)
        return out


# --- the backend ------------------------------------------------------------------------------


class NumpyKernels:
    """The reference backend (bnncli.runtime.backends.base.Kernels): NumPy, and a thread pool of
    ``threads - 1`` workers beside the calling thread that large ops are split across
    (:meth:`run_tasks`, which the compiled backend runs on its own helper threads instead)."""

    name = "numpy"

    def __init__(self, threads: int, buffers: Buffers) -> None:
        self.threads = threads
        self.parallel = threads > 1
        self.buffers = buffers
        self._pool: ThreadPoolExecutor | None = None  # made on first use (run_tasks)
        # With BLAS held to one thread during a forward pass (bnncli.runtime.context), large
        # products are split across the threads instead; otherwise the BLAS threads them itself.
        self.split_products = False

    @property
    def pool(self) -> ThreadPoolExecutor | None:
        """The thread pool of :meth:`run_tasks` (None on one thread)."""
        if self._pool is None and self.parallel:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bnn-runtime")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # Thread helpers.
    def run_tasks(self, fn: Callable, tasks: list) -> None:
        """``fn(task)`` for every task, on the calling thread and ``threads - 1`` others (:func:`run_tasks`)."""
        run_tasks(fn, tasks, self.pool, self.threads)

    def split(self, fn: Callable[[int, int], object], size: int) -> None:
        """``fn(a, b)`` over ``threads`` near-equal blocks of range(size), the calling thread taking one."""
        edges = [round(i * size / self.threads) for i in range(self.threads + 1)]
        self.run_tasks(lambda e: fn(*e), list(zip(edges, edges[1:])))

    def by_channels(self, fn, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``fn(x[a:b], out[a:b], a, b)`` over blocks of channels (axis 0), in parallel on large maps."""
        c = x.shape[0]
        if not self.parallel or x.size < PARALLEL_MIN_ELEMENTS or c < 2:
            fn(x, out, 0, c)
            return out
        self.split(lambda a, b: fn(x[a:b], out[a:b], a, b), c)
        return out

    # The ops.
    def binary_conv(self, layer) -> NumpyBinaryConv:
        return NumpyBinaryConv(layer, self)

    def conv(self, layer) -> NumpyConv:
        return NumpyConv(layer, self)

    def group_conv(self, layer) -> NumpyGroupConv:
        return NumpyGroupConv(layer, self)

    def columns(self, xp: np.ndarray, kernel, stride, dilation, out_hw, cols: np.ndarray) -> np.ndarray:
        """The im2col columns of a padded map, into ``cols`` (:func:`conv_columns`)."""
        return conv_columns(xp, kernel, stride, dilation, out_hw, cols)

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` of float32 matrices into a buffer, rows of the result split across the pool when worth it."""
        rows = a.shape[0]
        out = self.buffers.empty((rows, b.shape[1]))
        if not self.split_products or rows < 16 or rows * b.shape[1] * a.shape[1] < PARALLEL_MIN_MACS:
            return np.matmul(a, b, out=out)
        self.split(lambda r0, r1: np.matmul(a[r0:r1], b, out=out[r0:r1]), rows)
        return out

    def max_pool(self, x, kernel, stride, pads, out_hw, relu, out, affine=None):
        if affine is not None:  # the affine op, then the pool
            scaled = self.affine(x, *affine, self.buffers.empty(x.shape))
            out = self.max_pool(scaled, kernel, stride, pads, out_hw, relu, out)
            self.buffers.release(scaled)
            return out

        def run(xs, dst, a, b) -> None:
            pool(xs, kernel, stride, pads, np.maximum, -np.inf, out=dst)
            if relu:
                np.maximum(dst, np.float32(0), out=dst)

        return self.by_channels(run, x, out)

    def avg_pool(self, x, kernel, stride, out_hw, out):
        pool(x, kernel, stride, (0, 0, 0, 0), np.add, 0.0, out=out)
        out /= np.float32(kernel[0] * kernel[1])
        return out

    def affine(self, x, scale, shift, out):
        def run(xs, dst, a, b) -> None:
            np.multiply(xs, scale[a:b, None, None, None], out=dst)
            dst += shift[a:b, None, None, None]

        return self.by_channels(run, x, out)

    def relu(self, x, out):
        return self.by_channels(lambda xs, dst, a, b: np.maximum(xs, np.float32(0), out=dst), x, out)

    def prelu(self, x, slope, out):
        def run(xs, dst, a, b) -> None:
            negative = xs < 0  # before dst is written: it may be xs
            np.copyto(dst, xs)
            np.multiply(xs, slope[a:b, None, None, None], out=dst, where=negative)

        return self.by_channels(run, x, out)

    def channel_mul(self, x, scales, out):
        per_channel = scales.T  # [C, N]
        return self.by_channels(lambda xs, dst, a, b: np.multiply(xs, per_channel[a:b, :, None, None], out=dst),
                                x, out)

    def add(self, a, b, out):
        return np.add(a, b, out=out)

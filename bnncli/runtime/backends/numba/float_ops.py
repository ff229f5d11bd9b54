"""Compiled (numba) float ops of the runtime: max and average pooling, per-channel affine.

Once the binary convolutions are compiled (bnncli.runtime.backends.numba.binary_conv), these NumPy ops take a
large share of a forward pass: NumPy's pooling makes several passes over strided views and the
affine (an inference BatchNorm) allocates its result. Here each op is one pass per channel
plane, and planes are split across the threads of a :class:`bnncli.runtime.backends.numba.crew.Crew`.

Every result is bit-identical to the NumPy backend's op (bnncli.runtime.backends.numpy):

* max pooling takes the maximum of the window's taps inside the map (padding never wins, as
  with -inf padding), NaN propagating like ``np.maximum``; with ``relu`` the result is then
  ``max(m, 0)``; with a per-channel affine, each tap is ``x * scale + shift`` first (the
  affine op's two roundings), so an affine read only by the pool costs no pass of its own.
  Taps are compared in another order than NumPy's, which can matter only for the sign of a
  zero where +0.0 and -0.0 tie;
* average pooling (no padding) adds in NumPy's order, the kernel's rows first, each sum taken
  tap by tap from the first, then the columns of that the same way, then divides by the number
  of taps in float32;
* the affine computes ``x * scale + shift`` with two float32 roundings (no ``fastmath``, so no
  FMA contraction).
"""

from __future__ import annotations

import numpy as np

from bnncli.runtime.backends.numba.intrinsics import fetch_add, jit, wait_for

# Elements below which an op stays on the calling thread (waking a helper costs some 20 us).
PARALLEL_MIN_ELEMENTS = 1 << 16


@jit(inline="always")
def _max(a, b):
    """``np.maximum(a, b)``: a NaN in either wins (no short-circuit, so that loops vectorize)."""
    return a if (a >= b) | (a != a) else b


@jit(inline="always")
def _tap_range(k, s, pad, size, out_size):
    """The outputs o (first, last + 1) whose tap ``k`` reads inside the map: 0 <= o * s - pad + k < size."""
    first = max(0, -((k - pad) // s))
    last = min(out_size, (size - 1 + pad - k) // s + 1)
    return first, max(first, last)


@jit(inline="always")
def _edge_max(r, i, kw, sx, left, w):
    """Output ``i`` of a row ``r`` from those of its taps inside the row (-inf where none is)."""
    m = np.float32(-np.inf)
    for kx in range(kw):
        c = i * sx - left + kx
        if 0 <= c < w:
            m = _max(m, r[c])
    return m


@jit(boundscheck=False)
def _max_pool_plane(x, out, r, kh, kw, sy, sx, top, left, relu, affine, s, t):
    """One [H, W] plane into [Ho, Wo]: per output row, the maximum over the window's rows into
    ``r`` [W], then over its columns. With ``affine``, every element is first ``x * s + t`` (two
    float32 roundings, as the affine op)."""
    h, w = x.shape
    ho, wo = out.shape
    for oy in range(ho):
        ya = max(oy * sy - top, 0)
        yb = min(oy * sy - top + kh, h)
        if ya >= yb:  # a window wholly in the padding (not produced by the rules the ops accept)
            for i in range(w):
                r[i] = -np.inf
        elif affine:
            src = x[ya]
            for i in range(w):
                r[i] = src[i] * s + t
            for y in range(ya + 1, yb):
                src = x[y]
                for i in range(w):
                    r[i] = _max(r[i], src[i] * s + t)
        else:
            src = x[ya]
            for i in range(w):
                r[i] = src[i]
            for y in range(ya + 1, yb):
                src = x[y]
                for i in range(w):
                    r[i] = _max(r[i], src[i])
        dst = out[oy]
        # Outputs whose taps all lie inside the row, in one loop over them (with the window's
        # width and stride constants, LLVM unrolls the taps and vectorizes the loop with
        # interleaved loads); the others, at the edges, tap by tap below. Indices from 0: no
        # wrap-around code in the loop.
        i0 = _tap_range(0, sx, left, w, wo)[0]
        i1 = max(i0, _tap_range(kw - 1, sx, left, w, wo)[1])
        c0 = i0 * sx - left  # the column of the first interior output's first tap
        d = dst[i0:i1]
        for i in range(i1 - i0):
            c = c0 + i * sx
            m = r[c]
            for kx in range(1, kw):
                m = _max(m, r[c + kx])
            d[i] = m
        for i in range(i0):
            dst[i] = _edge_max(r, i, kw, sx, left, w)
        for i in range(i1, wo):
            dst[i] = _edge_max(r, i, kw, sx, left, w)
        if relu:
            for i in range(wo):
                dst[i] = _max(dst[i], np.float32(0))


@jit(boundscheck=False)
def _max_pool_2x2_plane(x, out, s, t):
    """:func:`_max_pool_plane` for a 2x2 window of stride 2 without padding (a DenseNet
    transition's), with its affine and ReLU: each output straight from its four taps, compared
    in the same order (the window's first row, then its second, then 0)."""
    ho, wo = out.shape
    for oy in range(ho):
        a = x[2 * oy]
        b = x[2 * oy + 1]
        d = out[oy]
        for i in range(wo):
            m = _max(_max(a[2 * i] * s + t, b[2 * i] * s + t), _max(a[2 * i + 1] * s + t, b[2 * i + 1] * s + t))
            d[i] = _max(m, np.float32(0))


@jit(boundscheck=False)
def _max_pool_share(x, out, kh, kw, sy, sx, top, left, relu, scale, shift, batch, counters):
    """Planes of ``x`` [P, H, W] taken from ``counters`` ([0] next, [8] done) into ``out`` [P, Ho, Wo];
    plane p first scaled and shifted by channel p // batch where ``scale`` is not empty."""
    rows = np.empty(x.shape[2], np.float32)
    affine = scale.shape[0] > 0
    while True:
        p = fetch_add(counters, 0)
        if p >= x.shape[0]:
            break
        c = p // batch if affine else 0
        s = scale[c] if affine else np.float32(1)
        t = shift[c] if affine else np.float32(0)
        # The usual windows with every size a constant (numba compiles the plane for them, and
        # LLVM unrolls and vectorizes its loops), any other through the general code.
        if kh == 3 and kw == 3 and sy == 2 and sx == 2 and top == 1 and left == 1 and relu and affine:
            # a ResNet stem's pool, applying the stem's bias and its ReLU
            _max_pool_plane(x[p], out[p], rows, 3, 3, 2, 2, 1, 1, True, True, s, t)
        elif kh == 2 and kw == 2 and sy == 2 and sx == 2 and top == 0 and left == 0 and relu and affine:
            # a DenseNet transition's pool, applying its BatchNorm and ReLU
            _max_pool_2x2_plane(x[p], out[p], s, t)
        else:
            _max_pool_plane(x[p], out[p], rows, kh, kw, sy, sx, top, left, relu, affine, s, t)
        fetch_add(counters, 8)


@jit(boundscheck=False)
def _avg_pool_plane(x, out, r, kh, kw, sy, sx, taps):
    """One [H, W] plane into [Ho, Wo], no padding, NumPy's order of additions (module docstring)."""
    w = x.shape[1]
    ho, wo = out.shape
    for oy in range(ho):
        y0 = oy * sy
        src = x[y0]
        for i in range(w):
            r[i] = src[i]
        for ky in range(1, kh):
            src = x[y0 + ky]
            for i in range(w):
                r[i] = r[i] + src[i]
        dst = out[oy]
        if kw == 2:
            for i in range(wo):
                b = i * sx
                dst[i] = (r[b] + r[b + 1]) / taps
        else:
            for i in range(wo):
                b = i * sx
                t = r[b]
                for kx in range(1, kw):
                    t = t + r[b + kx]
                dst[i] = t / taps


@jit(boundscheck=False)
def _avg_pool_share(x, out, kh, kw, sy, sx, taps, counters):
    """Planes of ``x`` [P, H, W] taken from ``counters`` into ``out`` [P, Ho, Wo] (see _max_pool_share)."""
    rows = np.empty(x.shape[2], np.float32)
    while True:
        p = fetch_add(counters, 0)
        if p >= x.shape[0]:
            break
        _avg_pool_plane(x[p], out[p], rows, kh, kw, sy, sx, taps)
        fetch_add(counters, 8)


@jit(boundscheck=False)
def _affine_share(x, out, scale, shift, batch, counters):
    """``out[p] = x[p] * scale[c] + shift[c]`` over planes [P, H * W] (plane p is channel p // batch);
    ``out`` may be ``x``."""
    while True:
        p = fetch_add(counters, 0)
        if p >= x.shape[0]:
            break
        s = scale[p // batch]
        b = shift[p // batch]
        src = x[p]
        dst = out[p]
        for i in range(src.shape[0]):
            dst[i] = src[i] * s + b
        fetch_add(counters, 8)


@jit(boundscheck=False)
def _columns_rows(xp, cols, kh, kw, sh, sw, dh, dw):
    """``cols[c, ky, kx, n, oy, ox] = xp[c, n, oy * sh + ky * dh, ox * sw + kx * dw]``."""
    cin, n = xp.shape[0], xp.shape[1]
    ho, wo = cols.shape[4], cols.shape[5]
    for c in range(cin):
        for ky in range(kh):
            for kx in range(kw):
                for b in range(n):
                    for oy in range(ho):
                        src = xp[c, b, oy * sh + ky * dh]
                        dst = cols[c, ky, kx, b, oy]
                        x0 = kx * dw
                        for ox in range(wo):
                            dst[ox] = src[x0 + ox * sw]


@jit(boundscheck=False)
def _columns(xp, cols, kh, kw, sh, sw, dh, dw):
    """:func:`_columns_rows` with the sizes of a ResNet stem (7x7, stride 2) as constants."""
    if kh == 7 and kw == 7 and sh == 2 and sw == 2 and dh == 1 and dw == 1:
        _columns_rows(xp, cols, 7, 7, 2, 2, 1, 1)
    else:
        _columns_rows(xp, cols, kh, kw, sh, sw, dh, dw)


def columns(xp: np.ndarray, kernel, stride, dilation, out_hw, cols: np.ndarray) -> np.ndarray:
    """The columns ``[Cin * kh * kw, N * Ho * Wo]`` of a padded float32 map ``xp`` [Cin, N, Hp, Wp]
    written into ``cols`` (float32 ``[Cin, kh, kw, N, Ho, Wo]``): the NumPy kernels' conv_columns,
    the same copies in one compiled call that holds no GIL (so bands of a convolution fill their
    columns on several threads at once)."""
    xp = _contiguous(xp)
    cin, n = xp.shape[:2]
    if cols.shape != (cin, *kernel, n, *out_hw) or cols.dtype != np.float32 or not cols.flags.c_contiguous:
        raise ValueError(f"cols must be a C-contiguous float32 {(cin, *kernel, n, *out_hw)}")
    _columns(xp, cols, kernel[0], kernel[1], stride[0], stride[1], dilation[0], dilation[1])
    return cols.reshape(cin * kernel[0] * kernel[1], -1)


def _run(fn, args: tuple, planes: int, elements: int, crew) -> None:
    """``fn(*args)`` (a plane loop ending with its zeroed counters) on this thread, or on ``crew``
    when the op is large enough; returns when all ``planes`` are done."""
    if crew is None or elements < PARALLEL_MIN_ELEMENTS or planes < 2:
        fn(*args)
        return
    crew.run(fn, args)
    wait_for(args[-1], 8, planes)


def _contiguous(x: np.ndarray) -> np.ndarray:
    return x if x.flags.c_contiguous and x.flags.writeable else np.array(x, dtype=np.float32, order="C")


def _output(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, np.float32)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    return out


_NO_AFFINE = np.zeros(0, np.float32)


def max_pool(x: np.ndarray, kernel, stride, pads, out_hw, relu: bool = False, out: np.ndarray | None = None,
             crew=None, affine: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Max pooling of a float32 map ``x`` [C, N, H, W] to [C, N, Ho, Wo] (``out_hw``); ``pads`` is
    (top, left, bottom, right), ``relu`` applies max(., 0) to the result, ``affine`` (scale, shift)
    per channel to the input first (as the affine op would); into ``out`` when given."""
    x = _contiguous(x)
    c, n, h, w = x.shape
    ho, wo = out_hw
    out = _output(out, (c, n, ho, wo))
    scale, shift = affine if affine is not None else (_NO_AFFINE, _NO_AFFINE)
    args = (x.reshape(c * n, h, w), out.reshape(c * n, ho, wo), kernel[0], kernel[1], stride[0], stride[1],
            pads[0], pads[1], bool(relu), scale, shift, n, np.zeros(16, np.int64))
    _run(_max_pool_share, args, c * n, x.size, crew)
    return out


def avg_pool(x: np.ndarray, kernel, stride, out_hw, out: np.ndarray | None = None, crew=None) -> np.ndarray:
    """Average pooling without padding of a float32 map ``x`` [C, N, H, W] to [C, N, Ho, Wo]
    (``out_hw``); into ``out`` when given."""
    x = _contiguous(x)
    c, n, h, w = x.shape
    ho, wo = out_hw
    out = _output(out, (c, n, ho, wo))
    args = (x.reshape(c * n, h, w), out.reshape(c * n, ho, wo), kernel[0], kernel[1], stride[0], stride[1],
            np.float32(kernel[0] * kernel[1]), np.zeros(16, np.int64))
    _run(_avg_pool_share, args, c * n, x.size, crew)
    return out


def affine(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: np.ndarray | None = None,
           crew=None) -> np.ndarray:
    """``x * scale[c] + shift[c]`` per channel of a float32 map ``x`` [C, N, H, W]; into ``out`` (may be ``x``)."""
    x = _contiguous(x)
    c, n, h, w = x.shape
    if out is None or not (out.flags.c_contiguous and out.shape == x.shape):
        out = np.empty(x.shape, np.float32)
    args = (x.reshape(c * n, h * w), out.reshape(c * n, h * w), scale, shift, n, np.zeros(16, np.int64))
    _run(_affine_share, args, c * n, x.size, crew)
    return out


COMPILED = [_columns_rows, _columns, _max_pool_share, _avg_pool_share, _affine_share]

"""The runtime's operations: one small class per graph op of bnncli.runtime.opset, collected in :data:`OPS`.

Each class validates its node (inputs, attributes, tensors, dtypes, shapes) when it is built, so
a malformed artifact fails at load time with a message naming the node, and then computes in
NumPy. Feature maps flow between ops in the layout ``[C, N, H, W]`` (channels first, then the
batch): 1x1 convolutions become one matrix product with a contiguous operand, the first C
channels of a map are a contiguous prefix (so dense blocks concatenate in place), and the binary
kernels read whole channel planes. :class:`bnncli.runtime.model.Model` converts from and to PyTorch's NCHW at the edges.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from bnncli.errors import ArtifactError
from bnncli.runtime import backends, blas, opset
from bnncli.runtime import kernels as K
from bnncli.runtime import padding as P
from bnncli.runtime.graph import Node
from bnncli.threads import resolve as resolve_threads

# Work below this many elements runs on the calling thread: each NumPy call hands the GIL over
# twice, and on small arrays that costs more than a second core saves.
PARALLEL_MIN_ELEMENTS = 1 << 18
# Released buffers kept per size (Context.release): a forward pass has few live maps of one size.
MAX_FREE_PER_SIZE = 4


class Context:
    """What ops share at run time: the thread pool, how matrix products are threaded, and the
    backend of the binary convolutions (bnncli.runtime.backends: ``numpy`` or ``numba``)."""

    def __init__(self, threads: int | None = None, backend: str | None = None) -> None:
        self.threads = resolve_threads(threads)
        self.backend = backends.resolve(backend)
        self.compiled = backends.compiled_kernels() if self.backend == "numba" else None
        # The numba backend's float ops (bnncli.runtime.numba_float) and the helpers its kernels
        # share work with (bnncli.runtime.numba_crew: awake between calls, for batch 1).
        self.float_kernels = backends.compiled_float_kernels() if self.compiled is not None else None
        self.crew = backends.crew(self, self.threads - 1) if self.compiled is not None and self.threads > 1 else None
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bnn-runtime") if self.threads > 1 else None
        # With OpenBLAS held to one thread during a forward pass (bnncli.runtime.blas), large
        # products are split across the pool instead; otherwise the BLAS threads them itself.
        self.split_products = self.pool is not None and blas.available
        # Buffers concatenations may append to, by data address; reset for every forward pass.
        self.arena: dict[int, tuple[np.ndarray, int]] = {}
        # Float32 buffers of dead values, by size in bytes, for ops to reuse (empty/release): a
        # fresh buffer of some megabytes costs its page faults and the kernel's zeroing each time.
        self._free: dict[int, list[np.ndarray]] = {}

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialized C-contiguous float32 array: a released buffer of the same size when there is one."""
        nbytes = 4 * int(np.prod(shape))
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
        self.arena.pop(root.ctypes.data, None)  # no concatenation appends to it any more
        free = self._free.setdefault(root.nbytes, [])
        if len(free) < MAX_FREE_PER_SIZE and not any(b is root for b in free):
            free.append(root)

    def drop_buffers(self) -> None:
        """Forget every released buffer (their memory goes back to the allocator)."""
        self._free.clear()

    def by_channels(self, fn, x: np.ndarray, out_shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
        """``fn(x[a:b], out[a:b], a, b)`` over blocks of channels (axis 0), in parallel on large maps;
        ``out`` (of ``out_shape``) is allocated unless given."""
        if out is None:
            out = self.empty(out_shape)
        c = x.shape[0]
        if self.pool is None or x.size < PARALLEL_MIN_ELEMENTS or c < 2:
            fn(x, out, 0, c)
            return out
        self.split(lambda a, b: fn(x[a:b], out[a:b], a, b), c)
        return out

    def split(self, fn, size: int) -> None:
        """``fn(a, b)`` over ``self.threads`` near-equal blocks of range(size), the calling thread taking one."""
        edges = [round(i * size / self.threads) for i in range(self.threads + 1)]
        K.run_tasks(lambda e: fn(*e), list(zip(edges, edges[1:])), self.pool, self.threads)

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` of float32 matrices into a buffer of :meth:`empty`, rows of the result split
        across the pool when worth it."""
        rows = a.shape[0]
        out = self.empty((rows, b.shape[1]))
        if not self.split_products or rows < 16 or rows * b.shape[1] < PARALLEL_MIN_ELEMENTS:
            return np.matmul(a, b, out=out)
        self.split(lambda r0, r1: np.matmul(a[r0:r1], b, out=out[r0:r1]), rows)
        return out


# op name -> its runtime class, filled as the classes below are defined (Op.__init_subclass__).
_REGISTERED: dict[str, type[Op]] = {}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Op:
    """Base class. A subclass names its graph op, ``class Conv(Op, op="Conv")``, which registers it
    and sets ``spec`` (bnncli.runtime.opset) and, from it, ``type``, ``arity`` (None: one or more),
    the required and optional ``params`` and the required ``attrs``; it implements ``setup`` and
    ``__call__``."""

    spec: ClassVar[opset.OpSpec]
    type: ClassVar[str] = ""
    arity: ClassVar[int | None] = 1
    # True for ops whose ``__call__`` takes ``out=``, an array it may write its result into: the
    # first input, when no later node reads it.
    overwrites_first: ClassVar[bool] = False
    params: ClassVar[tuple[str, ...]] = ()
    optional_params: ClassVar[tuple[str, ...]] = ()
    attrs: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, op: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if op is None:
            return
        if op in _REGISTERED:
            raise LookupError(f"two runtime classes for op {op!r}: {_REGISTERED[op].__name__} and {cls.__name__}")
        s = cls.spec = opset.spec(op)
        cls.type, cls.arity, cls.params, cls.optional_params, cls.attrs = (
            s.name, s.arity, s.params, s.optional_params, s.attrs)
        _REGISTERED[op] = cls

    def __init__(self, node: Node, tensors: dict[str, np.ndarray], ctx: Context) -> None:
        self.node = node
        self.ctx = ctx
        problem = self.spec.mismatch(node)
        if problem:
            self.fail(problem)
        self._tensors = tensors
        self.setup()

    def fail(self, message: str) -> None:
        raise ArtifactError(f"node {self.node.name!r} ({self.type}) {message}")

    # Validation helpers.
    def tensor(self, role: str, kind: str = "f", ndim: int | None = None, shape: tuple | None = None,
               dtype=np.float32) -> np.ndarray | None:
        """The node's tensor in ``role`` (None if optional and absent), checked and cast to ``dtype``."""
        name = self.node.params.get(role)
        if name is None:
            return None
        t = self._tensors[name]
        if t.dtype.kind != kind:
            self.fail(f"tensor {role} has dtype {t.dtype}, expected {'a float' if kind == 'f' else 'an unsigned'} type")
        if ndim is not None and t.ndim != ndim:
            self.fail(f"tensor {role} has shape {list(t.shape)}, expected {ndim} dimensions")
        if shape is not None and tuple(t.shape) != tuple(shape):
            self.fail(f"tensor {role} has shape {list(t.shape)}, expected {list(shape)}")
        if kind == "f" and not np.isfinite(t).all() and role != "in_threshold":
            self.fail(f"tensor {role} holds non-finite values")
        return np.ascontiguousarray(t, dtype=dtype)

    def pair(self, key: str, minimum: int) -> tuple[int, int]:
        v = self.node.attrs[key]
        if not (isinstance(v, list) and len(v) == 2 and all(_is_int(i) and i >= minimum for i in v)):
            self.fail(f"attribute {key} must be two integers >= {minimum}, not {v!r}")
        return int(v[0]), int(v[1])

    def padding(self) -> str | tuple[int, int]:
        """Attribute ``padding``: two integers >= 0, or ``"same"`` (TensorFlow's rule, bnncli.runtime.padding)."""
        if self.node.attrs["padding"] == P.SAME:
            return P.SAME
        return self.pair("padding", 0)

    def resolve_pads(self, h: int, w: int, dilation=(1, 1)) -> tuple[tuple[int, int, int, int], int, int]:
        """(top, left, bottom, right), Ho and Wo for an ``h`` x ``w`` input; fails when it is too small."""
        pads = P.resolve(self.pads, (h, w), self.kernel, self.stride, dilation)
        ho, wo = P.output_hw((h, w), self.kernel, self.stride, pads, dilation)
        if ho < 1 or wo < 1:
            self.fail(f"input {h}x{w} is too small")
        return pads, ho, wo

    def integer(self, key: str, minimum: int) -> int:
        v = self.node.attrs[key]
        if not (_is_int(v) and v >= minimum):
            self.fail(f"attribute {key} must be an integer >= {minimum}, not {v!r}")
        return int(v)

    def setup(self) -> None:
        pass

    def __call__(self, *xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def check_channels(self, x: np.ndarray, channels: int) -> None:
        if x.ndim != 4 or x.shape[0] != channels:
            shape = (x.shape[1], x.shape[0], *x.shape[2:]) if x.ndim == 4 else x.shape
            self.fail(f"expects a feature map with {channels} channels, got shape {list(shape)} (NCHW)")


def _pad_hw(x: np.ndarray, pads, value: float) -> np.ndarray:
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


def _pool_axis(x: np.ndarray, axis: int, out_size: int, kernel: int, stride: int, padding: int, ufunc, fill: float,
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


def _pool(x: np.ndarray, kernel, stride, pads, ufunc, fill: float, out: np.ndarray | None = None) -> np.ndarray:
    """Separable pooling of a ``[C, N, H, W]`` map: ``ufunc`` over the kernel's rows, then its columns.

    Rows first: with a stride, the pass along the height reads whole contiguous rows and shrinks
    the map before the pass along the width, whose strided reads are the slow ones. Padding is
    left out of the windows, which for a max is padding with -inf (every window holds at least
    one element of the map when padding is at most half the kernel, and with TensorFlow's
    "same" rule). ``pads`` is (top, left, bottom, right).
    """
    ho, wo = P.output_hw(x.shape[2:], kernel, stride, pads)
    rows = _pool_axis(x, 2, ho, kernel[0], stride[0], pads[0], ufunc, fill)
    return _pool_axis(rows, 3, wo, kernel[1], stride[1], pads[1], ufunc, fill, out=out)


class Conv(Op, op="Conv"):
    """Full-precision convolution (groups 1), optional bias: im2col and one matrix product."""

    def setup(self) -> None:
        self.weight = self.tensor("weight", ndim=4)
        self.cout, self.cin, kh, kw = self.weight.shape
        self.kernel = (kh, kw)
        self.bias = self.tensor("bias", shape=(self.cout,))
        self.stride = self.pair("stride", 1)
        self.pads = self.padding()
        self.dilation = self.pair("dilation", 1)
        self.w2 = np.ascontiguousarray(self.weight.reshape(self.cout, -1))

    def im2col(self, xp: np.ndarray, ho: int, wo: int) -> np.ndarray:
        """Columns ``[Cin * kh * kw, N * Ho * Wo]`` of a padded map, in the weights' (c, ky, kx) order.

        With a stride, the map is first split into its stride phases (every s-th row and column,
        each offset), so that every tap copies unit-stride rows; taps are split across the pool.
        """
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        c, n = xp.shape[:2]
        phases = {(ry, rx): np.ascontiguousarray(xp[:, :, ry::sh, rx::sw]) if (sh, sw) != (1, 1) else xp
                  for ry in {ky * dh % sh for ky in range(kh)} for rx in {kx * dw % sw for kx in range(kw)}}
        cols = self.ctx.empty((c, kh, kw, n, ho, wo))

        def fill(kys) -> None:
            for ky in kys:
                y0, ry = divmod(ky * dh, sh)
                for kx in range(kw):
                    x0, rx = divmod(kx * dw, sw)
                    cols[:, ky, kx] = phases[(ry, rx)][:, :, y0:y0 + ho, x0:x0 + wo]

        if self.ctx.pool is not None and kh > 1 and cols.size >= PARALLEL_MIN_ELEMENTS:
            K.run_tasks(fill, [range(i, kh, self.ctx.threads) for i in range(self.ctx.threads)], self.ctx.pool,
                        self.ctx.threads)
        else:
            fill(range(kh))
        return cols.reshape(c * kh * kw, n * ho * wo)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.check_channels(x, self.cin)
        _, n, h, w = x.shape
        pads, ho, wo = self.resolve_pads(h, w, self.dilation)
        scratch = None
        if self.kernel == (1, 1) and not any(pads):
            cols = x[:, :, ::self.stride[0], ::self.stride[1]].reshape(self.cin, -1)
        else:
            cols = scratch = self.im2col(_pad_hw(x, pads, 0.0), ho, wo)
        y = self.ctx.matmul(self.w2, cols)
        if scratch is not None:
            self.ctx.release(scratch)
        if self.bias is not None:
            y += self.bias[:, None]
        return y.reshape(self.cout, n, ho, wo)


class BinaryConv(Op, op="BinaryConv"):
    """Binary convolution on packed bits: binarize, pack, XNOR + popcount, then scale/bias.

    bit(x) = x >= in_threshold (x <= in_threshold where in_negate), or x >= 0 without threshold;
    the binarized input is padded with ``pad_value``; the result is the exact integer sum of
    +-1 products, times ``out_scale`` plus ``out_bias`` per output channel when present.
    """

    def setup(self) -> None:
        self.cin = self.integer("in_channels", 1)
        self.cout = self.integer("out_channels", 1)
        self.kernel = self.pair("kernel_size", 1)
        self.stride = self.pair("stride", 1)
        self.pads = self.padding()
        self.dilation = self.pair("dilation", 1)
        pad_value = self.node.attrs["pad_value"]
        if pad_value not in (0, -1, 1) or isinstance(pad_value, bool):
            self.fail(f"attribute pad_value must be 0, -1 or 1, not {pad_value!r}")
        self.pad_value = float(pad_value)
        words32 = K.n_words(self.cin, K.FILE_WORD_BITS)
        w32 = self.tensor("weight", kind="u", shape=(self.cout, *self.kernel, words32), dtype=np.uint32)
        if not K.tail_bits_clear(w32, self.cin):
            self.fail("tensor weight has bits set past the last input channel (tail bits must be 0)")
        self.wbits = K.widen_words(w32)
        self.threshold = self.tensor("in_threshold", shape=(self.cin,))
        if self.threshold is not None and np.isnan(self.threshold).any():
            self.fail("tensor in_threshold holds NaN")
        negate = self.tensor("in_negate", kind="u", shape=(self.cin,), dtype=np.uint8)
        if negate is not None:
            if self.threshold is None:
                self.fail("has in_negate without in_threshold")
            if negate.max(initial=0) > 1:
                self.fail("tensor in_negate must hold only 0 and 1")
        self.negate = None if negate is None else negate.astype(bool)
        self.scale = self.tensor("out_scale", shape=(self.cout,))
        self.bias = self.tensor("out_bias", shape=(self.cout,))
        wc = self.wbits.shape[-1]
        self.fill = K.valid_bits_words(self.cin) if self.pad_value == 1 else np.zeros(wc, dtype=np.uint64)
        self._half_offsets: dict[tuple[int, int], np.ndarray] = {}
        # The compiled backend's kernel of this layer, prepared once (bnncli.runtime.numba_kernels).
        self.compiled = None if self.ctx.compiled is None else self.ctx.compiled.BinaryConvKernel(
            self.wbits, self.cin, self.stride, self.dilation, self.pad_value, self.threshold, self.negate,
            self.scale, self.bias)

    def half_offset(self, h: int, w: int) -> np.ndarray:
        """What the kernel's epilogue subtracts mismatches from (kernels.half_dot_offset), once per input size."""
        key = (h, w)
        if key not in self._half_offsets:
            pads = P.resolve(self.pads, (h, w), self.kernel, self.stride, self.dilation)
            self._half_offsets[key] = K.half_dot_offset(K.dot_offset(
                self.wbits, self.cin, h, w, self.stride, pads, self.dilation, self.pad_value))
        return self._half_offsets[key]

    def binarize(self, x: np.ndarray) -> np.ndarray:
        """The packed input, uint64 ``[words, N, H, W]``; column blocks are packed in parallel."""
        c, n, h, w = x.shape
        flat = x.reshape(c, n * h * w)
        p = flat.shape[1]
        if self.ctx.pool is None or c * p < PARALLEL_MIN_ELEMENTS:
            return K.pack_planar(K.sign_bits(flat, self.threshold, self.negate)).reshape(-1, n, h, w)
        words = np.empty((K.n_words(c), p), dtype=np.uint64)

        def pack(a: int, b: int) -> None:
            words[:, a:b] = K.pack_planar(K.sign_bits(flat[:, a:b], self.threshold, self.negate))

        self.ctx.split(pack, p)
        return words.reshape(-1, n, h, w)

    def output_shape(self, x: np.ndarray) -> tuple[int, int, int, int]:
        """The ``[Cout, N, Ho, Wo]`` of this op on ``x`` (checked as a call checks it)."""
        self.check_channels(x, self.cin)
        _, ho, wo = self.resolve_pads(x.shape[2], x.shape[3], self.dilation)
        return self.cout, x.shape[1], ho, wo

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The result, written into ``out`` (a C-contiguous ``[Cout, N, Ho, Wo]``) when given."""
        self.check_channels(x, self.cin)
        _, n, h, w = x.shape
        pads, ho, wo = self.resolve_pads(h, w, self.dilation)
        if self.compiled is not None:  # the numba backend: binarize, pack, XNOR-popcount and epilogue fused
            if out is None:
                out = self.ctx.empty((self.cout, n, ho, wo))
            return self.compiled(x, pads, self.ctx.threads, self.half_offset(h, w), out=out, pool=self.ctx.crew)
        y = K.binary_conv_fast(self.binarize(x), self.wbits, self.cin, self.stride, pads, self.dilation,
                               self.pad_value, pool=self.ctx.pool, workers=self.ctx.threads,
                               half_offset=self.half_offset, fill=self.fill, scale=self.scale, bias=self.bias,
                               dtype=np.float32)
        if out is None:
            return y
        out[...] = y.reshape(out.shape)
        return out


class _ChannelAffine(Op):
    """x * scale + shift per channel; into the first input when nothing reads it later (see Add)."""

    overwrites_first = True

    def apply(self, x: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        self.check_channels(x, scale.shape[0])
        if self.ctx.float_kernels is not None:
            return self.ctx.float_kernels.affine(x, scale, shift, out=self.ctx.empty(x.shape) if out is None else out,
                                                 crew=self.ctx.crew)

        def affine(xs, dst, a, b) -> None:
            np.multiply(xs, scale[a:b, None, None, None], out=dst)
            dst += shift[a:b, None, None, None]

        return self.ctx.by_channels(affine, x, x.shape, out=out)


class BatchNorm(_ChannelAffine, op="BatchNorm"):
    """Inference BatchNorm: x * s + b with s = weight / sqrt(var + eps), b = bias - mean * s (float32, as PyTorch)."""

    def setup(self) -> None:
        eps = self.node.attrs["eps"]
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
            self.fail(f"attribute eps must be a number >= 0, not {eps!r}")
        gamma = self.tensor("weight", ndim=1)
        c = gamma.shape[0]
        beta, mean, var = (self.tensor(r, shape=(c,)) for r in ("bias", "running_mean", "running_var"))
        if (var < 0).any():
            self.fail("tensor running_var holds negative values")
        self.scale, self.shift = batchnorm_affine(gamma, beta, mean, var, float(eps))

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self.apply(x, self.scale, self.shift, out)


def batchnorm_affine(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, shift) of an inference BatchNorm, computed in float32 as PyTorch's CPU kernel."""
    f32 = np.float32
    invstd = f32(1) / np.sqrt(np.asarray(var, f32) + f32(eps))
    scale = (invstd * np.asarray(gamma, f32)).astype(f32)
    shift = (np.asarray(beta, f32) - np.asarray(mean, f32) * scale).astype(f32)
    return scale, shift


class Affine(_ChannelAffine, op="Affine"):
    """Per-channel x * scale + shift (an inference BatchNorm, folded)."""

    def setup(self) -> None:
        self.scale = self.tensor("scale", ndim=1)
        self.shift = self.tensor("shift", shape=self.scale.shape)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self.apply(x, self.scale, self.shift, out)


class Relu(Op, op="Relu"):
    """max(x, 0), channel blocks in parallel on large maps."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.ctx.by_channels(lambda xs, out, a, b: np.maximum(xs, np.float32(0), out=out), x, x.shape)


class MaxPool(Op, op="MaxPool"):
    """Max pooling; padding counts as -inf (as in PyTorch).

    ``relu`` (set by the model at load time, see ``Model._defer_relus``) applies a ReLU to the
    result: the max of ReLUs is the ReLU of the max, so a ReLU in front of a pool runs here on
    the pooled map, a quarter of the elements for the stem's stride-2 pool.
    """

    def setup(self) -> None:
        self.kernel = self.pair("kernel_size", 1)
        self.stride = self.pair("stride", 1)
        self.pads = self.padding()
        if self.pads != P.SAME and any(2 * p > k for p, k in zip(self.pads, self.kernel)):
            self.fail("padding must be at most half the kernel size")
        self.relu = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            self.fail(f"expects a feature map, got {x.ndim} dimensions")
        pads, ho, wo = self.resolve_pads(x.shape[2], x.shape[3])
        if self.ctx.float_kernels is not None:
            return self.ctx.float_kernels.max_pool(x, self.kernel, self.stride, pads, (ho, wo), self.relu,
                                                   out=self.ctx.empty((x.shape[0], x.shape[1], ho, wo)),
                                                   crew=self.ctx.crew)

        def pool(xs, out, a, b) -> None:
            _pool(xs, self.kernel, self.stride, pads, np.maximum, -np.inf, out=out)
            if self.relu:
                np.maximum(out, np.float32(0), out=out)

        return self.ctx.by_channels(pool, x, (x.shape[0], x.shape[1], ho, wo))


class AvgPool(Op, op="AvgPool"):
    """Average pooling without padding (the ResNetE shortcut's 2x2, stride 2)."""

    def setup(self) -> None:
        self.kernel = self.pair("kernel_size", 1)
        self.stride = self.pair("stride", 1)
        self.pads = (0, 0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            self.fail(f"expects a feature map, got {x.ndim} dimensions")
        _, ho, wo = self.resolve_pads(x.shape[2], x.shape[3])
        if self.ctx.float_kernels is not None:
            return self.ctx.float_kernels.avg_pool(x, self.kernel, self.stride, (ho, wo),
                                                   out=self.ctx.empty((x.shape[0], x.shape[1], ho, wo)),
                                                   crew=self.ctx.crew)
        out = _pool(x, self.kernel, self.stride, (0, 0, 0, 0), np.add, 0.0)
        out /= np.float32(self.kernel[0] * self.kernel[1])
        return out


class GlobalAvgPool(Op, op="GlobalAvgPool"):
    """Mean over height and width, keeping them as size 1 (AdaptiveAvgPool2d(1))."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            self.fail(f"expects a feature map, got {x.ndim} dimensions")
        return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)


class Flatten(Op, op="Flatten"):
    """NCHW -> [N, C*H*W] (PyTorch's Flatten(1))."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            return x.reshape(x.shape[0], -1)
        return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(x.shape[1], -1)


class Linear(Op, op="Linear"):
    """y = x @ weight.T + bias on ``[N, in]``."""

    def setup(self) -> None:
        self.weight = self.tensor("weight", ndim=2)
        self.out_features, self.in_features = self.weight.shape
        self.bias = self.tensor("bias", shape=(self.out_features,))
        self.wt = np.ascontiguousarray(self.weight.T)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            self.fail(f"expects [N, {self.in_features}], got {list(x.shape)}")
        y = x @ self.wt
        if self.bias is not None:
            y += self.bias
        return y


class Concat(Op, op="Concat"):
    """Concatenation along channels (``axis`` 1 in NCHW terms, the only axis supported).

    In the runtime's channel-first layout the first ``C`` channels of a map are a contiguous
    prefix. A concatenation therefore allocates room for the channels the following chain of
    concatenations will add (``growth``, set by the model at load time: a BinaryDenseNet block
    grows by its growth rate per layer) and later links of the chain append in place, returning a
    longer prefix of the same buffer: a dense block copies each feature map once, not once per layer.
    """

    def setup(self) -> None:
        if self.node.attrs["axis"] != 1:
            self.fail(f"supports only axis 1 (channels), not {self.node.attrs['axis']!r}")
        self.growth = 0
        # (first input, buffer) of the buffer reserve() handed out for the coming call.
        self.reserved: tuple[np.ndarray, np.ndarray] | None = None

    def _buffer(self, first: np.ndarray, total: int) -> np.ndarray:
        """A buffer whose first ``len(first)`` channels hold ``first``, with room for ``total`` (and the growth)."""
        used = first.shape[0]
        entry = self.ctx.arena.get(first.ctypes.data) if first.size else None
        if entry is not None and entry[1] == used and entry[0].shape[0] >= total \
                and entry[0].shape[1:] == first.shape[1:]:
            return entry[0]  # `first` is the newest prefix of a buffer with room: append in place
        buffer = self.ctx.empty((total + self.growth, *first.shape[1:]))
        buffer[:used] = first
        return buffer

    def reserve(self, before: list[np.ndarray], channels: int) -> np.ndarray:
        """Where the producer of the input after ``before`` (this call's earlier inputs) writes its
        ``channels`` channels: a slice of the buffer the call will return, which holds ``before`` already."""
        total = sum(x.shape[0] for x in before) + channels
        buffer = self._buffer(before[0], total)
        offset = before[0].shape[0]
        for x in before[1:]:
            buffer[offset:offset + x.shape[0]] = x
            offset += x.shape[0]
        self.reserved = (before[0], buffer)
        return buffer[offset:offset + channels]

    def __call__(self, *xs: np.ndarray) -> np.ndarray:
        if any(x.ndim != 4 or x.shape[1:] != xs[0].shape[1:] for x in xs):
            self.fail("expects feature maps of one batch and spatial size")
        first, rest = xs[0], xs[1:]
        total = first.shape[0] + sum(x.shape[0] for x in rest)
        reserved, self.reserved = self.reserved, None
        if reserved is not None and reserved[0] is first and reserved[1].shape[0] >= total:
            buffer = reserved[1]
        else:
            buffer = self._buffer(first, total)
        offset = first.shape[0]
        for x in rest:
            dst = buffer[offset:offset + x.shape[0]]
            if not (x.size and x.ctypes.data == dst.ctypes.data and x.shape == dst.shape):  # else written in place
                dst[...] = x
            offset += x.shape[0]
        self.ctx.arena[buffer.ctypes.data] = (buffer, total)
        return buffer[:total]


class Add(Op, op="Add"):
    """Elementwise sum; into the first input when the model says that nothing reads it later
    (``out``, see ``Model.run``), which saves allocating and first touching a new map."""

    overwrites_first = True

    def __call__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if a.shape != b.shape:
            self.fail(f"adds arrays of different shapes {list(a.shape)} and {list(b.shape)}")
        return np.add(a, b, out=self.ctx.empty(a.shape) if out is None else out)


# Every op the runtime knows, in the order of bnncli.runtime.opset.OPSET (tests/test_opset.py checks
# that there is one class per declared op).
OPS: tuple[type[Op], ...] = tuple(_REGISTERED[s.name] for s in opset.OPSET if s.name in _REGISTERED)
OP_TYPES: dict[str, type[Op]] = {cls.type: cls for cls in OPS}


def build_op(node: Node, tensors: dict[str, np.ndarray], ctx: Context) -> Op:
    cls = OP_TYPES.get(node.op)
    if cls is None:
        raise ArtifactError(f"node {node.name!r} has unknown op {node.op!r}; the runtime knows {', '.join(OP_TYPES)}")
    return cls(node, tensors, ctx)


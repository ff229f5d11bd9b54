"""The runtime's operations: one small class per graph op of bnncli.graph.opset, collected in :data:`OPS`.

Each class validates its node (inputs, attributes, tensors, dtypes, shapes) when it is built, so
a malformed artifact fails at load time with a message naming the node, and then computes in
NumPy. Feature maps flow between ops in the layout ``[C, N, H, W]`` (channels first, then the
batch): 1x1 convolutions become one matrix product with a contiguous operand, the first C
channels of a map are a contiguous prefix (so dense blocks concatenate in place), and the binary
kernels read whole channel planes. :class:`bnncli.runtime.model.Model` converts from and to PyTorch's NCHW at the edges.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bnncli.errors import ArtifactError
from bnncli.graph import bits, opset
from bnncli.graph import padding as P
from bnncli.graph.graph import Node
from bnncli.graph.numerics import batchnorm_affine
from bnncli.runtime.backends import BinaryConvLayer, ConvLayer, GroupConvLayer
from bnncli.runtime.context import Context

# op name -> its runtime class, filled as the classes below are defined (Op.__init_subclass__).
_REGISTERED: dict[str, type[Op]] = {}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Op:
    """Base class. A subclass names its graph op, ``class Conv(Op, op="Conv")``, which registers it
    and sets ``spec`` (bnncli.graph.opset) and, from it, ``type``, ``arity`` (None: one or more),
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
        self._sizes: dict[tuple, tuple[tuple[int, int, int, int], int, int]] = {}  # resolve_pads
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
        if t.size == 0:
            self.fail(f"tensor {role} is empty (shape {list(t.shape)})")
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
        """Attribute ``padding``: two integers >= 0, or ``"same"`` (TensorFlow's rule, bnncli.graph.padding)."""
        if self.node.attrs["padding"] == P.SAME:
            return P.SAME
        return self.pair("padding", 0)

    def resolve_pads(self, h: int, w: int, dilation=(1, 1)) -> tuple[tuple[int, int, int, int], int, int]:
        """(top, left, bottom, right), Ho and Wo for an ``h`` x ``w`` input; fails when it is too small.
        Kept per input size: a model sees few sizes, and each call of the op asks again."""
        key = (h, w, dilation)
        known = self._sizes.get(key)
        if known is not None:
            return known
        pads = P.resolve(self.pads, (h, w), self.kernel, self.stride, dilation)
        ho, wo = P.output_hw((h, w), self.kernel, self.stride, pads, dilation)
        if ho < 1 or wo < 1:
            self.fail(f"input {h}x{w} is too small")
        if len(self._sizes) < 16:
            self._sizes[key] = (pads, ho, wo)
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


class Conv(Op, op="Conv"):
    """Full-precision convolution (groups 1), zero padding, optional bias."""

    def setup(self) -> None:
        weight = self.tensor("weight", ndim=4)
        self.cout, self.cin, kh, kw = weight.shape
        self.kernel = (kh, kw)
        self.stride = self.pair("stride", 1)
        self.pads = self.padding()
        self.dilation = self.pair("dilation", 1)
        self.layer = ConvLayer(weight, self.tensor("bias", shape=(self.cout,)), self.stride, self.dilation)
        self.run = self.ctx.kernels.conv(self.layer)

    def __call__(self, x: np.ndarray, bias: bool = True) -> np.ndarray:
        """The convolution; ``bias=False`` leaves the bias out (the model has a later op add it)."""
        self.check_channels(x, self.cin)
        pads, ho, wo = self.resolve_pads(x.shape[2], x.shape[3], self.dilation)
        return self.run(x, pads, (ho, wo), bias)


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
        words32 = bits.n_words(self.cin, bits.FILE_WORD_BITS)
        w32 = self.tensor("weight", kind="u", shape=(self.cout, *self.kernel, words32), dtype=np.uint32)
        if not bits.tail_bits_clear(w32, self.cin):
            self.fail("tensor weight has bits set past the last input channel (tail bits must be 0)")
        threshold = self.tensor("in_threshold", shape=(self.cin,))
        if threshold is not None and np.isnan(threshold).any():
            self.fail("tensor in_threshold holds NaN")
        negate = self.tensor("in_negate", kind="u", shape=(self.cin,), dtype=np.uint8)
        if negate is not None:
            if threshold is None:
                self.fail("has in_negate without in_threshold")
            if negate.max(initial=0) > 1:
                self.fail("tensor in_negate must hold only 0 and 1")
        self.layer = BinaryConvLayer(bits.widen_words(w32), self.cin, self.stride, self.dilation, float(pad_value),
                                     threshold, None if negate is None else negate.astype(bool),
                                     self.tensor("out_scale", shape=(self.cout,)),
                                     self.tensor("out_bias", shape=(self.cout,)))
        self.run = self.ctx.kernels.binary_conv(self.layer)

    def output_shape(self, x: np.ndarray) -> tuple[int, int, int, int]:
        """The ``[Cout, N, Ho, Wo]`` of this op on ``x`` (checked as a call checks it)."""
        self.check_channels(x, self.cin)
        _, ho, wo = self.resolve_pads(x.shape[2], x.shape[3], self.dilation)
        return self.cout, x.shape[1], ho, wo

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None, residual: np.ndarray | None = None) -> np.ndarray:
        """The result, written into ``out`` (a C-contiguous ``[Cout, N, Ho, Wo]``) when given; with
        ``residual`` (of the result's shape, possibly ``out``), ``residual + result``: an Add after
        the convolution, fused into its epilogue by the model (``Model._fuse_adds_into_binary_convs``)."""
        self.check_channels(x, self.cin)
        _, n, h, w = x.shape
        pads, ho, wo = self.resolve_pads(h, w, self.dilation)
        if out is None:
            out = self.ctx.empty((self.cout, n, ho, wo))
        return self.run(x, pads, out, residual)


class _ChannelAffine(Op):
    """x * scale + shift per channel; into the first input when nothing reads it later (see Add)."""

    overwrites_first = True

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.check_channels(x, self.scale.shape[0])
        return self.ctx.kernels.affine(x, self.scale, self.shift, self.ctx.empty(x.shape) if out is None else out)


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


class Affine(_ChannelAffine, op="Affine"):
    """Per-channel x * scale + shift (an inference BatchNorm, folded)."""

    def setup(self) -> None:
        self.scale = self.tensor("scale", ndim=1)
        self.shift = self.tensor("shift", shape=self.scale.shape)


class Relu(Op, op="Relu"):
    """max(x, 0)."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.ctx.kernels.relu(x, self.ctx.empty(x.shape))


class MaxPool(Op, op="MaxPool"):
    """Max pooling; padding counts as -inf (as in PyTorch).

    ``relu`` (set by the model at load time, see ``Model._defer_relus``) applies a ReLU to the
    result: the max of ReLUs is the ReLU of the max, so a ReLU in front of a pool (or after it)
    runs here on the pooled map, a quarter of the elements for the stem's stride-2 pool. An
    ``affine`` (scale, shift) given to a call is applied to the input first (an Affine op read
    only by this pool, ``Model._fuse_affines_into_pools``).
    """

    def setup(self) -> None:
        self.kernel = self.pair("kernel_size", 1)
        self.stride = self.pair("stride", 1)
        self.pads = self.padding()
        if self.pads != P.SAME and any(2 * p > k for p, k in zip(self.pads, self.kernel)):
            self.fail("padding must be at most half the kernel size")
        self.relu = False

    def __call__(self, x: np.ndarray, affine: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        if x.ndim != 4:
            self.fail(f"expects a feature map, got {x.ndim} dimensions")
        if affine is not None:
            self.check_channels(x, affine[0].shape[0])
        pads, ho, wo = self.resolve_pads(x.shape[2], x.shape[3])
        return self.ctx.kernels.max_pool(x, self.kernel, self.stride, pads, (ho, wo), self.relu,
                                         self.ctx.empty((x.shape[0], x.shape[1], ho, wo)), affine)


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
        return self.ctx.kernels.avg_pool(x, self.kernel, self.stride, (ho, wo),
                                         self.ctx.empty((x.shape[0], x.shape[1], ho, wo)))


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

    Two rules keep an appended buffer from being written by two readers: only a concatenation that
    is the sole one taking its first input as first input may append (``may_extend``, set by the
    model at load time), and the channels past a buffer's newest prefix are claimed in the arena
    the moment they are handed out (:meth:`reserve`), before the concatenation runs, so no other
    op can append to the same prefix in between.
    """

    def setup(self) -> None:
        if self.node.attrs["axis"] != 1:
            self.fail(f"supports only axis 1 (channels), not {self.node.attrs['axis']!r}")
        self.growth = 0
        self.may_extend = False  # set by the model: the only concatenation extending its first input
        # (first input, buffer) of the buffer reserve() handed out for the coming call.
        self.reserved: tuple[np.ndarray, np.ndarray] | None = None

    def _buffer(self, first: np.ndarray, total: int) -> np.ndarray:
        """A buffer whose first ``len(first)`` channels hold ``first``, with room for ``total`` (and the growth)."""
        used = first.shape[0]
        entry = self.ctx.arena.get(first.ctypes.data) if first.size and self.may_extend else None
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
        self.ctx.arena[buffer.ctypes.data] = (buffer, total)  # claimed now: nothing else appends here
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
        return self.ctx.kernels.add(a, b, self.ctx.empty(a.shape) if out is None else out)


# --- grouped float convolution (QuickNet's depthwise stem conv and blur pools) -----------------


class GroupConv(Op, op="GroupConv"):
    """Float convolution in ``groups`` groups (depthwise when groups = input channels), zero
    padding, optional bias; summed in the order bnncli.runtime.backends.base.GroupConvLayer fixes."""

    def setup(self) -> None:
        self.groups = self.integer("groups", 1)
        weight = self.tensor("weight", ndim=4)
        self.cout, cin_g, kh, kw = weight.shape
        if self.cout % self.groups:
            self.fail(f"has {self.cout} output channels, not a multiple of its {self.groups} groups")
        self.cin = cin_g * self.groups
        self.kernel = (kh, kw)
        self.stride = self.pair("stride", 1)
        self.pads = self.padding()
        self.dilation = self.pair("dilation", 1)
        self.layer = GroupConvLayer(weight, self.tensor("bias", shape=(self.cout,)), self.groups, self.stride,
                                    self.dilation)
        self.run = self.ctx.kernels.group_conv(self.layer)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.check_channels(x, self.cin)
        pads, ho, wo = self.resolve_pads(x.shape[2], x.shape[3], self.dilation)
        return self.run(x, pads, (ho, wo))


# --- channel slice (MeliusNet's improvement blocks) ------------------------------------------


class Slice(Op, op="Slice"):
    """Channels ``start`` to ``stop - 1`` (``axis`` 1 in NCHW terms, the only axis supported): in the
    runtime's channel-first layout a contiguous view, no copy and no kernel."""

    def setup(self) -> None:
        if self.node.attrs["axis"] != 1:
            self.fail(f"supports only axis 1 (channels), not {self.node.attrs['axis']!r}")
        self.start = self.integer("start", 0)
        self.stop = self.integer("stop", 1)
        if self.stop <= self.start:
            self.fail(f"takes channels {self.start} to {self.stop - 1}: none")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[0] < self.stop:
            self.fail(f"takes channels up to {self.stop - 1} of a feature map; got shape {list(x.shape)} "
                      f"(channels first)")
        return x[self.start:self.stop]


# --- Real-to-Binary Net's ops: PReLU and the per-image scales of its binary convs -------------


class PRelu(Op, op="PRelu"):
    """``x`` where ``x >= 0``, else ``x * slope[c]`` (PyTorch's PReLU, Keras' with ``shared_axes=[1, 2]``);
    ``slope`` holds one value per channel, or one for all. Into its input when nothing reads it later."""

    overwrites_first = True

    def setup(self) -> None:
        self.slope = self.tensor("slope", ndim=1)
        self._per_channel: dict[int, np.ndarray] = {}

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        n = self.slope.shape[0]
        if x.ndim != 4 or n not in (1, x.shape[0]):
            shape = [x.shape[1], x.shape[0], *x.shape[2:]] if x.ndim == 4 else list(x.shape)
            self.fail(f"has {n} slopes; it takes a feature map of {n} channels, not shape {shape} (NCHW)")
        slope = self.slope if n == x.shape[0] else self._per_channel.setdefault(
            x.shape[0], np.full(x.shape[0], self.slope[0], np.float32))
        return self.ctx.kernels.prelu(x, slope, self.ctx.empty(x.shape) if out is None else out)


class Sigmoid(Op, op="Sigmoid"):
    """``1 / (1 + exp(-x))`` in float32, in NumPy whichever the backend: it reads the ``[N, C]``
    values of Real-to-Binary Net's scaling branches (a few hundred numbers an image), where a
    compiled kernel would gain nothing. ``exp(-x)`` overflows to infinity for x below -88, and the
    result is then 0, as it should be."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        one = np.float32(1)
        with np.errstate(over="ignore", under="ignore"):
            return one / (one + np.exp(-x, dtype=np.float32))


class ChannelMul(Op, op="ChannelMul"):
    """A feature map times ``[N, C]`` scales, ``x[n, c, h, w] * s[n, c]`` in NCHW terms: each image's
    channels scaled by its own factors (Real-to-Binary Net's binary conv outputs). Into the map
    when nothing reads it later."""

    overwrites_first = True

    def __call__(self, x: np.ndarray, s: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if x.ndim != 4 or s.ndim != 2 or s.shape != (x.shape[1], x.shape[0]):
            shape = [x.shape[1], x.shape[0], *x.shape[2:]] if x.ndim == 4 else list(x.shape)
            self.fail(f"scales a feature map by [N, C] values; got shapes {shape} (NCHW) and {list(s.shape)}")
        return self.ctx.kernels.channel_mul(x, np.asarray(s, np.float32), self.ctx.empty(x.shape) if out is None
                                            else out)


# Every op the runtime knows, in the order of bnncli.graph.opset.OPSET (tests/test_opset.py checks
# that there is one class per declared op).
OPS: tuple[type[Op], ...] = tuple(_REGISTERED[s.name] for s in opset.OPSET if s.name in _REGISTERED)
OP_TYPES: dict[str, type[Op]] = {cls.type: cls for cls in OPS}


def build_op(node: Node, tensors: dict[str, np.ndarray], ctx: Context) -> Op:
    cls = OP_TYPES.get(node.op)
    if cls is None:
        raise ArtifactError(f"node {node.name!r} has unknown op {node.op!r}; the runtime knows {', '.join(OP_TYPES)}")
    return cls(node, tensors, ctx)


"""The seam between the runtime's ops and the kernels that compute them.

An op class (bnncli.runtime.ops) validates its node, prepares its layer once and calls the
:class:`Kernels` its model's context holds; it never asks which backend that is. Each backend is
one implementation of :class:`Kernels`: :class:`bnncli.runtime.backends.numpy.NumpyKernels`, the
reference, and :class:`bnncli.runtime.backends.numba.NumbaKernels`, compiled, which gives the same
results bit for bit (its tests compare the two).

Layers are described by plain records (:class:`BinaryConvLayer`, :class:`ConvLayer`) that a
backend turns into a prepared callable once per layer (transposed weights, cached offsets).
Feature maps are float32 ``[C, N, H, W]`` (the runtime's layout, bnncli.runtime.ops).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

Pads = tuple[int, int, int, int]  # (top, left, bottom, right), bnncli.graph.padding


@dataclass(frozen=True, eq=False)
class BinaryConvLayer:
    """A binary convolution: binarize (``x >= threshold``, ``<=`` where ``negate``; ``x >= 0``
    without a threshold), pad with ``pad_value`` (0, -1 or +1), XNOR + popcount against ``wbits``,
    then ``* scale + bias`` per output channel."""

    wbits: np.ndarray  # uint64 [Cout, kh, kw, words] (bnncli.graph.bits)
    channels: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_value: float
    threshold: np.ndarray | None = None  # float32 [channels]
    negate: np.ndarray | None = None  # bool [channels]
    scale: np.ndarray | None = None  # float32 [Cout]
    bias: np.ndarray | None = None  # float32 [Cout]

    @property
    def cout(self) -> int:
        return self.wbits.shape[0]

    @property
    def kernel(self) -> tuple[int, int]:
        return self.wbits.shape[1], self.wbits.shape[2]


@dataclass(frozen=True, eq=False)
class ConvLayer:
    """A float convolution (groups 1, zero padding) with an optional bias."""

    weight: np.ndarray  # float32 [Cout, Cin, kh, kw]
    bias: np.ndarray | None
    stride: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def kernel(self) -> tuple[int, int]:
        return self.weight.shape[2], self.weight.shape[3]


@dataclass(frozen=True, eq=False)
class GroupConvLayer:
    """A float convolution in ``groups`` groups (depthwise when ``groups`` equals the input
    channels), zero padding, an optional bias. Output channel o reads input channels
    ``g * Cin/groups ...`` of its group g = o // (Cout/groups). Its sums are defined in one
    order, so that every backend gives the same float32 bits: per output value, starting from
    0, ``acc = acc + w * x`` over the group's input channels, then the kernel rows, then its
    columns (each product and each sum rounded to float32), then ``+ bias``."""

    weight: np.ndarray  # float32 [Cout, Cin / groups, kh, kw]
    bias: np.ndarray | None
    groups: int
    stride: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def kernel(self) -> tuple[int, int]:
        return self.weight.shape[2], self.weight.shape[3]


# A prepared binary convolution: (x, pads, out, residual) -> out, ``out`` a C-contiguous
# [Cout, N, Ho, Wo]; ``residual`` (None, or an array of out's shape, which may be ``out`` itself) is
# added to the result: ``residual + conv`` in float32, as an Add op after the convolution would.
BinaryConvFn = Callable[[np.ndarray, Pads, np.ndarray, "np.ndarray | None"], np.ndarray]
# A prepared float convolution: (x, pads, out_hw, bias) -> [Cout, N, Ho, Wo]; ``bias`` False leaves
# the layer's bias out (a later op adds it).
ConvFn = Callable[[np.ndarray, Pads, tuple[int, int], bool], np.ndarray]
# A prepared grouped convolution: (x, pads, out_hw) -> [Cout, N, Ho, Wo].
GroupConvFn = Callable[[np.ndarray, Pads, tuple[int, int]], np.ndarray]


class Buffers(Protocol):
    """Where kernels take their outputs and scratch from (bnncli.runtime.context.Context)."""

    def empty(self, shape: tuple[int, ...]) -> np.ndarray: ...

    def release(self, x: np.ndarray) -> None: ...


class Kernels(Protocol):
    """What the ops ask of a backend; one instance per model, made by bnncli.runtime.backends.create.

    ``out`` arguments are C-contiguous float32 arrays of the result's shape, which may be the
    input itself where the op allows it (affine, relu, prelu, channel_mul, add); the result is
    written there and returned.
    """

    name: ClassVar[str]
    threads: int

    def binary_conv(self, layer: BinaryConvLayer) -> BinaryConvFn: ...

    def conv(self, layer: ConvLayer) -> ConvFn: ...

    def group_conv(self, layer: GroupConvLayer) -> GroupConvFn: ...

    def max_pool(self, x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: Pads,
                 out_hw: tuple[int, int], relu: bool, out: np.ndarray,
                 affine: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Max pooling; ``affine`` (scale, shift): the affine op applied to ``x`` first, ``relu`` to the result."""

    def avg_pool(self, x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int],
                 out: np.ndarray) -> np.ndarray: ...

    def affine(self, x: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: np.ndarray) -> np.ndarray: ...

    def relu(self, x: np.ndarray, out: np.ndarray) -> np.ndarray: ...

    def prelu(self, x: np.ndarray, slope: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``x`` where ``x >= 0``, else ``x * slope[c]`` (``slope`` float32 ``[C]``)."""

    def channel_mul(self, x: np.ndarray, scales: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``x[c, n] * scales[n, c]`` over each plane (``scales`` float32 ``[N, C]``)."""

    def add(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray: ...

    def columns(self, xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                out_hw: tuple[int, int], cols: np.ndarray) -> np.ndarray:
        """im2col: ``cols`` (float32 ``[Cin, kh, kw, N, Ho, Wo]``) filled from the padded map ``xp``
        ``[Cin, N, Hp, Wp]``, returned as ``[Cin * kh * kw, N * Ho * Wo]`` (copies: every backend's are equal)."""

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...

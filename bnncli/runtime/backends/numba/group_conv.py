"""Compiled (numba) grouped float convolution: QuickNet's depthwise stem conv and blur pools.

Bit for bit the NumPy reference (bnncli.runtime.backends.numpy.group_conv_reference): the map
is zero-padded first, as there, and every output value is summed in the order
bnncli.runtime.backends.base.GroupConvLayer fixes, from 0: ``acc + w * x`` over the group's
input channels, the kernel rows, then its columns, each product and sum rounded to float32
(``jit`` has no ``fastmath``, so no FMA contraction), then ``+ bias``. The loops run in
another nesting (per output plane, tap by tap over whole rows, which vectorizes), which does
not change what each value adds in which order.

Planes (output channel, image) are taken from an atomic counter by the calling thread and the
helpers of a :class:`~bnncli.runtime.backends.numba.crew.Crew`.
"""

from __future__ import annotations

import numpy as np

from bnncli.runtime.backends.numba.float_ops import PARALLEL_MIN_ELEMENTS
from bnncli.runtime.backends.numba.intrinsics import fetch_add, jit, wait_for
from bnncli.runtime.backends.numpy import pad_hw


@jit(boundscheck=False)
def _group_conv_share(xp, weight, bias, has_bias, cin_g, cout_g, sy, sx, dy, dx, out, counters):
    """Planes p = o * N + b of ``out`` [Cout * N, Ho, Wo] taken from ``counters``; ``xp`` is the
    zero-padded input [Cin, N, Hp, Wp], ``weight`` [Cout, Cin / groups, kh, kw]."""
    n = xp.shape[1]
    kh = weight.shape[2]
    kw = weight.shape[3]
    ho = out.shape[1]
    wo = out.shape[2]
    planes = out.shape[0]
    while True:
        p = fetch_add(counters, 0)
        if p >= planes:
            break
        o = p // n
        b = p - o * n
        first = (o // cout_g) * cin_g
        acc = out[p]
        for oy in range(ho):
            for ox in range(wo):
                acc[oy, ox] = np.float32(0.0)
        for ci in range(cin_g):
            src = xp[first + ci, b]
            for ky in range(kh):
                for kx in range(kw):
                    wv = weight[o, ci, ky, kx]
                    for oy in range(ho):
                        row = src[oy * sy + ky * dy]
                        dst = acc[oy]
                        x0 = kx * dx
                        for ox in range(wo):
                            dst[ox] = dst[ox] + wv * row[x0 + ox * sx]
        if has_bias:
            bv = bias[o]
            for oy in range(ho):
                for ox in range(wo):
                    acc[oy, ox] = acc[oy, ox] + bv
        fetch_add(counters, 8)


def group_conv(x: np.ndarray, layer, pads, out_hw, out: np.ndarray | None = None, crew=None) -> np.ndarray:
    """The grouped convolution ``layer`` (bnncli.runtime.backends.base.GroupConvLayer) of a float32
    map ``x`` [Cin, N, H, W] with zero ``pads`` (top, left, bottom, right) to [Cout, N, Ho, Wo]."""
    cout, cin_g, _, _ = layer.weight.shape
    n = x.shape[1]
    ho, wo = out_hw
    xp = np.ascontiguousarray(pad_hw(x, pads, 0.0), dtype=np.float32)
    if out is None:
        out = np.empty((cout, n, ho, wo), np.float32)
    bias = layer.bias if layer.bias is not None else np.zeros(1, np.float32)
    args = (xp, np.ascontiguousarray(layer.weight, dtype=np.float32), bias, layer.bias is not None, cin_g,
            cout // layer.groups, layer.stride[0], layer.stride[1], layer.dilation[0], layer.dilation[1],
            out.reshape(cout * n, ho, wo), np.zeros(16, np.int64))
    planes = cout * n
    if crew is None or out.size * cin_g * layer.weight.shape[2] * layer.weight.shape[3] < PARALLEL_MIN_ELEMENTS \
            or planes < 2:
        _group_conv_share(*args)
    else:
        crew.run(_group_conv_share, args)
        wait_for(args[-1], 8, planes)
    return out


COMPILED = [_group_conv_share]

"""Spatial padding rules, shared by PyTorch layers, the lowering, the ONNX emitter and the runtime.

A layer pads either symmetrically (a fixed ``[ph, pw]``: ph rows above and below, pw columns left
and right, as PyTorch's ``padding=``) or by TensorFlow's ``"same"`` rule, which depends on the
input size: the output has ``ceil(size / stride)`` positions and the padding that needs,

    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)

is split ``total // 2`` before and the rest after (ONNX's ``SAME_UPPER``). On stride-2 layers
the split is often uneven: a 7x7 stride-2 conv on 224 pixels pads 2 above and 3 below.

Resolved paddings are ``(top, left, bottom, right)``, ONNX's order for 2-D ``pads``.

Pure arithmetic: this module imports the standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence

SAME = "same"  # the graph attribute value of TensorFlow's rule
Pads = tuple[int, int, int, int]  # (top, left, bottom, right)


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of one axis by TensorFlow's "same" rule."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def resolve(padding: str | Sequence[int], size: tuple[int, int], kernel: Sequence[int], stride: Sequence[int],
            dilation: Sequence[int] = (1, 1)) -> Pads:
    """``(top, left, bottom, right)`` of a layer's padding (``"same"`` or ``[ph, pw]``) for an input ``size`` (h, w)."""
    if padding == SAME:
        top, bottom = same_pads(size[0], kernel[0], stride[0], dilation[0])
        left, right = same_pads(size[1], kernel[1], stride[1], dilation[1])
        return top, left, bottom, right
    ph, pw = int(padding[0]), int(padding[1])
    return ph, pw, ph, pw


def as_pads(padding: Sequence[int]) -> Pads:
    """``[ph, pw]`` or ``(top, left, bottom, right)`` -> ``(top, left, bottom, right)``."""
    if len(padding) == 2:
        return padding[0], padding[1], padding[0], padding[1]
    top, left, bottom, right = padding
    return top, left, bottom, right


def output_size(size: int, kernel: int, stride: int, before: int, after: int, dilation: int = 1) -> int:
    """Positions along one axis of a layer that pads ``before`` and ``after`` (floor division, as PyTorch)."""
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def output_hw(size: tuple[int, int], kernel: Sequence[int], stride: Sequence[int], pads: Pads,
              dilation: Sequence[int] = (1, 1)) -> tuple[int, int]:
    """(Ho, Wo) of a layer with resolved ``pads``."""
    top, left, bottom, right = pads
    return (output_size(size[0], kernel[0], stride[0], top, bottom, dilation[0]),
            output_size(size[1], kernel[1], stride[1], left, right, dilation[1]))

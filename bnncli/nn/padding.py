"""TensorFlow's "same" padding for PyTorch layers (the padding rule of Keras-trained models).

PyTorch pads a layer symmetrically by a fixed amount. TensorFlow's ``padding="same"`` computes
the padding from the input size and puts the odd pixel after the map (bnncli.graph.padding), so
on stride-2 layers the two disagree: a 7x7 stride-2 stem conv on 224 pixels pads 2 above and 3
below, not 3 and 3. A model trained with one rule computes something else under the other
(converted Larq Zoo models change their top-1 class on about half the images).

``set_padding(model, "tensorflow")`` switches a model's padded stride-2 layers (stem conv, stem
max pool, ResNetE's stride-2 binary convs) to TensorFlow's rule; stride-1 layers with odd kernels
pad the same under both rules and are left alone. The layers carry the rule in
``padding_rule``; the lowering writes it to the graph as ``padding="same"``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from bnncli.errors import UsageError
from bnncli.graph.padding import same_pads

PADDINGS = ("symmetric", "tensorflow")


def tf_pad_arg(x: Tensor, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """``F.pad``'s (left, right, top, bottom) for TensorFlow's "same" rule on ``x`` (NCHW)."""
    top, bottom = same_pads(x.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = same_pads(x.shape[-1], kernel[1], stride[1], dilation[1])
    return left, right, top, bottom


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class PaddingRule:
    """What layers with a choice of padding rule share: ``padding_rule`` ("symmetric" or "tensorflow")."""

    padding_rule: str = "symmetric"

    @property
    def tf_same(self) -> bool:
        return self.padding_rule == "tensorflow"


class MaxPool2d(PaddingRule, nn.MaxPool2d):
    """``nn.MaxPool2d`` that can pad by TensorFlow's rule (padding counts as -inf either way).

    ``same=True`` marks a pool that Keras built with ``padding="same"`` although it has no
    symmetric padding (MeliusNet's 2x2 stride-2 pools): under the TensorFlow rule it then pads the
    odd row and column of an odd-sized map after it, as Keras does, instead of dropping them.
    """

    def __init__(self, *args, same: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.same = same

    def forward(self, x: Tensor) -> Tensor:
        if not self.tf_same:
            return super().forward(x)
        k, s = _pair(self.kernel_size), _pair(self.stride if self.stride is not None else self.kernel_size)
        x = F.pad(x, tf_pad_arg(x, k, s, _pair(self.dilation)), value=-math.inf)
        return F.max_pool2d(x, k, s, 0, self.dilation, self.ceil_mode)


def _switchable(m: nn.Module) -> bool:
    """Padded stride-2 layers: where the two rules differ."""
    if not isinstance(m, PaddingRule):
        return False
    stride, padding = _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding)
    return max(stride) > 1 and (any(padding) or getattr(m, "same", False))


def set_padding(model: nn.Module, rule: str) -> int:
    """Set the padding rule of every padded stride-2 layer; returns how many there are."""
    if rule not in PADDINGS:
        raise UsageError(f"padding must be one of {', '.join(PADDINGS)}, not {rule!r}")
    layers = [m for m in model.modules() if _switchable(m)]
    for m in layers:
        m.padding_rule = rule  # type: ignore[assignment]
    return len(layers)

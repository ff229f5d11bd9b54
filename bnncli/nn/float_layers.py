"""Full-precision layers whose weights can be held to float16 values.

A BNN keeps a few layers in full precision: the stem convolution, the downsampling (transition or
shortcut) convolutions and the classifier. Stored in float16 they take half the bytes, but
rounding a trained float32 weight to float16 moves every pre-activation a little, and in a binary
network a pre-activation near a binarization threshold then changes sign, and the change travels
down the network: measured on a trained BinaryDenseNet, rounding only the first transition's 2,048
weights changed the top-1 class of 1.3% of the images (random relative noise of 1e-4 on all float
weights: 0.3%).

So these layers can compute with their weights rounded to the nearest float16 value
(``float_weights="float16"``, the registry default): the optimizer still updates float32 latent
weights, the forward pass uses the rounded ones and the gradient passes straight through, as
with the binary weights' sign. The trained layer then *is* a float16 layer, and
``bnn pack --float-dtype float16`` stores it without changing a single value. With
``float_weights="float32"`` they are ordinary ``nn.Conv2d`` / ``nn.Linear`` layers.
"""

from __future__ import annotations

from typing import overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnncli.errors import UsageError
from bnncli.nn.padding import PaddingRule, tf_pad_arg

FLOAT_WEIGHTS = ("float16", "float32")
_FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def round_to_float16(t: Tensor) -> Tensor:
    """``t`` rounded to the nearest float16 value (ties to even), in ``t``'s dtype; the gradient is the identity.

    Values beyond float16's range saturate at +-65504 instead of becoming infinite. Within the
    range, ``t + (r - t)`` equals ``r`` exactly: ``r - t`` is exact for neighbouring floats
    (Sterbenz's lemma), and so is the sum.
    """
    latent = t.detach()
    rounded = latent.clamp(-_FLOAT16_MAX, _FLOAT16_MAX).to(torch.float16).to(t.dtype)
    return t + (rounded - latent)


class _FloatWeights:
    """What :class:`FloatConv2d` and :class:`FloatLinear` share: the precision of their weights."""

    float_weights: str = "float32"

    @overload
    def deployed(self, t: Tensor) -> Tensor: ...

    @overload
    def deployed(self, t: None) -> None: ...

    def deployed(self, t: Tensor | None) -> Tensor | None:
        """A parameter as the layer computes with it (rounded to float16 when the layer holds float16 weights)."""
        if t is None or self.float_weights == "float32":
            return t
        return round_to_float16(t)


class FloatConv2d(_FloatWeights, PaddingRule, nn.Conv2d):
    """``nn.Conv2d`` that computes with float16-valued weights when ``float_weights == "float16"``,
    and pads by TensorFlow's rule when ``padding_rule == "tensorflow"`` (bnncli.nn.padding)."""

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.deployed(self.weight), self.deployed(self.bias)  # bias: a Tensor or None
        if self.tf_same:
            x = F.pad(x, tf_pad_arg(x, self.kernel_size, self.stride, self.dilation))
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        return self._conv_forward(x, weight, bias)

    def extra_repr(self) -> str:
        rule = ", padding_rule=tensorflow" if self.tf_same else ""
        return f"{super().extra_repr()}, float_weights={self.float_weights}{rule}"


class FloatLinear(_FloatWeights, nn.Linear):
    """``nn.Linear`` that computes with float16-valued weights when ``float_weights == "float16"``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.deployed(self.weight), self.deployed(self.bias))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, float_weights={self.float_weights}"


def set_float_weights(model: nn.Module, precision: str) -> int:
    """Set the weight precision of every :class:`FloatConv2d` / :class:`FloatLinear`; returns how many."""
    if precision not in FLOAT_WEIGHTS:
        raise UsageError(f"float weights must be one of {', '.join(FLOAT_WEIGHTS)}, not {precision!r}")
    layers = [m for m in model.modules() if isinstance(m, _FloatWeights)]
    for m in layers:
        m.float_weights = precision
    return len(layers)


def is_float_layer(m: nn.Module) -> bool:
    return isinstance(m, _FloatWeights)

"""Binary layers.

:class:`BinaryConv2d` binarizes its input and its latent float weights with sign
(sign(0) = +1), pads the binarized input with an explicit value (0, -1 or +1) and runs
an ordinary convolution on the +-1 values, so it trains in float on any device. The
deploy path reads the same attributes to reproduce it bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnncli.errors import UsageError
from bnncli.nn.padding import PaddingRule, tf_pad_arg
from bnncli.nn.quantizers import activation_quantizer, binary_sign, weight_quantizer

PAD_VALUES = (0.0, -1.0, 1.0)
SCALINGS = ("none", "xnor")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class BinaryConv2d(PaddingRule, nn.Module):
    """A convolution on binarized input and weights.

    Args:
        pad_value: value the *binarized* input is padded with (Larq: 0, BMXNet/bitorch: -1).
        clip_threshold: the STE clips gradients where |x| > t (and |w| > t for the Larq weight variant).
        activation_gradient: ``"ste"`` or ``"approxsign"`` (Bi-Real).
        weight_gradient: ``"larq"`` (gradient cancelled for |w| > t, latent weights clamped to [-t, t]
            after each optimizer step) or ``"bmxnet"`` (identity gradient, no clamp).
        scaling: ``"none"`` (the paper's default) or ``"xnor"``: per-output-channel alpha = mean|W|.
        binary_input: False leaves the input in float (binary weights on a float map, as the first
            conv of Hubara et al.'s BinaryAlexNet); it is then zero padded and its MACs are float MACs.

    ``padding_rule = "tensorflow"`` (bnncli.nn.padding) replaces ``padding`` by TensorFlow's "same"
    rule for the input at hand; the pads still hold ``pad_value``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        *,
        pad_value: float = 0.0,
        clip_threshold: float = 1.3,
        activation_gradient: str = "ste",
        weight_gradient: str = "larq",
        scaling: str = "none",
        binary_input: bool = True,
    ) -> None:
        super().__init__()
        if not binary_input and float(pad_value) != 0.0:
            raise UsageError(f"a binary conv on float input pads with 0, not {pad_value!r}")
        if float(pad_value) not in PAD_VALUES:
            raise UsageError(f"pad value must be one of 0, -1, +1, not {pad_value!r}")
        if scaling not in SCALINGS:
            raise UsageError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")
        if not clip_threshold > 0:
            raise UsageError(f"clip threshold must be positive, not {clip_threshold!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.pad_value = float(pad_value)
        self.clip_threshold = float(clip_threshold)
        self.activation_gradient = activation_gradient
        self.weight_gradient = weight_gradient
        self.scaling = scaling
        self.binary_input = bool(binary_input)
        self.input_quantizer = activation_quantizer(activation_gradient, clip_threshold)
        self.weight_quantizer = weight_quantizer(weight_gradient, clip_threshold)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def binary_weight(self) -> Tensor:
        """The +-1 weights the layer computes with (no gradient)."""
        return binary_sign(self.weight.detach())

    def scale(self) -> Tensor | None:
        """Per-output-channel alpha = mean|W| when ``scaling == "xnor"``, else None."""
        if self.scaling == "xnor":
            return self.weight.abs().mean(dim=(1, 2, 3))
        return None

    def forward(self, x: Tensor) -> Tensor:
        xb = self.input_quantizer(x) if self.binary_input else x
        wb = self.weight_quantizer(self.weight).to(xb.dtype)
        ph, pw = self.padding
        if self.tf_same:
            xb = F.pad(xb, tf_pad_arg(xb, self.kernel_size, self.stride, self.dilation), value=self.pad_value)
            y = F.conv2d(xb, wb, None, self.stride, 0, self.dilation)
        elif (ph or pw) and self.pad_value != 0.0:
            xb = F.pad(xb, (pw, pw, ph, ph), value=self.pad_value)
            y = F.conv2d(xb, wb, None, self.stride, 0, self.dilation)
        else:
            # Zero padding: let the convolution pad, which is cheaper than a padded copy.
            y = F.conv2d(xb, wb, None, self.stride, self.padding, self.dilation)
        alpha = self.scale()
        if alpha is not None:
            y = y * alpha.to(y.dtype).view(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, pad_value={self.pad_value:g}, "
            f"clip_threshold={self.clip_threshold:g}, weight_gradient={self.weight_gradient}, "
            f"scaling={self.scaling}" + ("" if self.binary_input else ", binary_input=False")
            + (", padding_rule=tensorflow" if self.tf_same else "")
        )


class LatentWeightClamp:
    """Clamps the latent weights of a model's Larq-variant binary convs to [-t, t].

    The weights are collected once, grouped by clip threshold; each call is then two foreach
    kernels per threshold (``clamp_min_``, ``clamp_max_`` over the whole group: the values of
    ``clamp_(-t, t)`` per layer, NaN included) instead of a walk over every module and one clamp
    per layer. It holds the parameters themselves, so moving the model (``.to``) or loading a
    state dict keeps it valid; build a new one after replacing layers.
    """

    def __init__(self, model: nn.Module) -> None:
        groups: dict[float, list[Tensor]] = {}
        for m in model.modules():
            if isinstance(m, BinaryConv2d) and m.weight_gradient == "larq":
                groups.setdefault(m.clip_threshold, []).append(m.weight)
        self.groups = list(groups.items())

    def __len__(self) -> int:
        """How many weights it clamps."""
        return sum(len(weights) for _, weights in self.groups)

    @torch.no_grad()
    def __call__(self) -> None:
        for threshold, weights in self.groups:
            torch._foreach_clamp_min_(weights, -threshold)
            torch._foreach_clamp_max_(weights, threshold)


def clamp_latent_weights(model: nn.Module) -> None:
    """Clamp latent weights of Larq-variant binary convs to [-t, t] once; a training loop, which
    clamps after every optimizer step, builds a :class:`LatentWeightClamp` once and calls it."""
    LatentWeightClamp(model)()

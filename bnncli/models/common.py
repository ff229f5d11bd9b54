"""Options every registered model shares, and the factory for its binary convolutions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from torch import nn

from bnncli.errors import UsageError
from bnncli.nn import BinaryConv2d


@dataclass(frozen=True)
class BinaryOptions:
    """How a model's binary convolutions binarize (see :class:`bnncli.nn.BinaryConv2d`)."""

    clip_threshold: float = 1.3
    pad_value: float = 0.0
    scaling: str = "none"
    activation_gradient: str = "ste"
    weight_gradient: str = "larq"

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, **kw) -> BinaryConv2d:
        return BinaryConv2d(
            in_channels,
            out_channels,
            kernel_size,
            pad_value=self.pad_value,
            clip_threshold=self.clip_threshold,
            activation_gradient=self.activation_gradient,
            weight_gradient=self.weight_gradient,
            scaling=self.scaling,
            **kw,
        )


def check_common(num_classes: int, in_channels: int) -> None:
    if num_classes < 1:
        raise UsageError(f"num_classes must be at least 1, not {num_classes}")
    if in_channels < 1:
        raise UsageError(f"in_channels must be at least 1, not {in_channels}")


BatchNorm2d = partial(nn.BatchNorm2d, eps=1e-5, momentum=0.1)


def build_with_options(cls, *args, num_classes, in_channels, thumbnail, clip_threshold, pad_value, scaling,
                       activation_gradient, weight_gradient, **kw):
    """``cls(*args, ...)`` from a registry function's keyword options: the binarization ones become
    its :class:`BinaryOptions`, the others are passed on."""
    binary = BinaryOptions(clip_threshold, pad_value, scaling, activation_gradient, weight_gradient)
    return cls(*args, num_classes=num_classes, in_channels=in_channels, thumbnail=thumbnail, binary=binary, **kw)


"""QuickNet (Larq Zoo's ``larq_zoo.sota``, Bannink et al. 2021): residual binary 3x3 convs
with an in-conv ReLU and +1 padding, and anti-aliased pointwise transitions.

As Larq Zoo 2.4 builds it (``QuickNetFactory``), in the order it creates its layers:

* stem: float conv 3x3 s2 (C/4) -> BN -> ReLU -> depthwise float conv 3x3 s2 -> BN without scale
  and centre -> float conv 1x1 (C) -> BN. These BatchNorms have Keras' defaults: eps 1e-3,
  momentum 0.99 (PyTorch 0.01);
* residual block: x + BN(ReLU(BinaryConv3x3(x))), the binary conv padding its binarized input
  with +1 (SteSign clip 1.25 on inputs and weights, weights clamped to [-1.25, 1.25]); BN eps
  1e-5, momentum 0.9 (PyTorch 0.1);
* transition (before the first block of a stage whose width changes): ReLU -> max pool 2x2
  stride 1 (no padding) -> blur pool (a fixed depthwise 3x3 [1 2 1] x [1 2 1] / 16, stride 2)
  -> float conv 1x1 -> BN;
* head: ReLU -> global average pool -> Linear.

Every padded layer pads by TensorFlow's "same" rule under ``padding="tensorflow"`` (what
imported models use); ``thumbnail=True`` makes the stem's two strided convs stride 1, for
32 px inputs (Larq Zoo has no such stem).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bnncli.models._registry import register_model
from bnncli.models.common import BatchNorm2d, BinaryOptions, build_with_options, check_common
from bnncli.nn import FloatConv2d, FloatLinear

# Keras' BatchNormalization defaults (the stem's): epsilon 1e-3, momentum 0.99 = PyTorch momentum 0.01.
KERAS_BN: dict[str, Any] = {"eps": 1e-3, "momentum": 0.01}


class BlurPool2d(FloatConv2d):
    """A fixed depthwise 3x3 blur, ``[1, 2, 1] x [1, 2, 1] / 16`` per channel, with a stride
    (Zhang 2019, as Larq Zoo's ``blurpool_initializer``). Its weight is not trained
    (``requires_grad`` False, as Larq Zoo's ``trainable=False``) but is part of the state, so an
    imported file's kernel is the one computed with."""

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__(channels, channels, 3, stride, 1, groups=channels, bias=False)
        k = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(k, k) / 16.0
        with torch.no_grad():
            self.weight.copy_(kernel.expand(channels, 1, 3, 3))
        self.weight.requires_grad_(False)


class Stem(nn.Sequential):
    def __init__(self, in_channels: int, width: int, thumbnail: bool) -> None:
        super().__init__()
        stride = 1 if thumbnail else 2
        quarter = width // 4
        self.conv = FloatConv2d(in_channels, quarter, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(quarter, **KERAS_BN)
        self.relu = nn.ReLU(inplace=False)
        self.depthwise = FloatConv2d(quarter, quarter, 3, stride, 1, groups=quarter, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(quarter, affine=False, **KERAS_BN)
        self.pointwise = FloatConv2d(quarter, width, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(width, **KERAS_BN)


class ResidualBlock(nn.Module):
    """x + BN(ReLU(BinaryConv3x3(x))), the binary conv padded with the model's pad value."""

    def __init__(self, channels: int, binary: BinaryOptions) -> None:
        super().__init__()
        self.conv = binary.conv(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=False)
        self.bn = BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.relu(self.conv(x))) + x


class Transition(nn.Sequential):
    """ReLU -> max pool 2x2 stride 1 -> blur pool stride 2 -> float conv 1x1 -> BN."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.MaxPool2d(2, 1)
        self.blur = BlurPool2d(in_channels, 2)
        self.conv = FloatConv2d(in_channels, out_channels, 1, bias=False)
        self.bn = BatchNorm2d(out_channels)


class QuickNet(nn.Module):
    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        thumbnail: bool = False,
        binary: BinaryOptions = BinaryOptions(clip_threshold=1.25, pad_value=1.0),
    ) -> None:
        super().__init__()
        check_common(num_classes, in_channels)
        if len(blocks) != len(widths) or widths[0] % 4:
            raise ValueError("QuickNet needs one width per stage and a first width divisible by 4")
        self.stem = Stem(in_channels, widths[0], thumbnail)
        layers: list[nn.Module] = []
        channels = widths[0]
        for n_blocks, width in zip(blocks, widths):
            for _ in range(n_blocks):
                if width != channels:
                    layers.append(Transition(channels, width))
                    channels = width
                layers.append(ResidualBlock(channels, binary))
        self.features = nn.Sequential(*layers)
        self.head_relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = FloatLinear(channels, num_classes)
        self.num_features = channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(self.stem(x))
        return self.fc(self.flatten(self.pool(self.head_relu(x))))


def _build(blocks, widths, **options) -> QuickNet:
    return build_with_options(QuickNet, blocks, widths, **options)


@register_model("quicknet")
def quicknet_small(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                   clip_threshold: float = 1.25, pad_value: float = 1.0, scaling: str = "none",
                   activation_gradient: str = "ste", weight_gradient: str = "larq") -> QuickNet:
    """QuickNetSmall: widths 32, 64, 256, 512, four residual blocks a stage (Larq Zoo 59.4% top-1)."""
    return _build((4, 4, 4, 4), (32, 64, 256, 512), **locals())


@register_model("quicknet")
def quicknet(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
             clip_threshold: float = 1.25, pad_value: float = 1.0, scaling: str = "none",
             activation_gradient: str = "ste", weight_gradient: str = "larq") -> QuickNet:
    """QuickNet: widths 64, 128, 256, 512, four residual blocks a stage (Larq Zoo 63.3% top-1)."""
    return _build((4, 4, 4, 4), (64, 128, 256, 512), **locals())


@register_model("quicknet")
def quicknet_large(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                   clip_threshold: float = 1.25, pad_value: float = 1.0, scaling: str = "none",
                   activation_gradient: str = "ste", weight_gradient: str = "larq") -> QuickNet:
    """QuickNetLarge: widths 64, 128, 256, 512, residual blocks 6, 8, 12, 6 (Larq Zoo 66.9% top-1)."""
    return _build((6, 8, 12, 6), (64, 128, 256, 512), **locals())


@register_model("quicknet")
def quicknet_tiny(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                  clip_threshold: float = 1.25, pad_value: float = 1.0, scaling: str = "none",
                  activation_gradient: str = "ste", weight_gradient: str = "larq") -> QuickNet:
    """A small QuickNet (widths 8-64, blocks 1, 1, 2, 1) for tests and the CPU demo."""
    return _build((1, 1, 2, 1), (8, 16, 32, 64), **locals())

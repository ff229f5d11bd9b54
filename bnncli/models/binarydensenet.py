"""BinaryDenseNet (Bethge et al., 2019): dense blocks of binary 3x3 convs, no bottleneck,
full-precision 1x1 transitions. See shared zoo spec: growth 64, stem 64, layers per stage,
reductions and dilations per variant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bnncli.errors import UsageError
from bnncli.models._registry import register_model
from bnncli.models.common import BatchNorm2d, BinaryOptions, check_common
from bnncli.nn import FloatConv2d, FloatLinear, MaxPool2d


class DenseLayer(nn.Module):
    """x -> concat([x, BinaryConv3x3(BN(x))]); no ReLU and no BN after the conv."""

    def __init__(self, in_channels: int, growth_rate: int, dilation: int, binary: BinaryOptions) -> None:
        super().__init__()
        self.bn = BatchNorm2d(in_channels)
        self.conv = binary.conv(in_channels, growth_rate, 3, padding=dilation, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(self.bn(x))], dim=1)


class Transition(nn.Sequential):
    """BN -> maxpool 2x2 s2 (skipped before a dilated stage) -> ReLU -> full-precision conv 1x1."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool) -> None:
        super().__init__()
        self.bn = BatchNorm2d(in_channels)
        self.pool = nn.MaxPool2d(2, 2) if pool else nn.Identity()
        self.relu = nn.ReLU(inplace=False)
        self.conv = FloatConv2d(in_channels, out_channels, 1, bias=False)


def transition_channels(channels: int, reduction: float) -> int:
    """int(round((C // r) / 32)) * 32, with Python's round (round half to even)."""
    return int(round((channels // reduction) / 32)) * 32


class BinaryDenseNet(nn.Module):
    def __init__(
        self,
        layers: Sequence[int],
        reductions: Sequence[float],
        dilations: Sequence[int],
        *,
        growth_rate: int = 64,
        stem_channels: int = 64,
        num_classes: int = 1000,
        in_channels: int = 3,
        thumbnail: bool = False,
        binary: BinaryOptions = BinaryOptions(),
    ) -> None:
        super().__init__()
        check_common(num_classes, in_channels)
        if not (len(layers) == len(dilations) == len(reductions) + 1):
            raise UsageError("BinaryDenseNet needs one reduction fewer than stages")
        if thumbnail:
            self.stem = nn.Sequential(FloatConv2d(in_channels, stem_channels, 3, 1, 1, bias=False))
        else:
            self.stem = nn.Sequential(
                FloatConv2d(in_channels, stem_channels, 7, 2, 3, bias=False),
                BatchNorm2d(stem_channels),
                nn.ReLU(inplace=False),
                MaxPool2d(3, 2, 1),
            )
        features: list[nn.Module] = []
        channels = stem_channels
        for stage, (n_layers, dilation) in enumerate(zip(layers, dilations)):
            for _ in range(n_layers):
                features.append(DenseLayer(channels, growth_rate, dilation, binary))
                channels += growth_rate
            if stage < len(reductions):
                out = transition_channels(channels, reductions[stage])
                # A dilated next stage keeps the resolution instead of pooling.
                features.append(Transition(channels, out, pool=dilations[stage + 1] == 1))
                channels = out
        self.features = nn.Sequential(*features)
        self.head_bn = BatchNorm2d(channels)
        self.head_relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = FloatLinear(channels, num_classes)
        self.num_features = channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(self.stem(x))
        x = self.pool(self.head_relu(self.head_bn(x)))
        return self.fc(self.flatten(x))


def _build(layers, reductions, dilations, *, num_classes, in_channels, thumbnail, clip_threshold, pad_value,
           scaling, activation_gradient, weight_gradient, growth_rate=64, stem_channels=64) -> BinaryDenseNet:
    binary = BinaryOptions(clip_threshold, pad_value, scaling, activation_gradient, weight_gradient)
    return BinaryDenseNet(
        layers, reductions, dilations, growth_rate=growth_rate, stem_channels=stem_channels,
        num_classes=num_classes, in_channels=in_channels, thumbnail=thumbnail, binary=binary,
    )


@register_model("binarydensenet")
def binarydensenet28(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                     clip_threshold: float = 1.3, pad_value: float = 0.0, scaling: str = "none",
                     activation_gradient: str = "ste", weight_gradient: str = "larq") -> BinaryDenseNet:
    """BinaryDenseNet28: 60.7% ImageNet top-1 in the paper."""
    return _build((6, 6, 6, 5), (2.7, 2.7, 2.2), (1, 1, 1, 1), **locals())


@register_model("binarydensenet")
def binarydensenet37(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                     clip_threshold: float = 1.3, pad_value: float = 0.0, scaling: str = "none",
                     activation_gradient: str = "ste", weight_gradient: str = "larq") -> BinaryDenseNet:
    """BinaryDenseNet37."""
    return _build((6, 8, 12, 6), (3.3, 3.3, 4), (1, 1, 1, 1), **locals())


@register_model("binarydensenet")
def binarydensenet37_dilated(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                             clip_threshold: float = 1.3, pad_value: float = 0.0, scaling: str = "none",
                             activation_gradient: str = "ste", weight_gradient: str = "larq") -> BinaryDenseNet:
    """BinaryDenseNet37 with dilated last two stages (no pooling before them)."""
    return _build((6, 8, 12, 6), (3.3, 3.3, 4), (1, 1, 2, 4), **locals())


@register_model("binarydensenet")
def binarydensenet45(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                     clip_threshold: float = 1.3, pad_value: float = 0.0, scaling: str = "none",
                     activation_gradient: str = "ste", weight_gradient: str = "larq") -> BinaryDenseNet:
    """BinaryDenseNet45."""
    return _build((6, 12, 14, 8), (2.7, 3.3, 4), (1, 1, 1, 1), **locals())


@register_model("binarydensenet")
def binarydensenet_tiny(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                        clip_threshold: float = 1.3, pad_value: float = 0.0, scaling: str = "none",
                        activation_gradient: str = "ste", weight_gradient: str = "larq") -> BinaryDenseNet:
    """A small BinaryDenseNet (growth 16, 2 layers a stage) for tests and the CPU demo."""
    return _build((2, 2, 2, 2), (2.0, 2.0, 2.0), (1, 1, 1, 1), growth_rate=16, stem_channels=32, **locals())


@register_model("binarydensenet")
def binarydensenet_tiny_wide(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                             clip_threshold: float = 1.3, pad_value: float = 0.0, scaling: str = "none",
                             activation_gradient: str = "ste", weight_gradient: str = "larq") -> BinaryDenseNet:
    """A BinaryDenseNet of resnete_tiny's 1-bit size (90 KB against 93 KB at 10 classes), for the paper's
    equal-size comparison on small data (growth 28, layers 2-2-3-3)."""
    return _build((2, 2, 3, 3), (2.0, 2.0, 2.0), (1, 1, 1, 1), growth_rate=28, stem_channels=32, **locals())


@register_model("binarydensenet")
def binarydensenet_tiny_dilated(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                                clip_threshold: float = 1.3, pad_value: float = -1.0, scaling: str = "none",
                                activation_gradient: str = "ste",
                                weight_gradient: str = "larq") -> BinaryDenseNet:
    """A small dilated BinaryDenseNet (pads with -1 as BMXNet does) covering dilation in tests."""
    return _build((2, 2, 2, 2), (2.0, 2.0, 2.0), (1, 1, 2, 4), growth_rate=16, stem_channels=32, **locals())

"""ResNetE (Bethge et al., 2019) and a Bi-Real-style ResNet-18 (Liu et al., 2018).

Every binary 3x3 conv has its own shortcut: out = BN(BinaryConv3x3(x)) + shortcut(x). Where
the shape changes the shortcut is avgpool 2x2 -> full-precision conv 1x1 -> BN (the paper's
point), or a binary conv 1x1 for the ablation (``binary_downsample=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from torch import Tensor, nn

from bnncli.models._registry import register_model
from bnncli.models.common import BatchNorm2d, BinaryOptions, check_common
from bnncli.nn import FloatConv2d, FloatLinear, MaxPool2d


class Downsample(nn.Sequential):
    """avgpool 2x2 s2 (when strided) -> conv 1x1 (float, or binary for the ablation) -> BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, binary: BinaryOptions | None,
                 bn: Callable[[int], nn.BatchNorm2d] = BatchNorm2d) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        self.conv: nn.Module
        if binary is None:
            self.conv = FloatConv2d(in_channels, out_channels, 1, bias=False)
        else:
            self.conv = binary.conv(in_channels, out_channels, 1)
        self.bn = bn(out_channels)


class BasicBlockE(nn.Module):
    """One binary 3x3 conv with its shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, binary: BinaryOptions,
                 binary_downsample: bool, bn: Callable[[int], nn.BatchNorm2d] = BatchNorm2d) -> None:
        super().__init__()
        self.conv = binary.conv(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn = bn(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = Downsample(
                in_channels, out_channels, stride, binary if binary_downsample else None, bn
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x)) + self.shortcut(x)


class ResNetE(nn.Module):
    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        thumbnail: bool = False,
        binary: BinaryOptions = BinaryOptions(clip_threshold=1.25),
        binary_downsample: bool = False,
        bireal: bool = False,
        bn: Callable[[int], nn.BatchNorm2d] = BatchNorm2d,
    ) -> None:
        super().__init__()
        check_common(num_classes, in_channels)
        stem_width = widths[0]
        if thumbnail:
            stem: list[nn.Module] = [FloatConv2d(in_channels, stem_width, 3, 1, 1, bias=False), bn(stem_width)]
        elif bireal:
            # Bi-Real: conv -> BN -> maxpool, no ReLU and no extra BN.
            stem = [FloatConv2d(in_channels, stem_width, 7, 2, 3, bias=False), bn(stem_width),
                    MaxPool2d(3, 2, 1)]
        else:
            stem = [FloatConv2d(in_channels, stem_width, 7, 2, 3, bias=False), BatchNorm2d(stem_width),
                    nn.ReLU(inplace=False), MaxPool2d(3, 2, 1), BatchNorm2d(stem_width)]
        self.stem = nn.Sequential(*stem)
        layers: list[nn.Module] = []
        channels = stem_width
        for stage, (n_blocks, width) in enumerate(zip(blocks, widths)):
            # Each ResNet basic block (two convs) becomes two single-conv blocks.
            for i in range(2 * n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlockE(channels, width, stride, binary, binary_downsample, bn))
                channels = width
        self.features = nn.Sequential(*layers)
        self.head_relu = nn.Identity() if bireal else nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = FloatLinear(channels, num_classes)
        self.num_features = channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(self.stem(x))
        return self.fc(self.flatten(self.pool(self.head_relu(x))))


def _build(blocks, widths=(64, 128, 256, 512), *, num_classes, in_channels, thumbnail, clip_threshold, pad_value,
           scaling, activation_gradient, weight_gradient, binary_downsample=False, bireal=False,
           bn=BatchNorm2d) -> ResNetE:
    binary = BinaryOptions(clip_threshold, pad_value, scaling, activation_gradient, weight_gradient)
    return ResNetE(blocks, widths, num_classes=num_classes, in_channels=in_channels, thumbnail=thumbnail,
                   binary=binary, binary_downsample=binary_downsample, bireal=bireal, bn=bn)


@register_model("resnete")
def resnete18(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
              clip_threshold: float = 1.25, pad_value: float = 0.0, scaling: str = "none",
              activation_gradient: str = "ste", weight_gradient: str = "larq",
              binary_downsample: bool = False) -> ResNetE:
    """ResNetE18: 16 binary 3x3 convs, each with its own shortcut."""
    return _build((2, 2, 2, 2), **locals())


@register_model("resnete")
def resnete34(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
              clip_threshold: float = 1.25, pad_value: float = 0.0, scaling: str = "none",
              activation_gradient: str = "ste", weight_gradient: str = "larq",
              binary_downsample: bool = False) -> ResNetE:
    """ResNetE34."""
    return _build((3, 4, 6, 3), **locals())


@register_model("resnete")
def resnete_tiny(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                 clip_threshold: float = 1.25, pad_value: float = 0.0, scaling: str = "none",
                 activation_gradient: str = "ste", weight_gradient: str = "larq",
                 binary_downsample: bool = False) -> ResNetE:
    """A small ResNetE (widths 16-128, one block a stage) for tests and the CPU demo."""
    return _build((1, 1, 1, 1), (16, 32, 64, 128), **locals())


@register_model("birealnet")
def birealnet18(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                clip_threshold: float = 1.0, pad_value: float = 0.0, scaling: str = "xnor",
                activation_gradient: str = "approxsign", weight_gradient: str = "bmxnet",
                binary_downsample: bool = False) -> ResNetE:
    """Bi-Real-style ResNet-18 (56.4% in the Bi-Real paper): ApproxSign gradient, per-channel weight
    scaling, a shortcut around every binary conv, and a stem and head without the extra ReLU/BN."""
    return _build((2, 2, 2, 2), bireal=True, **locals())


@register_model("birealnet")
def birealnet_tiny(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                   clip_threshold: float = 1.0, pad_value: float = 0.0, scaling: str = "xnor",
                   activation_gradient: str = "approxsign", weight_gradient: str = "bmxnet",
                   binary_downsample: bool = False) -> ResNetE:
    """A small Bi-Real-style network for tests."""
    return _build((1, 1, 1, 1), (16, 32, 64, 128), bireal=True, **locals())


# Larq Zoo's BiRealNet: Keras' default BatchNorm epsilon (1e-3) and momentum 0.8 (PyTorch 0.2).
_LARQ_BIREAL_BN = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.2)


@register_model("birealnet")
def birealnet_larq(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                   clip_threshold: float = 1.0, pad_value: float = 0.0, scaling: str = "xnor",
                   activation_gradient: str = "approxsign", weight_gradient: str = "larq",
                   binary_downsample: bool = False) -> ResNetE:
    """Larq Zoo's BiRealNet (57.47% top-1): birealnet18's structure with Larq Zoo's choices, namely
    BatchNorm eps 1e-3 and momentum 0.2 (Keras 0.8), and the weights clipped to [-1, 1]
    (``WeightClip``) with the gradient cancelled beyond (``weight_gradient="larq"``)."""
    return _build((2, 2, 2, 2), bireal=True, bn=_LARQ_BIREAL_BN, **locals())


@register_model("birealnet")
def birealnet_larq_tiny(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                        clip_threshold: float = 1.0, pad_value: float = 0.0, scaling: str = "xnor",
                        activation_gradient: str = "approxsign", weight_gradient: str = "larq",
                        binary_downsample: bool = False) -> ResNetE:
    """A small birealnet_larq (widths 8-64, one ResNet block a stage) for tests."""
    return _build((1, 1, 1, 1), (8, 16, 32, 64), bireal=True, bn=_LARQ_BIREAL_BN, **locals())

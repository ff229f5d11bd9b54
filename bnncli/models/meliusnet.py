"""MeliusNet (Bethge et al., 2020), as Larq Zoo 2.4 builds MeliusNet22 (``larq_zoo.literature``).

Dense blocks add capacity (``cat([x, BinaryConv3x3(BN(x))])``, 64 new channels), improvement
blocks add quality (``x + pad(BinaryConv3x3(BN(x)))``: the binary conv's 64 channels are added
onto the last 64 channels of the map). In the order Larq Zoo creates its layers:

* stem: float conv 3x3 s2 (32) -> BN -> ReLU -> grouped conv 3x3 (32, 4 groups) -> BN -> ReLU ->
  grouped conv 3x3 (64, 8 groups) -> BN -> ReLU -> max pool 2x2 s2;
* per section: blocks of (dense block, improvement block), then (except after the last section) a
  transition: BN -> max pool 2x2 s2 -> ReLU -> float conv 1x1;
* head: BN -> ReLU -> global average pool -> Linear.

Binary convs: SteSign clip 1.3 on inputs and weights, weights clamped to [-1.3, 1.3], zero
padding; every BatchNorm eps 1e-5, momentum 0.9 (PyTorch 0.1). Larq Zoo pads its max pools by
TensorFlow's "same" rule: no padding on maps of even size, a partial last window on odd ones,
which these pools reproduce under ``padding="tensorflow"`` (bnncli.nn.MaxPool2d ``same``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bnncli.models._registry import register_model
from bnncli.models.common import BatchNorm2d, BinaryOptions, check_common
from bnncli.nn import ChannelSlice, FloatConv2d, FloatLinear, MaxPool2d


class GroupStem(nn.Sequential):
    """conv 3x3 s2 -> BN -> ReLU -> grouped conv (4 groups) -> BN -> ReLU -> grouped conv (8 groups)
    -> BN -> ReLU -> max pool 2x2 s2 (``thumbnail``: the first conv and the pool without stride)."""

    def __init__(self, in_channels: int, widths: tuple[int, int], thumbnail: bool) -> None:
        super().__init__()
        w0, w1 = widths
        self.conv0 = FloatConv2d(in_channels, w0, 3, 1 if thumbnail else 2, 1, bias=False)
        self.bn0 = BatchNorm2d(w0)
        self.relu0 = nn.ReLU(inplace=False)
        self.conv1 = FloatConv2d(w0, w0, 3, 1, 1, groups=4, bias=False)
        self.bn1 = BatchNorm2d(w0)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = FloatConv2d(w0, w1, 3, 1, 1, groups=8, bias=False)
        self.bn2 = BatchNorm2d(w1)
        self.relu2 = nn.ReLU(inplace=False)
        self.pool = nn.Identity() if thumbnail else MaxPool2d(2, 2, same=True)


class DenseBlock(nn.Module):
    """cat([x, BinaryConv3x3(BN(x))])."""

    def __init__(self, channels: int, growth: int, binary: BinaryOptions) -> None:
        super().__init__()
        self.bn = BatchNorm2d(channels)
        self.conv = binary.conv(channels, growth, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(self.bn(x))], dim=1)


class ImprovementBlock(nn.Module):
    """x with BinaryConv3x3(BN(x)) added onto its last ``growth`` channels."""

    def __init__(self, channels: int, growth: int, binary: BinaryOptions) -> None:
        super().__init__()
        self.bn = BatchNorm2d(channels)
        self.conv = binary.conv(channels, growth, 3, padding=1)
        self.head = ChannelSlice(0, channels - growth)
        self.tail = ChannelSlice(channels - growth, channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.head(x), self.tail(x) + self.conv(self.bn(x))], dim=1)


class Transition(nn.Sequential):
    """BN -> max pool 2x2 s2 -> ReLU -> float conv 1x1."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = BatchNorm2d(in_channels)
        self.pool = MaxPool2d(2, 2, same=True)
        self.relu = nn.ReLU(inplace=False)
        self.conv = FloatConv2d(in_channels, out_channels, 1, bias=False)


class MeliusNet(nn.Module):
    def __init__(
        self,
        blocks: Sequence[int],
        transitions: Sequence[int | None],
        *,
        growth: int = 64,
        stem_widths: tuple[int, int] = (32, 64),
        num_classes: int = 1000,
        in_channels: int = 3,
        thumbnail: bool = False,
        binary: BinaryOptions = BinaryOptions(clip_threshold=1.3),
    ) -> None:
        super().__init__()
        check_common(num_classes, in_channels)
        if len(blocks) != len(transitions):
            raise ValueError("MeliusNet needs one transition width (or None) per section")
        self.stem = GroupStem(in_channels, stem_widths, thumbnail)
        layers: list[nn.Module] = []
        channels = stem_widths[1]
        for n_blocks, width in zip(blocks, transitions):
            for _ in range(n_blocks):
                layers.append(DenseBlock(channels, growth, binary))
                channels += growth
                layers.append(ImprovementBlock(channels, growth, binary))
            if width:
                layers.append(Transition(channels, width))
                channels = width
        self.features = nn.Sequential(*layers)
        self.head_bn = BatchNorm2d(channels)
        self.head_relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = FloatLinear(channels, num_classes)
        self.num_features = channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.head_relu(self.head_bn(self.features(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


def _build(blocks, transitions, *, growth=64, stem_widths=(32, 64), num_classes, in_channels, thumbnail,
           clip_threshold, pad_value, scaling, activation_gradient, weight_gradient) -> MeliusNet:
    binary = BinaryOptions(clip_threshold, pad_value, scaling, activation_gradient, weight_gradient)
    return MeliusNet(blocks, transitions, growth=growth, stem_widths=stem_widths, num_classes=num_classes,
                     in_channels=in_channels, thumbnail=thumbnail, binary=binary)


@register_model("meliusnet")
def meliusnet22(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                clip_threshold: float = 1.3, pad_value: float = 0.0, scaling: str = "none",
                activation_gradient: str = "ste", weight_gradient: str = "larq") -> MeliusNet:
    """MeliusNet22: sections of 4, 5, 4, 4 block pairs, transitions to 160, 224, 256 channels (Larq Zoo 62.4% top-1)."""
    return _build((4, 5, 4, 4), (160, 224, 256, None), **locals())


@register_model("meliusnet")
def meliusnet_tiny(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                   clip_threshold: float = 1.3, pad_value: float = 0.0, scaling: str = "none",
                   activation_gradient: str = "ste", weight_gradient: str = "larq") -> MeliusNet:
    """A small MeliusNet (growth 16, one block pair a section, transitions to 48, 64, 80) for tests."""
    return _build((1, 1, 1, 1), (48, 64, 80, None), growth=16, **locals())

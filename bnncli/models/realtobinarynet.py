"""Real-to-Binary Net (Martinez et al., ICLR 2020), as Larq Zoo 2.4 builds its inference model
``RealToBinaryNet`` (``larq_zoo.literature``, the BNN stage: 65.01% top-1).

A ResNet-18 layout of 16 binary 3x3 convs, each with its own shortcut, whose outputs are scaled
per image and output channel by factors computed from the conv's real-valued input (a
squeeze-and-excite branch). In the order Larq Zoo creates its layers:

* stem: float conv 7x7 s2 (64, no bias) -> BN -> PReLU (one slope per channel) -> max pool 3x3 s2;
* half block (two a block, two blocks a stage; the first half of a stage after the first doubles
  the channels with stride 2, in Larq Zoo's blocks 4, 6 and 8): a shortcut (identity, or avg pool
  2x2 s2 -> float conv 1x1 -> BN where the channels change), then ``a = BN(x)``,
  ``y = BinaryConv3x3(a)`` (SteSign clip 1 on inputs and weights, weights clamped to [-1, 1], zero
  padding, no bias), and ``PReLU(y * sigmoid(W2 relu(W1 mean_hw(a)))) + shortcut``, with W1
  reducing the input channels 8-fold and W2 expanding to the output channels (both without bias);
* head: global average pool -> Linear.

Every BatchNorm has Keras' defaults (eps 1e-3, momentum 0.99 = PyTorch 0.01). Every padded layer
pads by TensorFlow's "same" rule under ``padding="tensorflow"`` (what imported models use); Larq
Zoo's shortcut average pools pad by that rule too, which on maps of odd size averages a partial
window that bnncli's unpadded pools do not (the same on the even maps of multiples of 32 px).
``thumbnail=True`` makes the stem a float conv 3x3 s1 -> BN -> PReLU, for 32 px inputs (Larq Zoo
has no such stem).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from bnncli.models._registry import register_model
from bnncli.models.common import BinaryOptions, build_with_options, check_common
from bnncli.models.resnete import Downsample
from bnncli.nn import ChannelScale, FloatConv2d, FloatLinear, MaxPool2d

# Keras' BatchNormalization defaults: epsilon 1e-3, momentum 0.99 = PyTorch momentum 0.01.
KERAS_BN: dict[str, Any] = {"eps": 1e-3, "momentum": 0.01}
SCALING_REDUCTION = 8  # Larq Zoo's scaling_r: the scaling branch's hidden width is C_in // 8


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, **KERAS_BN)


class Scaling(nn.Sequential):
    """The per-image output scales of a binary conv: global average pool -> Linear (C_in -> C_in / 8,
    no bias) -> ReLU -> Linear (-> C_out, no bias) -> sigmoid, ``[N, C_out]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = in_channels // SCALING_REDUCTION
        if hidden < 1:
            raise ValueError(f"the scaling branch needs at least {SCALING_REDUCTION} input channels, "
                             f"not {in_channels}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.reduce = FloatLinear(in_channels, hidden, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.expand = FloatLinear(hidden, out_channels, bias=False)
        self.sigmoid = nn.Sigmoid()


class HalfBlock(nn.Module):
    """``PReLU(BinaryConv3x3(BN(x)) * scaling(BN(x))) + shortcut(x)``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, binary: BinaryOptions) -> None:
        super().__init__()
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = Downsample(in_channels, out_channels, stride, None, _bn)
        self.bn = _bn(in_channels)
        self.conv = binary.conv(in_channels, out_channels, 3, stride=stride, padding=1)
        self.scaling = Scaling(in_channels, out_channels)
        self.scale = ChannelScale()
        self.prelu = nn.PReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        a = self.bn(x)
        return self.prelu(self.scale(self.conv(a), self.scaling(a))) + self.shortcut(x)


class Stem(nn.Sequential):
    """conv 7x7 s2 -> BN -> PReLU -> max pool 3x3 s2 (``thumbnail``: conv 3x3 s1 -> BN -> PReLU)."""

    def __init__(self, in_channels: int, width: int, thumbnail: bool) -> None:
        super().__init__()
        if thumbnail:
            self.conv = FloatConv2d(in_channels, width, 3, 1, 1, bias=False)
        else:
            self.conv = FloatConv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn = _bn(width)
        self.prelu = nn.PReLU(width)
        self.pool: nn.Module = nn.Identity() if thumbnail else MaxPool2d(3, 2, 1)


class RealToBinaryNet(nn.Module):
    def __init__(
        self,
        width: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        thumbnail: bool = False,
        binary: BinaryOptions = BinaryOptions(clip_threshold=1.0),
    ) -> None:
        super().__init__()
        check_common(num_classes, in_channels)
        self.stem = Stem(in_channels, width, thumbnail)
        halves: list[nn.Module] = []
        channels = width
        # Blocks of two half blocks, a stage after the first starting with one that doubles the
        # channels at stride 2 (Larq Zoo's blocks 2 to 9: 4, 6 and 8 downsample).
        for stage, n_blocks in enumerate(blocks):
            for i in range(n_blocks):
                downsample = stage > 0 and i == 0
                out = channels * 2 if downsample else channels
                halves.append(HalfBlock(channels, out, 2 if downsample else 1, binary))
                halves.append(HalfBlock(out, out, 1, binary))
                channels = out
        self.features = nn.Sequential(*halves)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = FloatLinear(channels, num_classes)
        self.num_features = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.features(self.stem(x)))))


def _build(width, blocks, **options) -> RealToBinaryNet:
    return build_with_options(RealToBinaryNet, width, blocks, **options)


@register_model("realtobinarynet")
def realtobinarynet(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                    clip_threshold: float = 1.0, pad_value: float = 0.0, scaling: str = "none",
                    activation_gradient: str = "ste", weight_gradient: str = "larq") -> RealToBinaryNet:
    """Larq Zoo's Real-to-Binary Net (65.01% top-1 after its multi-stage distillation): widths 64-512,
    16 binary 3x3 convs scaled per image by a squeeze-and-excite branch of their real-valued input."""
    return _build(64, (2, 2, 2, 2), **locals())


@register_model("realtobinarynet")
def realtobinarynet_tiny(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                         clip_threshold: float = 1.0, pad_value: float = 0.0, scaling: str = "none",
                         activation_gradient: str = "ste", weight_gradient: str = "larq") -> RealToBinaryNet:
    """A small Real-to-Binary Net (widths 16-128, one block of two scaled binary convs a stage) for tests."""
    return _build(16, (1, 1, 1, 1), **locals())

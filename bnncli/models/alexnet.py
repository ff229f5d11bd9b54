"""AlexNet-style binary networks as Larq Zoo 2.4 builds them (``larq_zoo.literature``):
XNOR-Net (Rastegari et al., 2016) and BinaryAlexNet (Hubara et al.'s "Binarized Neural Networks", 2016).

Both are AlexNet's five convolutions (11x11 stride 4, 5x5, three 3x3; 3x3 stride-2 max pools
without padding after the first, second and fifth) and a classifier of binary layers whose first
layer reads the whole 6x6 map left at 224 px. In the order Larq Zoo creates their layers:

* **XNOR-Net** (``xnornet``): float conv 11x11 s4 (96) -> BN -> ReLU -> max pool -> BN -> binary
  5x5 (256) -> max pool -> BN -> binary 3x3 (384) -> BN -> binary 3x3 (384) -> BN -> binary 3x3
  (256) -> max pool -> BN -> binary 6x6 "valid" (4096) -> BN -> binary 1x1 (4096) -> BN -> ReLU
  -> Linear without bias. Every binary conv scales its +-1 weights per output channel by
  alpha = mean|W| (Larq Zoo's ``xnor_weight_scale``: the latent weights, kept in [-1, 1], clipped
  to [-1, 1] first). BatchNorms have no scale (Keras ``scale=False``); eps 1e-5 for the first,
  1e-3 for the one before the last ReLU, 1e-4 for the others.
* **BinaryAlexNet** (``binary_alexnet``): binary 11x11 s4 (64) *on the float image* (+-1 weights,
  float input, zero padding) -> max pool -> BN -> binary 5x5 (192) -> max pool -> BN -> binary 3x3
  (384) -> BN -> binary 3x3 (384) -> BN -> binary 3x3 (256) -> max pool -> BN, then three binary
  dense layers (4096, 4096, classes), each followed by a BN; the logits are the last BN's output.
  Larq Zoo flattens the 6x6x256 map (Keras ``Reshape``, channels last) and runs 1x1 convs on it;
  here the first dense layer is a binary 6x6 conv over the map (:class:`FlattenedBinaryConv2d`),
  the same sum of +-1 products. BatchNorms have no scale, Keras' eps 1e-3.

Binary convs: SteSign with clip 1 on inputs and weights, latent weights clamped to [-1, 1]
(Larq's ``weight_clip``), zero padding ("same" for the 11x11, 5x5 and 3x3 convs). BatchNorm
momentum 0.9 (PyTorch 0.1).

At 224 px the classifier's first layer leaves a 1x1 map; a global average pool before the
flatten (the identity there) lets other sizes run: at 217-248 px it is Larq Zoo's network exactly,
above it averages the classifier over positions. ``thumbnail=True`` (for 32 px inputs; Larq Zoo
has no such stem) makes the first conv 3x3 stride 1 and drops the max pool after it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from bnncli.models._registry import register_model
from bnncli.models.common import BinaryOptions, build_with_options, check_common
from bnncli.nn import BinaryConv2d, FloatConv2d, FloatLinear, UnscaledBatchNorm2d

# Keras' BatchNormalization momentum 0.9 is PyTorch's 0.1.
MOMENTUM = 0.1


class FlattenedBinaryConv2d(BinaryConv2d):
    """A binary dense layer over a whole feature map, computed as a binary conv whose kernel covers
    the map ("valid", so a 1x1 output at the size it was built for). Larq Zoo's BinaryAlexNet stores
    it as a 1x1 conv on the channels-last flattened map, kernel ``[1, 1, kh * kw * C, out]``:
    ``bnn import larq`` reorders it into ``[out, C, kh, kw]`` (the only difference from BinaryConv2d)."""


def _bn(channels: int, eps: float) -> UnscaledBatchNorm2d:
    return UnscaledBatchNorm2d(channels, eps=eps, momentum=MOMENTUM)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, 2)


class XNORNet(nn.Module):
    """XNOR-Net, in Larq Zoo's layer order (see the module docstring)."""

    def __init__(self, widths: Sequence[int], fc_width: int, head_kernel: int, *, num_classes: int = 1000,
                 in_channels: int = 3, thumbnail: bool = False,
                 binary: BinaryOptions = BinaryOptions(clip_threshold=1.0, scaling="xnor")) -> None:
        super().__init__()
        check_common(num_classes, in_channels)
        if len(widths) != 5:
            raise ValueError("XNOR-Net has five convolution widths")
        w0, w1, w2, w3, w4 = widths
        kernel, stride = (3, 1) if thumbnail else (11, 4)
        self.conv1 = FloatConv2d(in_channels, w0, kernel, stride, kernel // 2, bias=False)
        self.bn1 = _bn(w0, 1e-5)
        self.relu1 = nn.ReLU(inplace=False)
        self.pool1 = nn.Identity() if thumbnail else _pool()
        self.bn2 = _bn(w0, 1e-4)
        self.conv2 = binary.conv(w0, w1, 5, padding=2)
        self.pool2 = _pool()
        self.bn3 = _bn(w1, 1e-4)
        self.conv3 = binary.conv(w1, w2, 3, padding=1)
        self.bn4 = _bn(w2, 1e-4)
        self.conv4 = binary.conv(w2, w3, 3, padding=1)
        self.bn5 = _bn(w3, 1e-4)
        self.conv5 = binary.conv(w3, w4, 3, padding=1)
        self.pool5 = _pool()
        self.bn6 = _bn(w4, 1e-4)
        self.fc6 = binary.conv(w4, fc_width, head_kernel)
        self.bn7 = _bn(fc_width, 1e-4)
        self.fc7 = binary.conv(fc_width, fc_width, 1)
        self.bn8 = _bn(fc_width, 1e-3)
        self.relu8 = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = FloatLinear(fc_width, num_classes, bias=False)
        self.num_features = fc_width

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.conv2(self.bn2(x)))
        x = self.conv3(self.bn3(x))
        x = self.conv4(self.bn4(x))
        x = self.pool5(self.conv5(self.bn5(x)))
        x = self.fc6(self.bn6(x))
        x = self.relu8(self.bn8(self.fc7(self.bn7(x))))
        return self.fc(self.flatten(self.pool(x)))


class BinaryAlexNet(nn.Module):
    """BinaryAlexNet, in Larq Zoo's layer order (see the module docstring)."""

    def __init__(self, widths: Sequence[int], fc_width: int, head_kernel: int, *, num_classes: int = 1000,
                 in_channels: int = 3, thumbnail: bool = False,
                 binary: BinaryOptions = BinaryOptions(clip_threshold=1.0)) -> None:
        super().__init__()
        check_common(num_classes, in_channels)
        if len(widths) != 5:
            raise ValueError("BinaryAlexNet has five convolution widths")
        w0, w1, w2, w3, w4 = widths
        kernel, stride = (3, 1) if thumbnail else (11, 4)
        eps = 1e-3
        # Binary weights on the float image, zero padded whatever pad_value the binary convs use.
        self.conv1 = BinaryConv2d(in_channels, w0, kernel, stride, kernel // 2, binary_input=False,
                                  clip_threshold=binary.clip_threshold, weight_gradient=binary.weight_gradient,
                                  scaling=binary.scaling)
        self.pool1 = nn.Identity() if thumbnail else _pool()
        self.bn1 = _bn(w0, eps)
        self.conv2 = binary.conv(w0, w1, 5, padding=2)
        self.pool2 = _pool()
        self.bn2 = _bn(w1, eps)
        self.conv3 = binary.conv(w1, w2, 3, padding=1)
        self.bn3 = _bn(w2, eps)
        self.conv4 = binary.conv(w2, w3, 3, padding=1)
        self.bn4 = _bn(w3, eps)
        self.conv5 = binary.conv(w3, w4, 3, padding=1)
        self.pool5 = _pool()
        self.bn5 = _bn(w4, eps)
        self.fc6 = FlattenedBinaryConv2d(w4, fc_width, head_kernel, pad_value=binary.pad_value,
                                         clip_threshold=binary.clip_threshold,
                                         activation_gradient=binary.activation_gradient,
                                         weight_gradient=binary.weight_gradient, scaling=binary.scaling)
        self.bn6 = _bn(fc_width, eps)
        self.fc7 = binary.conv(fc_width, fc_width, 1)
        self.bn7 = _bn(fc_width, eps)
        self.fc8 = binary.conv(fc_width, num_classes, 1)
        self.bn8 = _bn(num_classes, eps)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.num_features = fc_width

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.pool1(self.conv1(x)))
        x = self.bn2(self.pool2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        x = self.bn4(self.conv4(x))
        x = self.bn5(self.pool5(self.conv5(x)))
        x = self.bn6(self.fc6(x))
        x = self.bn7(self.fc7(x))
        x = self.bn8(self.fc8(x))
        return self.flatten(self.pool(x))


@register_model("alexnet")
def xnornet(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
            clip_threshold: float = 1.0, pad_value: float = 0.0, scaling: str = "xnor",
            activation_gradient: str = "ste", weight_gradient: str = "larq") -> XNORNet:
    """XNOR-Net: AlexNet with XNOR-scaled binary convs and classifier (Larq Zoo 44.96% top-1)."""
    return build_with_options(XNORNet, (96, 256, 384, 384, 256), 4096, 6, **locals())


@register_model("alexnet")
def xnornet_tiny(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                 clip_threshold: float = 1.0, pad_value: float = 0.0, scaling: str = "xnor",
                 activation_gradient: str = "ste", weight_gradient: str = "larq") -> XNORNet:
    """A small XNOR-Net (widths 16-48, a 64-wide classifier whose first layer is 1x1) for tests and
    the CPU demo; without the thumbnail stem it takes 57-88 px inputs as Larq Zoo's would."""
    return build_with_options(XNORNet, (16, 32, 48, 48, 32), 64, 1, **locals())


@register_model("alexnet")
def binary_alexnet(*, num_classes: int = 1000, in_channels: int = 3, thumbnail: bool = False,
                   clip_threshold: float = 1.0, pad_value: float = 0.0, scaling: str = "none",
                   activation_gradient: str = "ste", weight_gradient: str = "larq") -> BinaryAlexNet:
    """BinaryAlexNet: AlexNet with binary weights everywhere, binary activations after the first
    conv, binary classifier (Larq Zoo 36.30% top-1)."""
    return build_with_options(BinaryAlexNet, (64, 192, 384, 384, 256), 4096, 6, **locals())


@register_model("alexnet")
def binary_alexnet_tiny(*, num_classes: int = 10, in_channels: int = 3, thumbnail: bool = True,
                        clip_threshold: float = 1.0, pad_value: float = 0.0, scaling: str = "none",
                        activation_gradient: str = "ste", weight_gradient: str = "larq") -> BinaryAlexNet:
    """A small BinaryAlexNet (widths 16-48, 64-wide dense layers, the first over a 1x1 map) for
    tests and the CPU demo; without the thumbnail stem it takes 57-88 px inputs as Larq Zoo's would."""
    return build_with_options(BinaryAlexNet, (16, 32, 48, 48, 32), 64, 1, **locals())

"""Quantizers and binary layers."""

from bnncli.nn.channels import ChannelScale, ChannelSlice
from bnncli.nn.float_layers import (
    FLOAT_WEIGHTS,
    FloatConv2d,
    FloatLinear,
    is_float_layer,
    round_to_float16,
    set_float_weights,
)
from bnncli.nn.layers import PAD_VALUES, SCALINGS, BinaryConv2d, LatentWeightClamp, clamp_latent_weights
from bnncli.nn.norm import UnscaledBatchNorm2d
from bnncli.nn.padding import PADDINGS, MaxPool2d, set_padding
from bnncli.nn.quantizers import (
    ACTIVATION_GRADIENTS,
    WEIGHT_GRADIENTS,
    ApproxSign,
    IdentitySteSign,
    SteSign,
    approx_sign,
    binary_sign,
    ste_sign,
)

__all__ = [
    "ACTIVATION_GRADIENTS",
    "FLOAT_WEIGHTS",
    "PADDINGS",
    "PAD_VALUES",
    "SCALINGS",
    "WEIGHT_GRADIENTS",
    "ApproxSign",
    "BinaryConv2d",
    "ChannelScale",
    "ChannelSlice",
    "FloatConv2d",
    "FloatLinear",
    "MaxPool2d",
    "IdentitySteSign",
    "LatentWeightClamp",
    "SteSign",
    "UnscaledBatchNorm2d",
    "approx_sign",
    "binary_sign",
    "clamp_latent_weights",
    "is_float_layer",
    "round_to_float16",
    "set_float_weights",
    "set_padding",
    "ste_sign",
]

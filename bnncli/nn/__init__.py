"""Quantizers and binary layers."""

from bnncli.nn.layers import PAD_VALUES, SCALINGS, BinaryConv2d, clamp_latent_weights
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
    "PAD_VALUES",
    "SCALINGS",
    "WEIGHT_GRADIENTS",
    "ApproxSign",
    "BinaryConv2d",
    "IdentitySteSign",
    "SteSign",
    "approx_sign",
    "binary_sign",
    "clamp_latent_weights",
    "ste_sign",
]

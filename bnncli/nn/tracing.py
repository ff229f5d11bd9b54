"""One torch.fx tracer for every consumer of a model's structure.

The checkpoint's architecture record (bnncli.artifacts.architecture) and the lowering to the
shared graph (bnncli.deploy.lowering) both trace a model with :class:`Tracer`: bnncli's layers
(binary convs, float-weight layers, padding-rule layers, channel slices and scales, unscaled
BatchNorms) are leaves, like torch.nn's own, so a model becomes a flat list of leaf-module calls and
functions (``torch.cat``, ``+``).
"""

from __future__ import annotations

from torch import fx, nn

from bnncli.nn.channels import ChannelScale, ChannelSlice
from bnncli.nn.float_layers import is_float_layer
from bnncli.nn.layers import BinaryConv2d
from bnncli.nn.norm import UnscaledBatchNorm2d
from bnncli.nn.padding import PaddingRule


class Tracer(fx.Tracer):
    """torch.fx's tracer, with bnncli's layers kept whole."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (BinaryConv2d, PaddingRule, ChannelSlice, ChannelScale, UnscaledBatchNorm2d)) \
            or is_float_layer(m) \
            or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.Graph:
    """The fx graph of ``model``'s forward (its leaf modules called by qualified name)."""
    return Tracer().trace(model)

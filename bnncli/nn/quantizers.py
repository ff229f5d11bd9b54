"""Sign quantizers with their straight-through gradients.

One binarization scheme everywhere: sign(x) = +1 if x >= 0 else -1, so sign(0) = +1
(torch.sign gives 0 there and must not be used bare). Each quantizer is a function with
a custom backward, wrapped in a small named object that can be selected by string.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bnncli.errors import UsageError


def binary_sign(x: Tensor) -> Tensor:
    """sign with sign(0) = +1 (and -0.0 -> +1, NaN -> -1), same dtype as ``x``; no gradient of its own.

    Two formulations of the same values: on CPU in eager mode ``2 * (x >= 0) - 1`` in place,
    because the CPU kernel of ``torch.where`` with scalar operands is not vectorized (about 4x
    slower than the whole chain); elsewhere, and whenever torch.compile traces it, one ``where``,
    which a GPU runs in one pass and the compiler fuses with its neighbours.
    """
    if x.device.type == "cpu" and not torch.compiler.is_compiling():
        return (x >= 0).to(x.dtype).mul_(2).sub_(1)
    one = x.new_ones(())  # 0-dim operands broadcast: no full-size temporaries
    return torch.where(x >= 0, one, -one)


class _SteSign(torch.autograd.Function):
    """Forward sign; backward identity where |x| <= t, zero elsewhere (t = inf: plain identity)."""

    @staticmethod
    def forward(ctx, x: Tensor, threshold: float) -> Tensor:
        ctx.clipped = threshold != float("inf")
        if ctx.clipped:
            # Keep a 1-byte mask rather than the input: a quarter of the memory of fp32.
            ctx.save_for_backward(x.abs() <= threshold)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if not ctx.clipped:
            return grad, None
        (inside,) = ctx.saved_tensors
        return grad * inside, None


class _ApproxSign(torch.autograd.Function):
    """Bi-Real's ApproxSign: forward sign; backward (2 - 2|x|) for |x| <= 1, else 0."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)


def ste_sign(x: Tensor, threshold: float = 1.0) -> Tensor:
    """Sign with a straight-through gradient, cancelled where |x| > threshold."""
    return _SteSign.apply(x, float(threshold))


def approx_sign(x: Tensor) -> Tensor:
    """Sign with Bi-Real's piecewise-linear ApproxSign gradient."""
    return _ApproxSign.apply(x)


class Quantizer(nn.Module):
    """Base of the named quantizers; ``name`` is what configs and checkpoints record."""

    name = "quantizer"

    def extra_repr(self) -> str:
        return self.name


class SteSign(Quantizer):
    """Activation/weight sign with straight-through gradient clipped at ``threshold``."""

    name = "ste"

    def __init__(self, threshold: float = 1.0) -> None:
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, x: Tensor) -> Tensor:
        return ste_sign(x, self.threshold)

    def extra_repr(self) -> str:
        return f"ste, threshold={self.threshold}"


class IdentitySteSign(Quantizer):
    """BMXNet weight variant: sign forward, identity gradient, no clipping."""

    name = "identity"

    def forward(self, x: Tensor) -> Tensor:
        return ste_sign(x, float("inf"))


class ApproxSign(Quantizer):
    """Bi-Real ApproxSign (ablation; the paper finds no gain over the STE)."""

    name = "approxsign"

    def forward(self, x: Tensor) -> Tensor:
        return approx_sign(x)


ACTIVATION_GRADIENTS = ("ste", "approxsign")
WEIGHT_GRADIENTS = ("larq", "bmxnet")


def activation_quantizer(gradient: str, threshold: float) -> Quantizer:
    """The input quantizer of a binary conv: ``ste`` (clipped at threshold) or ``approxsign``."""
    if gradient == "ste":
        return SteSign(threshold)
    if gradient == "approxsign":
        return ApproxSign()
    raise UsageError(
        f"unknown activation gradient {gradient!r}; choose one of {', '.join(ACTIVATION_GRADIENTS)}"
    )


def weight_quantizer(variant: str, threshold: float) -> Quantizer:
    """The weight quantizer: ``larq`` (gradient cancelled for |w| > t, latent weights clamped
    after each step by :func:`bnncli.nn.layers.clamp_latent_weights`) or ``bmxnet`` (identity)."""
    if variant == "larq":
        return SteSign(threshold)
    if variant == "bmxnet":
        return IdentitySteSign()
    raise UsageError(f"unknown weight gradient {variant!r}; choose one of {', '.join(WEIGHT_GRADIENTS)}")

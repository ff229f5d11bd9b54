"""Parameter and MAC counts, as the paper and Larq Zoo count them.

Binary MACs are those of :class:`BinaryConv2d` on binarized input; full-precision MACs those of
float convs and linear layers (the classifier included) and of binary convs on float input
(BinaryAlexNet's first conv: 1-bit weights, float MACs, as larq counts it). OPs follow the
authors: binary MACs / 64 plus the full-precision MACs without the classifier. Sizes count
trainable parameters only: binary weights at 1 bit, everything else at 32 bits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from bnncli.errors import UsageError
from bnncli.models.zoo import CountsMixin
from bnncli.nn import BinaryConv2d


@dataclass(frozen=True)
class ModelStats(CountsMixin):
    params: int
    params_with_bn_stats: int
    binary_params: int
    binary_macs: int
    fp_macs: int
    fc_macs: int
    image_size: int

    def as_dict(self) -> dict:
        return {**asdict(self), "ops": self.ops, "size_bytes": self.size_bytes}


def _conv_macs(module: Any, out: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    groups = getattr(module, "groups", 1)
    return out[0].numel() * (module.in_channels // groups) * kh * kw


def count_model(model: nn.Module, image_size: int = 224, in_channels: int | None = None) -> ModelStats:
    """Count parameters and MACs of ``model`` for one image of ``image_size`` squared.

    The forward pass runs on the meta device, so it costs no compute or memory.
    """
    params = sum(int(p.numel()) for p in model.parameters() if p.requires_grad)
    bn_stats = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            bn_stats += m.running_mean.numel() + (m.running_var.numel() if m.running_var is not None else 0)
    binary_params = sum(int(m.weight.numel()) for m in model.modules() if isinstance(m, BinaryConv2d))
    if in_channels is None:
        first = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, BinaryConv2d)))
        in_channels = first.in_channels

    totals = {"binary": 0, "fp": 0, "fc": 0}

    def hook(module: nn.Module, _inp, out) -> None:
        if isinstance(module, BinaryConv2d):
            totals["binary" if module.binary_input else "fp"] += _conv_macs(module, out)
        elif isinstance(module, nn.Conv2d):
            totals["fp"] += _conv_macs(module, out)
        elif isinstance(module, nn.Linear):
            macs = out[0].numel() * module.in_features
            totals["fp"] += macs
            totals["fc"] += macs

    meta_model = _to_meta(model)
    counted: list[nn.Module] = [m for m in meta_model.modules() if isinstance(m, (BinaryConv2d, nn.Conv2d, nn.Linear))]
    _forward_with_hook(meta_model, counted, hook, in_channels, image_size)
    return ModelStats(
        params=params,
        params_with_bn_stats=params + bn_stats,
        binary_params=binary_params,
        binary_macs=totals["binary"],
        fp_macs=totals["fp"],
        fc_macs=totals["fc"],
        image_size=image_size,
    )


def _forward_with_hook(meta_model: nn.Module, modules: list[nn.Module], hook, in_channels: int,
                       image_size: int) -> None:
    """One forward pass of a meta-device model on one image, ``hook`` registered on ``modules``
    meanwhile; UsageError when the image is too small for the model (see :func:`check_image_size`)."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            meta_model(torch.empty(1, in_channels, image_size, image_size, device="meta"))
    except RuntimeError as e:
        arch = getattr(meta_model, "bnn_arch", None) or type(meta_model).__name__
        raise UsageError(f"{arch} cannot take {image_size}x{image_size} inputs: its layers do not fit the maps of "
                         f"that size ({str(e).splitlines()[0]})") from None
    finally:
        for h in handles:
            h.remove()


def check_image_size(model: nn.Module, image_size: int, in_channels: int | None = None) -> None:
    """UsageError naming the model and the size when a forward pass at ``image_size`` squared fails:
    a map shrinks below a layer's window (XNOR-Net and BinaryAlexNet, whose pools and classifier
    read unpadded windows, need at least 217 px without their thumbnail stem, their tiny variants
    57 px) or a residual's two branches differ in size (ResNetE at 100 px). Runs on the meta device."""
    meta_model = _to_meta(model)
    if in_channels is None:
        in_channels = next(m for m in meta_model.modules() if isinstance(m, (nn.Conv2d, BinaryConv2d))).in_channels
    _forward_with_hook(meta_model, [], lambda *_: None, in_channels, image_size)


def _to_meta(model: nn.Module) -> nn.Module:
    import copy

    if all(p.device.type == "meta" for p in model.parameters()):
        return model.eval()
    clone = copy.deepcopy(model).to("meta")
    return clone.eval()


@dataclass(frozen=True)
class LayerStats:
    """One leaf layer of a model for one image: what :func:`layer_summary` lists."""

    name: str  # the module's path in the model ("" for a model that is one layer)
    type: str  # the module's class name
    kind: str  # "binary" (a BinaryConv2d), "float" (other layers with weights), "-" (no weights)
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int  # trainable parameters
    binary_macs: int
    fp_macs: int

    @property
    def size_bytes(self) -> float:
        """The trainable parameters at 1 bit (binary weights) and 32 bits (the rest), in bytes."""
        binary = self.params if self.kind == "binary" else 0
        return binary / 8 + 4 * (self.params - binary)

    def as_dict(self) -> dict:
        return {**asdict(self), "output_shape": list(self.output_shape), "size_bytes": self.size_bytes}


def _leaf_kind(module: nn.Module) -> str:
    if isinstance(module, BinaryConv2d):
        return "binary"
    return "float" if any(p.requires_grad for p in module.parameters(recurse=False)) else "-"


def layer_summary(model: nn.Module, image_size: int = 224, in_channels: int | None = None) -> list[LayerStats]:
    """Every leaf layer (a module without children, or a BinaryConv2d with its quantizers) in the order the forward
    pass runs it, with its output shape, parameters and MACs for one ``image_size`` squared image
    (counted as :func:`count_model` counts them; the rows add up to its totals). A layer run
    twice gets two rows. Runs on the meta device."""
    meta_model = _to_meta(model)
    if in_channels is None:
        in_channels = next(m for m in meta_model.modules() if isinstance(m, (nn.Conv2d, BinaryConv2d))).in_channels
    names = {m: n for n, m in meta_model.named_modules()}
    rows: list[LayerStats] = []

    def hook(module: nn.Module, _inp, out) -> None:
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
        binary = _conv_macs(module, out) if isinstance(module, BinaryConv2d) and module.binary_input else 0
        fp = 0
        if isinstance(module, nn.Conv2d) or (isinstance(module, BinaryConv2d) and not module.binary_input):
            fp = _conv_macs(module, out)
        elif isinstance(module, nn.Linear):
            fp = out[0].numel() * module.in_features
        params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        rows.append(LayerStats(names[module], type(module).__name__, _leaf_kind(module), shape, params, binary, fp))

    inside_binary = {id(c) for m in meta_model.modules() if isinstance(m, BinaryConv2d)
                     for c in m.modules() if c is not m}
    leaves = [m for m in meta_model.modules() if id(m) not in inside_binary
              and (isinstance(m, BinaryConv2d) or not any(True for _ in m.children()))]
    _forward_with_hook(meta_model, leaves, hook, in_channels, image_size)
    return rows

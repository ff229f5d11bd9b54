"""``bnn import larq``: Larq Zoo's Keras weights (HDF5) -> an ordinary bnncli checkpoint.

Larq Zoo trained the paper's models, QuickNet, Bi-Real Net, MeliusNet, Real-to-Binary Net, XNOR-Net
and BinaryAlexNet in TensorFlow and published their ImageNet weights as Keras HDF5 files; its
architectures equal bnncli's to the parameter (binarydensenet*, resnete18, quicknet_small /
quicknet / quicknet_large, birealnet_larq, meliusnet22, realtobinarynet, xnornet, binary_alexnet).
Three details make a converted model compute what the Keras one computes:

* **padding**: Keras pads its stride-2 layers by TensorFlow's "same" rule, unevenly, so the model
  is built with ``padding="tensorflow"`` (bnncli.nn.padding);
* **pairing**: layers are matched by Keras class (``quant_conv2d``, ``conv2d``, ``batch_normalization``,
  ``dense``, ...; Keras numbers each class's layers in the order they are created, which the
  suffixes of their names give, bnncli.convert.keras_h5), and bnncli's modules are listed in the
  order Larq Zoo creates them (a ResNetE shortcut before its block's main branch). Which Keras
  class a module is depends on the family: QuickNet's float convs and classifier are QuantConv2D
  and QuantDense layers without quantizers, so there ``quant_conv2d`` counts binary and float convs
  alike. Every shape is checked; the first layer that does not fit is named.
* **precision**: the float layers stay float32 (``float_weights="float32"``), as trained; the
  classifier's softmax is left out (bnncli models return logits).

Layouts: Keras kernels are ``[kh, kw, Cin, Cout]`` (convs) and ``[in, out]`` (dense); PyTorch's
``[Cout, Cin, kh, kw]`` and ``[out, in]``. BinaryAlexNet's first dense layer is a 1x1 conv on the
channels-last flattened map, ``[1, 1, kh * kw * C, out]``, which becomes a ``[out, C, kh, kw]``
conv over the map. XNOR-Net's binary latent kernels are clamped to [-1, 1] on import: its kernel
quantizer clips them so before taking their mean magnitude (the signs are unchanged).
BatchNorm's gamma, beta, moving mean and variance are PyTorch's weight, bias, running mean and
var (a BatchNorm without scale, Keras ``scale=False``, has no gamma and no weight).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from bnncli import __version__
from bnncli.artifacts.checkpoint import model_checkpoint, save_checkpoint
from bnncli.artifacts.rundir import check_model_output
from bnncli.convert.keras_h5 import KerasLayer, KerasWeights, open_keras_weights
from bnncli.convert.published import NOT_IMPORTED, PUBLISHED, Published  # noqa: F401  (part of this module's API)
from bnncli.data.presets import preprocessing
from bnncli.errors import ArtifactError, UsageError
from bnncli.images.labels import imagenet_names
from bnncli.models import check_image_size, create_model, list_models, model_family
from bnncli.models.alexnet import FlattenedBinaryConv2d
from bnncli.models.meliusnet import DenseBlock, ImprovementBlock, MeliusNet
from bnncli.models.meliusnet import Transition as MeliusTransition
from bnncli.models.quicknet import BlurPool2d
from bnncli.models.realtobinarynet import HalfBlock, RealToBinaryNet
from bnncli.models.resnete import BasicBlockE, Downsample
from bnncli.nn import BinaryConv2d

# The registry families whose structure Larq Zoo's factories build, and single models of other
# families that Larq Zoo builds (birealnet18 is the Bi-Real paper's, with PyTorch's BatchNorm eps).
FAMILIES = ("binarydensenet", "resnete", "quicknet", "meliusnet", "realtobinarynet", "alexnet")
MODELS = ("birealnet_larq", "birealnet_larq_tiny")
# Families whose Keras layers Larq Zoo names itself ("stem_s0_conv", "section_0_block_0_dense_bn";
# "r2b_bnn_block_2a_conv2d"): paired by those names, not by class and creation order.
NAMED_FAMILIES = ("meliusnet", "realtobinarynet")
# Models whose stride-2 pools Larq Zoo pads by TensorFlow's "same" rule while bnncli's do not pad
# (the same where the maps they read have even sizes): Bi-Real Net's and Real-to-Binary Net's
# shortcut average pools.
SAME_POOLS = ("birealnet_larq", "birealnet_larq_tiny", "realtobinarynet", "realtobinarynet_tiny")
# The layer that marks a file of a named family, and what messages call the family.
R2B_STEM = "_block_1_conv2d"  # "<model name>_block_1_conv2d": Real-to-Binary Net's stem conv
NAMED_LABELS = {"meliusnet": "MeliusNet", "realtobinarynet": "Real-to-Binary Net"}
# Models whose Larq Zoo kernel quantizer clips the latent weights to [-1, 1] before scaling them by
# their mean magnitude (XNOR-Net's xnor_weight_scale): their kernels are clamped so on import.
CLIPPED_KERNELS = ("xnornet", "xnornet_tiny")


IMPORT_OPTIONS: dict[str, Any] = {"padding": "tensorflow", "float_weights": "float32"}
# Options a family's import sets (Larq pads binary convs with 0; QuickNet with +1, its default).
FAMILY_OPTIONS: dict[str, dict[str, Any]] = {"binarydensenet": {"pad_value": 0.0}, "resnete": {"pad_value": 0.0}}
# Keras layer class prefix (its default name) -> the weights its layers hold.
WEIGHTS = {
    "quant_conv2d": ("kernel",), "conv2d": ("kernel",),
    "quant_depthwise_conv2d": ("depthwise_kernel",), "depthwise_conv2d": ("depthwise_kernel",),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"), "quant_dense": ("kernel", "bias"), "p_re_lu": ("alpha",),
}
# What the layers of each Keras class are, in messages.
LABELS = {"quant_conv2d": "binary conv", "conv2d": "conv", "quant_depthwise_conv2d": "depthwise conv",
          "depthwise_conv2d": "blur pool", "batch_normalization": "BatchNorm", "dense": "dense",
          "quant_dense": "dense", "p_re_lu": "PReLU"}
# Where a family builds a module kind with another Keras class: QuickNet's float convs and classifier
# are QuantConv2D / QuantDense without quantizers, its depthwise stem conv a QuantDepthwiseConv2D.
FAMILY_CLASSES: dict[str, dict[str, str]] = {
    "quicknet": {"conv": "quant_conv2d", "depthwise conv": "quant_depthwise_conv2d", "dense": "quant_dense"},
}
_DEFAULT_CLASSES = {"binary conv": "quant_conv2d", "flattened binary conv": "quant_conv2d", "conv": "conv2d",
                    "depthwise conv": "depthwise_conv2d", "blur pool": "depthwise_conv2d",
                    "BatchNorm": "batch_normalization", "dense": "dense", "PReLU": "p_re_lu"}


def importable_models() -> list[str]:
    """Registered models whose structure Larq Zoo's factories build (the tiny ones included)."""
    return [name for name in list_models() if model_family(name) in FAMILIES or name in MODELS]


# --- bnncli's side: modules in Larq Zoo's creation order ------------------------------------


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, FlattenedBinaryConv2d):
        return "flattened binary conv"
    if isinstance(m, BinaryConv2d):
        return "binary conv"
    if isinstance(m, BlurPool2d):
        return "blur pool"
    if isinstance(m, nn.Conv2d):
        return "depthwise conv" if m.groups > 1 else "conv"
    if isinstance(m, nn.BatchNorm2d):
        return "BatchNorm"
    if isinstance(m, nn.Linear):
        return "dense"
    if isinstance(m, nn.PReLU):
        return "PReLU"
    return None


def keras_class(kind: str, family: str) -> str:
    """The Keras class (its default layer name) that Larq Zoo builds a module of ``kind`` with in ``family``."""
    return FAMILY_CLASSES.get(family, {}).get(kind, _DEFAULT_CLASSES[kind])


def keras_order(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, str, nn.Module]]:
    """(kind, qualified name, module) of every layer with weights, in the order Larq Zoo creates them."""
    children = list(module.named_children())
    if isinstance(module, BasicBlockE):  # larq_zoo's residual_block builds the shortcut first
        children.sort(key=lambda kv: kv[0] != "shortcut")
    for name, child in children:
        kind = _kind(child)
        if kind is not None:
            yield kind, prefix + name, child
        else:
            yield from keras_order(child, f"{prefix}{name}.")


def _expected_shapes(kind: str, m: Any) -> dict[str, tuple[int, ...]]:
    if kind in ("binary conv", "conv"):
        cout, cin, kh, kw = m.weight.shape
        return {"kernel": (kh, kw, cin, cout)}
    if kind == "flattened binary conv":  # a 1x1 conv on the channels-last flattened map
        cout, cin, kh, kw = m.weight.shape
        return {"kernel": (1, 1, kh * kw * cin, cout)}
    if kind in ("depthwise conv", "blur pool"):
        cout, cin_g, kh, kw = m.weight.shape
        if cin_g != 1:
            raise ArtifactError(f"a {kind} with {cin_g} input channels per group has no Keras counterpart")
        return {"depthwise_kernel": (kh, kw, cout, 1)}
    if kind == "BatchNorm":  # gamma and beta where the BatchNorm has a scale and a centre
        c = m.num_features
        roles = ("gamma",) * (m.weight is not None) + ("beta",) * (m.bias is not None)
        return {k: (c,) for k in (*roles, "moving_mean", "moving_variance")}
    if kind == "PReLU":  # Keras' PReLU with shared_axes=[1, 2]: one slope per channel
        return {"alpha": (1, 1, int(m.weight.numel()))}
    out_f, in_f = m.weight.shape
    if m.bias is None:  # Real-to-Binary Net's scaling branches, XNOR-Net's classifier
        return {"kernel": (in_f, out_f)}
    return {"kernel": (in_f, out_f), "bias": (out_f,)}


# --- the file's side ---------------------------------------------------------------------------


def _by_kind(weights: KerasWeights) -> dict[str, list[KerasLayer]]:
    """The file's layers per Keras class in creation order; refuses classes no Larq Zoo model of bnncli's has."""
    groups: dict[str, list[KerasLayer]] = {base: [] for base in WEIGHTS}
    for layer in weights.layers:
        if layer.base not in groups:
            raise ArtifactError(f"{weights.path}: layer {layer.name} is of a kind no bnncli model has "
                                f"(expected {', '.join(WEIGHTS)} layers)")
        groups[layer.base].append(layer)
    for layers in groups.values():
        layers.sort(key=lambda la: la.index)
        seen: dict[Any, Any] = {}
        for la in layers:
            if la.index in seen:
                raise ArtifactError(f"{weights.path}: layers {seen[la.index]} and {la.name} claim the same "
                                    f"creation index, so their order is unknown")
            seen[la.index] = la.name
    return groups


def _shape_problem(layer: KerasLayer, expected: dict[str, tuple[int, ...]], arch: str, qualname: str,
                   kind: str) -> str | None:
    """Why ``layer``'s weights do not fit a module that takes ``expected`` (role -> shape), or None."""
    if set(layer.shapes) != set(expected):
        return (f"layer {layer.name} holds {', '.join(sorted(layer.shapes))}; {arch}'s {qualname} ({kind}) needs "
                f"{', '.join(sorted(expected))}")
    for role, shape in expected.items():
        if layer.shapes[role] != shape:
            return (f"layer {layer.name} does not fit {arch}'s {qualname}: {role} is {list(layer.shapes[role])}, "
                    f"expected {list(shape)}")
    return None


@dataclass
class Pairing:
    """How a file's layers pair with a model's modules: ``pairs`` in the model's order, or ``problem``."""

    pairs: list[tuple[str, Any, KerasLayer | list[KerasLayer]]]
    problem: str | None


def pair_layers(model: nn.Module, groups: dict[str, list[KerasLayer]], arch: str) -> Pairing:
    """Pair per Keras class by creation order and check names and shapes; the first misfit in model order."""
    family = model_family(arch)
    modules = [(kind, keras_class(kind, family), qualname, m) for kind, qualname, m in keras_order(model)]
    taken = {base: 0 for base in WEIGHTS}
    pairs: list[tuple[str, Any, KerasLayer | list[KerasLayer]]] = []

    def label(base: str) -> str:
        kinds = sorted({kind for kind, b, _, _ in modules if b == base})
        return " or ".join(kinds) if kinds else LABELS[base]

    for kind, base, qualname, m in modules:
        i = taken[base]
        taken[base] += 1
        if i >= len(groups[base]):
            return Pairing(pairs, f"the file has {len(groups[base])} {label(base)} layers, {arch} needs "
                                  f"{sum(b == base for _, b, _, _ in modules)}: none for {qualname}")
        layer = groups[base][i]
        problem = _shape_problem(layer, _expected_shapes(kind, m), arch, qualname, kind)
        if problem is not None:
            return Pairing(pairs, problem)
        pairs.append((qualname, m, layer))
    for base, layers in groups.items():
        if taken[base] < len(layers):
            return Pairing(pairs, f"layer {layers[taken[base]].name} is one {label(base)} more than {arch} has")
    return Pairing(pairs, None)


def meliusnet_names(model: MeliusNet) -> list[tuple[str, str, nn.Module, list[str]]]:
    """(kind, qualified name, module, Keras layer names) of a MeliusNet in Larq Zoo's order; a
    grouped conv is one Keras Conv2D per group (``stem_s1_groupconv_conv0`` ...)."""
    stem = model.stem
    out: list[tuple[str, str, nn.Module, list[str]]] = [("conv", "stem.conv0", stem.conv0, ["stem_s0_conv"])]
    for i, conv in ((1, stem.conv1), (2, stem.conv2)):
        out.append(("BatchNorm", f"stem.bn{i - 1}", getattr(stem, f"bn{i - 1}"), [f"stem_s{i - 1}_bn"]))
        parts = [f"stem_s{i}_groupconv_conv{g}" for g in range(conv.groups)]
        out.append(("grouped conv", f"stem.conv{i}", conv, parts))
    out.append(("BatchNorm", "stem.bn2", stem.bn2, ["stem_s2_bn"]))
    section = block = 0
    for i, m in enumerate(model.features):
        q = f"features.{i}"
        name = f"section_{section}_block_{block}"
        if isinstance(m, DenseBlock):
            out += [("BatchNorm", f"{q}.bn", m.bn, [f"{name}_dense_bn"]),
                    ("binary conv", f"{q}.conv", m.conv, [f"{name}_dense_binconv"])]
        elif isinstance(m, ImprovementBlock):
            out += [("BatchNorm", f"{q}.bn", m.bn, [f"{name}_improve_bn"]),
                    ("binary conv", f"{q}.conv", m.conv, [f"{name}_improve_binconv"])]
            block += 1
        elif isinstance(m, MeliusTransition):
            out += [("BatchNorm", f"{q}.bn", m.bn, [f"section_{section}_transition_bn"]),
                    ("conv", f"{q}.conv", m.conv, [f"section_{section}_transition_pw"])]
            section, block = section + 1, 0
    return out + [("BatchNorm", "head_bn", model.head_bn, ["head_bn"]), ("dense", "fc", model.fc, ["head_dense"])]


def realtobinarynet_names(model: RealToBinaryNet, prefix: str) -> list[tuple[str, str, nn.Module, list[str]]]:
    """(kind, qualified name, module, Keras layer names) of a Real-to-Binary Net in Larq Zoo's order.
    Larq Zoo names its layers ``<prefix>_block_<k>...`` (``prefix`` its model name, ``r2b_bnn``):
    block 1 is the stem, blocks 2, 3, ... hold two half blocks each (``a``, ``b``), and the block
    after the last is the head."""
    stem = f"{prefix}_block_1"
    out: list[tuple[str, str, nn.Module, list[str]]] = [
        ("conv", "stem.conv", model.stem.conv, [f"{stem}_conv2d"]),
        ("BatchNorm", "stem.bn", model.stem.bn, [f"{stem}_batch_norm"]),
        ("PReLU", "stem.prelu", model.stem.prelu, [f"{stem}_prelu"])]
    for i, half in enumerate(m for m in model.features if isinstance(m, HalfBlock)):
        q, name = f"features.{i}", f"{prefix}_block_{2 + i // 2}{'ab'[i % 2]}"
        if isinstance(half.shortcut, Downsample):
            out += [("conv", f"{q}.shortcut.conv", half.shortcut.conv, [f"{name}_shortcut_conv2d"]),
                    ("BatchNorm", f"{q}.shortcut.bn", half.shortcut.bn, [f"{name}_shortcut_batch_norm"])]
        out += [("BatchNorm", f"{q}.bn", half.bn, [f"{name}_batch_norm"]),
                ("binary conv", f"{q}.conv", half.conv, [f"{name}_conv2d"]),
                ("dense", f"{q}.scaling.reduce", half.scaling.reduce, [f"{name}_scaling_dense_reduce"]),
                ("dense", f"{q}.scaling.expand", half.scaling.expand, [f"{name}_scaling_dense_expand"]),
                ("PReLU", f"{q}.prelu", half.prelu, [f"{name}_prelu"])]
    head = f"{prefix}_block_{2 + len(model.features) // 2}_logits"
    return out + [("dense", "fc", model.fc, [head])]


def r2b_prefix(weights: KerasWeights) -> str | None:
    """The model name a Real-to-Binary Net file's layers start with (``r2b_bnn``), or None."""
    names = [layer.name[:-len(R2B_STEM)] for layer in weights.layers if layer.name.endswith(R2B_STEM)]
    return names[0] if len(names) == 1 and names[0] else None


def named_family(weights: KerasWeights) -> str | None:
    """The family whose own layer names the file's layers carry (rather than Keras' class names), or None."""
    if any(layer.name == "stem_s0_conv" for layer in weights.layers):
        return "meliusnet"
    return "realtobinarynet" if r2b_prefix(weights) is not None else None


def is_named_file(weights: KerasWeights) -> bool:
    """Whether the file's layers carry MeliusNet's or Real-to-Binary Net's own names."""
    return named_family(weights) is not None


def _named_layers(model: nn.Module, weights: KerasWeights) -> list[tuple[str, str, nn.Module, list[str]]]:
    if isinstance(model, RealToBinaryNet):
        return realtobinarynet_names(model, r2b_prefix(weights) or "r2b_bnn")
    return meliusnet_names(cast(MeliusNet, model))


def pair_named(model: nn.Module, weights: KerasWeights, arch: str) -> Pairing:
    """Pair a MeliusNet's or Real-to-Binary Net's modules with the file's layers by Larq Zoo's layer
    names; check shapes."""
    by_name = {layer.name: layer for layer in weights.layers}
    pairs: list[tuple[str, Any, KerasLayer | list[KerasLayer]]] = []
    used = set()
    for kind, qualname, m, names in _named_layers(model, weights):
        missing = [n for n in names if n not in by_name]
        if missing:
            return Pairing(pairs, f"the file has no layer {missing[0]} for {arch}'s {qualname}")
        layers = [by_name[n] for n in names]
        if kind == "grouped conv":
            conv = cast(Any, m)  # a grouped nn.Conv2d
            cout, cin_g, kh, kw = conv.weight.shape
            expected: dict[str, tuple[int, ...]] = {
                "kernel": (int(kh), int(kw), int(cin_g), int(cout) // int(conv.groups))}
        else:
            expected = _expected_shapes(kind, m)
        for layer in layers:
            problem = _shape_problem(layer, expected, arch, qualname, kind)
            if problem is not None:
                return Pairing(pairs, problem)
        used.update(names)
        pairs.append((qualname, m, layers if kind == "grouped conv" else layers[0]))
    extra = [layer.name for layer in weights.layers if layer.name not in used]
    if extra:
        return Pairing(pairs, f"layer {extra[0]} is one layer more than {arch} has")
    return Pairing(pairs, None)


def _named_options(weights: KerasWeights) -> dict[str, Any]:
    by_name = {layer.name: layer for layer in weights.layers}
    family = named_family(weights)
    if family == "realtobinarynet":
        prefix = r2b_prefix(weights)
        heads = sorted(n for n in by_name if n.startswith(f"{prefix}_block_") and n.endswith("_logits"))
        stem_name, dense_name = f"{prefix}{R2B_STEM}", heads[0] if len(heads) == 1 else f"{prefix}_block_<n>_logits"
        label = "Real-to-Binary Net"
    else:
        stem_name, dense_name, label = "stem_s0_conv", "head_dense", "MeliusNet"
    stem, dense = by_name.get(stem_name), by_name.get(dense_name)
    if dense is None:
        raise ArtifactError(f"the file has no layer {dense_name}, so it is not a Larq Zoo {label} with its "
                            f"classifier (include_top=True)")
    kernel = None if stem is None else stem.shapes.get("kernel")
    k = dense.shapes.get("kernel")
    if kernel is None or len(kernel) != 4 or k is None or len(k) != 2:
        raise ArtifactError(f"layers {stem_name} and {dense_name} need a 4- and a 2-dimensional kernel")
    if k[1] < 1 or kernel[2] < 1:
        raise ArtifactError(f"layers {stem_name} and {dense_name}: a kernel with no outputs or inputs")
    # Larq Zoo's stems are never 3x3; bnncli's "thumbnail" stems are (Real-to-Binary Net's conv 3x3 s1).
    thumbnail = family == "realtobinarynet" and int(kernel[0]) == 3
    return {"num_classes": int(k[1]), "in_channels": int(kernel[2]), "thumbnail": thumbnail, **IMPORT_OPTIONS}


def _alexnet_options(groups: dict[str, list[KerasLayer]]) -> dict[str, Any]:
    """XNOR-Net (a float stem conv and a Dense classifier) or BinaryAlexNet (no float conv; a binary
    stem conv, and a binary 1x1 conv as its classifier): num_classes, in_channels and the stem kind."""
    floats, dense, binary = groups["conv2d"], groups["dense"], groups["quant_conv2d"]
    if floats:
        first, last = floats[:1], dense[-1:]
    else:
        first, last = binary[:1], binary[-1:]
        if last and tuple(last[0].shapes.get("kernel", ()))[:2] != (1, 1):
            last = []
    if not first or not last:
        raise ArtifactError("the file has no float conv or no dense layer, so it is not a Larq Zoo model "
                            "with its classifier (include_top=True)")
    stem, head = first[0].shapes.get("kernel"), last[0].shapes.get("kernel")
    if stem is None or len(stem) != 4 or head is None or len(head) not in (2, 4):
        raise ArtifactError(f"layers {first[0].name} and {last[0].name}: no 4-dimensional stem kernel or "
                            f"no classifier kernel")
    classes = int(head[-1])
    if classes < 1 or int(stem[2]) < 1:
        raise ArtifactError(f"layers {first[0].name} and {last[0].name}: a kernel with no outputs or inputs")
    return {"num_classes": classes, "in_channels": int(stem[2]), "thumbnail": int(stem[0]) == 3, **IMPORT_OPTIONS}


def _file_options(groups: dict[str, list[KerasLayer]], family: str) -> dict[str, Any]:
    """num_classes, in_channels and the stem kind, read off the file for a model of ``family``."""
    if family == "alexnet":
        return _alexnet_options(groups)
    convs, dense = groups[keras_class("conv", family)], groups[keras_class("dense", family)]
    if not convs or not dense:
        raise ArtifactError("the file has no float conv or no dense layer, so it is not a Larq Zoo model "
                            "with its classifier (include_top=True)")
    stem = convs[0].shapes.get("kernel")
    if stem is None or len(stem) != 4:
        raise ArtifactError(f"layer {convs[0].name}: no 4-dimensional kernel")
    kh, _, cin, _ = stem
    kernel = dense[-1].shapes.get("kernel")
    if kernel is None or len(kernel) != 2:
        raise ArtifactError(f"layer {dense[-1].name}: no 2-dimensional kernel")
    if kernel[1] < 1 or cin < 1:
        raise ArtifactError(f"layer {dense[-1].name if kernel[1] < 1 else convs[0].name}: a kernel with no outputs "
                            f"or inputs")
    # BinaryDenseNet and ResNetE have a 3x3 "thumbnail" stem for small inputs; QuickNet's stem is always 3x3.
    thumbnail = int(kh) == 3 and family != "quicknet"
    return {"num_classes": int(kernel[1]), "in_channels": int(cin), "thumbnail": thumbnail,
            **IMPORT_OPTIONS, **FAMILY_OPTIONS.get(family, {})}


def _build(arch: str, options: dict[str, Any], device: str | None = None) -> nn.Module:
    if device == "meta":  # shapes only: no memory, no initialisation
        with torch.device("meta"):
            return create_model(arch, **options)
    return create_model(arch, **options)


def _normalized(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _by_file_name(fits: list[str], file_name: str) -> str | None:
    """Among models that fit equally, the one the file name names (longest match), if any:
    binary_densenet_37_dilated_weights.h5 names binarydensenet37_dilated, not binarydensenet37."""
    name = _normalized(file_name)
    named = []
    for arch in fits:
        aliases = {_normalized(arch)}
        if arch in PUBLISHED:
            published = PUBLISHED[arch]
            aliases |= {_normalized(published.larq_zoo_model), _normalized(published.file.removesuffix("_weights.h5"))}
        hits = [len(a) for a in aliases if a in name]
        if hits:
            named.append((max(hits), arch))
    named.sort(reverse=True)
    if named and (len(named) == 1 or named[0][0] > named[1][0]):
        return named[0][1]
    return None


def infer_arch(groups: dict[str, list[KerasLayer]], sha256: str, file_name: str) -> str:
    """The one importable model the file fits: a published file by its checksum, else by its layers'
    shapes, and among models with equal shapes (37 and 37-dilated) by the file name; UsageError
    when none or several remain."""
    for arch, published in PUBLISHED.items():
        if published.sha256 == sha256:
            return arch
    fits, closest, unreadable = [], None, None
    for arch in importable_models():
        if model_family(arch) in NAMED_FAMILIES:
            continue
        try:
            options = _file_options(groups, model_family(arch))
        except ArtifactError as e:
            unreadable = unreadable or e
            continue
        p = pair_layers(_build(arch, options, "meta"), groups, arch)
        if p.problem is None:
            fits.append(arch)
        elif closest is None or len(p.pairs) > closest[0]:
            closest = (len(p.pairs), arch, p.problem)
    if len(fits) == 1:
        return fits[0]
    named = _by_file_name(fits, file_name) if fits else None
    if named is not None:
        return named
    if fits:
        raise UsageError(f"the file fits {' and '.join(fits)} equally (their weights have the same shapes) and "
                         f"its name does not say which; pass --arch")
    if closest is None and unreadable is not None:
        raise unreadable
    hint = f" (closest: {closest[1]}: {closest[2]})" if closest else ""
    raise ArtifactError(f"no importable model fits the file{hint}")


def infer_named_arch(weights: KerasWeights, sha256: str) -> str:
    """The MeliusNet or Real-to-Binary Net the file fits: the published file by its checksum, else by
    names and shapes."""
    for arch, published in PUBLISHED.items():
        if published.sha256 == sha256:
            return arch
    options = _named_options(weights)
    family = named_family(weights)
    closest = None
    for arch in importable_models():
        if model_family(arch) != family:
            continue
        p = pair_named(_build(arch, options, "meta"), weights, arch)
        if p.problem is None:
            return arch
        if closest is None or len(p.pairs) > closest[0]:
            closest = (len(p.pairs), arch, p.problem)
    hint = f" (closest: {closest[1]}: {closest[2]})" if closest else ""
    raise ArtifactError(f"no importable model fits the file{hint}")


# --- the conversion --------------------------------------------------------------------------


def _unpadded_stride_2(m: nn.Module) -> bool:
    if not isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
        return False
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
    stride = m.stride if isinstance(m.stride, tuple) else (m.stride, m.stride)
    return not any(pad) and max(stride) == 2


def _check_pool_sizes(arch: str, options: dict[str, Any], image_size: int) -> None:
    """Larq Zoo pools Bi-Real Net's and Real-to-Binary Net's shortcuts with
    ``AvgPool2D(2, strides=2, padding="same")``, which on a map of odd size averages a last,
    partial window; bnncli's shortcut pools (and the
    graph's AvgPool) do not pad, so the two agree only where every such pool reads a map of even
    height and width (224 px: 56, 28, 14). UsageError for an image size where one does not."""
    model = _build(arch, options, "meta").eval()
    odd = []

    def hook(module, args) -> None:
        h, w = args[0].shape[-2:]
        if h % 2 or w % 2:
            odd.append(f"{h}x{w}")

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if _unpadded_stride_2(m)]
    try:
        with torch.no_grad():
            model(torch.empty(1, options["in_channels"], image_size, image_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    if odd:
        raise UsageError(f"at {image_size} px a stride-2 pool of {arch} reads a {odd[0]} map, where Larq Zoo's "
                         f"'same' pooling pools a partial window that bnncli does not reproduce; "
                         f"pass an --image-size that is a multiple of 32 (224 by default)")


def _read_values(weights: KerasWeights, kind: str, m: nn.Module,
                 layer: KerasLayer | list[KerasLayer]) -> dict[str, np.ndarray]:
    """The values a module takes from its layer(s), each read only as the shape the module expects
    (finite: the reader checks). A grouped conv made of one Keras Conv2D per group gets its groups'
    kernels joined in [Cout, Cin/g, kh, kw] order under ``grouped``."""
    if isinstance(layer, list):  # one Keras Conv2D per group: [kh, kw, Cin/g, Cout/g] each
        parts = [weights.read(la, "kernel", la.shapes["kernel"]).transpose(3, 2, 0, 1) for la in layer]
        return {"grouped": np.ascontiguousarray(np.concatenate(parts))}
    values = {role: weights.read(layer, role, shape) for role, shape in _expected_shapes(kind, m).items()}
    if "moving_variance" in values and (values["moving_variance"] < 0).any():
        raise ArtifactError(f"layer {layer.name}: moving_variance holds negative values")
    return values


def _copy(kind: str, m: Any, w: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        if "grouped" in w:
            m.weight.copy_(torch.from_numpy(w["grouped"]))
        elif kind == "PReLU":  # [1, 1, C] -> [C]
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w["alpha"].reshape(-1))))
        elif kind in ("binary conv", "conv"):
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w["kernel"].transpose(3, 2, 0, 1))))
        elif kind == "flattened binary conv":  # [1, 1, kh * kw * C, out], (h, w, c) order -> [out, C, kh, kw]
            cout, cin, kh, kw = m.weight.shape
            kernel = w["kernel"].reshape(kh, kw, cin, cout)
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
        elif kind in ("depthwise conv", "blur pool"):  # [kh, kw, C, 1] -> [C, 1, kh, kw]
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w["depthwise_kernel"].transpose(2, 3, 0, 1))))
        elif kind == "BatchNorm":
            if m.weight is not None:
                m.weight.copy_(torch.from_numpy(w["gamma"]))
            if m.bias is not None:
                m.bias.copy_(torch.from_numpy(w["beta"]))
            m.running_mean.copy_(torch.from_numpy(w["moving_mean"]))
            m.running_var.copy_(torch.from_numpy(w["moving_variance"]))
        else:
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w["kernel"].T)))
            if m.bias is not None:
                m.bias.copy_(torch.from_numpy(w["bias"]))


def class_names_for(num_classes: int, names: Sequence[str] | None) -> list[str]:
    """The given names, the 1000 ImageNet synset ids in index order, or class_0 ... for other heads."""
    if names is not None:
        if len(names) != num_classes:
            raise UsageError(f"{len(names)} class names given; the model has {num_classes} outputs")
        return list(names)
    if num_classes == 1000:
        return sorted(imagenet_names())
    return [f"class_{i}" for i in range(num_classes)]


@dataclass
class ImportResult:
    output: Path
    arch: str
    arch_kwargs: dict[str, Any]
    layers: int
    params: int
    source: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "arch": self.arch, "arch_kwargs": self.arch_kwargs,
                "layers": self.layers, "params": self.params, "source": self.source}


def convert(weights_path: str | os.PathLike, arch: str | None = None, image_size: int = 224,
            class_names: Sequence[str] | None = None) -> tuple[nn.Module, dict[str, Any], ImportResult]:
    """The converted model (eval mode), its checkpoint dict, and what was done; writes nothing.

    The file's structure and shapes are read first (no value); the model is built on the meta
    device (which allocates nothing) and paired with them; only when every shape fits is the real
    model built and each value read, as the shape its module expects."""
    if arch is not None and arch not in importable_models():
        raise UsageError(f"{arch!r} cannot be imported from Larq Zoo; importable: {', '.join(importable_models())}")
    with open_keras_weights(weights_path) as weights:
        sha256 = weights.sha256
        family = named_family(weights)
        named = family is not None
        groups = {} if named else _by_kind(weights)
        if family is not None:
            arch = arch or infer_named_arch(weights, sha256)
            if model_family(arch) != family:
                raise ArtifactError(f"{weights.path} names its layers as Larq Zoo's {NAMED_LABELS[family]} does, "
                                    f"not as {arch}'s")
            options = _named_options(weights)
        else:
            arch = arch or infer_arch(groups, sha256, weights.path.name)
            if model_family(arch) in NAMED_FAMILIES:
                marker = "stem_s0_conv" if model_family(arch) == "meliusnet" else f"<model name>{R2B_STEM}"
                raise ArtifactError(f"{weights.path} has no layer {marker}, so it is not a Larq Zoo {arch}")
            options = _file_options(groups, model_family(arch))
        if arch in SAME_POOLS:
            _check_pool_sizes(arch, options, image_size)
        shapes_only = _build(arch, options, "meta")  # no memory: for the checks before any weight is read
        check_image_size(shapes_only, image_size, options["in_channels"])

        def pair(model: nn.Module) -> Pairing:
            return pair_named(model, weights, arch) if named else pair_layers(model, groups, arch)

        fit = pair(shapes_only)
        if fit.problem is not None:
            raise ArtifactError(f"{weights.path} does not fit {arch}: {fit.problem}")
        model = _build(arch, options)
        values = [(m, _read_values(weights, _kind(m) or "", m, layer)) for _, m, layer in pair(model).pairs]
    for m, w in values:
        _copy(_kind(m) or "", m, w)
    if arch in CLIPPED_KERNELS:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, BinaryConv2d):
                    m.weight.clamp_(-1.0, 1.0)
    model.eval()
    # Where the file came from is known only when it is the published file itself (its checksum):
    # another file of a published architecture (a fine-tune, random weights) has no URL.
    published = PUBLISHED.get(arch)
    if published is not None and published.sha256 != sha256:
        published = None
    source = {"importer": "larq", "file": weights.path.name, "sha256": sha256,
              "published": published is not None,
              "larq_zoo_model": published.larq_zoo_model if published else None,
              "url": published.url if published else None,
              "keras_version": weights.keras_version, "backend": weights.backend, "bnncli_version": __version__}
    names = class_names_for(options["num_classes"], class_names)
    ckpt = model_checkpoint(model, names, preprocessing("larq", image_size), source=source)
    params = sum(p.numel() for p in model.parameters())
    result = ImportResult(Path(), arch, dict(getattr(model, "bnn_kwargs", {})), len(values), params, source)
    return model, ckpt, result


def _check_output(output: Path, weights_path: str | os.PathLike, overwrite: bool) -> None:
    check_model_output(output, weights_path, overwrite, ".pt")


def import_larq(weights_path: str | os.PathLike, output: str | os.PathLike | None = None, arch: str | None = None,
                image_size: int = 224, class_names: Sequence[str] | None = None,
                overwrite: bool = False) -> ImportResult:
    """Convert a Larq Zoo weights file and write the checkpoint atomically (default ``ARCH.pt``);
    nothing is written on failure."""
    if output is not None:
        _check_output(Path(output), weights_path, overwrite)
    _, ckpt, result = convert(weights_path, arch, image_size, class_names)
    result.output = Path(output) if output is not None else Path(f"{result.arch}.pt")
    if output is None:
        _check_output(result.output, weights_path, overwrite)
    save_checkpoint(result.output, ckpt)
    return result

"""``bnn import larq``: Larq Zoo's Keras weights (HDF5) -> an ordinary bnncli checkpoint.

Larq Zoo trained the paper's models in TensorFlow and published their ImageNet weights as Keras
HDF5 files; its architectures equal bnncli's to the parameter. Three details make a converted
model compute what the Keras one computes:

* **padding**: Keras pads its stride-2 layers by TensorFlow's "same" rule, unevenly, so the model
  is built with ``padding="tensorflow"`` (bnncli.nn.padding);
* **pairing**: layers are matched by kind (binary conv, float conv, BatchNorm, dense) in Keras'
  creation order, which the numeric suffixes of their names give (bnncli.convert.keras_h5), and
  bnncli's modules are listed in the order Larq Zoo creates them (a ResNetE shortcut before its
  block's main branch). Every shape is checked; the first layer that does not fit is named.
* **precision**: the float layers stay float32 (``float_weights="float32"``), as trained; the
  classifier's softmax is left out (bnncli models return logits).

Layouts: Keras kernels are ``[kh, kw, Cin, Cout]`` (convs) and ``[in, out]`` (dense); PyTorch's
``[Cout, Cin, kh, kw]`` and ``[out, in]``. BatchNorm's gamma, beta, moving mean and variance are
PyTorch's weight, bias, running mean and var (eps 1e-5 in both).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bnncli import __version__
from bnncli.artifacts.checkpoint import model_checkpoint, save_checkpoint
from bnncli.artifacts.rundir import check_model_output
from bnncli.convert.keras_h5 import KerasLayer, KerasWeights, open_keras_weights
from bnncli.data.presets import preprocessing
from bnncli.errors import ArtifactError, UsageError
from bnncli.images.labels import imagenet_names
from bnncli.models import create_model, list_models, model_family
from bnncli.models.resnete import BasicBlockE
from bnncli.nn import BinaryConv2d

# The registry families whose structure Larq Zoo's factories build.
FAMILIES = ("binarydensenet", "resnete")


@dataclass(frozen=True)
class Published:
    """A weights file Larq Zoo publishes (larq_zoo 2.4's download table: file name and SHA-256)."""

    larq_zoo_model: str
    release: str
    file: str
    sha256: str

    @property
    def url(self) -> str:
        return f"https://github.com/larq/zoo/releases/download/{self.release}/{self.file}"


PUBLISHED = {
    "binarydensenet28": Published("BinaryDenseNet28", "binary_densenet-v0.1.0", "binary_densenet_28_weights.h5",
                                  "21fe3ca03eed244df9c41a2219876fcf03e73800932ec96a3e2a76af4747ac53"),
    "binarydensenet37": Published("BinaryDenseNet37", "binary_densenet-v0.1.0", "binary_densenet_37_weights.h5",
                                  "8056a5d52c3ed86a934893987d09a06f59a5166aa9bddcaedb050f111d0a7d76"),
    "binarydensenet37_dilated": Published(
        "BinaryDenseNet37Dilated", "binary_densenet-v0.1.0", "binary_densenet_37_dilated_weights.h5",
        "15c1bcd79b8dc22971382fbf79acf364a3f51049d0e584a11533e6fdbb7363d3"),
    "binarydensenet45": Published("BinaryDenseNet45", "binary_densenet-v0.1.0", "binary_densenet_45_weights.h5",
                                  "d00a0d26fbd2dba1bfba8c0306c770f3aeea5c370e99f963bb239bd916f72c37"),
    "resnete18": Published("BinaryResNetE18", "resnet_e-v0.1.0", "resnet_e_18_weights.h5",
                           "bde4a64d42c164a7b10a28debbe1ad5b287c499bc0247ecb00449e6e89f3bf5b"),
}
IMPORT_OPTIONS: dict[str, Any] = {"padding": "tensorflow", "float_weights": "float32", "pad_value": 0.0}
# Keras layer class prefix (its default name) -> what it is.
KINDS = {"quant_conv2d": "binary conv", "conv2d": "conv", "batch_normalization": "BatchNorm", "dense": "dense"}
WEIGHTS = {"binary conv": ("kernel",), "conv": ("kernel",), "BatchNorm": ("gamma", "beta", "moving_mean",
                                                                         "moving_variance"),
           "dense": ("kernel", "bias")}


def importable_models() -> list[str]:
    """Registered models whose structure Larq Zoo's factories build (the tiny ones included)."""
    return [name for name in list_models() if model_family(name) in FAMILIES]


# --- bnncli's side: modules in Larq Zoo's creation order ------------------------------------


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, BinaryConv2d):
        return "binary conv"
    if isinstance(m, nn.Conv2d):
        return "conv"
    if isinstance(m, nn.BatchNorm2d):
        return "BatchNorm"
    if isinstance(m, nn.Linear):
        return "dense"
    return None


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


def _expected_shapes(kind: str, m: nn.Module) -> dict[str, tuple[int, ...]]:
    if kind in ("binary conv", "conv"):
        cout, cin, kh, kw = m.weight.shape
        return {"kernel": (kh, kw, cin, cout)}
    if kind == "BatchNorm":
        c = m.num_features
        return {k: (c,) for k in WEIGHTS["BatchNorm"]}
    out_f, in_f = m.weight.shape
    return {"kernel": (in_f, out_f), "bias": (out_f,)}


# --- the file's side ---------------------------------------------------------------------------


def _by_kind(weights: KerasWeights) -> dict[str, list[KerasLayer]]:
    """The file's layers per kind in creation order; refuses layer types bnncli has no match for."""
    groups: dict[str, list[KerasLayer]] = {kind: [] for kind in WEIGHTS}
    for layer in weights.layers:
        kind = KINDS.get(layer.base)
        if kind is None:
            raise ArtifactError(f"{weights.path}: layer {layer.name} is of a kind no bnncli model has "
                                f"(expected {', '.join(KINDS)} layers)")
        groups[kind].append(layer)
    for layers in groups.values():
        layers.sort(key=lambda la: la.index)
        seen = {}
        for la in layers:
            if la.index in seen:
                raise ArtifactError(f"{weights.path}: layers {seen[la.index]} and {la.name} claim the same "
                                    f"creation index, so their order is unknown")
            seen[la.index] = la.name
    return groups


@dataclass
class Pairing:
    """How a file's layers pair with a model's modules: ``pairs`` in the model's order, or ``problem``."""

    pairs: list[tuple[str, nn.Module, KerasLayer]]
    problem: str | None


def pair_layers(model: nn.Module, groups: dict[str, list[KerasLayer]], arch: str) -> Pairing:
    """Pair per kind by creation order and check names and shapes; the first misfit in model order."""
    modules = list(keras_order(model))
    taken = {kind: 0 for kind in WEIGHTS}
    pairs = []
    for kind, qualname, m in modules:
        i = taken[kind]
        taken[kind] += 1
        if i >= len(groups[kind]):
            return Pairing(pairs, f"the file has {len(groups[kind])} {kind} layers, {arch} needs "
                                  f"{sum(k == kind for k, _, _ in modules)}: none for {qualname}")
        layer = groups[kind][i]
        expected = _expected_shapes(kind, m)
        if set(layer.shapes) != set(expected):
            return Pairing(pairs, f"layer {layer.name} holds {', '.join(sorted(layer.shapes))}; {arch}'s "
                                  f"{qualname} ({kind}) needs {', '.join(sorted(expected))}")
        for role, shape in expected.items():
            if layer.shapes[role] != shape:
                return Pairing(pairs, f"layer {layer.name} does not fit {arch}'s {qualname}: {role} is "
                                      f"{list(layer.shapes[role])}, expected {list(shape)}")
        pairs.append((qualname, m, layer))
    for kind, layers in groups.items():
        if taken[kind] < len(layers):
            return Pairing(pairs, f"layer {layers[taken[kind]].name} is one {kind} more than {arch} has")
    return Pairing(pairs, None)


def _file_options(groups: dict[str, list[KerasLayer]]) -> dict[str, Any]:
    """num_classes, in_channels and the stem kind, read off the file (before any arch is chosen)."""
    convs, dense = groups["conv"], groups["dense"]
    if not convs or not dense:
        raise ArtifactError("the file has no float conv or no dense layer, so it is not a Larq Zoo "
                            "BinaryDenseNet or ResNetE (include_top=True)")
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
    return {"num_classes": int(kernel[1]), "in_channels": int(cin), "thumbnail": int(kh) == 3}


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


def infer_arch(groups: dict[str, list[KerasLayer]], options: dict[str, Any], sha256: str, file_name: str) -> str:
    """The one importable model the file fits: a published file by its checksum, else by its layers'
    shapes, and among models with equal shapes (37 and 37-dilated) by the file name; UsageError
    when none or several remain."""
    for arch, published in PUBLISHED.items():
        if published.sha256 == sha256:
            return arch
    fits, closest = [], None
    for arch in importable_models():
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
    hint = f" (closest: {closest[1]}: {closest[2]})" if closest else ""
    raise ArtifactError(f"no importable model fits the file{hint}")


# --- the conversion --------------------------------------------------------------------------


def _copy(kind: str, m: nn.Module, w: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        if kind in ("binary conv", "conv"):
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w["kernel"].transpose(3, 2, 0, 1))))
        elif kind == "BatchNorm":
            m.weight.copy_(torch.from_numpy(w["gamma"]))
            m.bias.copy_(torch.from_numpy(w["beta"]))
            m.running_mean.copy_(torch.from_numpy(w["moving_mean"]))
            m.running_var.copy_(torch.from_numpy(w["moving_variance"]))
        else:
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w["kernel"].T)))
            m.bias.copy_(torch.from_numpy(w["bias"]))


def _read_values(weights: KerasWeights, kind: str, m: nn.Module, layer: KerasLayer) -> dict[str, np.ndarray]:
    """The layer's values, each read only as the shape ``m`` expects (finite, checked by the reader)."""
    values = {role: weights.read(layer, role, shape) for role, shape in _expected_shapes(kind, m).items()}
    if "moving_variance" in values and (values["moving_variance"] < 0).any():
        raise ArtifactError(f"layer {layer.name}: moving_variance holds negative values")
    return values


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

    The file's structure and shapes are read first; the model is built (on the meta device, which
    allocates nothing) and paired with them; only when every shape fits is the real model built
    and each value read, as the shape its module expects."""
    with open_keras_weights(weights_path) as weights:
        groups = _by_kind(weights)
        options = {**_file_options(groups), **IMPORT_OPTIONS}
        if arch is None:
            arch = infer_arch(groups, options, weights.sha256, weights.path.name)
        elif arch not in importable_models():
            raise UsageError(f"{arch!r} cannot be imported from Larq Zoo; importable: "
                             f"{', '.join(importable_models())}")
        fit = pair_layers(_build(arch, options, "meta"), groups, arch)
        if fit.problem is not None:
            raise ArtifactError(f"{weights.path} does not fit {arch}: {fit.problem}")
        model = _build(arch, options)
        pairing = pair_layers(model, groups, arch)
        values = [(m, _read_values(weights, _kind(m), m, layer)) for _, m, layer in pairing.pairs]
    for m, w in values:
        _copy(_kind(m), m, w)
    model.eval()
    sha256 = weights.sha256
    published = PUBLISHED.get(arch)
    source = {"importer": "larq", "file": weights.path.name, "sha256": sha256,
              "published": published is not None and published.sha256 == sha256,
              "larq_zoo_model": published.larq_zoo_model if published else None,
              "url": published.url if published else None,
              "keras_version": weights.keras_version, "backend": weights.backend, "bnncli_version": __version__}
    names = class_names_for(options["num_classes"], class_names)
    ckpt = model_checkpoint(model, names, preprocessing("larq", image_size), source=source)
    params = sum(p.numel() for p in model.parameters())
    result = ImportResult(Path(), arch, dict(model.bnn_kwargs), len(pairing.pairs), params, source)
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

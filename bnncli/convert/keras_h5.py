"""Read the weights of a Keras 2 HDF5 file (``model.save_weights("x.h5")`` or ``model.save("x.h5")``).

The layout, as tf-keras 2 writes it: the root (or, in a whole-model file, its ``model_weights``
group) has an attribute ``layer_names``; each named layer has a group whose attribute
``weight_names`` lists its weights (``"quant_conv2d_3/kernel:0"``), each a dataset at that path
inside the group. Nothing in the file is executed or unpickled: only attributes and numeric
datasets are read, with h5py.

Keras names an unnamed layer after its class with a per-class counter: ``batch_normalization``,
``batch_normalization_1``, ... The counter is the order in which layers of that class were
*created*. The order of ``layer_names`` is the model's layer list, which is not the creation
order: in a ResNetE block Larq Zoo creates the shortcut's BatchNorm before the main branch's, but
lists it after, so pairing layers by file order swaps two BatchNorms of the same shape. Readers
pair by :attr:`KerasLayer.index` instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnncli.errors import ArtifactError, UsageError

INSTALL_HINT = "reading Keras HDF5 files needs h5py: pip install 'bnncli[larq]' (or pip install h5py)"
_SUFFIX = re.compile(r"^(?P<base>.*?)(?:_(?P<index>\d+))?$")
# Bounds on what a damaged or hostile file can make the reader allocate: the zoo's layers have at
# most 4 weights and 460,800 values (BinaryDenseNet45's widest binary conv).
MAX_WEIGHTS_PER_LAYER = 16
MAX_VALUES = 1 << 26


@dataclass
class KerasLayer:
    """One layer with weights: its name, the class prefix and creation index its name encodes,
    and its weights by short name (``kernel``, ``bias``, ``gamma``, ``moving_mean``, ...)."""

    name: str
    base: str  # "batch_normalization" of "batch_normalization_12"
    index: int  # 12 of "batch_normalization_12"; 0 without a suffix
    position: int  # place in the file's layer_names
    weights: dict[str, np.ndarray] = field(repr=False)

    def describe(self) -> str:
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in self.weights.items())
        return f"{self.name} ({shapes})"


@dataclass
class KerasWeights:
    path: Path
    layers: list[KerasLayer]  # layers with weights, in file order
    keras_version: str | None
    backend: str | None


def _h5py():
    try:
        import h5py
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return h5py


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def split_name(name: str) -> tuple[str, int]:
    """``"quant_conv2d_3"`` -> ``("quant_conv2d", 3)``; ``"dense"`` -> ``("dense", 0)``."""
    m = _SUFFIX.match(name)
    assert m is not None  # the pattern matches every string
    return m["base"], int(m["index"] or 0)


def read_keras_weights(path: str | os.PathLike) -> KerasWeights:
    """The layers with weights of a Keras 2 HDF5 file; ArtifactError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"weights file not found: {path}")
    h5py = _h5py()
    with path.open("rb") as f:
        signature = f.read(8)
    if signature != b"\x89HDF\r\n\x1a\n":
        raise ArtifactError(f"{path} is not an HDF5 file (a Keras .h5 weights file starts with the HDF5 signature)")
    try:
        with h5py.File(path, "r") as f:
            return _read(h5py, f, path)
    except ArtifactError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{path} is a damaged or truncated HDF5 file ({first[:160]})") from None


def _read(h5py, f, path: Path) -> KerasWeights:
    root = f["model_weights"] if "model_weights" in f and isinstance(f["model_weights"], h5py.Group) else f
    if "layer_names" not in root.attrs:
        raise ArtifactError(f"{path} is HDF5 but not a Keras weights file (no layer_names attribute)")
    names = [_text(n) for n in np.asarray(root.attrs["layer_names"]).ravel()]
    layers = []
    for position, name in enumerate(names):
        if name not in root or not isinstance(root[name], h5py.Group):
            raise ArtifactError(f"{path}: layer {name} is listed but has no group of weights")
        group = root[name]
        weight_names = [_text(w) for w in np.asarray(group.attrs.get("weight_names", [])).ravel()]
        if not weight_names:
            continue
        if len(weight_names) > MAX_WEIGHTS_PER_LAYER:
            raise ArtifactError(f"{path}: layer {name} lists {len(weight_names)} weights")
        weights = {}
        for wn in weight_names:
            dataset = group.get(wn)
            if not isinstance(dataset, h5py.Dataset):
                raise ArtifactError(f"{path}: layer {name} lacks its weight {wn}")
            if dataset.dtype.kind != "f":
                raise ArtifactError(f"{path}: weight {wn} of layer {name} is {dataset.dtype}, not a float array")
            if dataset.size > MAX_VALUES:
                raise ArtifactError(f"{path}: weight {wn} of layer {name} has an implausible shape "
                                    f"{list(dataset.shape)}")
            short = wn.rsplit("/", 1)[-1].split(":", 1)[0]
            if short in weights:
                raise ArtifactError(f"{path}: layer {name} has two weights named {short}")
            weights[short] = np.asarray(dataset[()], dtype=np.float32)
        base, index = split_name(name)
        layers.append(KerasLayer(name, base, index, position, weights))
    return KerasWeights(path, layers, _optional_attr(f, root, "keras_version"), _optional_attr(f, root, "backend"))


def _optional_attr(f, root, key: str) -> str | None:
    for obj in (root, f):
        if key in obj.attrs:
            return _text(obj.attrs[key])
    return None

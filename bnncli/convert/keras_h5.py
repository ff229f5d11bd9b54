"""Read the weights of a Keras 2 HDF5 file (``model.save_weights("x.h5")`` or ``model.save("x.h5")``).

The layout, as tf-keras 2 writes it: the root (or, in a whole-model file, its ``model_weights``
group) has an attribute ``layer_names``; each named layer has a group whose attribute
``weight_names`` lists its weights (``"quant_conv2d_3/kernel:0"``), each a dataset at that path
inside the group. Nothing in the file is executed or unpickled: only attributes and numeric
datasets are read, with h5py.

Only the named file is read. HDF5 lets a dataset live elsewhere (external raw storage, an
external link into another file, a virtual dataset mapped onto other files) and lets names
alias one object (soft links); a weights file needs none of that. So the file is opened once, as
a regular file (never a FIFO or a device), and before any value is read each path is walked link
by link with h5py's low-level API: external and user-defined links are refused, a soft link is
followed at most once per layer (to a target reached by hard links only), a dataset stored
outside the file or virtually is refused, as is a filter other than HDF5's own deflate, shuffle
and Fletcher32 (and h5py's LZF), and no dataset serves two weights. :func:`open_keras_weights`
then knows every weight's shape without reading a value; :meth:`KerasWeights.read` reads one
only where its shape is the one the caller expects, into an array of that shape.

Keras names an unnamed layer after its class with a per-class counter: ``batch_normalization``,
``batch_normalization_1``, ... The counter is the order in which layers of that class were
*created*. The order of ``layer_names`` is the model's layer list, which is not the creation
order: in a ResNetE block Larq Zoo creates the shortcut's BatchNorm before the main branch's, but
lists it after, so pairing layers by file order swaps two BatchNorms of the same shape. Readers
pair by :attr:`KerasLayer.index` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnncli.errors import ArtifactError, UsageError
from bnncli.fileio import open_regular

INSTALL_HINT = "reading Keras HDF5 files needs h5py: pip install 'bnncli[larq]' (or pip install h5py)"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SUFFIX = re.compile(r"^(?P<base>.*?)(?:_(?P<index>\d+))?$")
# Bounds on what a damaged or hostile file can make the reader allocate: the zoo's layers have at
# most 4 weights and 460,800 values (BinaryDenseNet45's widest binary conv), and at most 200
# layers with weights.
MAX_WEIGHTS_PER_LAYER = 16
MAX_VALUES = 1 << 26
MAX_LAYERS = 4096
MAX_NAME_CHARS = 256
MAX_NAME_LIST_BYTES = 1 << 20
# Soft links one layer may follow (its group and its weights together); Keras writes none.
MAX_SOFT_LINKS_PER_LAYER = 1
# Filters a dataset may be stored with: HDF5's deflate, shuffle and Fletcher32, and h5py's LZF.
# Any other would make HDF5 look for a plugin library to load.
ALLOWED_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}


@dataclass
class KerasLayer:
    """One layer with weights: its name, the class prefix and creation index its name encodes,
    and the shapes of its weights by short name (``kernel``, ``bias``, ``gamma``,
    ``moving_mean``, ...); :meth:`KerasWeights.read` reads their values."""

    name: str
    base: str  # "batch_normalization" of "batch_normalization_12"
    index: int  # 12 of "batch_normalization_12"; 0 without a suffix
    position: int  # place in the file's layer_names
    shapes: dict[str, tuple[int, ...]]
    datasets: dict[str, Any] = field(repr=False, default_factory=dict)  # h5py datasets, while the file is open

    def describe(self) -> str:
        shapes = ", ".join(f"{k} {list(v)}" for k, v in self.shapes.items())
        return f"{self.name} ({shapes})"


@dataclass
class KerasWeights:
    path: Path
    layers: list[KerasLayer]  # layers with weights, in file order
    keras_version: str | None
    backend: str | None
    sha256: str = ""  # of the whole file

    def read(self, layer: KerasLayer, role: str, shape: tuple[int, ...]) -> np.ndarray:
        """The values of ``layer``'s weight ``role`` as float32, read only if its shape is ``shape``
        (the file stays open inside :func:`open_keras_weights`)."""
        if layer.shapes.get(role) != tuple(shape):
            raise ArtifactError(f"{self.path}: weight {role} of layer {layer.name} is "
                                f"{list(layer.shapes.get(role, ()))}, expected {list(shape)}")
        out = np.empty(shape, dtype=np.float32)
        try:
            if out.size:
                layer.datasets[role].read_direct(out)
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
            raise ArtifactError(f"{self.path}: cannot read weight {role} of layer {layer.name} "
                                f"({_first_line(e)})") from None
        if not np.isfinite(out).all():
            raise ArtifactError(f"layer {layer.name}: {role} holds NaN or infinite values")
        return out


def _h5py():
    try:
        import h5py
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return h5py


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def split_name(name: str) -> tuple[str, int]:
    """``"quant_conv2d_3"`` -> ``("quant_conv2d", 3)``; ``"dense"`` -> ``("dense", 0)``."""
    m = _SUFFIX.match(name)
    assert m is not None  # the pattern matches every string
    return m["base"], int(m["index"] or 0)


@contextlib.contextmanager
def open_keras_weights(path: str | os.PathLike) -> Iterator[KerasWeights]:
    """The layers with weights of a Keras 2 HDF5 file, their shapes known and no value read yet;
    values are read with :meth:`KerasWeights.read` inside the block. ArtifactError naming what
    is wrong; UsageError for a path that is not a regular file."""
    path = Path(path)
    h5py = _h5py()
    with open_regular(path, "weights file") as handle:
        if handle.read(8) != HDF5_SIGNATURE:
            raise ArtifactError(f"{path} is not an HDF5 file (a Keras .h5 weights file starts with the HDF5 "
                                f"signature)")
        handle.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
        handle.seek(0)
        try:
            f = h5py.File(handle, "r")  # the descriptor opened above: exactly the named file
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
            raise ArtifactError(f"{path} is a damaged or truncated HDF5 file ({_first_line(e)})") from None
        with f:
            try:
                weights = _Scan(h5py, f, path).weights()
                weights.sha256 = digest.hexdigest()
            except ArtifactError:
                raise
            except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
                raise ArtifactError(f"{path} is a damaged or truncated HDF5 file ({_first_line(e)})") from None
            yield weights


def read_keras_weights(path: str | os.PathLike) -> KerasWeights:
    """The layers and weight shapes of a Keras 2 HDF5 file, without their values (the file is closed)."""
    with open_keras_weights(path) as weights:
        for layer in weights.layers:
            layer.datasets = {}
        return weights


class _Scan:
    """One pass over a file's structure: every link checked, no value read."""

    def __init__(self, h5py, f, path: Path) -> None:
        self.h5py, self.f, self.path = h5py, f, path
        self.seen: dict[tuple[int, int], str] = {}  # dataset (file, address) -> the weight it serves

    def fail(self, message: str) -> None:
        raise ArtifactError(f"{self.path}: {message}")

    def walk(self, start, route: str, budget: list[int], what: str):
        """The object at ``route`` below ``start``, every link on the way hard, or soft within
        ``budget`` (a soft link's target is walked from the root with hard links only)."""
        h5l = self.h5py.h5l
        node = self.f if route.startswith("/") else start
        for part in (p for p in route.split("/") if p):
            if not isinstance(node, self.h5py.Group):
                self.fail(f"{what}: {part!r} is below a dataset")
            key = part.encode("utf-8")
            if not node.id.links.exists(key):
                return None
            kind = node.id.links.get_info(key).type
            if kind == h5l.TYPE_SOFT:
                if budget[0] <= 0:
                    self.fail(f"{what} is reached through more than {MAX_SOFT_LINKS_PER_LAYER} soft link per layer "
                              f"(Keras writes none)")
                budget[0] -= 1
                target = _text(node.id.links.get_val(key))
                node = self.walk(node, target, [0], what)
                if node is None:
                    self.fail(f"{what}: the soft link {part!r} leads nowhere")
                continue
            if kind != h5l.TYPE_HARD:
                word = "an external link" if kind == h5l.TYPE_EXTERNAL else "a user-defined link"
                self.fail(f"{what} is {word} to another file; only the named file is read")
            node = node[part]
        return node

    def attribute(self, obj, key: str, limit: int):
        """An attribute's value, its size checked before it is read; None when absent."""
        if key not in obj.attrs:
            return None
        attr = obj.attrs.get_id(key)
        count = int(np.prod(attr.shape, dtype=object)) if attr.shape is not None else 0
        if count > MAX_LAYERS or count and attr.get_storage_size() > limit:
            self.fail(f"attribute {key} is implausibly large")
        return obj.attrs[key]

    def names(self, obj, key: str) -> list[str]:
        value = self.attribute(obj, key, MAX_NAME_LIST_BYTES)
        names = [] if value is None else [_text(n) for n in np.asarray(value).ravel()]
        long = next((n for n in names if len(n) > MAX_NAME_CHARS), None)
        if long is not None:
            self.fail(f"attribute {key} holds a name of {len(long)} characters")
        return names

    def dataset(self, obj, what: str) -> tuple[int, ...]:
        """Check where and how ``obj`` keeps its values (before any is read); its shape."""
        h5d = self.h5py.h5d
        plist = obj.id.get_create_plist()
        layout = plist.get_layout()
        if layout == getattr(h5d, "VIRTUAL", -1):
            self.fail(f"{what} is a virtual dataset (mapped onto other files); only the named file is read")
        if layout not in (h5d.COMPACT, h5d.CONTIGUOUS, h5d.CHUNKED):
            self.fail(f"{what} has a storage layout bnncli does not read")
        if plist.get_external_count() > 0:
            self.fail(f"{what} is stored in external files; only the named file is read")
        for i in range(plist.get_nfilters()):
            code = plist.get_filter(i)[0]
            if code not in ALLOWED_FILTERS:
                self.fail(f"{what} is stored with filter {code}, which bnncli does not read "
                          f"(it reads {', '.join(ALLOWED_FILTERS.values())})")
        if obj.dtype.kind != "f" or obj.dtype.itemsize > 8:
            self.fail(f"{what} is {obj.dtype}, not a float array")
        shape = tuple(int(n) for n in (obj.shape or ()))
        if len(shape) > 4 or int(np.prod(shape, dtype=object)) > MAX_VALUES:
            self.fail(f"{what} has an implausible shape {list(shape)}")
        if layout == h5d.CHUNKED and (obj.chunks is None or len(obj.chunks) != len(shape)
                                      or any(c > max(n, 1) for c, n in zip(obj.chunks, shape))):
            self.fail(f"{what} is stored in chunks larger than itself")
        identity = (obj.id.fileno, self.h5py.h5o.get_info(obj.id).addr)
        if identity in self.seen:
            self.fail(f"{what} is the dataset of {self.seen[identity]} too; each weight is its own dataset")
        self.seen[identity] = what
        return shape

    def weights(self) -> KerasWeights:
        root = self.walk(self.f, "model_weights", [0], "model_weights") or self.f
        if not isinstance(root, self.h5py.Group):
            root = self.f
        if "layer_names" not in root.attrs:
            raise ArtifactError(f"{self.path} is HDF5 but not a Keras weights file (no layer_names attribute)")
        names = self.names(root, "layer_names")
        if len(names) > MAX_LAYERS:
            self.fail(f"layer_names lists {len(names)} layers")
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            self.fail(f"layer {twice} is listed {names.count(twice)} times in layer_names")
        layers = []
        for position, name in enumerate(names):
            budget = [MAX_SOFT_LINKS_PER_LAYER]
            group = self.walk(root, name, budget, f"layer {name}")
            if not isinstance(group, self.h5py.Group):
                self.fail(f"layer {name} is listed but has no group of weights")
            weight_names = self.names(group, "weight_names")
            if not weight_names:
                continue
            if len(weight_names) > MAX_WEIGHTS_PER_LAYER:
                self.fail(f"layer {name} lists {len(weight_names)} weights")
            shapes, datasets = {}, {}
            for wn in weight_names:
                what = f"weight {wn} of layer {name}"
                obj = self.walk(group, wn, budget, what)
                if not isinstance(obj, self.h5py.Dataset):
                    self.fail(f"layer {name} lacks its weight {wn}")
                short = wn.rsplit("/", 1)[-1].split(":", 1)[0]
                if short in shapes:
                    self.fail(f"layer {name} has two weights named {short}")
                shapes[short] = self.dataset(obj, what)
                datasets[short] = obj
            base, index = split_name(name)
            layers.append(KerasLayer(name, base, index, position, shapes, datasets))
        return KerasWeights(self.path, layers, self.optional_attr(root, "keras_version"),
                            self.optional_attr(root, "backend"))

    def optional_attr(self, root, key: str) -> str | None:
        for obj in (root, self.f):
            value = self.attribute(obj, key, 4096)
            if value is not None:
                return _text(value)[:MAX_NAME_CHARS]
        return None

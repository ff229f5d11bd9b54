"""What every bnncli model file says about its model: the keys, and one validator.

Checkpoints, ONNX files and packed files all carry the same description of the model they hold
(:data:`MODEL_KEYS`): the registry name, its options, the class names in output order, and the
preprocessing the model was trained with (:data:`PREPROCESSING_KEYS`, built by
``bnncli.data.presets.preprocessing``). Writers take it with :func:`model_meta`; readers check
it with :func:`check_model_meta`.

This module imports nothing but :mod:`bnncli.errors`, so that every layer (the torch-free runtime
included) can use it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from bnncli.errors import ArtifactError

MODEL_KEYS = ("arch", "arch_kwargs", "class_names", "preprocessing")
PREPROCESSING_KEYS = ("preset", "image_size", "resize", "mean", "std", "channels", "interpolation")
# How an image becomes the input (bnncli.images.preprocess): "bilinear", bnncli's resize then crop;
# "tf-bicubic", Larq Zoo's crop then TensorFlow 1 bicubic resize.
INTERPOLATIONS = ("bilinear", "tf-bicubic")
# Images are read as RGB or L (bnncli.images.decode).
CHANNELS = (1, 3)
# The largest input side any model file may ask for, and the largest resize before its crop: the
# input of one image is then at most 3 x 2048 x 2048 float32 (48 MiB), whatever a file says.
MAX_IMAGE_SIZE = 2048
MAX_RESIZE = 2 * MAX_IMAGE_SIZE


# The deepest nesting of arrays and objects a JSON text bnncli reads may have (model metadata and
# run files are 2-4 levels deep; Python's parser recurses per level and fails near 1000).
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text``, counted without parsing it."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(_JSON_STRING.sub('""', text)):
        depth += 1 if m[0] in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def load_json(text: str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON ``text`` nested at most ``max_depth`` levels; ArtifactError naming ``what`` otherwise.
    (NaN and Infinity, which Python's json writes, are read as floats.)"""
    if json_depth(text) > max_depth:
        raise ArtifactError(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"{what} is not valid JSON ({str(e)[:120]})") from None


def model_meta(source: Mapping[str, Any]) -> dict[str, Any]:
    """The model description in ``source`` (a checkpoint dict, say), as plain JSON-ready values."""
    missing = [k for k in MODEL_KEYS if k not in source]
    if missing:
        raise ArtifactError(f"model description lacks {', '.join(missing)}")
    return {
        "arch": str(source["arch"]),
        "arch_kwargs": dict(source["arch_kwargs"]),
        "class_names": [str(c) for c in source["class_names"]],
        "preprocessing": dict(source["preprocessing"]),
    }


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ArtifactError(message)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_size(pp: dict[str, Any], key: str, limit: int) -> None:
    v = pp[key]
    _require(_is_int(v) and 1 <= v <= limit, f"preprocessing {key} must be an integer from 1 to {limit}, not {v!r}")


def check_preprocessing(pp: Any) -> None:
    """Validate a preprocessing dict; raises ArtifactError saying what is wrong.

    Sizes are bounded (:data:`MAX_IMAGE_SIZE`, :data:`MAX_RESIZE`), so no file can make a reader
    allocate more than a few tens of MB per image.
    """
    _require(isinstance(pp, dict), f"preprocessing must be an object, not {type(pp).__name__}")
    missing = [k for k in PREPROCESSING_KEYS if k not in pp]
    _require(not missing, f"preprocessing lacks {', '.join(missing)}")
    _require(_is_int(pp["channels"]) and pp["channels"] in CHANNELS,
             f"preprocessing channels must be 1 or 3, not {pp['channels']!r}")
    _check_size(pp, "image_size", MAX_IMAGE_SIZE)
    _check_size(pp, "resize", MAX_RESIZE)
    for key in ("mean", "std"):
        v = pp[key]
        _require(isinstance(v, list) and len(v) == pp["channels"] and all(_is_number(x) for x in v),
                 f"preprocessing {key} must be {pp['channels']} numbers")
    _require(all(s > 0 for s in pp["std"]), "preprocessing std must be positive")
    _require(pp["interpolation"] in INTERPOLATIONS, f"unsupported interpolation {pp['interpolation']!r} "
             f"(this bnncli knows {', '.join(INTERPOLATIONS)})")
    _require(pp["interpolation"] != "tf-bicubic" or pp["resize"] >= pp["image_size"],
             "preprocessing resize must be at least image_size for tf-bicubic (it crops image_size / resize)")
    _require(isinstance(pp["preset"], str), "preprocessing preset must be a string")


def _check_arch_kwargs(kwargs: dict[str, Any], classes: int, channels: int) -> None:
    """The model options that sizes depend on must agree with the class names and the preprocessing."""
    n, c = kwargs.get("num_classes", classes), kwargs.get("in_channels", channels)
    _require(_is_int(n) and n == classes,
             f"model arch_kwargs num_classes is {n!r} but {classes} class names are listed")
    _require(_is_int(c) and c == channels,
             f"model arch_kwargs in_channels is {c!r} but the preprocessing has {channels} channels")


def check_model_meta(model: Any) -> dict[str, Any]:
    """Validate a model description read from a file; returns a copy with :data:`MODEL_KEYS` only.

    Raises ArtifactError with what is wrong (the caller adds which file).
    """
    _require(isinstance(model, dict), "model must be an object")
    for key in MODEL_KEYS:
        _require(key in model, f"model lacks {key}")
    _require(isinstance(model["arch"], str) and bool(model["arch"]), "model arch must be a name")
    _require(isinstance(model["arch_kwargs"], dict), "model arch_kwargs must be an object")
    names = model["class_names"]
    _require(isinstance(names, list) and bool(names) and all(isinstance(n, str) for n in names),
             "class_names must be a non-empty list of strings")
    check_preprocessing(model["preprocessing"])
    _check_arch_kwargs(model["arch_kwargs"], len(names), model["preprocessing"]["channels"])
    return {"arch": model["arch"], "arch_kwargs": dict(model["arch_kwargs"]), "class_names": list(names),
            "preprocessing": dict(model["preprocessing"])}

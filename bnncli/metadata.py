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

import math
from collections.abc import Mapping
from typing import Any

from bnncli.errors import ArtifactError

MODEL_KEYS = ("arch", "arch_kwargs", "class_names", "preprocessing")
PREPROCESSING_KEYS = ("preset", "image_size", "resize", "mean", "std", "channels", "interpolation")
# How an image becomes the input (bnncli.runtime.preprocess): "bilinear", bnncli's resize then crop;
# "tf-bicubic", Larq Zoo's crop then TensorFlow 1 bicubic resize.
INTERPOLATIONS = ("bilinear", "tf-bicubic")


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


def check_preprocessing(pp: Any) -> None:
    """Validate a preprocessing dict; raises ArtifactError saying what is wrong."""
    _require(isinstance(pp, dict), "preprocessing must be an object")
    missing = [k for k in PREPROCESSING_KEYS if k not in pp]
    _require(not missing, f"preprocessing lacks {', '.join(missing)}")
    _require(_is_int(pp["channels"]) and pp["channels"] >= 1, "preprocessing channels must be a positive integer")
    _require(_is_int(pp["image_size"]) and pp["image_size"] >= 1, "preprocessing image_size must be a positive integer")
    _require(_is_int(pp["resize"]) and pp["resize"] >= 1, "preprocessing resize must be a positive integer")
    for key in ("mean", "std"):
        v = pp[key]
        _require(isinstance(v, list) and len(v) == pp["channels"] and all(_is_number(x) for x in v),
                 f"preprocessing {key} must be {pp['channels']} numbers")
    _require(all(s > 0 for s in pp["std"]), "preprocessing std must be positive")
    _require(pp["interpolation"] in INTERPOLATIONS, f"unsupported interpolation {pp['interpolation']!r} "
             f"(this bnncli knows {', '.join(INTERPOLATIONS)})")
    _require(isinstance(pp["preset"], str), "preprocessing preset must be a string")


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
    return {"arch": model["arch"], "arch_kwargs": dict(model["arch_kwargs"]), "class_names": list(names),
            "preprocessing": dict(model["preprocessing"])}

"""The model registry and the paper's model zoo.

The names below are imported on first use, and the zoo's families (which need torch) are
registered then: importing :mod:`bnncli.models.zoo` (names and counts as plain data) or
:mod:`bnncli.models.anchors` (published accuracies) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bnncli.models._registry import (
        COMMON_OPTIONS,
        LEGACY_OPTIONS,
        builtin_model,
        create_model,
        list_models,
        model_family,
        model_options,
        register_model,
    )
    from bnncli.models.anchors import ANCHORS
    from bnncli.models.stats import LayerStats, ModelStats, check_image_size, count_model, layer_summary

IMAGENET_MODELS = (
    "binarydensenet28",
    "binarydensenet37",
    "binarydensenet37_dilated",
    "binarydensenet45",
    "resnete18",
    "resnete34",
    "birealnet18",
    "birealnet_larq",
    "quicknet_small",
    "quicknet",
    "quicknet_large",
    "meliusnet22",
    "realtobinarynet",
    "xnornet",
    "binary_alexnet",
)

# The modules of the zoo's families, imported (so registered) when a name below is first used.
_FAMILIES = ("bnncli.models.binarydensenet", "bnncli.models.resnete", "bnncli.models.quicknet",
             "bnncli.models.meliusnet", "bnncli.models.realtobinarynet", "bnncli.models.alexnet")

_EXPORTS = {
    "ANCHORS": "bnncli.models.anchors",
    "COMMON_OPTIONS": "bnncli.models._registry",
    "LEGACY_OPTIONS": "bnncli.models._registry",
    "LayerStats": "bnncli.models.stats",
    "ModelStats": "bnncli.models.stats",
    "builtin_model": "bnncli.models._registry",
    "check_image_size": "bnncli.models.stats",
    "count_model": "bnncli.models.stats",
    "create_model": "bnncli.models._registry",
    "list_models": "bnncli.models._registry",
    "layer_summary": "bnncli.models.stats",
    "model_family": "bnncli.models._registry",
    "model_options": "bnncli.models._registry",
    "register_model": "bnncli.models._registry",
}

__all__ = [
    "ANCHORS",
    "COMMON_OPTIONS",
    "IMAGENET_MODELS",
    "LEGACY_OPTIONS",
    "LayerStats",
    "ModelStats",
    "builtin_model",
    "check_image_size",
    "count_model",
    "create_model",
    "layer_summary",
    "list_models",
    "model_family",
    "model_options",
    "register_model",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bnncli.models' has no attribute {name!r}")
    for family in _FAMILIES:  # registers the zoo's models
        importlib.import_module(family)
    return getattr(importlib.import_module(_EXPORTS[name]), name)

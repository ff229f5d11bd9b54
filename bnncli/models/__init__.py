"""The model registry and the paper's model zoo."""

from bnncli.models import binarydensenet, meliusnet, quicknet, resnete  # noqa: F401  (registers the models)
from bnncli.models._registry import (
    COMMON_OPTIONS,
    LEGACY_OPTIONS,
    create_model,
    list_models,
    model_family,
    model_options,
    register_model,
)
from bnncli.models.anchors import ANCHORS
from bnncli.models.stats import LayerStats, ModelStats, count_model, layer_summary

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
)

__all__ = [
    "ANCHORS",
    "COMMON_OPTIONS",
    "IMAGENET_MODELS",
    "LEGACY_OPTIONS",
    "LayerStats",
    "ModelStats",
    "count_model",
    "create_model",
    "list_models",
    "layer_summary",
    "model_family",
    "model_options",
    "register_model",
]

"""The model registry: small factory functions registered by name.

``create_model`` records the architecture name and its fully resolved keyword arguments on
the model (``model.bnn_arch``, ``model.bnn_kwargs``) so checkpoints and artifacts can rebuild it.
Besides its factory's keyword arguments every model takes the :data:`COMMON_OPTIONS`, which
``create_model`` applies to the built model.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from bnncli.errors import UsageError
from bnncli.nn import set_float_weights, set_padding

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
# Options of every model, with defaults, applied after the factory. float_weights: the precision
# of the full-precision layers' weights (bnncli.nn.float_layers); float16 makes float16 packing
# lossless. padding: how padded stride-2 layers pad, "symmetric" (PyTorch) or "tensorflow"
# (TensorFlow's "same" rule, as Keras-trained models need; bnncli.nn.padding).
COMMON_OPTIONS: dict[str, Any] = {"float_weights": "float16", "padding": "symmetric"}
# What a checkpoint written before an option existed was trained with.
LEGACY_OPTIONS: dict[str, Any] = {"float_weights": "float32", "padding": "symmetric"}
_FAMILIES: dict[str, str] = {}


def register_model(family: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a factory under its function name; a duplicate name raises."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} is registered twice")
        _FACTORIES[name] = fn
        _FAMILIES[name] = family
        return fn

    return wrap


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names in registration order, optionally filtered by a glob pattern."""
    names = list(_FACTORIES)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def builtin_model(name: str) -> bool:
    """True for a model of bnncli's own zoo (registered by bnncli.models), False for one registered
    elsewhere or not at all: checkpoints of the others also record their architecture."""
    fn = _FACTORIES.get(name)
    return fn is not None and fn.__module__.startswith("bnncli.models.")


def model_family(name: str) -> str:
    return _FAMILIES[_check_name(name)]


def _check_name(name: str) -> str:
    if name not in _FACTORIES:
        close = difflib.get_close_matches(name, list(_FACTORIES), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(_FACTORIES)}"
        raise UsageError(f"unknown model {name!r}{hint}")
    return name


def model_options(name: str) -> dict[str, Any]:
    """The options a model accepts with their defaults."""
    fn = _FACTORIES[_check_name(name)]
    options = {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    return {**options, **COMMON_OPTIONS}


def resolve_kwargs(name: str, **kwargs: Any) -> dict[str, Any]:
    """Fill in defaults; options set to None are dropped first so they never override defaults."""
    options = model_options(name)
    given = {k: v for k, v in kwargs.items() if v is not None}
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise UsageError(
            f"model {name!r} has no option {', '.join(unknown)}; its options: {', '.join(options)}"
        )
    return {**options, **given}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model. Unknown names raise :class:`UsageError` listing close matches."""
    resolved = resolve_kwargs(name, **kwargs)
    model = _FACTORIES[name](**{k: v for k, v in resolved.items() if k not in COMMON_OPTIONS})
    set_float_weights(model, resolved["float_weights"])
    set_padding(model, resolved["padding"])
    model.bnn_arch = name  # type: ignore[assignment]
    model.bnn_kwargs = resolved  # type: ignore[assignment]
    return model

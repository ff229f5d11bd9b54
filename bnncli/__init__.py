"""bnncli: train, evaluate and ship binary neural networks (Bethge et al., 2019).

The Python API (docs/api.md) is served from here::

    import bnncli
    model = bnncli.create_model("binarydensenet_tiny", num_classes=10)
    predictor = bnncli.open_model("model.bnn", threads=1)

Importing the package is cheap and torch-free, so that ``bnncli.runtime`` runs where only NumPy
is installed: every name below is imported from the module that defines it on first use.
"""

from __future__ import annotations

from bnncli.lazy import lazy_exports

__version__ = "0.2.0"  # the one version source: pyproject.toml reads it, `bnn --version` prints it

_EXPORTS = {
    # models
    "create_model": "bnncli.api",
    "list_models": "bnncli.models",
    "model_options": "bnncli.models",
    "register_model": "bnncli.models",
    "count_model": "bnncli.models",
    "layer_summary": "bnncli.models",
    # checkpoints
    "save": "bnncli.api",
    "load": "bnncli.api",
    "preprocessing": "bnncli.data.presets",
    "preprocess_files": "bnncli.images.preprocess",
    # training and evaluation
    "TrainConfig": "bnncli.engine.config",
    "train": "bnncli.api",
    "evaluate": "bnncli.api",
    # deployment and inference
    "export": "bnncli.api",
    "pack": "bnncli.api",
    "open_model": "bnncli.artifacts.open",
    "Predictor": "bnncli.artifacts.open",
    "sample_images": "bnncli.api",
    # errors
    "BnnError": "bnncli.errors",
    "UsageError": "bnncli.errors",
    "DataError": "bnncli.errors",
    "ArtifactError": "bnncli.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

"""bnncli: train, evaluate and ship binary neural networks (Bethge et al., 2019).

Importing the package is cheap and torch-free, so that ``bnncli.runtime`` runs
where only NumPy is installed. The model API is loaded on first use.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str):
    if name in ("create_model", "list_models"):
        from bnncli import models

        return getattr(models, name)
    raise AttributeError(f"module 'bnncli' has no attribute {name!r}")

"""`bnn train` and `bnn eval` (being implemented)."""

from __future__ import annotations

from bnncli.errors import UsageError


def train() -> None:
    """Train a model (see issue 3)."""
    raise UsageError("bnn train is not implemented yet")


def evaluate() -> None:
    """Evaluate a model (see issue 3)."""
    raise UsageError("bnn eval is not implemented yet")

"""`bnn export`, `bnn pack`, `bnn predict` (being implemented)."""

from __future__ import annotations

from bnncli.errors import UsageError


def export() -> None:
    """Export ONNX (see issue 4)."""
    raise UsageError("bnn export is not implemented yet")


def pack() -> None:
    """Pack a 1-bit artifact (see issue 4)."""
    raise UsageError("bnn pack is not implemented yet")


def predict() -> None:
    """Predict images (see issue 4)."""
    raise UsageError("bnn predict is not implemented yet")

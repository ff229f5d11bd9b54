"""Errors the library raises on bad input.

The CLI turns a :class:`BnnError` into one line on stderr and its ``exit_code``;
anything else is a bug and shows a traceback only under ``BNN_DEBUG=1``.
"""

from __future__ import annotations


class BnnError(Exception):
    """A problem with what the user asked for or gave us (not a bug)."""

    exit_code = 2


class UsageError(BnnError):
    """A bad option value, unknown name or impossible combination."""

    exit_code = 2


class DataError(BnnError):
    """Unreadable or malformed input data (images, dataset folders)."""

    exit_code = 2


class ArtifactError(BnnError):
    """A checkpoint, ONNX file or packed artifact that cannot be used."""

    exit_code = 2


class GateFailed(BnnError):
    """A quality gate such as ``bnn eval --min-top1`` was not met."""

    exit_code = 1

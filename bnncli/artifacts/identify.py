"""What a file is, in bnncli's words, from its first bytes: for refusing the wrong file with one
line that says what it is and what the command needs (torch-free).

    identify("model.bnn")                      # "packed"
    describe("packed")                         # "a packed bnncli model (bnn pack)"
    require_checkpoint("model.bnn", "bnn export")
    # ArtifactError: model.bnn is a packed bnncli model (bnn pack); bnn export needs a checkpoint
    # (.pt) from bnn train or bnn import

:func:`reason` shortens a third-party library's error text to whole sentences, for the few
messages that quote one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bnncli.errors import ArtifactError
from bnncli.graph.format import is_packed

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
HEAD_BYTES = 512
NEEDS_CHECKPOINT = "a checkpoint (.pt) from bnn train or bnn import"

_DESCRIPTIONS = {
    "checkpoint": "a PyTorch checkpoint",
    "pickle": "a Python pickle file",
    "packed": "a packed bnncli model (bnn pack)",
    "onnx": "an ONNX model",
    "hdf5": "a Keras HDF5 file (bnn import larq turns Larq Zoo's into checkpoints)",
    "empty": "empty (0 bytes)",
    "text": "a text file",
    "unknown": "not a file bnncli knows",
}


def identify(path: str | os.PathLike) -> str:
    """``checkpoint`` (a zip archive, as torch.save writes), ``pickle`` (torch's legacy format),
    ``packed``, ``onnx`` (a protobuf starting with ONNX's first field), ``hdf5``, ``empty``,
    ``text`` or ``unknown``. Reads the first bytes only; OSError propagates."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if not head:
        return "empty"
    if head.startswith(ZIP_MAGIC):
        return "checkpoint"
    if is_packed(head):
        return "packed"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head[0] == 0x80:  # a pickle's PROTO opcode
        return "pickle"
    if head[0] == 0x08:  # ModelProto field 1 (ir_version), which ONNX writers put first
        return "onnx"
    return "text" if _is_text(head) else "unknown"


def _is_text(head: bytes) -> bool:
    """UTF-8 without control characters other than tabs and line breaks (a cut last character allowed)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:
            return False
        text = head[:e.start].decode("utf-8")
    return all((ord(c) >= 32 and c != "\x7f") or c in "\t\n\r\f" for c in text)


def describe(kind: str) -> str:
    """``kind`` (see :func:`identify`) as the end of "FILE is ..."."""
    return _DESCRIPTIONS[kind]


def require_checkpoint(path: str | os.PathLike, command: str) -> None:
    """Refuse, before any work, a file ``command`` cannot take as a checkpoint: "model.bnn is a
    packed bnncli model (bnn pack); bnn export needs a checkpoint (.pt) from bnn train or bnn import".
    ``path`` is a model path as given (a run directory stands for its checkpoint)."""
    from bnncli.artifacts.rundir import resolve_model_path

    file = resolve_model_path(path, what="checkpoint")
    if not file.is_file():
        raise ArtifactError(f"{file} is not a file; {command} needs {NEEDS_CHECKPOINT}")
    expect_checkpoint(file, f"; {command} needs {NEEDS_CHECKPOINT}")


def expect_checkpoint(file: Path, refusal: str) -> None:
    """Raise ArtifactError ("FILE is <what it is><refusal>") unless ``file`` looks like a checkpoint
    (a pickle passes too: loading it refuses it in bnncli's words)."""
    try:
        kind = identify(file)
    except OSError as e:
        raise ArtifactError(f"cannot read {file}: {e.strerror or e}") from None
    if kind not in ("checkpoint", "pickle"):
        raise ArtifactError(f"{file} is {describe(kind)}{refusal}")


def damaged_checkpoint(path: Path) -> str:
    """Why a file that looks like a checkpoint did not load, in bnncli's words (the end of "FILE is ...")."""
    import zipfile

    if identify(path) == "pickle":
        return "a Python pickle file that is not a bnncli checkpoint"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a truncated or damaged checkpoint (its zip archive is incomplete)"
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "a zip archive, not a PyTorch checkpoint"
    return "a damaged checkpoint (PyTorch cannot read its contents)"


_SENTENCE_END = re.compile(r"[.!?;:](?=\s)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def reason(error: BaseException | str, limit: int = 200) -> str:
    """The first line of a library's error text, cut at the end of a sentence within ``limit``
    characters, never inside one (a first sentence longer than that ends at a word with "...")."""
    lines = _ANSI.sub("", str(error)).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    if len(text) <= limit:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() <= limit]
    if ends:
        return text[:ends[-1]].rstrip(";:")
    cut = text.rfind(" ", 0, limit)
    return text[:cut if cut > 0 else limit].rstrip(",;: ") + " ..."

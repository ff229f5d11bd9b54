"""Self-describing checkpoints, written atomically and loaded without unpickling code.

A checkpoint is a dict of tensors and plain Python values (str, int, float, bool, None,
lists, tuples, dicts), saved with ``torch.save`` and loaded with ``torch.load(weights_only=True)``.
Required keys: ``format``, ``format_version``, the model description of
:data:`bnncli.metadata.MODEL_KEYS` (``arch``, ``arch_kwargs``, ``class_names``, ``preprocessing``)
and ``model`` (the state dict). Training adds ``epoch``, ``optimizer``,
``scheduler``, ``scaler``, ``rng``, ``metrics`` and ``config``.

The model is rebuilt from ``arch`` (a registry name) and ``arch_kwargs``. A model built some other
way (a researcher's own ``nn.Module`` of bnncli layers) or registered outside bnncli also carries
``architecture``: its torch.fx trace as plain data (:mod:`bnncli.artifacts.architecture`), and
``arch`` is then its class name. Such a checkpoint has format version 2, so that a bnncli that
cannot read the record refuses the file rather than failing to find the model.
"""

from __future__ import annotations

import errno
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bnncli import __version__
from bnncli.artifacts.identify import NEEDS_CHECKPOINT, damaged_checkpoint, expect_checkpoint, reason
from bnncli.artifacts.rundir import resolve_model_path
from bnncli.errors import ArtifactError, BnnError
from bnncli.fileio import atomic_open
from bnncli.metadata import MODEL_KEYS, check_model_meta, model_meta

FORMAT = "bnncli-checkpoint"
FORMAT_VERSION = 1  # a registry model's checkpoint
ARCHITECTURE_FORMAT_VERSION = 2  # a checkpoint with an architecture record
READS = 2  # the newest format version this bnncli reads
REQUIRED = (*MODEL_KEYS, "model")


def model_checkpoint(model: nn.Module, class_names: list[str], preprocessing: dict[str, Any],
                     **extra: Any) -> dict[str, Any]:
    """The checkpoint dict of ``model``: a registry model (``create_model``) by name and options;
    any other module built from bnncli's and torch's layers with its architecture recorded
    (:func:`bnncli.artifacts.architecture.record`, ArtifactError naming what it cannot record)."""
    from bnncli.artifacts.architecture import record
    from bnncli.models import builtin_model

    module: nn.Module = getattr(model, "module", model)  # DistributedDataParallel
    module = getattr(module, "_orig_mod", module)  # torch.compile wrapper
    arch = getattr(model, "bnn_arch", None) or getattr(module, "bnn_arch", None)
    head: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
    if arch is None:
        head.update(format_version=ARCHITECTURE_FORMAT_VERSION, architecture=record(module))
        arch, kwargs = type(module).__name__, {}
    else:
        kwargs = dict(getattr(model, "bnn_kwargs", None) or getattr(module, "bnn_kwargs", {}))
        if not builtin_model(arch):  # registered by the user: rebuildable where that registration is absent
            try:
                head.update(format_version=ARCHITECTURE_FORMAT_VERSION, architecture=record(module))
            except ArtifactError:
                pass  # it reloads where its factory is registered (build_model says so)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return {
        **head,
        "bnncli_version": __version__,
        "arch": arch,
        "arch_kwargs": kwargs,
        "class_names": list(class_names),
        "preprocessing": dict(preprocessing),
        "model": state,
        **extra,
    }


class _Watched:
    """A file whose ``write`` remembers what it raised: PyTorch's zip writer swallows the error of
    the Python file it writes to ("[enforce fail at inline_container.cc:672] . unexpected pos"),
    so the real cause (a full disk, a Ctrl-C) is taken from here."""

    def __init__(self, f) -> None:
        self.f = f
        self.error: BaseException | None = None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except BaseException as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str):
        return getattr(self.f, name)


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write atomically (:func:`bnncli.fileio.atomic_open`): a kill at any instant leaves either
    the old file or the new one, never a partial file. A failed write (full disk, no permission)
    raises ArtifactError naming ``path`` and the system's reason ("No space left on device"), with
    the old file intact; a Ctrl-C during the write is a KeyboardInterrupt, as anywhere else."""
    with atomic_open(path) as f:
        watched = _Watched(f)
        try:
            torch.save(checkpoint, watched)
        except RuntimeError as e:  # torch's zip writer: "[enforce fail at inline_container.cc] ... write failed"
            if isinstance(watched.error, (OSError, KeyboardInterrupt)):
                raise watched.error from None
            if "inline_container" not in str(e) and "PytorchStreamWriter" not in str(e):
                raise
            last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            raise OSError(errno.EIO, f"the write failed ({reason(last)})") from None
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint not found: {path}")
    expect_checkpoint(path, f", not {NEEDS_CHECKPOINT}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # objects beyond tensors and plain values: never unpickled here
        raise ArtifactError(f"{path} is not a bnncli checkpoint: it holds Python objects other than tensors "
                            "and plain values, and bnncli never loads code from a file") from None
    except Exception:  # a truncated zip, a foreign archive: torch's own text would not help
        raise ArtifactError(f"{path} is {damaged_checkpoint(path)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a bnncli checkpoint (no '{FORMAT}' format marker)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= READS:
        raise ArtifactError(f"{path} has checkpoint format version {version!r}; this bnncli reads up to {READS}")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise ArtifactError(f"{path} lacks the checkpoint fields {', '.join(missing)}")
    try:
        check_model_meta(ckpt)
        _check_training_fields(ckpt)
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None
    return ckpt


def _check_training_fields(ckpt: dict[str, Any]) -> None:
    """Where a training checkpoint stands in its run (the RNG state is checked when it is restored)."""
    for key in ("epoch", "step_in_epoch", "steps_per_epoch"):
        v = ckpt.get(key)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            raise ArtifactError(f"{key} must be a whole number >= 0, not {v!r}")
    history = ckpt.get("history", [])
    if not isinstance(history, list) or not all(isinstance(m, dict) for m in history):
        raise ArtifactError("history must be a list of per-epoch metrics")
    for key in ("config", "best"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            raise ArtifactError(f"{key} must be a dict, not {type(ckpt[key]).__name__}")


def build_model(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode: a registered model
    by name and options, else its architecture record (an ``fx.GraphModule``)."""
    from bnncli.models import LEGACY_OPTIONS, create_model, list_models

    arch = ckpt["arch"]
    record = ckpt.get("architecture")
    if arch not in list_models() and record is None:
        raise ArtifactError(f"unknown model {arch!r}: it is not one of bnncli's models, and the checkpoint does not "
                            "record its architecture; import the code that registers it (register_model) first")
    try:
        if arch in list_models():
            model = create_model(arch, **{**LEGACY_OPTIONS, **ckpt["arch_kwargs"]})
            model.load_state_dict(ckpt["model"])
        else:
            from bnncli.artifacts.architecture import rebuild

            model = rebuild(record, device="meta")
            model.load_state_dict(ckpt["model"], assign=True)
    except BnnError:
        raise
    except Exception as e:
        raise ArtifactError(f"checkpoint weights do not fit {arch}: {reason(e)}") from None
    return model.eval()


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, checkpoint)`` from a checkpoint file; the model is on CPU in eval mode."""
    ckpt = load_checkpoint(path)
    return build_model(ckpt), ckpt


@dataclass
class CheckpointModel:
    """A checkpoint opened for inference: the model on CPU in eval mode and its description."""

    path: Path
    model: nn.Module
    meta: dict[str, Any]  # bnncli.metadata.MODEL_KEYS
    checkpoint: dict[str, Any] = field(repr=False)

    @torch.inference_mode()
    def logits(self, x: np.ndarray) -> np.ndarray:
        """PyTorch eval logits of a float32 NCHW batch: the reference every backend is compared with."""
        return self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def open_checkpoint(path: str | os.PathLike) -> CheckpointModel:
    """A checkpoint file, or a run directory (its best.pt, else last.pt), opened for inference."""
    path = resolve_model_path(path, what="checkpoint")
    model, ckpt = load_model(path)
    return CheckpointModel(path, model, model_meta(ckpt), ckpt)

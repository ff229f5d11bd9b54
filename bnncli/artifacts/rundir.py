"""The run directory: what `bnn train` writes where, and which file a run directory stands for.

    runs/NAME/
      last.pt        checkpoint after the latest epoch (or the step a stop happened at)
      best.pt        checkpoint of the epoch with the best selection metric
      metrics.jsonl  one JSON line per epoch
      curves.png     loss and accuracy per epoch
      config.json    the resolved training configuration, classes and preprocessing

Wherever a command takes a model file, a run directory stands for its ``best.pt``, else its
``last.pt`` (:func:`resolve_model_path`); that rule is written here only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bnncli.errors import ArtifactError

# The checkpoints a run directory stands for, in order of preference.
MODEL_FILES = ("best.pt", "last.pt")


@dataclass(frozen=True)
class RunFiles:
    """The paths inside one run directory."""

    dir: Path

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.dir / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.dir / "curves.png"

    @property
    def config(self) -> Path:
        return self.dir / "config.json"


def resolve_model_path(path: str | os.PathLike, what: str = "model") -> Path:
    """A model file as given, or the checkpoint a run directory stands for (best.pt, else last.pt).

    Raises ArtifactError when ``path`` does not exist ("``what`` not found") or is a directory
    holding neither.
    """
    path = Path(path)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name
        raise ArtifactError(f"{path} holds no checkpoint ({' or '.join(MODEL_FILES)})")
    if not path.exists():
        raise ArtifactError(f"{what} not found: {path}")
    return path


def find_default_model(runs: str | os.PathLike = "runs") -> Path | None:
    """The model of the most recently changed run under ``runs`` (see :func:`resolve_model_path`;
    a run with neither checkpoint offers its newest ``*.pt``), or None when there is none."""
    runs = Path(runs)
    run_dirs = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True) \
        if runs.is_dir() else []
    for run in run_dirs:
        if any((run / name).is_file() for name in MODEL_FILES):
            return resolve_model_path(run)
        models = sorted(run.glob("*.pt"), key=lambda f: f.stat().st_mtime, reverse=True)
        if models:
            return models[0]
    return None

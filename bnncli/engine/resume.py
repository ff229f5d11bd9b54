"""Run directories and resuming: where a run writes, what may change when it is continued.

The layout of a run directory is :class:`bnncli.artifacts.rundir.RunFiles`; this module holds
the training policy around it.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from bnncli.artifacts.checkpoint import load_checkpoint
from bnncli.artifacts.rundir import RunFiles
from bnncli.errors import UsageError

# What may change when a run is resumed: where the data lives and how fast it runs, and the
# number of epochs (to train longer). Anything else would silently mix two experiments.
RESUMABLE_OVERRIDES = ("data", "epochs", "workers", "device", "amp", "channels_last", "compile")


def default_run_dir(arch: str) -> Path:
    return Path("runs") / f"{arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def load_resume(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``last.pt`` of a run directory, checked to be a training checkpoint."""
    run = RunFiles(Path(run_dir))
    if not run.dir.is_dir():
        raise UsageError(f"--resume takes a run directory; {run.dir} is not one")
    if not run.last.is_file():
        raise UsageError(f"{run.dir} holds no last.pt to resume from")
    ckpt = load_checkpoint(run.last)
    for key in ("config", "optimizer", "scheduler", "epoch"):
        if key not in ckpt:
            raise UsageError(f"{run.last} is a model-only checkpoint (no {key}); it cannot be resumed")
    return ckpt


def resume_overrides(ckpt: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Check that the command line changes only what a resumed run may change."""
    saved = ckpt["config"]
    changed = sorted(k for k, v in overrides.items()
                     if v is not None and k not in RESUMABLE_OVERRIDES and v != saved.get(k)
                     and not (k == "model" and all(saved.get("model", {}).get(mk) == mv
                                                   for mk, mv in v.items() if mv is not None)))
    if changed:
        raise UsageError(f"cannot change {', '.join(changed)} of a run being resumed "
                         f"(only {', '.join(RESUMABLE_OVERRIDES)}); start a new run with --out")
    return {k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES}


def check_new_run(run: RunFiles) -> None:
    """A new run must not overwrite another: its directory may exist, but hold no last.pt."""
    if run.last.exists():
        raise UsageError(f"{run.dir} already holds a run; continue it with --resume {run.dir} or choose another --out")

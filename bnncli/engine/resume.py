"""Run directories and resuming: where a run writes, what may change when it is continued.

The layout of a run directory is :class:`bnncli.artifacts.rundir.RunFiles`; this module holds
the training policy around it.
"""

from __future__ import annotations

import errno
import itertools
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from bnncli.artifacts.checkpoint import load_checkpoint
from bnncli.artifacts.rundir import LOCK_FILE, RUN_FILES, RunFiles, RunLock
from bnncli.errors import ArtifactError, UsageError
from bnncli.fileio import temp_prefix, unwritable, write_bytes

# What may change when a run is resumed: where the data lives and how fast it runs, and the
# number of epochs (to train longer). Anything else would silently mix two experiments. (A new
# device, autocast mode or loader changes the arithmetic or the resampling: the resumed run is then
# no longer bit-identical to an uninterrupted one.)
RESUMABLE_OVERRIDES = ("data", "epochs", "workers", "device", "amp", "channels_last", "compile", "loader")


def default_run_dir(arch: str) -> Path:
    return Path("runs") / f"{arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def claim_default_run_dir(arch: str) -> Path:
    """Create a new ``runs/<arch>-<time>``; runs started in the same second get ``...-2``, ``...-3``
    (the directory is created exclusively, so two processes never get the same one)."""
    base = default_run_dir(arch)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def open_run_dir(out: str | os.PathLike | None, arch: str,
                 resume: dict[str, Any] | None) -> tuple[RunFiles, RunLock, list[str]]:
    """``(files, lock, warnings)``: the run directory, created where needed, locked for this run
    (:class:`~bnncli.artifacts.rundir.RunLock`) and checked: a new run needs a new or empty directory
    (:func:`check_new_run`), a resumed one is made consistent (:func:`prepare_resume`). Rank 0 only."""
    directory = Path(out) if out is not None else default_run_dir(arch)
    try:
        if out is None:
            directory, created = claim_default_run_dir(arch), True
        else:
            if directory.exists() and not directory.is_dir():
                raise UsageError(f"--out {directory} is not a directory")
            created = not directory.exists()
            directory.mkdir(parents=True, exist_ok=True)
        lock = RunLock(directory, remove_dir=created).acquire()
    except PermissionError:
        raise UsageError(f"cannot use {directory} as the run directory: {unwritable(directory)}") from None
    except OSError as e:
        if e.errno == errno.EROFS:
            raise UsageError(f"cannot use {directory} as the run directory: {unwritable(directory)}") from None
        raise UsageError(f"cannot use {directory} as the run directory: {e.strerror or e}") from None
    try:
        files = RunFiles(directory)
        notes = [] if resume is None else prepare_resume(files, resume)
        if resume is None:
            check_new_run(files)
        if not lock.supported:
            notes.append(f"{directory} cannot be locked (the filesystem has no locks): make sure no other "
                         f"training writes there")
    except BaseException:
        lock.release()
        raise
    return files, lock, notes


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
    """A new run writes into a new or empty directory (its lock file aside): never over another
    run's files, nor next to anything it did not make."""
    if run.last.exists():
        raise UsageError(f"{run.dir} already holds a run; continue it with --resume {run.dir} or choose another --out")
    others = sorted(p.name for p in run.dir.iterdir() if p.name != LOCK_FILE) if run.dir.is_dir() else []
    if others:
        shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
        what = "files of another run" if run.holds_run() else "files"
        raise UsageError(f"{run.dir} is not empty (it holds {what}: {shown}); a new run needs a new or empty "
                         f"directory: choose another --out")


def prepare_resume(run: RunFiles, resume: dict[str, Any]) -> list[str]:
    """Under the run's lock: check that last.pt is still the one being resumed, remove the temp
    files a killed write left, and make best.pt the epoch last.pt records as best. Returns warnings."""
    last = load_checkpoint(run.last)
    if _position(last) != _position(resume):
        raise UsageError(f"{run.last} changed while this run was starting (another bnn train wrote it); "
                         f"run the command again")
    remove_temp_files(run)
    note = repair_best(run, last)
    return [note] if note else []


def remove_temp_files(run: RunFiles) -> list[Path]:
    """Delete the temp files of writes that a kill interrupted (:func:`bnncli.fileio.atomic_open`)."""
    removed = [p for name in RUN_FILES for p in run.dir.glob(f"{temp_prefix(Path(name))}*.tmp") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def repair_best(run: RunFiles, last: dict[str, Any]) -> str | None:
    """Make best.pt hold the epoch ``last`` (last.pt) records as the run's best.

    Each epoch writes last.pt, then best.pt; a kill between the two leaves best.pt one improvement
    behind, while last.pt is exactly the checkpoint best.pt should be, so it is copied. Returns a
    warning when best.pt was repaired or cannot be.
    """
    best = last.get("best")
    if not best:
        return None
    held = _epoch_of(run.best)
    if held == best["epoch"]:
        return None
    if int(last["epoch"]) == best["epoch"] and not last.get("step_in_epoch"):
        write_bytes(run.best, run.last.read_bytes())
        return (f"{run.best} held {'no checkpoint' if held is None else f'epoch {held}'}, not the best epoch "
                f"{best['epoch']} (a stop between writing last.pt and best.pt): restored it from last.pt")
    return (f"{run.best} holds {'no checkpoint' if held is None else f'epoch {held}'} but the run's best is epoch "
            f"{best['epoch']}, which no file holds any more")


def _position(ckpt: dict[str, Any]) -> tuple[Any, Any, int]:
    return ckpt.get("epoch"), ckpt.get("step_in_epoch", 0), len(ckpt.get("history") or ())


def _epoch_of(path: Path) -> int | None:
    """The epoch a checkpoint holds; None when it is missing or unreadable."""
    try:
        return int(load_checkpoint(path)["epoch"])
    except (ArtifactError, KeyError, TypeError, ValueError):
        return None

"""`bnn compare`: several run directories side by side, from their config.json and metrics.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bnncli.artifacts.rundir import RunFiles
from bnncli.engine.curves import best_epoch, selection_key
from bnncli.errors import ArtifactError

# Config keys that say where or how fast a run ran, not what it computed: never listed as differences.
_NOT_OPTIONS = {"data", "workers", "threads", "device", "description", "reference", "epochs"}


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """A run directory's config.json and metrics.jsonl (ArtifactError naming the file when unusable)."""
    files = RunFiles(Path(path))
    if not files.dir.is_dir():
        raise ArtifactError(f"{files.dir} is not a run directory")
    try:
        config = json.loads(files.config.read_text(encoding="utf-8"))
        history = [json.loads(line) for line in files.metrics.read_text(encoding="utf-8").splitlines() if line]
    except FileNotFoundError as e:
        raise ArtifactError(f"{files.dir} is not a run directory of bnn train: {Path(e.filename).name} is missing") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{files.dir}: unreadable run files ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict) or \
            not all(isinstance(m, dict) and "epoch" in m for m in history):
        raise ArtifactError(f"{files.dir}: config.json or metrics.jsonl is not what bnn train writes")
    return {"dir": files.dir, "config": config, "history": history}


def _options(run: dict[str, Any]) -> dict[str, Any]:
    """The run's configuration as flat key -> value (model options as ``model.KEY``)."""
    cfg = dict(run["config"]["config"])
    flat = {k: v for k, v in cfg.items() if k != "model" and k not in _NOT_OPTIONS}
    flat.update({f"model.{k}": v for k, v in (cfg.get("model") or {}).items()})
    return flat


def _size(run: dict[str, Any]) -> dict[str, Any]:
    """Parameters and size at 1 bit of the run's model, counted at its training image size."""
    from bnncli.models import count_model, create_model

    c = run["config"]
    stats = count_model(create_model(c["arch"], **c["arch_kwargs"]), int(c["preprocessing"]["image_size"]))
    return {"params": stats.params, "binary_params": stats.binary_params, "size_bytes": stats.size_bytes}


def summarize(run: dict[str, Any], differing: list[str]) -> dict[str, Any]:
    """One row of the comparison."""
    history = run["history"]
    key = selection_key(history)
    best, last = best_epoch(history), history[-1] if history else {}
    top5 = "val_top5" if key == "val_top1" else None
    options = _options(run)
    return {
        "run": str(run["dir"]), "arch": run["config"]["arch"], "selected_by": key,
        "options": {k: options.get(k) for k in differing},
        "epochs": len(history),
        "best_top1": best[key] if best else None, "best_epoch": best["epoch"] if best else None,
        "best_top5": best.get(top5) if best and top5 else None,
        "last_top1": last.get(key), "last_top5": last.get(top5) if top5 else None,
        "images_per_s": last.get("images_per_s"),
        **_size(run),
    }


def compare_runs(paths: list[str | os.PathLike]) -> dict[str, Any]:
    """Rows for ``paths`` (run directories) with the options that differ between them."""
    runs = [read_run(p) for p in paths]
    options = [_options(r) for r in runs]
    keys = sorted({k for o in options for k in o})
    differing = [k for k in keys if len({json.dumps(o.get(k), sort_keys=True) for o in options}) > 1]
    if len({r["config"]["arch"] for r in runs}) > 1:
        differing = ["arch", *differing]
    return {"differing": differing, "runs": [summarize(r, differing) for r in runs],
            "histories": {str(r["dir"]): r["history"] for r in runs}}

"""`bnn compare`: several run directories side by side, from their config.json and metrics.jsonl."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnncli.artifacts.identify import reason
from bnncli.artifacts.rundir import RunFiles
from bnncli.engine.curves import best_epoch, selection_key
from bnncli.errors import ArtifactError, BnnError
from bnncli.fileio import MAX_TEXT_BYTES, read_regular_text
from bnncli.metadata import MAX_IMAGE_SIZE, load_json

# Config keys that say where or how fast a run ran, not what it computed: never listed as differences.
# (``seed`` is an option like any other; group_by_seed folds runs that differ only by it.)
_NOT_OPTIONS = {"data", "workers", "threads", "device", "description", "reference", "epochs"}


# The metrics bnn compare reads from metrics.jsonl: numbers, or null.
METRIC_KEYS = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "images_per_s", "lr", "seconds")
MAX_EPOCHS = 100_000


def _read_text(path: Path, run: Path) -> str:
    """A run file's text: a regular file of at most 16 MiB (bnncli.fileio.read_regular_text)."""
    if not os.path.lexists(path):
        raise ArtifactError(f"{run} is not a run directory of bnn train: {path.name} is missing")
    return read_regular_text(path, MAX_TEXT_BYTES, "run file", ArtifactError)


def _number(value: Any, where: str) -> float | None:
    """A metric as a finite float, None for null, NaN or infinity; ArtifactError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArtifactError(f"{where} is {value!r:.40}, not a number")
    return float(value) if math.isfinite(value) else None


def _check_config(config: Any, where: str) -> None:
    """What bnn compare uses of config.json, with the types bnn train writes."""
    if not isinstance(config, dict):
        raise ArtifactError(f"{where} is not an object")
    for key, kind in (("config", dict), ("arch", str), ("arch_kwargs", dict), ("preprocessing", dict)):
        if not isinstance(config.get(key), kind):
            raise ArtifactError(f"{where}: {key} is {'missing' if key not in config else type(config[key]).__name__}"
                                f", not {'an object' if kind is dict else 'a name'} as bnn train writes it")
    size = config["preprocessing"].get("image_size")
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_IMAGE_SIZE):
        raise ArtifactError(f"{where}: preprocessing image_size is {size!r:.40}, not a size from 1 to "
                            f"{MAX_IMAGE_SIZE}")


def _check_metrics(history: list[Any], where: str) -> list[dict[str, Any]]:
    if len(history) > MAX_EPOCHS:
        raise ArtifactError(f"{where} holds {len(history):,} epochs")
    clean = []
    for i, m in enumerate(history, 1):
        epoch = m.get("epoch") if isinstance(m, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= MAX_EPOCHS:
            raise ArtifactError(f"{where} line {i}: not what bnn train writes (an object with an epoch number)")
        clean.append({**m, **{k: _number(m[k], f"{where} line {i}: {k}") for k in METRIC_KEYS if k in m}})
    return clean


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """A run directory's config.json and metrics.jsonl (ArtifactError naming the file when unusable).
    Both are read as regular files of bounded size and JSON of bounded depth, and checked for the
    keys and types bnn train writes; a NaN or infinite metric reads as missing."""
    files = RunFiles(Path(path))
    try:
        is_dir = files.dir.is_dir()
    except OSError:  # a symlink loop, a name too long
        is_dir = False
    if not is_dir:
        raise ArtifactError(f"{files.dir} is not a run directory")
    config = load_json(_read_text(files.config, files.dir), str(files.config))
    _check_config(config, str(files.config))
    lines = _read_text(files.metrics, files.dir).splitlines()
    history = _check_metrics([load_json(line, f"{files.metrics} line {i}") for i, line in enumerate(lines, 1)
                              if line.strip()], str(files.metrics))
    return {"dir": files.dir, "config": config, "history": history}


def _options(run: dict[str, Any]) -> dict[str, Any]:
    """The run's configuration as flat key -> value (model options as ``model.KEY``)."""
    cfg = dict(run["config"]["config"])
    flat = {k: v for k, v in cfg.items() if k != "model" and k not in _NOT_OPTIONS}
    flat.update({f"model.{k}": v for k, v in (cfg.get("model") or {}).items()})
    return flat


def _size(run: dict[str, Any]) -> dict[str, Any]:
    """Parameters and size at 1 bit of the run's model, counted at its training image size (:func:`model_size`)."""
    c = run["config"]
    try:
        kwargs = json.dumps(c["arch_kwargs"], sort_keys=True)
        return model_size(c["arch"], kwargs, int(c["preprocessing"]["image_size"]))
    except BnnError as e:
        raise ArtifactError(f"{run['dir'] / 'config.json'}: {e}") from None
    except (TypeError, ValueError, KeyError, RuntimeError, OverflowError) as e:
        raise ArtifactError(f"{run['dir'] / 'config.json'}: its model cannot be counted ({reason(e)})") from None


@functools.lru_cache(maxsize=256)
def model_size(arch: str, arch_kwargs: str, image_size: int) -> dict[str, Any]:
    """Parameters of ``arch`` built on PyTorch's meta device (nothing is allocated, so a config's
    num_classes of 10^9 costs nothing), counted once per distinct model: runs of one ablation share it."""
    import torch

    from bnncli.models import count_model, create_model

    with torch.device("meta"):
        model = create_model(arch, **json.loads(arch_kwargs))
    stats = count_model(model, image_size)
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


def compare_runs(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Rows for ``paths`` (run directories) with the options that differ between them."""
    runs = [read_run(p) for p in paths]
    options = [_options(r) for r in runs]
    keys = sorted({k for o in options for k in o})
    differing = [k for k in keys if len({json.dumps(o.get(k), sort_keys=True) for o in options}) > 1]
    if "arch" in differing:  # the architecture first, once
        differing = ["arch", *(k for k in differing if k != "arch")]
    return {"differing": differing, "runs": [summarize(r, differing) for r in runs],
            "histories": {str(r["dir"]): r["history"] for r in runs}}


def group_by_seed(result: dict[str, Any]) -> dict[str, Any]:
    """Fold the rows of :func:`compare_runs` whose runs differ only by ``seed`` into one group each:
    the mean and sample standard deviation over the seeds of best and last top-1 (and top-5), the mean
    images/s, and the member runs. Groups keep the order of their first run."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in result["runs"]:
        same = {k: v for k, v in row["options"].items() if k != "seed"}
        groups.setdefault(json.dumps([row["arch"], same], sort_keys=True), []).append(row)
    differing = [k for k in result["differing"] if k != "seed"]
    rows = []
    for members in groups.values():
        first = members[0]
        rows.append({
            "name": _group_name([Path(m["run"]).name for m in members]),
            "runs": [m["run"] for m in members], "seeds": [m["options"].get("seed") for m in members],
            "arch": first["arch"], "options": {k: first["options"].get(k) for k in differing},
            "epochs": [m["epochs"] for m in members], "selected_by": first["selected_by"],
            **{f"{stat}_{part}": value for stat in ("best_top1", "last_top1", "best_top5", "last_top5")
               for part, value in _mean_std([m[stat] for m in members]).items()},
            "images_per_s": _mean_std([m["images_per_s"] for m in members])["mean"],
            **{k: first[k] for k in ("params", "binary_params", "size_bytes")},
        })
    names = [row["name"] for row in rows]
    for i, row in enumerate(rows):
        if names.count(row["name"]) > 1:  # two groups, one name: number them in order
            row["name"] += f" [{names[:i + 1].count(row['name'])}]"
    histories = {row["name"]: [result["histories"][r] for r in row["runs"]] for row in rows}
    return {"differing": differing, "groups": rows, "histories": histories}


def _mean_std(values: list[float | None]) -> dict[str, float | None]:
    """Mean and sample standard deviation (None with fewer than two values, or any value missing)."""
    known = [v for v in values if v is not None]
    if not values or len(known) < len(values):
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(known), "std": statistics.stdev(known) if len(known) > 1 else None}


def _group_name(names: list[str]) -> str:
    """The run names' common part without a trailing seed marker (runs a-seed0, a-seed1 -> a)."""
    if len(names) == 1:
        return re.sub(r"[-_.]+(seed|s)\d+$", "", names[0], flags=re.IGNORECASE) or names[0]
    prefix = os.path.commonprefix(names)
    stem = re.sub(r"[-_.]*(seed|s)?[-_.]*$", "", prefix, flags=re.IGNORECASE)
    return stem or names[0]

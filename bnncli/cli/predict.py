"""`bnn predict`: top-k classes of image files from any model file (checkpoint, ONNX, packed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from bnncli.cli.common import (
    BackendOpt,
    JsonOpt,
    ThreadsOpt,
    err,
    info,
    note_compiling,
    out,
    plain,
    print_json,
    printable,
)


def find_default_model(runs: Path = Path("runs")) -> Path:
    """``$BNN_MODEL``, else the model of the newest run under ``runs``; UsageError if none."""
    from bnncli.artifacts.rundir import find_default_model as newest_run_model
    from bnncli.errors import UsageError

    env = os.environ.get("BNN_MODEL")
    if env:
        return Path(env)
    found = newest_run_model(runs)
    if found is None:
        raise UsageError("no model given: pass --model PATH (a checkpoint, .onnx or packed file), set BNN_MODEL, "
                         f"or train one with `bnn train` (no run with a model under ./{runs})")
    return found


def _softmax(logits):
    import numpy as np

    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _logits(predictor, x):
    """``predictor(x)``; an error from the model becomes one line naming the model file."""
    from bnncli.errors import ArtifactError, BnnError

    try:
        return predictor(x)
    except BnnError as e:
        if str(predictor.path) in str(e):
            raise
        raise type(e)(f"{predictor.path}: {e}") from e
    except Exception as e:
        if not isinstance(e, (ValueError, RuntimeError, ArithmeticError)) \
                and not type(e).__module__.startswith("onnxruntime"):
            raise  # a bug: a traceback under BNN_DEBUG=1
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ArtifactError(f"{predictor.path}: the {predictor.kind} model failed on {len(x)} image(s): "
                            f"{type(e).__name__}: {reason}") from e


def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files (any format Pillow reads).")],
    model: Annotated[Path | None, typer.Option("--model", "-m", help="Checkpoint, ONNX or packed model; told apart "
                                               "by content. Default: $BNN_MODEL, else the newest run's model.")]
    = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to show per image.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 16,
    backend: BackendOpt = None,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Classify images with a checkpoint, an ONNX file or a packed model.

    An unreadable image gets one line on stderr, the others are still predicted, and the exit
    code is 1.
    """
    import numpy as np

    from bnncli.artifacts.open import open_model
    from bnncli.errors import DataError
    from bnncli.runtime.preprocess import preprocess_file

    path = model if model is not None else find_default_model()
    predictor = open_model(path, threads=threads, backend=backend)
    note_compiling(predictor.backend)
    labels = predictor.labels
    k = min(top_k, len(labels))
    results: list[dict] = []
    failed = 0
    batch: list[tuple[int, Path, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        probs = _softmax(_logits(predictor, np.stack([x for _, _, x in batch])))
        for (slot, image, _), p in zip(batch, probs):
            order = np.argsort(-p, kind="stable")[:k]
            results[slot] = {"path": str(image), "backend": predictor.backend, "top_k": [
                {"index": int(i), "label": labels[i], "class_name": predictor.class_names[i],
                 "probability": float(p[i])} for i in order]}
        batch.clear()

    for image in images:
        results.append({})
        try:
            x = preprocess_file(image, predictor.preprocessing)
        except DataError as e:
            failed += 1
            err.print(printable(f"bnn: error: {e}"), highlight=False, markup=False)
            results[-1] = {"path": str(image), "error": str(e)}
            continue
        batch.append((len(results) - 1, image, x))
        if len(batch) >= batch_size:
            flush()
    flush()

    if json_:
        print_json(results)
    else:
        _print_predictions(results, predictor, k)
    if failed:
        raise typer.Exit(1)


def _print_predictions(results: list[dict], predictor, k: int) -> None:
    from rich.table import Table

    info(f"{predictor.kind} model {predictor.path} ({predictor.arch}, {len(predictor.class_names)} classes, "
         f"{predictor.backend})")
    table = Table(title=f"top-{k}")
    for col in ("image", "rank", "label", "probability"):
        table.add_column(col, justify="right" if col in ("rank", "probability") else "left")
    for r in results:
        if "error" in r:
            continue
        for rank, t in enumerate(r["top_k"], 1):
            table.add_row(plain(r["path"] if rank == 1 else ""), str(rank), plain(t["label"]),
                          f"{t['probability']:.4f}")
    if table.row_count:
        out.print(table)

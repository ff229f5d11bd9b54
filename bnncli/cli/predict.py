"""`bnn predict`: top-k classes of image files from any model file (checkpoint, ONNX, packed)."""

from __future__ import annotations

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
    warn,
)


def find_default_model(runs: Path = Path("runs")) -> Path:
    """The model of the newest run under ``runs`` (``--model`` and ``$BNN_MODEL`` come first, read by
    Typer); UsageError if none."""
    from bnncli.artifacts.rundir import find_default_model as newest_run_model
    from bnncli.errors import UsageError

    found = newest_run_model(runs)
    if found is None:
        raise UsageError("no model given: pass --model PATH (a checkpoint, .onnx or packed file), set BNN_MODEL, "
                         f"or train one with `bnn train` (no run with a model under ./{runs})")
    return found


def predict(
    images: Annotated[list[Path], typer.Argument(
        metavar="IMAGE|DIR", help="Image files (any format Pillow reads), or folders: every image under them, "
        "sub-folders included, in sorted order.")],
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", metavar="FILE", envvar="BNN_MODEL", show_envvar=True,
        help="Checkpoint, ONNX or packed model; told apart by content [default: the newest run's model].")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", metavar="K", min=1, help="Classes to show per image.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", min=1, help="Images per forward pass.")] = 16,
    backend: BackendOpt = None,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Classify images with a checkpoint, an ONNX file or a packed model.

    An unreadable image (or a folder without images) gets one line on stderr, the others are still
    predicted, and the exit code is 1. An image far smaller or larger than what the model was
    trained on gets a warning.
    """
    import numpy as np

    from bnncli.artifacts.open import open_model, run_predictor, softmax
    from bnncli.errors import DataError

    path = model if model is not None else find_default_model()
    predictor = open_model(path, threads=threads, backend=backend)
    note_compiling(predictor.backend)
    toy = toy_data_note(predictor)
    labels = predictor.labels
    k = min(top_k, len(labels))
    results: list[dict] = []
    failed = 0
    batch: list[tuple[int, Path, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        probs = softmax(run_predictor(predictor, np.stack([x for _, _, x in batch])))
        for (slot, image, _), p in zip(batch, probs):
            order = np.argsort(-p, kind="stable")[:k]
            results[slot] = {"path": str(image), "model": str(predictor.path), "backend": predictor.backend, "top_k": [
                {"index": int(i), "label": labels[i], "class_name": predictor.class_names[i],
                 "probability": float(p[i])} for i in order]}
        batch.clear()

    for image, problem in expand_folders(images):
        results.append({})
        try:
            if problem:
                raise DataError(problem)
            x = _read(image, predictor.preprocessing)
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
    elif failed == len(results):
        info(f"nothing to predict: none of the {len(results)} input(s) could be read" if len(results) > 1 else
             "nothing to predict: the input could not be read")
    else:
        _print_predictions(results, predictor, k)
    if toy and not json_ and failed < len(results):
        info(toy)
    if failed:
        raise typer.Exit(1)


def toy_data_note(predictor) -> str:
    """A caveat when the model was trained on a built-in toy dataset (it puts any image in one of its
    few classes, with high confidence), else ""."""
    from bnncli.data.builtin import BUILTIN

    source = getattr(predictor, "source", None)
    config = (source.checkpoint.get("config") or {}) if source is not None else {}
    data = config.get("data") if isinstance(config, dict) else None
    if isinstance(data, str) and data.startswith("builtin:"):
        name = data
    else:
        name = next((f"builtin:{b.name}" for b in BUILTIN.values() if tuple(predictor.class_names) == b.classes), "")
    if not name:
        return ""
    return (f"note: this model was trained on {name}, synthetic images of {len(predictor.class_names)} shapes; it "
            "puts every image in one of those classes, so photos of anything else get confident but meaningless "
            "answers")


def expand_folders(paths: list[Path]) -> list[tuple[Path, str]]:
    """``(path, problem)`` pairs: each path as it is, a folder replaced by the image files under it
    (sorted, sub-folders included); a folder without any is kept with its problem, which is then
    reported like an unreadable file ("" for none)."""
    from bnncli.data.folder import images_under, is_folder

    expanded: list[tuple[Path, str]] = []
    for path in paths:
        if not is_folder(path):
            expanded.append((path, ""))
            continue
        found = images_under(path)
        expanded.extend((Path(f), "") for f in found)
        if not found:
            expanded.append((path, f"no image files under {path}"))
    return expanded


# Images whose shorter side is below SMALL or above LARGE times the model's resize get a warning.
SMALL, LARGE = 0.5, 16.0


def _read(image: Path, preprocessing: dict):
    """One image preprocessed for the model, with a warning when its size is far from what the model saw."""
    from bnncli.images.preprocess import load_image, preprocess_image

    img = load_image(image, channels=int(preprocessing["channels"]))
    note = size_warning(img.size, int(preprocessing["resize"]))
    if note:
        warn(f"{image} {note}")
    return preprocess_image(img, preprocessing)


def size_warning(size: tuple[int, int], resize: int) -> str:
    """Why an image of ``size`` (w, h) is far from a model that scales the shorter side to ``resize``, or ""."""
    w, h = size
    shorter = min(w, h)
    if shorter < SMALL * resize:
        return (f"is {w}x{h} px, less than half the {resize} px the model scales images to: it is enlarged "
                f"{resize / shorter:.1f}x, and the prediction may be unreliable")
    if shorter > LARGE * resize:
        return (f"is {w}x{h} px, over {LARGE:g}x the {resize} px the model scales images to: it is shrunk "
                f"{shorter / resize:.0f}x and fine detail is lost, so the prediction may be unreliable")
    return ""


def _print_predictions(results: list[dict], predictor, k: int) -> None:
    from rich.table import Table

    info(f"{predictor.kind} model {predictor.path} ({predictor.arch}, {len(predictor.class_names)} classes, "
         f"{predictor.backend})")
    table = Table(title=f"top-{k}")
    for col in ("image", "rank", "label", "probability"):
        # A long path folds onto more lines rather than losing its end (the file name) at 80 columns.
        table.add_column(col, justify="right" if col in ("rank", "probability") else "left",
                         overflow="fold", no_wrap=col in ("rank", "probability"))
    for r in results:
        if "error" in r:
            continue
        for rank, t in enumerate(r["top_k"], 1):
            table.add_row(plain(r["path"] if rank == 1 else ""), str(rank), plain(t["label"]),
                          f"{t['probability']:.4f}")
    if table.row_count:
        out.print(table)

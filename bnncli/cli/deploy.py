"""`bnn export`, `bnn pack`, `bnn predict`: ship a checkpoint and run any model file on images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from bnncli.cli.common import JsonOpt, err, info, out, print_json

CheckpointArg = Annotated[Path, typer.Argument(
    help="A checkpoint written by `bnn train` (runs/NAME/best.pt), or its run directory.")]
SamplesOpt = Annotated[int, typer.Option("--samples", min=1, max=256,
                                         help="Random inputs the result is verified on against PyTorch.")]


def _default_output(checkpoint: Path, suffix: str) -> Path:
    """Next to the checkpoint, with ``suffix`` (runs/NAME/best.pt -> runs/NAME/best.onnx)."""
    from bnncli.artifacts.rundir import resolve_model_path

    return resolve_model_path(checkpoint, what="checkpoint").with_suffix(suffix)


def export(
    checkpoint: CheckpointArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write (default: CHECKPOINT.onnx).")]
    = None,
    samples: SamplesOpt = 4,
    json_: JsonOpt = False,
) -> None:
    """Export a checkpoint to standard ONNX (opset 17, dynamic batch), verified with onnxruntime.

    Binarization is written as Where(x >= 0, 1, -1), so sign(0) = +1; the pad value of binary convs
    as an explicit Pad; binary weights as +-1 floats. Fails, writing nothing, if onnxruntime and
    PyTorch disagree (relative logit difference above 1e-3 or a different top-1).
    """
    from bnncli.deploy.export import export_onnx

    result = export_onnx(checkpoint, output or _default_output(checkpoint, ".onnx"), samples=samples)
    if json_:
        print_json(result.as_dict())
        return
    p = result.parity
    out.print(f"wrote {result.path} ({result.bytes:,} bytes, ONNX opset {result.opset})", highlight=False)
    out.print(f"verified against PyTorch with onnxruntime on {p.samples} inputs: largest difference "
              f"{p.max_abs_diff:.3g} ({p.max_rel_diff:.2g} relative), top-1 equal on {p.top1_agree}/{p.samples}",
              highlight=False)


def pack(
    checkpoint: CheckpointArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write (default: CHECKPOINT.bnn).")]
    = None,
    float_dtype: Annotated[str, typer.Option("--float-dtype", help="Storage of the full-precision layers: "
                                             "float32 or float16.")] = "float32",
    samples: SamplesOpt = 4,
    json_: JsonOpt = False,
) -> None:
    """Pack a checkpoint into one file with 1-bit binary weights (format: docs/FORMAT.md).

    Runs the packed file in the NumPy runtime against PyTorch before writing; a relative logit
    difference above 1e-3 or a different top-1 is an error, except where float16 storage had to
    round weights (a model trained with --float-weights float32), which is reported.
    """
    from bnncli.deploy.pack import pack_model
    from bnncli.errors import UsageError

    if float_dtype not in ("float32", "float16"):
        raise UsageError(f"--float-dtype must be float32 or float16, not {float_dtype!r}")
    result = pack_model(checkpoint, output or _default_output(checkpoint, ".bnn"), float_dtype, samples=samples)
    if json_:
        print_json(result.as_dict())
        return
    s, p = result.sizes, result.parity
    out.print(f"wrote {result.path} ({result.bytes:,} bytes: {s['binary_weights']:,} binary weights at 1 bit, "
              f"{s['float_weights']:,} {result.float_dtype} weights, {s['per_channel']:,} per-channel float32, "
              f"{s['header']:,} header)", highlight=False)
    note = ""
    if result.float_dtype == "float16":
        note = (" (float16 stores every weight unchanged: the model computes with float16-valued weights)"
                if result.lossless else
                f" (float16 rounded {len(result.rounded)} weight tensors of a model trained with float32 float "
                f"weights, so small differences are expected; models trained with --float-weights float16, the "
                f"default, pack losslessly)")
    out.print(f"verified against PyTorch with the NumPy runtime on {p.samples} inputs: largest difference "
              f"{p.max_abs_diff:.3g} ({p.max_rel_diff:.2g} relative), top-1 equal on {p.top1_agree}/{p.samples}"
              f"{note}", highlight=False)


def find_default_model(runs: Path = Path("runs")) -> Path:
    """``$BNN_MODEL``, else the newest model of the newest run under ``runs``; UsageError if none."""
    from bnncli.errors import UsageError

    env = os.environ.get("BNN_MODEL")
    if env:
        return Path(env)
    run_dirs = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True) \
        if runs.is_dir() else []
    for run in run_dirs:
        best = run / "best.pt"
        if best.is_file():
            return best
        models = sorted(run.glob("*.pt"), key=lambda f: f.stat().st_mtime, reverse=True)
        if models:
            return models[0]
    raise UsageError("no model given: pass --model PATH (a checkpoint, .onnx or packed file), set BNN_MODEL, "
                     f"or train one with `bnn train` (no run with a model under ./{runs})")


def _softmax(logits):
    import numpy as np

    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files (any format Pillow reads).")],
    model: Annotated[Path | None, typer.Option("--model", "-m", help="Checkpoint, ONNX or packed model; told apart "
                                               "by content. Default: $BNN_MODEL, else the newest run's model.")]
    = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to show per image.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 16,
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
    predictor = open_model(path)
    labels = predictor.labels
    k = min(top_k, len(labels))
    results: list[dict] = []
    failed = 0
    batch: list[tuple[int, Path, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        probs = _softmax(predictor(np.stack([x for _, _, x in batch])))
        for (slot, image, _), p in zip(batch, probs):
            order = np.argsort(-p, kind="stable")[:k]
            results[slot] = {"path": str(image), "top_k": [
                {"index": int(i), "label": labels[i], "class_name": predictor.class_names[i],
                 "probability": float(p[i])} for i in order]}
        batch.clear()

    for image in images:
        results.append({})
        try:
            x = preprocess_file(image, predictor.preprocessing)
        except DataError as e:
            failed += 1
            err.print(f"bnn: error: {e}", highlight=False, markup=False)
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

    info(f"{predictor.kind} model {predictor.path} ({predictor.arch}, {len(predictor.class_names)} classes)")
    table = Table(title=f"top-{k}")
    for col in ("image", "rank", "label", "probability"):
        table.add_column(col, justify="right" if col in ("rank", "probability") else "left")
    for r in results:
        if "error" in r:
            continue
        for rank, t in enumerate(r["top_k"], 1):
            table.add_row(r["path"] if rank == 1 else "", str(rank), t["label"], f"{t['probability']:.4f}")
    out.print(table)

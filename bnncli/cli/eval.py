"""`bnn eval`: top-1, top-5, loss, images/s and per-class accuracy of any model file, with a CI gate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from bnncli.cli.common import (
    BackendOpt,
    JsonOpt,
    ThreadsOpt,
    WorkersOpt,
    info,
    note_compiling,
    out,
    plain,
    print_json,
    warn,
)
from bnncli.cli.progress import LogEveryOpt, eval_progress
from bnncli.engine.config import AMP_MODES, DEVICES
from bnncli.errors import GateFailed, UsageError


def evaluate(
    model: Annotated[Path, typer.Argument(
        metavar="MODEL",
        help="A checkpoint, a run directory (its best.pt), an ONNX file or a packed file; told apart by content.")],
    data: Annotated[str, typer.Option(
        "--data", "-d", metavar="DATA", help="A folder of classes (DIR/<class>/*), a dataset root (its val split), "
        "or builtin:shapes / builtin:shapes-mini (their val split).")],
    batch_size: Annotated[int, typer.Option(
        "--batch-size", "-b", metavar="N", min=1, help="Images per forward pass.")] = 64,
    workers: WorkersOpt = None,
    device: Annotated[str, typer.Option(
        "--device", metavar="NAME", help=f"Where a checkpoint runs: {', '.join(DEVICES)}.")] = "auto",
    amp: Annotated[str, typer.Option(
        "--amp", metavar="MODE", help=f"Autocast of a checkpoint: {', '.join(AMP_MODES)}.")] = "none",
    channels_last: Annotated[bool, typer.Option(
        "--channels-last/--no-channels-last", help="NHWC memory layout for a checkpoint.")] = False,
    min_top1: Annotated[float | None, typer.Option(
        "--min-top1", metavar="FRACTION", help="Exit 1 when top-1 (a fraction, e.g. 0.6) is below this: a CI gate.")
    ] = None,
    backend: BackendOpt = None,
    threads: ThreadsOpt = None,
    confusion: Annotated[bool, typer.Option(
        "--confusion", help="Also the confusion matrix: images of each true class (rows) by the class predicted "
        "(columns); a table up to 20 classes, always in --json as confusion.")] = False,
    log_every: LogEveryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Top-1, top-5, loss, images/s and per-class accuracy of a model on labelled images."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if amp not in AMP_MODES:
        raise UsageError(f"unknown autocast mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if min_top1 is not None and not 0.0 <= min_top1 <= 1.0:
        raise UsageError(f"--min-top1 is a fraction in [0, 1] (0.6 for 60%), not {min_top1}")

    from bnncli.artifacts.open import sniff

    sniff(model)  # a missing or foreign model file is refused before torch loads
    from bnncli.engine.evaluate import evaluate_model_file

    warned: set[str] = set()

    def on_skip(s) -> None:
        if s.path not in warned:
            warned.add(s.path)
            warn(f"{s.reason} (skipped)")

    with eval_progress(log_every) as (on_start, on_batch):
        result = evaluate_model_file(model, data, batch_size=batch_size, workers=workers, device=device, amp=amp,
                                     channels_last=channels_last, on_start=on_start, on_batch=on_batch,
                                     on_skip=on_skip, backend=backend, threads=threads, on_open=note_compiling,
                                     confusion=confusion)
    if json_:
        print_json(result)
    else:
        _print_eval(result)
        if confusion:
            _print_confusion(result)
    broken = not_finite(result)
    if broken:
        warn(f"the model is not finite: {broken}")
    if min_top1 is not None and broken:
        raise GateFailed(f"--min-top1 {min_top1:g} fails: the model is not finite ({broken})")
    if min_top1 is not None and result["top1"] < min_top1:
        raise GateFailed(f"top-1 {result['top1']:.4f} is below --min-top1 {min_top1:g}")
    if min_top1 is not None:
        info(f"gate passed: top-1 {result['top1']:.4f} >= --min-top1 {min_top1:g}")


def not_finite(r: dict[str, Any]) -> str:
    """What is NaN or infinite about an eval result (weights, logits, loss), or "" when nothing is."""
    problems = []
    if r.get("nonfinite_weights"):
        problems.append(f"{r['nonfinite_weights']} weight tensor(s) hold NaN or inf")
    if r.get("nonfinite_logits"):
        problems.append(f"the logits of {r['nonfinite_logits']} image(s) are NaN or inf (counted as wrong)")
    if not math.isfinite(r["loss"]):
        problems.append(f"the loss is {r['loss']}")
    return "; ".join(problems)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


# The confusion table for people: up to this many classes (--json has it for any number).
CONFUSION_TABLE_CLASSES = 20


def _print_confusion(r: dict[str, Any]) -> None:
    """Rows: true class; columns: predicted class, numbered (the row labels name them)."""
    from rich import box
    from rich.table import Table

    names, matrix = r["confusion"]["classes"], r["confusion"]["counts"]
    if len(names) > CONFUSION_TABLE_CLASSES:
        info(f"confusion matrix: {len(names)} classes are too many for a table; it is in --json (confusion)")
        return
    table = Table(title="confusion (rows: true class, columns: predicted)", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 0, 0, 1))
    table.add_column("true class", overflow="fold")
    for j in range(len(names)):
        table.add_column(str(j), justify="right", no_wrap=True)
    for i, (name, row) in enumerate(zip(names, matrix)):
        table.add_row(plain(f"{i} {name}"), *(str(v) if v else "." for v in row))
    out.print(table)


def _print_eval(r: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=plain(f"{r['arch'] or r['model']} on {r['data']} ({r['kind']}, {r['backend']})"))
    top5 = r["top5"] is not None  # None: 5 classes or fewer, where every label is in the top 5
    for col in ("", "top-1", *(("top-5",) if top5 else ()), "loss", "images", "images/s"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("this model", _pct(r["top1"]), *((_pct(r["top5"]),) if top5 else ()), f"{r['loss']:.4f}",
                  f"{r['images']:,}", f"{r['images_per_s']:,.1f}")
    for source, nums in r.get("published", {}).items():
        table.add_row(f"published ({source.replace('_', ' ')}, ImageNet)", _pct(nums["top1"]),
                      *((_pct(nums["top5"]),) if top5 else ()), "", "", "")
    out.print(table)
    per_class = sorted(r["per_class"].items(), key=lambda kv: kv[1]["top1"])
    shown = per_class if len(per_class) <= 30 else per_class[:10] + per_class[-5:]
    classes = Table(title="per class" if len(shown) == len(per_class)
                    else f"per class: the 10 worst and 5 best of {len(per_class)}")
    classes.add_column("class")
    classes.add_column("top-1", justify="right")
    classes.add_column("images", justify="right")
    for name, c in shown:
        classes.add_row(plain(name), _pct(c["top1"]), f"{c['images']:,}")
    out.print(classes)
    if r["skipped"]:
        warn(f"{r['skipped']} unreadable file(s) skipped")



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
    err,
    note_compiling,
    out,
    plain,
    print_json,
    warn,
)
from bnncli.engine.config import AMP_MODES, DEVICES
from bnncli.errors import GateFailed, UsageError


def evaluate(
    model: Annotated[Path, typer.Argument(
        help="A checkpoint, a run directory (its best.pt), an ONNX file or a packed file; told apart by content.")],
    data: Annotated[str, typer.Option(
        "--data", "-d", help="A split folder (DIR/<class>/*), a dataset root (its val split), or builtin:shapes.")],
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 64,
    workers: WorkersOpt = None,
    device: Annotated[str, typer.Option("--device", help=f"{', '.join(DEVICES)}.")] = "auto",
    amp: Annotated[str, typer.Option("--amp", help=f"Autocast: {', '.join(AMP_MODES)}.")] = "none",
    channels_last: Annotated[bool, typer.Option("--channels-last/--no-channels-last")] = False,
    min_top1: Annotated[float | None, typer.Option(
        "--min-top1", help="Exit 1 when top-1 (a fraction, e.g. 0.6) is below this: a CI gate.")] = None,
    backend: BackendOpt = None,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Top-1, top-5, loss, images/s and per-class accuracy of a model on labelled images."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if amp not in AMP_MODES:
        raise UsageError(f"unknown autocast mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if min_top1 is not None and not 0.0 <= min_top1 <= 1.0:
        raise UsageError(f"--min-top1 is a fraction in [0, 1] (0.6 for 60%), not {min_top1}")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bnncli.engine.evaluate import evaluate_model_file

    warned: set[str] = set()

    def on_skip(s) -> None:
        if s.path not in warned:
            warned.add(s.path)
            warn(f"{s.reason} (skipped)")

    with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("eval", total=None)
        result = evaluate_model_file(model, data, batch_size=batch_size, workers=workers, device=device, amp=amp,
                                     channels_last=channels_last, on_start=lambda n: progress.update(task, total=n),
                                     on_batch=lambda n: progress.advance(task, n), on_skip=on_skip,
                                     backend=backend, threads=threads, on_open=note_compiling)
    if json_:
        print_json(result)
    else:
        _print_eval(result)
    broken = not_finite(result)
    if broken:
        warn(f"the model is not finite: {broken}")
    if min_top1 is not None and broken:
        raise GateFailed(f"--min-top1 {min_top1:g} fails: the model is not finite ({broken})")
    if min_top1 is not None and result["top1"] < min_top1:
        raise GateFailed(f"top-1 {result['top1']:.4f} is below --min-top1 {min_top1:g}")


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


def _print_eval(r: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=plain(f"{r['arch'] or r['model']} on {r['data']} ({r['kind']}, {r['backend']})"))
    for col in ("", "top-1", "top-5", "loss", "images", "images/s"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("this model", _pct(r["top1"]), _pct(r["top5"]), f"{r['loss']:.4f}", f"{r['images']:,}",
                  f"{r['images_per_s']:,.1f}")
    for source, nums in (r["anchors"] or {}).items():
        table.add_row(source.replace("_", " "), _pct(nums["top1"]), _pct(nums["top5"]), "", "", "")
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



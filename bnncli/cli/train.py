"""`bnn train` and `bnn eval`: parse options, call :mod:`bnncli.engine`, render progress and results.

Torch and the engine are imported inside the commands, so `bnn --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bnncli.cli.common import JsonOpt, err, info, out, print_json, warn
from bnncli.errors import DataError, GateFailed, UsageError

DataOpt = Annotated[str | None, typer.Option(
    "--data", "-d", help="DIR in the ImageNet layout (DIR/train/<class>/*, DIR/val/<class>/*), a single split "
                         "folder, or builtin:shapes (generated locally, the demo).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")]
AmpOpt = Annotated[str | None, typer.Option("--amp", help="Autocast: none, bf16 or fp16.")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", "-j", min=0, help="DataLoader worker processes [default: 0 on CPU, up to 8 per GPU].")]


def train(
    arch: Annotated[str | None, typer.Option("--arch", "-a", help="Model name from `bnn models`.")] = None,
    data: DataOpt = None,
    recipe: Annotated[Path | None, typer.Option(
        "--recipe", help="TOML recipe (pipelines/*.toml); options given here override it.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", "-e", min=1, help="[default: 10]")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", "-b", min=1, help="Global batch size, split over torchrun processes [default: 64].")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate [default: 4e-3].")] = None,
    optimizer: Annotated[str | None, typer.Option(
        "--optimizer", help="adam (the paper), radam or sgd [default: adam].")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", help="[default: 0, as the paper]")] = None,
    schedule: Annotated[str | None, typer.Option(
        "--schedule", help="cosine, step (x factor at --steps) or constant [default: cosine].")] = None,
    steps: Annotated[str | None, typer.Option(
        "--steps", help="Epochs where the step schedule multiplies the rate by --factor, e.g. 100,110.")] = None,
    factor: Annotated[float | None, typer.Option("--factor", help="Step schedule factor [default: 0.1].")] = None,
    warmup_epochs: Annotated[float | None, typer.Option(
        "--warmup-epochs", min=0, help="Linear warmup length in epochs [default: 0].")] = None,
    clip_threshold: Annotated[float | None, typer.Option(
        "--clip-threshold", help="STE gradient clip and latent weight clamp [default: the model's, 1.3 or 1.25].")
    ] = None,
    scaling: Annotated[str | None, typer.Option("--scaling", help="none or xnor (ablation).")] = None,
    activation_gradient: Annotated[str | None, typer.Option(
        "--activation-gradient", help="ste or approxsign (ablation).")] = None,
    weight_gradient: Annotated[str | None, typer.Option("--weight-gradient", help="larq or bmxnet.")] = None,
    pad_value: Annotated[float | None, typer.Option("--pad-value", help="Binary conv padding: 0, -1 or 1.")] = None,
    binary_downsample: Annotated[bool | None, typer.Option(
        "--binary-downsample/--fp-downsample", help="ResNetE shortcut convs binary (ablation) or full precision.")
    ] = None,
    float_weights: Annotated[str | None, typer.Option(
        "--float-weights", help="float16: the full-precision layers compute with float16-valued weights, so "
        "`bnn pack --float-dtype float16` is lossless; float32: plain float layers [default: float16].")] = None,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", min=8, help="Training crop [default: 32 for builtin:shapes, else 224].")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="Augmentation: imagenet or small [default: small below 64 px].")] = None,
    init: Annotated[str | None, typer.Option("--init", help="default or he_normal.")] = None,
    workers: WorkersOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="[default: 0]")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Run directory [default: runs/<arch>-<YYYYmmdd-HHMMSS>].")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in this directory.")] = None,
    device: DeviceOpt = None,
    amp: AmpOpt = None,
    channels_last: Annotated[bool | None, typer.Option("--channels-last/--no-channels-last")] = None,
    compile_: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model.")] = None,
    sync_bn: Annotated[bool | None, typer.Option(
        "--sync-bn/--no-sync-bn", help="SyncBatchNorm across GPUs under torchrun.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Train a model from scratch (Adam, no weight decay, latent weight clipping by default).

    Writes RUN/last.pt, RUN/best.pt, RUN/metrics.jsonl and RUN/curves.png. Ctrl-C saves and
    stops; `bnn train --resume RUN` continues exactly where it stopped. For several GPUs or
    machines: `torchrun --nproc_per_node N -m bnncli train ...`.
    """
    from bnncli.engine.config import parse_steps, resolve_config
    from bnncli.engine.train import StopRequest, graceful_interrupts, load_resume, resume_overrides
    from bnncli.engine.train import train as run_training

    model_options = {"clip_threshold": clip_threshold, "scaling": scaling, "activation_gradient": activation_gradient,
                     "weight_gradient": weight_gradient, "pad_value": pad_value,
                     "binary_downsample": binary_downsample, "float_weights": float_weights}
    overrides: dict[str, Any] = {
        "arch": arch, "data": data, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
        "weight_decay": weight_decay, "schedule": schedule, "steps": parse_steps(steps), "factor": factor,
        "warmup_epochs": warmup_epochs, "image_size": image_size, "preset": preset, "init": init,
        "workers": workers, "seed": seed, "device": device, "amp": amp, "channels_last": channels_last,
        "compile": compile_, "sync_bn": sync_bn,
        "model": {k: v for k, v in model_options.items() if v is not None} or None,
    }
    checkpoint = None
    if resume is not None:
        if recipe is not None:
            raise UsageError("--recipe cannot be used with --resume: a resumed run keeps its configuration")
        if out_dir is not None and Path(out_dir).resolve() != Path(resume).resolve():
            raise UsageError("--resume RUN continues in RUN; leave out --out")
        checkpoint = load_resume(resume)
        cfg = resolve_config(base=checkpoint["config"], overrides=resume_overrides(checkpoint, overrides))
        out_dir = resume
    else:
        cfg = resolve_config(recipe=recipe, overrides=overrides)

    reporter = RichReporter()
    stop = StopRequest()
    try:
        with graceful_interrupts(stop), reporter:
            result = run_training(cfg, out_dir, resume=checkpoint, reporter=reporter, stop=stop)
    except KeyboardInterrupt:  # a second Ctrl-C: no time to save, but the last checkpoint is intact
        run = reporter.run_dir
        if run is not None and (Path(run) / "last.pt").exists():
            err.print(f"aborted; {run}/last.pt holds the last saved state. Resume with: bnn train --resume {run}",
                      highlight=False)
        raise
    if not reporter.is_main:
        return
    summary = {
        "run_dir": str(result.run_dir),
        "arch": cfg.arch,
        "epochs_done": result.epochs_done,
        "epochs": result.epochs,
        "interrupted": result.interrupted,
        "last": result.last_metrics,
        "best": result.best,
        "checkpoints": {"last": str(result.run_dir / "last.pt"), "best": str(result.run_dir / "best.pt")},
    }
    if json_:
        print_json(summary)
    if result.interrupted:
        where = (f"epoch {result.epochs_done + 1}, step {result.step_in_epoch}/{result.steps_per_epoch}"
                 if result.step_in_epoch else f"after epoch {result.epochs_done}")
        err.print(f"{result.stop_reason}: saved {result.run_dir}/last.pt ({where}). "
                  f"Resume with: bnn train --resume {result.run_dir}", highlight=False)
        raise typer.Exit(130)
    if not json_:
        best = result.best
        info(f"done: {result.run_dir} (best {best['metric']} {best['value']:.2%} at epoch {best['epoch']}); "
             f"evaluate with: bnn eval {result.run_dir} --data {cfg.data}" if best else f"done: {result.run_dir}")


def evaluate(
    model: Annotated[Path, typer.Argument(
        help="A checkpoint, a run directory (its best.pt), an ONNX file or a packed file; told apart by content.")],
    data: Annotated[str, typer.Option(
        "--data", "-d", help="A split folder (DIR/<class>/*), a dataset root (its val split), or builtin:shapes.")],
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 64,
    workers: WorkersOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    amp: Annotated[str, typer.Option("--amp", help="Autocast: none, bf16 or fp16.")] = "none",
    channels_last: Annotated[bool, typer.Option("--channels-last/--no-channels-last")] = False,
    min_top1: Annotated[float | None, typer.Option(
        "--min-top1", help="Exit 1 when top-1 (a fraction, e.g. 0.6) is below this: a CI gate.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Top-1, top-5, loss, images/s and per-class accuracy of a model on labelled images."""
    from bnncli.engine.config import AMP_MODES, DEVICES

    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if amp not in AMP_MODES:
        raise UsageError(f"unknown autocast mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if min_top1 is not None and not 0.0 <= min_top1 <= 1.0:
        raise UsageError(f"--min-top1 is a fraction in [0, 1] (0.6 for 60%), not {min_top1}")

    from bnncli.data.loading import SampleDataset, ShardSampler, make_loader, open_eval_data
    from bnncli.data.transforms import eval_transform
    from bnncli.engine.distributed import resolve_device
    from bnncli.engine.evaluate import evaluate as run_eval
    from bnncli.engine.evaluate import load_eval_model

    dev = resolve_device(device)
    em = load_eval_model(model, dev, amp=amp, channels_last=channels_last)
    source = open_eval_data(data, em.class_names)
    pre = em.preprocessing
    dataset = SampleDataset(source, eval_transform(pre), int(pre.get("channels", 3)))
    if workers is None:
        workers = 0 if dev.type == "cpu" else 4
    loader = make_loader(dataset, ShardSampler(len(dataset)), batch_size, workers, pin_memory=dev.type == "cuda")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    warned: set[str] = set()

    def on_skip(s) -> None:
        if s.path not in warned:
            warned.add(s.path)
            warn(f"{s.reason} (skipped)")

    with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("eval", total=len(dataset))
        res = run_eval(em.predict, loader, em.class_names, on_skip=on_skip,
                       on_batch=lambda n: progress.advance(task, n))
    if res["images"] == 0:
        raise DataError(f"no readable images in {data}")
    result = {
        "model": em.source,
        "kind": em.kind,
        "arch": em.arch,
        "data": data,
        "top1": res["top1"],
        "top5": res["top5"],
        "loss": res["loss"],
        "images": res["images"],
        "skipped": res["skipped"],
        "seconds": res["seconds"],
        "images_per_s": res["images_per_s"],
        "model_images_per_s": res["model_images_per_s"],
        "device": str(dev),
        "per_class": res["per_class"],
        "anchors": _anchors(em.arch, len(em.class_names)),
    }
    if json_:
        print_json(result)
    else:
        _print_eval(result)
    if min_top1 is not None and result["top1"] < min_top1:
        raise GateFailed(f"top-1 {result['top1']:.4f} is below --min-top1 {min_top1:g}")


def _anchors(arch: str | None, num_classes: int) -> dict[str, dict[str, float | None]] | None:
    """Published ImageNet-1k numbers for this architecture, as fractions (None when not ImageNet-1k)."""
    from bnncli.models import ANCHORS

    if arch not in ANCHORS or num_classes != 1000:
        return None
    return {source: {"top1": None if t1 is None else t1 / 100, "top5": None if t5 is None else t5 / 100}
            for source, (t1, t5) in ANCHORS[arch].items()}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _print_eval(r: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{r['arch'] or r['model']} on {r['data']}")
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
        classes.add_row(name, _pct(c["top1"]), f"{c['images']:,}")
    out.print(classes)
    if r["skipped"]:
        warn(f"{r['skipped']} unreadable file(s) skipped")


class RichReporter:
    """Training progress on stderr: a bar for the run and one for the epoch (step, loss, accuracy,
    img/s, ETA), then one summary line per epoch. Only rank 0's reporter is ever called.

    It implements :class:`bnncli.engine.train.Reporter` by duck typing, so that importing the
    CLI does not import torch.
    """

    interval = 0.25  # seconds between step updates

    def __init__(self) -> None:
        import os

        self.is_main = int(os.environ.get("RANK", "0")) == 0
        self.run_dir: str | None = None
        self.progress = None
        self.run_task = None
        self.epoch_task = None
        self.epochs = 0
        self.epoch_step = 0

    def __enter__(self) -> RichReporter:
        return self

    def __exit__(self, *exc) -> None:
        self._stop_progress()

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    # Reporter interface (duck-typed, see bnncli.engine.train.Reporter)
    def start(self, i: dict[str, Any]) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.run_dir = i["run_dir"]
        self.epochs = i["epochs"]
        where = f"{i['world_size']} processes on {i['device']}" if i["world_size"] > 1 else i["device"]
        resumed = f", resuming at epoch {i['start_epoch'] + 1} step {i['start_step']}" if i["resumed"] else ""
        info(f"training {i['arch']} ({i['params']:,} params) on {i['data']}: {i['train_images']:,} train / "
             f"{i['val_images']:,} val images, {i['classes']} classes, {i['image_size']} px ({i['preset']}), "
             f"batch {i['batch_size']}, {where}{resumed} -> {i['run_dir']}")
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err, transient=True,
        )
        self.progress.start()
        total = i["epochs"] * i["steps_per_epoch"]
        done = i["start_epoch"] * i["steps_per_epoch"] + i["start_step"]
        self.run_task = self.progress.add_task("run", total=total, completed=done, stats="")

    def epoch_start(self, epoch: int, epochs: int, steps: int, first_step: int) -> None:
        if self.progress is None:
            return
        if self.epoch_task is not None:
            self.progress.remove_task(self.epoch_task)
        self.epoch_task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, completed=first_step,
                                                 stats="")
        self.epoch_step = first_step

    def step(self, epoch: int, step: int, steps: int, loss: float, top1: float, images_per_s: float,
             lr: float) -> None:
        if self.progress is None:
            return
        stats = f"loss {loss:.4f}  acc {top1:6.2%}  {images_per_s:,.0f} img/s  lr {lr:.2e}"
        self.progress.update(self.epoch_task, completed=step, stats=stats)
        self.progress.advance(self.run_task, step - self.epoch_step)
        self.epoch_step = step

    def validating(self, epoch: int, images: int) -> None:
        if self.progress is not None:
            self.progress.update(self.epoch_task, description=f"epoch {epoch}/{self.epochs} (validating)")

    def epoch_end(self, m: dict[str, Any], is_best: bool) -> None:
        parts = [f"epoch {m['epoch']}/{self.epochs}", f"train loss {m['train_loss']:.4f} acc {m['train_top1']:.2%}"]
        if "val_top1" in m:
            parts.append(f"val loss {m['val_loss']:.4f} top-1 {m['val_top1']:.2%} top-5 {m['val_top5']:.2%}")
        parts.append(f"{m['images_per_s']:,.0f} img/s  {m['seconds']:.1f}s")
        if m["skipped"]:
            parts.append(f"{m['skipped']} unreadable file(s) skipped")
        if is_best:
            parts.append("best")
        line = "  ".join(parts)
        (self.progress.console if self.progress is not None else err).print(line, highlight=False)

    def stopping(self, reason: str) -> None:
        self._stop_progress()
        info(f"{reason}: stopping after this step and saving")

    def warning(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(f"[yellow]warning:[/yellow] {text}", highlight=False)
        else:
            warn(text)

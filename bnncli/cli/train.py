"""`bnn train`: parse options, call :func:`bnncli.engine.train.train`, render progress and the summary.

Torch and the training engine are imported inside the command, so `bnn --help` stays fast. The
defaults shown in --help are :class:`bnncli.engine.config.TrainConfig`'s (unset options are None
and never override a recipe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bnncli.artifacts.rundir import RunFiles
from bnncli.cli.common import ArchOpt, JsonOpt, WorkersOpt, info, print_json
from bnncli.cli.progress import RichReporter
from bnncli.engine.config import AMP_MODES, DEVICES, INITS, OPTIMIZERS, SCHEDULES, TrainConfig, parse_out_dir
from bnncli.errors import UsageError

D = TrainConfig()  # the defaults --help shows


def _default(value: Any) -> str:
    return f"[default: {value}]"


def _choices(names: tuple[str, ...], default: str) -> str:
    return f"{', '.join(names)} {_default(default)}"


DataOpt = Annotated[str | None, typer.Option(
    "--data", "-d", help="DIR in the ImageNet layout (DIR/train/<class>/*, DIR/val/<class>/*), a single split "
                         "folder, or builtin:shapes (generated locally, the demo).")]


def train(
    arch: ArchOpt = None,
    data: DataOpt = None,
    recipe: Annotated[Path | None, typer.Option(
        "--recipe", help="TOML recipe (pipelines/*.toml); options given here override it.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", "-e", min=1, help=_default(D.epochs))] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", "-b", min=1, help=f"Global batch size, split over torchrun processes {_default(D.batch_size)}.")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help=f"Peak learning rate {_default(D.lr)}.")] = None,
    optimizer: Annotated[str | None, typer.Option(
        "--optimizer", help=f"{_choices(OPTIMIZERS, D.optimizer)} (the paper: adam).")] = None,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help=f"{_default(D.weight_decay)} (the paper: none)")] = None,
    schedule: Annotated[str | None, typer.Option(
        "--schedule", help=f"{_choices(SCHEDULES, D.schedule)}; step multiplies by --factor at --steps.")] = None,
    steps: Annotated[str | None, typer.Option(
        "--steps", help="Epochs where the step schedule multiplies the rate by --factor, e.g. 100,110.")] = None,
    factor: Annotated[float | None, typer.Option("--factor", help=f"Step schedule factor {_default(D.factor)}.")
                      ] = None,
    warmup_epochs: Annotated[float | None, typer.Option(
        "--warmup-epochs", min=0, help=f"Linear warmup length in epochs {_default(D.warmup_epochs)}.")] = None,
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
        "`bnn pack --float-dtype float16` is lossless; float32: plain float layers [default: the model's, float16].")
    ] = None,
    padding: Annotated[str | None, typer.Option(
        "--padding", help="How padded stride-2 layers pad: symmetric (PyTorch) or tensorflow (TensorFlow's "
        "\"same\", as Keras-trained models such as Larq Zoo's) [default: symmetric].")] = None,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", min=8, help="Training crop [default: 32 for builtin:shapes, else 224].")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="Augmentation: imagenet or small [default: small below 64 px].")] = None,
    init: Annotated[str | None, typer.Option("--init", help=_choices(INITS, D.init))] = None,
    workers: WorkersOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help=_default(D.seed))] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", parser=parse_out_dir, metavar="DIR",
        help="Run directory, new or empty; locked while the run writes to it [default: "
             "runs/<arch>-<YYYYmmdd-HHMMSS>, -2, -3, ... when taken].")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in this directory.")] = None,
    device: Annotated[str | None, typer.Option("--device", help=_choices(DEVICES, D.device))] = None,
    amp: Annotated[str | None, typer.Option("--amp", help=f"Autocast: {_choices(AMP_MODES, D.amp)}.")] = None,
    channels_last: Annotated[bool | None, typer.Option(
        "--channels-last/--no-channels-last", help=_default(D.channels_last))] = None,
    compile_: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help=f"torch.compile the model {_default(D.compile)}.")] = None,
    sync_bn: Annotated[bool | None, typer.Option(
        "--sync-bn/--no-sync-bn", help=f"SyncBatchNorm across GPUs under torchrun {_default(D.sync_bn)}.")] = None,
    json_: JsonOpt = False) -> None:
    """Train a model from scratch (Adam, no weight decay, latent weight clipping by default).

    Writes RUN/last.pt, RUN/best.pt, RUN/metrics.jsonl and RUN/curves.png. Ctrl-C saves and
    stops; `bnn train --resume RUN` continues exactly where it stopped. For several GPUs or
    machines: `torchrun --nproc_per_node N -m bnncli train ...`.
    """
    from bnncli.engine.config import parse_steps
    from bnncli.engine.stopping import StopRequest, graceful_interrupts
    from bnncli.engine.train import train as run_training

    model_options = {"clip_threshold": clip_threshold, "scaling": scaling, "activation_gradient": activation_gradient,
                     "weight_gradient": weight_gradient, "pad_value": pad_value,
                     "binary_downsample": binary_downsample, "float_weights": float_weights, "padding": padding}
    overrides: dict[str, Any] = {
        "arch": arch, "data": data, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
        "weight_decay": weight_decay, "schedule": schedule, "steps": parse_steps(steps), "factor": factor,
        "warmup_epochs": warmup_epochs, "image_size": image_size, "preset": preset, "init": init,
        "workers": workers, "seed": seed, "device": device, "amp": amp, "channels_last": channels_last,
        "compile": compile_, "sync_bn": sync_bn,
        "model": {k: v for k, v in model_options.items() if v is not None} or None,
    }
    cfg, checkpoint, out_dir = _configure(overrides, recipe, resume, out_dir)
    reporter = RichReporter()
    stop = StopRequest()
    try:
        with graceful_interrupts(stop), reporter:
            result = run_training(cfg, out_dir, resume=checkpoint, reporter=reporter, stop=stop)
    except KeyboardInterrupt:  # a second Ctrl-C: no time to save, but the last checkpoint is intact
        last = RunFiles(Path(reporter.run_dir)).last if reporter.run_dir is not None else None
        if last is not None and last.exists():
            info(f"aborted; {last} holds the last saved state. Resume with: bnn train --resume {reporter.run_dir}")
        raise
    if reporter.is_main:
        _report(result, cfg, json_)


def _configure(overrides: dict[str, Any], recipe: Path | None, resume: Path | None, out_dir: Path | None):
    """``(config, checkpoint to resume or None, run directory)`` from the command line."""
    from bnncli.engine.config import resolve_config
    from bnncli.engine.resume import load_resume, resume_overrides

    if resume is None:
        return resolve_config(recipe=recipe, overrides=overrides), None, out_dir
    if recipe is not None:
        raise UsageError("--recipe cannot be used with --resume: a resumed run keeps its configuration")
    if out_dir is not None and Path(out_dir).resolve() != Path(resume).resolve():
        raise UsageError("--resume RUN continues in RUN; leave out --out")
    checkpoint = load_resume(resume)
    return resolve_config(base=checkpoint["config"], overrides=resume_overrides(checkpoint, overrides)), checkpoint, \
        resume


def _report(result, cfg, json_: bool) -> None:
    """The run's summary: JSON on stdout with --json; how to resume, or how to evaluate, on stderr."""
    files = RunFiles(result.run_dir)
    summary = {
        "run_dir": str(result.run_dir),
        "arch": cfg.arch,
        "epochs_done": result.epochs_done,
        "epochs": result.epochs,
        "interrupted": result.interrupted,
        "last": result.last_metrics,
        "best": result.best,
        "checkpoints": {"last": str(files.last), "best": str(files.best)},
    }
    if json_:
        print_json(summary)
    if result.interrupted:
        where = (f"epoch {result.epochs_done + 1}, step {result.step_in_epoch}/{result.steps_per_epoch}"
                 if result.step_in_epoch else f"after epoch {result.epochs_done}")
        info(f"{result.stop_reason}: saved {files.last} ({where}). Resume with: bnn train --resume {result.run_dir}")
        raise typer.Exit(130)
    if not json_:
        best = result.best
        info(f"done: {result.run_dir} (best {best['metric']} {best['value']:.2%} at epoch {best['epoch']}); "
             f"evaluate with: bnn eval {result.run_dir} --data {cfg.data}" if best else f"done: {result.run_dir}")

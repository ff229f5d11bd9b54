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
from bnncli.cli.common import ArchOpt, JsonOpt, ThreadsOpt, WorkersOpt, info, print_json
from bnncli.cli.progress import LogEveryOpt, make_reporter
from bnncli.data.folder import DEFAULT_VAL_SPLIT
from bnncli.engine.config import (
    AMP_MODES,
    DEVICES,
    INITS,
    LOADERS,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    parse_out_dir,
)
from bnncli.errors import UsageError

D = TrainConfig()  # the defaults --help shows


def _default(value: Any) -> str:
    return f"[default: {value}]"


def _choices(names: tuple[str, ...], default: str) -> str:
    return f"{', '.join(names)} {_default(default)}"


DataOpt = Annotated[str | None, typer.Option(
    "--data", "-d", metavar="DATA", help="A folder in the ImageNet layout (DIR/train/<class>/*, DIR/val/<class>/*), "
    "a single folder of classes (DIR/<class>/*; see --val-split), builtin:shapes (10 shapes, generated locally, "
    "the demo) or builtin:shapes-mini (the same, 160 images, for smoke tests).")]
ValSplitOpt = Annotated[float | None, typer.Option(
    "--val-split", metavar="FRACTION", help=f"Of a single folder of classes: the fraction held out to validate on "
    f"and choose best.pt by, stratified by class, the same images for the same --seed; 0: none, best.pt by "
    f"training accuracy [default: {DEFAULT_VAL_SPLIT:g}]. Datasets with a val split, and builtin:, keep theirs.")]


def train(
    arch: ArchOpt = None,
    data: DataOpt = None,
    val_split: ValSplitOpt = None,
    recipe: Annotated[Path | None, typer.Option(
        "--recipe", metavar="FILE", help="TOML recipe (pipelines/*.toml); options given here override it.")] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", "-e", metavar="N", min=1, help=f"Passes over the training data {_default(D.epochs)}.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", "-b", metavar="N", min=1,
        help=f"Global batch size, split over torchrun processes {_default(D.batch_size)}.")] = None,
    lr: Annotated[float | None, typer.Option(
        "--lr", metavar="RATE", help=f"Peak learning rate {_default(D.lr)}.")] = None,
    optimizer: Annotated[str | None, typer.Option(
        "--optimizer", metavar="NAME", help=f"{_choices(OPTIMIZERS, D.optimizer)} (the paper: adam).")] = None,
    momentum: Annotated[float | None, typer.Option(
        "--momentum", metavar="X", help=f"Momentum of --optimizer sgd {_default(D.momentum)}.")] = None,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", metavar="X", help=f"Weight decay {_default(D.weight_decay)} (the paper: none).")] = None,
    schedule: Annotated[str | None, typer.Option(
        "--schedule", metavar="NAME",
        help=f"Learning rate schedule: {_choices(SCHEDULES, D.schedule)}; step multiplies by --factor at --steps.")
    ] = None,
    steps: Annotated[str | None, typer.Option(
        "--steps", metavar="EPOCHS",
        help="Epochs where the step schedule multiplies the rate by --factor, e.g. 100,110.")] = None,
    factor: Annotated[float | None, typer.Option(
        "--factor", metavar="X", help=f"Step schedule factor {_default(D.factor)}.")] = None,
    warmup_epochs: Annotated[float | None, typer.Option(
        "--warmup-epochs", metavar="N", min=0, help=f"Linear warmup length in epochs {_default(D.warmup_epochs)}.")
    ] = None,
    clip_threshold: Annotated[float | None, typer.Option(
        "--clip-threshold", metavar="X",
        help="STE gradient clip and latent weight clamp [default: the model's, 1.3 or 1.25].")] = None,
    scaling: Annotated[str | None, typer.Option(
        "--scaling", metavar="MODE", help="Binary weight scaling: none or xnor (ablation) [default: none].")] = None,
    activation_gradient: Annotated[str | None, typer.Option(
        "--activation-gradient", metavar="NAME",
        help="Gradient of the activation sign: ste or approxsign (ablation) [default: ste].")] = None,
    weight_gradient: Annotated[str | None, typer.Option(
        "--weight-gradient", metavar="NAME",
        help="Latent weight update: larq (clip and clamp) or bmxnet (identity) [default: larq].")] = None,
    pad_value: Annotated[float | None, typer.Option(
        "--pad-value", metavar="V", help="What binary convs pad their input with: 0, -1 or 1 [default: 0].")] = None,
    binary_downsample: Annotated[bool | None, typer.Option(
        "--binary-downsample/--fp-downsample", help="ResNetE shortcut convs binary (ablation) or full precision.")
    ] = None,
    in_channels: Annotated[int | None, typer.Option(
        "--in-channels", metavar="N", min=1, max=3, help="Image channels the model reads: 3 (RGB) or 1 (grey: "
        "digits, scans; images are read as L) [default: 3].")] = None,
    float_weights: Annotated[str | None, typer.Option(
        "--float-weights", metavar="DTYPE", help="float16: the full-precision layers compute with float16-valued "
        "weights, so `bnn pack --float-dtype float16` is lossless; float32: plain float layers [default: the "
        "model's, float16].")] = None,
    padding: Annotated[str | None, typer.Option(
        "--padding", metavar="MODE", help="How padded stride-2 layers pad: symmetric (PyTorch) or tensorflow "
        "(TensorFlow's \"same\", as Keras-trained models such as Larq Zoo's) [default: symmetric].")] = None,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", metavar="PX", min=8, help="Training crop [default: 32 for builtin:shapes, else 224].")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", metavar="NAME", help="Preprocessing and augmentation: imagenet (random-resized crop, flip), "
        "small (pad by 1/8 and random crop, flip) or larq (as imagenet; Larq Zoo's evaluation resize) "
        "[default: small below 64 px].")] = None,
    augment: Annotated[bool | None, typer.Option(
        "--augment/--no-augment", help="Training augmentation; --no-augment trains on the evaluation transform "
        "[default: on].")] = None,
    flip: Annotated[float | None, typer.Option(
        "--flip", metavar="P", help="Horizontal flip probability; 0 for data where orientation matters "
        "[default: 0.5].")] = None,
    crop_scale: Annotated[tuple[float, float] | None, typer.Option(
        "--crop-scale", metavar="MIN MAX", help="Area range of the random-resized crop (imagenet, larq) "
        "[default: 0.08 1.0].")] = None,
    crop_ratio: Annotated[tuple[float, float] | None, typer.Option(
        "--crop-ratio", metavar="MIN MAX", help="Aspect range of the random-resized crop "
        "[default: 0.75 1.33].")] = None,
    pad_crop: Annotated[int | None, typer.Option(
        "--pad-crop", metavar="PX", help="small preset: pad and random-crop margin; 0 for none "
        "[default: image size / 8].")] = None,
    label_smoothing: Annotated[float | None, typer.Option(
        "--label-smoothing", metavar="X", help="Label smoothing of the cross-entropy [default: 0, off].")] = None,
    init: Annotated[str | None, typer.Option(
        "--init", metavar="NAME", help=f"Weight initialisation: {' or '.join(INITS)} (PyTorch's; he_normal: as in "
        f"the authors' ablations) {_default(D.init)}.")] = None,
    workers: WorkersOpt = None,
    threads: ThreadsOpt = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", metavar="N", help=f"Seeds weights, data order, augmentation and --val-split {_default(D.seed)}.")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", parser=parse_out_dir, metavar="DIR",
        help="Run directory, new or empty; locked while the run writes to it [default: "
             "runs/<arch>-<YYYYmmdd-HHMMSS>, -2, -3, ... when taken].")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", metavar="RUN", help="Continue the run in this directory where it stopped.")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", metavar="NAME", help=f"Where to train: {_choices(DEVICES, D.device)}.")] = None,
    amp: Annotated[str | None, typer.Option(
        "--amp", metavar="MODE", help=f"Autocast: {_choices(AMP_MODES, D.amp)}.")] = None,
    channels_last: Annotated[bool | None, typer.Option(
        "--channels-last/--no-channels-last", help=f"NHWC memory layout (faster on some GPUs) "
        f"{_default(D.channels_last)}.")] = None,
    compile_: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help=f"torch.compile the model {_default(D.compile)}.")] = None,
    sync_bn: Annotated[bool | None, typer.Option(
        "--sync-bn/--no-sync-bn", help=f"SyncBatchNorm across GPUs under torchrun {_default(D.sync_bn)}.")] = None,
    loader: Annotated[str | None, typer.Option(
        "--loader", metavar="NAME", help=f"Who decodes and augments the training images: "
        f"{_choices(LOADERS, D.loader)}. pil: Pillow in the workers; torchvision: libjpeg-turbo and uint8 "
        f"tensors in the workers; device: the workers read the files, the training device decodes them "
        f"(nvJPEG on a GPU). The same crops for the same --seed; validation always reads with pil.")] = None,
    log_every: LogEveryOpt = None,
    tensorboard: Annotated[bool, typer.Option(
        "--tensorboard", help="Also log loss, accuracy, learning rate and speed for TensorBoard, in "
        "RUN/tensorboard (needs the tensorboard extra).")] = False,
    tensorboard_dir: Annotated[str | None, typer.Option(
        "--tensorboard-dir", metavar="DIR", help="Where --tensorboard logs; implies it [default: "
        "RUN/tensorboard].")] = None,
    json_: JsonOpt = False) -> None:
    """Train a model from scratch (Adam, no weight decay, latent weight clipping by default).

    Writes RUN/last.pt, RUN/best.pt, RUN/metrics.jsonl and RUN/curves.png. Ctrl-C saves and
    stops; `bnn train --resume RUN` continues exactly where it stopped. For several GPUs or
    machines: `torchrun --nproc_per_node N -m bnncli train ...`.
    """
    given = dict(locals())  # every option as parsed, by parameter name (nothing else is defined yet)
    from bnncli.engine.stopping import StopRequest, graceful_interrupts

    overrides = config_overrides(given)
    cfg, checkpoint, out_dir = _configure(overrides, recipe, resume, out_dir)
    from bnncli.engine.train import train as run_training  # torch: only once the options are known to be good
    reporter = make_reporter(log_every)
    watched = _with_tensorboard(reporter, tensorboard, tensorboard_dir)
    stop = StopRequest()
    try:
        with graceful_interrupts(stop), watched:
            result = run_training(cfg, out_dir, resume=checkpoint, reporter=watched, stop=stop)
    except KeyboardInterrupt:  # a second Ctrl-C: no time to save, but the last checkpoint is intact
        last = RunFiles(Path(reporter.run_dir)).last if reporter.run_dir is not None else None
        if last is not None and last.exists():
            info(f"aborted; {last} holds the last saved state. Resume with: bnn train --resume {reporter.run_dir}")
        raise
    if reporter.is_main:
        _report(result, cfg, json_)


# Parameters of `train` that are not TrainConfig fields or model options: where and how a run goes.
RUN_OPTIONS = ("recipe", "out_dir", "resume", "log_every", "tensorboard", "tensorboard_dir", "json_")
RENAMED = {"compile_": "compile"}  # parameter -> TrainConfig field, where a Python keyword is in the way


def config_overrides(given: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields (and model options) the command line sets, from ``train``'s parameters:
    each option is written once, as its parameter, named as its field (tests/test_train.py checks
    that every field has one). Unset options are None, which never override a recipe."""
    from bnncli.engine.config import FIELDS, MODEL_OPTIONS, parse_steps

    overrides: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for name, value in given.items():
        if name in RUN_OPTIONS:
            continue
        field = RENAMED.get(name, name)
        if field in MODEL_OPTIONS:
            if value is not None:
                model[field] = value
        elif field in FIELDS:
            overrides[field] = value
        else:
            raise AssertionError(f"bnn train's parameter {name} is neither a TrainConfig field nor a run option")
    overrides["steps"] = parse_steps(overrides.get("steps"))
    for key in ("crop_scale", "crop_ratio"):
        overrides[key] = None if overrides.get(key) is None else list(overrides[key])
    overrides["model"] = model or None
    return overrides


def _with_tensorboard(reporter, on: bool, directory: str | None):
    """``reporter``, also writing TensorBoard scalars when asked; without the extra this fails here,
    before training starts. Display only, like --log-every: not part of the run's configuration."""
    if not on and directory is None:
        return reporter
    if directory is not None and not directory.strip():
        raise UsageError("--tensorboard-dir needs a directory name, not an empty string")
    from bnncli.engine.tensorboard import TensorBoardReporter

    return TensorBoardReporter(reporter, directory)


def _configure(overrides: dict[str, Any], recipe: Path | None, resume: Path | None, out_dir: Path | None):
    """``(config, checkpoint to resume or None, run directory)`` from the command line."""
    from bnncli.engine.config import resolve_config

    if resume is None:
        return resolve_config(recipe=recipe, overrides=overrides), None, out_dir
    from bnncli.engine.resume import load_resume, resume_overrides

    if recipe is not None:
        raise UsageError("--recipe cannot be used with --resume: a resumed run keeps its configuration")
    if out_dir is not None and Path(out_dir).resolve() != Path(resume).resolve():
        raise UsageError("--resume RUN continues in RUN; leave out --out")
    checkpoint = load_resume(resume)
    base = {"val_split": 0.0, **checkpoint["config"]}  # runs from before --val-split held nothing out
    return resolve_config(base=base, overrides=resume_overrides(checkpoint, overrides)), checkpoint, resume


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
        "val_split": cfg.val_split,
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
        info(_done_line(result, cfg))


def _done_line(result, cfg) -> str:
    """What was chosen as best, on what, and how to evaluate: never on the images the model trained on."""
    best, run = result.best, result.run_dir
    if not best:
        return f"done: {run}"
    picked = f"best {best['metric']} {best['value']:.2%} at epoch {best['epoch']}"
    if cfg.val_split is None:  # the data's own val split (a dataset root, builtin:)
        return f"done: {run} ({picked}); evaluate with: bnn eval {run} --data {cfg.data}"
    if best["metric"] == "val_top1":
        picked += f", on the images of {cfg.data} held out"
    return (f"done: {run} ({picked}); it trained on {cfg.data}, so evaluate it on other labelled images: "
            f"bnn eval {run} --data DIR")

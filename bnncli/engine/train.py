"""The training loop: one process, or one of many under torchrun (DDP).

Read it top to bottom: :func:`train` builds the data, the model and its optimizer, restores a
resumed run, then runs epochs; each epoch is steps (:func:`run_epoch`, :func:`train_step`),
then validation (:func:`validate`) and checkpoints (:func:`save_epoch`). The paper's recipe is
the default: Adam, no weight decay, the straight-through estimator inside the model's binary
convs, and the latent weights clamped to the clip threshold after every optimizer step.

Reproducibility: with a fixed seed on CPU, a run that is stopped (Ctrl-C, SIGTERM) and resumed
ends with bit-for-bit the weights of an uninterrupted run. The batches are a function of
``(seed, epoch, position)`` (see :mod:`bnncli.data.loading`), and a checkpoint holds every other
piece of state: weights and BatchNorm statistics, optimizer, schedule, loss scaler, RNGs
(:mod:`bnncli.engine.rng`), the position inside the epoch and the epoch's running sums.

Stopping is :mod:`bnncli.engine.stopping`, run directories and resume policy
:mod:`bnncli.engine.resume`; the library never prints: progress goes to a
:class:`~bnncli.engine.progress.Reporter` that the CLI implements.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bnncli.artifacts.checkpoint import model_checkpoint, save_checkpoint
from bnncli.artifacts.identify import reason
from bnncli.artifacts.open import autocast
from bnncli.artifacts.rundir import RunFiles, RunLock
from bnncli.data import shm
from bnncli.data.loading import (
    EpochSampler,
    SampleDataset,
    ShardSampler,
    Skipped,
    capped_workers,
    make_loader,
    open_train_data,
)
from bnncli.data.presets import default_preset, preprocessing
from bnncli.data.tensor_loaders import train_batches, train_dataset
from bnncli.data.transforms import eval_transform, resolved_augmentation, train_transform
from bnncli.engine import distributed
from bnncli.engine.config import TrainConfig, augmentation
from bnncli.engine.curves import plot_curves
from bnncli.engine.evaluate import evaluate
from bnncli.engine.optim import build_optimizer, build_scheduler
from bnncli.engine.progress import EpochSums, Reporter
from bnncli.engine.resume import open_run_dir
from bnncli.engine.rng import he_normal_, rng_state, seed_everything, set_rng_state, weights_digest
from bnncli.engine.stopping import StopRequest
from bnncli.errors import ArtifactError, BnnError, DataError, UsageError
from bnncli.fileio import write_text
from bnncli.models import LEGACY_OPTIONS, check_image_size, create_model
from bnncli.nn import LatentWeightClamp
from bnncli.nn.threads import use_torch_threads


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    epochs: int
    step_in_epoch: int
    steps_per_epoch: int
    interrupted: bool
    stop_reason: str | None
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    model: nn.Module = field(repr=False)

    @property
    def last_metrics(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None


# Bytes per pixel value of what the workers of each --loader hand over (bnncli.data.tensor_loaders):
# float32 images (pil), uint8 images (torchvision), JPEG file bytes, at most about as many (device).
SHARED_BYTES_PER_VALUE = {"pil": 4, "torchvision": 1, "device": 1}


@dataclass
class TrainData:
    """The splits, their loaders, and what checkpoints record about the data."""

    class_names: list[str]
    preprocessing: dict[str, Any]
    image_size: int
    train_set: SampleDataset
    val_set: SampleDataset | None
    sampler: EpochSampler
    train_loader: Any
    val_loader: Any
    batch: int  # per process
    workers: int
    steps_per_epoch: int
    notes: list[str] = field(default_factory=list)  # said before training starts


@dataclass
class Run:
    """Everything one training run holds while it runs; the functions below take it whole."""

    cfg: TrainConfig
    ctx: distributed.Context
    data: TrainData
    raw_model: nn.Module  # the registry model: saved, clamped, validated
    model: nn.Module  # what the steps call: raw_model, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    files: RunFiles
    reporter: Reporter
    stop: StopRequest
    start_epoch: int = 0
    start_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    partial: list[float] | None = None  # sums of the interrupted epoch being resumed (rank 0)
    seen_bad: set[str] = field(default_factory=set)
    clamp: LatentWeightClamp = field(init=False, repr=False)  # the latent weights, collected once

    def __post_init__(self) -> None:
        self.clamp = LatentWeightClamp(self.raw_model)


def train(cfg: TrainConfig, out: str | os.PathLike | None = None, *, resume: dict[str, Any] | None = None,
          reporter: Reporter | None = None, stop: StopRequest | None = None) -> TrainResult:
    """Train ``cfg`` into the run directory ``out`` (default ``runs/<arch>-<time>``).

    ``resume`` is the ``last.pt`` of the run to continue (see :func:`bnncli.engine.resume.load_resume`);
    ``stop`` is polled between steps. Under torchrun every process calls this; rank 0 alone
    writes and reports, and holds the run directory's lock until it returns.
    """
    use_torch_threads(cfg.threads)
    ctx = distributed.setup(cfg.device)
    lock = None
    try:
        if not ctx.is_main:
            reporter = Reporter()
        files, lock, notes = open_run(cfg, out, resume, ctx)
        run = build_run(cfg, files, resume, reporter or Reporter(), stop or StopRequest(), ctx)
        for note in notes:
            run.reporter.warning(note)
        return run_epochs(run)
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown(ctx)


# ---- building a run ---------------------------------------------------------------------------------------


def build_data(cfg: TrainConfig, ctx: distributed.Context, resume: dict[str, Any] | None) -> TrainData:
    """Class names come from the train split; the eval preprocessing is what checkpoints record."""
    assert cfg.data is not None and cfg.arch is not None  # config.validate made sure
    data = open_train_data(cfg.data, cfg.val_split, cfg.seed)
    if data.train is None:
        raise DataError(f"{cfg.data} has no training images")
    cfg.val_split = data.held_out  # recorded as used: config.json and every checkpoint carry it
    if resume is not None and list(resume["class_names"]) != data.class_names:
        raise DataError(f"the classes in {cfg.data} differ from those of the run being resumed")
    image_size = cfg.image_size or data.native_size or 224
    in_channels = int(cfg.model.get("in_channels", 3))
    pre = preprocessing(cfg.preset or default_preset(image_size), image_size, in_channels)
    # --loader: who decodes and augments the training images (bnncli.data.tensor_loaders); validation
    # always reads with the pil loader's eval transform, the one bnn eval and the deployed model use.
    train_set = train_dataset(cfg.loader, data.train, train_transform(pre, augmentation(cfg)), in_channels)
    val_set = SampleDataset(data.val, eval_transform(pre), in_channels) if data.val is not None else None
    if cfg.batch_size % ctx.world_size:
        raise UsageError(f"batch size {cfg.batch_size} does not divide over {ctx.world_size} processes")
    batch = cfg.batch_size // ctx.world_size  # --batch-size is global, as in the paper's recipes
    workers = cfg.workers
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))  # training processes on this machine
    if workers is None:  # CPU training needs both cores for compute; a GPU needs decoding help
        workers = 0 if ctx.device.type == "cpu" else min(8, max(1, (os.cpu_count() or 1) // local))
    # Before any worker starts: as many batches in flight as shared memory holds (bnncli.data.shm).
    # One loader loads at a time (training, then validation), in every process of this machine.
    one_batch = local * shm.batch_bytes(batch, in_channels, image_size, SHARED_BYTES_PER_VALUE.get(cfg.loader, 4))
    workers, prefetch, shm_note = shm.fit_workers(capped_workers(workers), one_batch)
    pin = ctx.device.type == "cuda"
    sampler = EpochSampler(train_set, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size)
    train_loader = train_batches(train_set, sampler, batch, workers, ctx.device, cfg.channels_last, prefetch)
    val_loader = None
    if val_set is not None:
        val_loader = make_loader(val_set, ShardSampler(len(val_set), ctx.rank, ctx.world_size), batch, workers,
                                 pin_memory=pin, prefetch=prefetch)
    return TrainData(data.class_names, pre, image_size, train_set, val_set, sampler, train_loader, val_loader,
                     batch, workers, math.ceil(len(sampler.inner) / batch), [shm_note] if shm_note else [])


def build_model(cfg: TrainConfig, data: TrainData, ctx: distributed.Context,
                resume: dict[str, Any] | None) -> tuple[nn.Module, nn.Module]:
    """``(raw_model, model)``: the same seed on every rank; DDP also broadcasts rank 0's weights."""
    seed_everything(cfg.seed)
    options = {"num_classes": len(data.class_names), **cfg.model}
    options.setdefault("thumbnail", data.image_size < 50)  # small inputs get the 3x3 stem
    if resume is not None:  # a run started before an option existed keeps what it was trained with
        options.update({k: v for k, v in LEGACY_OPTIONS.items() if k not in resume["arch_kwargs"]})
    assert cfg.arch is not None  # config.validate made sure
    raw_model = create_model(cfg.arch, **options)
    check_image_size(raw_model, data.image_size)  # one message, not a failure in the first step
    if cfg.init == "he_normal":
        he_normal_(raw_model)
    raw_model.to(ctx.device)
    if ctx.device.type == "cuda":
        # Every training step has the same input shape, so timing cuDNN's convolution algorithms once
        # and keeping the fastest pays off from the first epoch. The choice can differ between runs: one
        # more reason GPU runs are not bit-reproducible (docs/training.md). Never on a CPU: no cuDNN there.
        torch.backends.cudnn.benchmark = True
    if cfg.channels_last:
        raw_model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and ctx.distributed:
        if ctx.device.type != "cuda":
            raise UsageError("--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel)")
        raw_model = nn.SyncBatchNorm.convert_sync_batchnorm(raw_model)
    model: nn.Module = raw_model
    if ctx.distributed:
        device_ids = [ctx.device] if ctx.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(raw_model, device_ids=device_ids)
    if cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]  # still a module, wrapped
    return raw_model, model


def open_run(cfg: TrainConfig, out: str | os.PathLike | None, resume: dict[str, Any] | None,
             ctx: distributed.Context) -> tuple[RunFiles, RunLock | None, list[str]]:
    """Rank 0 creates, locks and checks the run directory (:func:`bnncli.engine.resume.open_run_dir`);
    every rank learns where it is, or rank 0's refusal, so no rank waits on one that gave up."""
    opened: tuple[RunFiles, RunLock | None, list[str]] | None = None
    error: BnnError | None = None
    if ctx.is_main:
        try:
            opened = open_run_dir(out, cfg.arch or "run", resume)
        except BnnError as e:
            if not ctx.distributed:
                raise
            error = e
    if ctx.distributed:
        where, error = distributed.all_gather_object((str(opened[0].dir) if opened else None, error), ctx)[0]
        if error is not None:
            raise error
        opened = opened or (RunFiles(Path(where)), None, [])
    assert opened is not None
    return opened


def build_run(cfg: TrainConfig, files: RunFiles, resume: dict[str, Any] | None, reporter: Reporter,
              stop: StopRequest, ctx: distributed.Context) -> Run:
    data = build_data(cfg, ctx, resume)
    for note in data.notes:
        reporter.warning(note)
    raw_model, model = build_model(cfg, data, ctx, resume)
    optimizer = build_optimizer(raw_model, cfg)
    scheduler = build_scheduler(optimizer, cfg, data.steps_per_epoch)
    scaler = torch.amp.GradScaler(ctx.device.type) if cfg.amp == "fp16" else None
    run = Run(cfg, ctx, data, raw_model, model, optimizer, scheduler, scaler, files, reporter, stop)
    if resume is not None:
        restore(run, resume)
    if ctx.is_main:
        write_run_files(run)
    reporter.start(start_info(run, resumed=resume is not None))
    return run


def restore(run: Run, resume: dict[str, Any]) -> None:
    """Put a stopped run's state back: weights, optimizer, schedule, scaler, RNGs and position."""
    run.raw_model.load_state_dict(resume["model"])
    for part, target in (("optimizer", run.optimizer), ("scheduler", run.scheduler),
                         ("scaler", run.scaler if resume.get("scaler") else None)):
        if target is None:
            continue
        try:
            target.load_state_dict(resume[part])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise ArtifactError(f"the checkpoint being resumed holds a malformed {part} state ({type(e).__name__}: "
                                f"{reason(e)})") from None
    set_rng_state(resume["rng"])
    run.start_epoch, run.start_step = int(resume["epoch"]), int(resume.get("step_in_epoch", 0))
    run.history, run.best = list(resume.get("history", [])), resume.get("best")
    run.partial = resume.get("partial") if run.ctx.is_main else None  # rank 0 carries the epoch's sums
    same_layout = (resume.get("world_size", 1) == run.ctx.world_size
                   and resume["config"].get("batch_size") == run.cfg.batch_size)
    if run.start_step and not same_layout:
        run.reporter.warning("batch size or process count changed: the interrupted epoch restarts from its start")
        run.start_step, run.partial = 0, None
    if run.start_epoch >= run.cfg.epochs and run.start_step == 0:
        raise UsageError(f"{run.files.dir} has finished its {run.start_epoch} epochs; pass --epochs N "
                         f"(N > {run.start_epoch}) to train longer")


def write_run_files(run: Run) -> None:
    """The run directory, its config.json, and metrics.jsonl rewritten from the checkpoint's
    history: a kill between saving and logging loses or repeats nothing."""
    run.files.dir.mkdir(parents=True, exist_ok=True)
    write_metrics(run)
    write_text(run.files.config, json.dumps({
        "config": run.cfg.to_dict(), "arch": run.raw_model.bnn_arch, "arch_kwargs": run.raw_model.bnn_kwargs,
        "class_names": run.data.class_names, "preprocessing": run.data.preprocessing,
        "world_size": run.ctx.world_size,
        # What the options left unset (None in "config") resolved to in this run.
        "used": {"image_size": run.data.image_size, "preset": run.data.preprocessing["preset"],
                 "augmentation": resolved_augmentation(run.data.preprocessing, augmentation(run.cfg)),
                 "workers": run.data.workers, "threads": torch.get_num_threads(),
                 "batch_per_process": run.data.batch},
    }, indent=2) + "\n")


def write_metrics(run: Run) -> None:
    """metrics.jsonl: one line per finished epoch, rewritten whole (atomically) from the history."""
    write_text(run.files.metrics, "".join(json.dumps(m) + "\n" for m in run.history))


def start_info(run: Run, resumed: bool) -> dict[str, Any]:
    cfg, d = run.cfg, run.data
    return {
        "run_dir": str(run.files.dir), "arch": cfg.arch, "device": str(run.ctx.device),
        "world_size": run.ctx.world_size, "params": sum(p.numel() for p in run.raw_model.parameters()),
        "classes": len(d.class_names), "train_images": len(d.train_set),
        "val_images": len(d.val_set) if d.val_set is not None else 0, "image_size": d.image_size,
        "preset": d.preprocessing["preset"], "batch_size": cfg.batch_size, "workers": d.workers,
        "epochs": cfg.epochs, "steps_per_epoch": d.steps_per_epoch, "start_epoch": run.start_epoch,
        "start_step": run.start_step, "resumed": resumed, "data": cfg.data, "val_split": cfg.val_split,
        "loader": cfg.loader,
    }


# ---- running it -----------------------------------------------------------------------------------------------


def run_epochs(run: Run) -> TrainResult:
    """Epochs from where the run stands to ``cfg.epochs``; returns early, saved, when asked to stop."""
    cfg = run.cfg
    for epoch in range(run.start_epoch, cfg.epochs):
        first_step = run.start_step if epoch == run.start_epoch else 0
        # Rank 0 resumes the interrupted epoch's sums; they are summed over ranks at the end.
        sums = EpochSums(run.ctx.device, run.partial if first_step else None)
        run.partial = None
        stopped_at = run_epoch(run, epoch, first_step, sums)
        if stopped_at is not None:
            return stopped(run, epoch, stopped_at, sums.totals(run.ctx))
        metrics = epoch_metrics(run, epoch, sums)
        if run.data.val_loader is not None:
            metrics.update(validate(run, epoch))
        save_epoch(run, metrics)
        if epoch + 1 < cfg.epochs and distributed.any_rank([run.stop.requested], run.ctx)[0]:
            # Asked to stop during validation: the epoch's checkpoint is already written.
            return stopped(run, epoch + 1, 0, None, save=False)
    if run.ctx.is_main and run.history:
        plot_curves(run.history, run.files.curves, cfg.arch or "")
    distributed.barrier(run.ctx)
    return TrainResult(run.files.dir, cfg.epochs, cfg.epochs, 0, run.data.steps_per_epoch, False, None,
                       run.history, run.best, run.raw_model)


def run_epoch(run: Run, epoch: int, first_step: int, sums: EpochSums) -> int | None:
    """Train one epoch from ``first_step`` into ``sums``; returns the step a stop came before, or None."""
    steps = run.data.steps_per_epoch
    run.data.sampler.set_epoch(epoch, start=first_step * run.data.batch)
    run.model.train()
    run.reporter.epoch_start(epoch + 1, run.cfg.epochs, steps, first_step)
    t_start = last_report = time.perf_counter()
    step = first_step
    for x, y, bad in run.data.train_loader:
        sums.skipped += len(bad)
        note_skipped(run, bad)
        # Every process must take the same steps: agree on stopping, and on skipping a step
        # where some process has only unreadable files in its batch.
        stop_now, empty = distributed.any_rank([run.stop.requested, x is None], run.ctx)
        if stop_now:
            sums.skipped -= len(bad)  # this batch is not trained on: it is read again on resume
            return step
        step += 1
        if empty:
            continue
        loss, logits, y = train_step(run, x, y)
        sums.add(loss, logits, y)
        # A diverged run (NaN or infinite loss) stops, checked every 16 steps so that GPU steps need not
        # wait; the same steps on every process. last.pt keeps the last finished epoch, the curves draw it.
        if (step % 16 == 0 or step == steps) and distributed.any_rank([not math.isfinite(sums.loss.item())],
                                                                      run.ctx)[0]:
            kept = f"; {run.files.last} keeps epoch {run.history[-1]['epoch']}" if run.history else ""
            if run.ctx.is_main and run.history:
                plot_curves(run.history, run.files.curves, run.cfg.arch or "")
            raise UsageError(f"training diverged in epoch {epoch + 1}: the loss is not finite by step {step}/{steps}"
                             f"{kept}; start again with a lower --lr (this run: {run.cfg.lr:g})")
        now = time.perf_counter()
        if now - last_report >= run.reporter.interval or step == steps:
            last_report = now
            loss_avg, top1 = sums.averages()
            run.reporter.step(epoch + 1, step, steps, loss_avg, top1,
                              sums.local_images * run.ctx.world_size / (now - t_start), current_lr(run))
    sums.seconds = time.perf_counter() - t_start
    return None


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns the loss, the logits and the labels on the device."""
    x = x.to(run.ctx.device, non_blocking=True)
    y = y.to(run.ctx.device, non_blocking=True)
    if run.cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(run.ctx.device, run.cfg.amp):
        logits = run.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=run.cfg.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:  # fp16: scale the loss so small gradients do not underflow
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        run.optimizer.step()
    # The Larq weight variant: latent weights outside [-t, t] get no gradient, so clamp them back
    # to where a sign flip is one gradient step away.
    run.clamp()
    run.scheduler.step()
    return loss, logits, y


def current_lr(run: Run) -> float:
    return run.optimizer.param_groups[0]["lr"]


def note_skipped(run: Run, bad: list[Skipped]) -> None:
    """Warn once per unreadable file."""
    for s in bad:
        if s.path not in run.seen_bad:
            run.seen_bad.add(s.path)
            run.reporter.warning(f"{s.reason} (skipped)")


def epoch_metrics(run: Run, epoch: int, sums: EpochSums) -> dict[str, Any]:
    """The epoch's training numbers, summed over processes; then rank 0's buffers everywhere."""
    loss_sum, correct, images, skipped = sums.totals(run.ctx)
    distributed.sync_buffers(run.raw_model, run.ctx)
    seconds = sums.seconds
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / max(images, 1),
        "train_top1": correct / max(images, 1),
        "lr": current_lr(run),
        "images": int(images),
        "skipped": int(skipped),
        "seconds": seconds,
        "images_per_s": sums.local_images * run.ctx.world_size / seconds if seconds > 0 else 0.0,
    }


def validate(run: Run, epoch: int) -> dict[str, Any]:
    """Held-out metrics, sharded across processes with the counts summed."""
    assert run.data.val_set is not None  # validate is called only with a validation split
    run.reporter.validating(epoch + 1, len(run.data.val_set))
    run.raw_model.eval()
    device, cfg = run.ctx.device, run.cfg

    @torch.inference_mode()
    def predict(xb: torch.Tensor) -> torch.Tensor:
        xb = xb.to(device, non_blocking=True)
        if cfg.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.amp):
            return run.raw_model(xb)

    def reduce(t: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce(t.to(device), "sum", run.ctx).cpu()

    res = evaluate(predict, run.data.val_loader, run.data.class_names, reduce=reduce,
                   on_skip=lambda s: note_skipped(run, [s]))
    return {"val_loss": res["loss"], "val_top1": res["top1"], "val_top5": res["top5"],
            "val_images": res["images"], "val_skipped": res["skipped"]}


def save_epoch(run: Run, metrics: dict[str, Any]) -> None:
    """last.pt every epoch, then best.pt when the selection metric improves, then metrics.jsonl.

    In that order, a kill at any instant leaves best.pt and metrics.jsonl agreeing on the best
    epoch; last.pt, which records the best epoch, may be one ahead, and resuming from it restores
    best.pt from it (:func:`bnncli.engine.resume.repair_best`) and rewrites metrics.jsonl."""
    run.history.append(metrics)
    key = "val_top1" if run.data.val_loader is not None else "train_top1"
    is_best = run.best is None or metrics[key] > run.best["value"]
    if is_best:
        run.best = {"metric": key, "value": metrics[key], "epoch": metrics["epoch"]}
    if run.ctx.distributed:
        # Cheap proof that DDP kept every replica identical, recorded in the checkpoint.
        digests = distributed.all_gather_object(weights_digest(run.raw_model), run.ctx)
        metrics["rank_digests"] = digests
        if len(set(digests)) > 1:
            run.reporter.warning(f"epoch {metrics['epoch']}: the processes' weights differ "
                                 f"({len(set(digests))} versions)")
    if run.ctx.is_main:
        state = checkpoint_state(run, metrics["epoch"], 0, None)
        save_checkpoint(run.files.last, state)
        if is_best:
            save_checkpoint(run.files.best, state)
        write_metrics(run)
    run.reporter.epoch_end(metrics, is_best)


def checkpoint_state(run: Run, epochs_done: int, step_in_epoch: int, sums: list[float] | None) -> dict[str, Any]:
    """The checkpoint of the run as it stands (``sums``: the running sums of an unfinished epoch)."""
    return model_checkpoint(
        run.raw_model, run.data.class_names, run.data.preprocessing,
        epoch=epochs_done, step_in_epoch=step_in_epoch, steps_per_epoch=run.data.steps_per_epoch,
        finished=epochs_done >= run.cfg.epochs, optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(), scaler=run.scaler.state_dict() if run.scaler is not None else None,
        rng=rng_state(), metrics=run.history[-1] if run.history else None, best=run.best, history=run.history,
        partial=sums, config=run.cfg.to_dict(), world_size=run.ctx.world_size,
    )


def stopped(run: Run, epochs_done: int, step_in_epoch: int, sums: list[float] | None,
            save: bool = True) -> TrainResult:
    """Save where the run stands (rank 0) and report the stop."""
    run.reporter.stopping(run.stop.reason or "stop requested")
    if run.ctx.is_main and save:
        save_checkpoint(run.files.last, checkpoint_state(run, epochs_done, step_in_epoch, sums))
    if run.ctx.is_main and run.history:  # also when the epoch's checkpoint was written already (save=False)
        plot_curves(run.history, run.files.curves, run.cfg.arch or "")
    return TrainResult(run.files.dir, epochs_done, run.cfg.epochs, step_in_epoch, run.data.steps_per_epoch, True,
                       run.stop.reason, run.history, run.best, run.raw_model)

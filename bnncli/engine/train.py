"""The training loop: one process, or one of many under torchrun (DDP).

Read it top to bottom: data -> model -> optimizer and schedule -> (resume) -> epochs of steps,
each epoch ending with validation, ``metrics.jsonl`` and checkpoints. The paper's recipe is the
default: Adam, no weight decay, the straight-through estimator inside the model's binary convs,
and the latent weights clamped to the clip threshold after every optimizer step.

Reproducibility: with a fixed seed on CPU, a run that is stopped (Ctrl-C, SIGTERM) and resumed
ends with bit-for-bit the weights of an uninterrupted run. The batches are a function of
``(seed, epoch, position)`` (see :mod:`bnncli.data.loading`), and a checkpoint holds every other
piece of state: weights and BatchNorm statistics, optimizer, schedule, loss scaler, RNGs, the
position inside the epoch and the epoch's running sums.

The library never prints; progress goes to a :class:`Reporter` that the CLI implements.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bnncli.artifacts.checkpoint import load_checkpoint, model_checkpoint, save_checkpoint
from bnncli.data.loading import (
    EpochSampler,
    SampleDataset,
    ShardSampler,
    Skipped,
    make_loader,
    open_train_data,
)
from bnncli.data.presets import default_preset, preprocessing
from bnncli.data.transforms import eval_transform, train_transform
from bnncli.engine import distributed
from bnncli.engine.config import TrainConfig
from bnncli.engine.curves import plot_curves
from bnncli.engine.evaluate import autocast, evaluate
from bnncli.engine.optim import build_optimizer, build_scheduler
from bnncli.errors import DataError, UsageError
from bnncli.models import LEGACY_OPTIONS, create_model
from bnncli.nn import BinaryConv2d, clamp_latent_weights

# What may change when a run is resumed: where the data lives and how fast it runs, and the
# number of epochs (to train longer). Anything else would silently mix two experiments.
RESUMABLE_OVERRIDES = ("data", "epochs", "workers", "device", "amp", "channels_last", "compile")


# --- progress and stopping ---------------------------------------------------------------------------


class Reporter:
    """Progress callbacks; the CLI draws them with rich. Only rank 0 gets a real reporter.

    ``step`` is called at most every ``interval`` seconds (and at the end of each epoch): reading
    the running loss makes a GPU wait, so it is not done on every step.
    """

    interval = 0.25

    def start(self, info: dict[str, Any]) -> None: ...

    def epoch_start(self, epoch: int, epochs: int, steps: int, first_step: int) -> None: ...

    def step(self, epoch: int, step: int, steps: int, loss: float, top1: float, images_per_s: float,
             lr: float) -> None: ...

    def validating(self, epoch: int, images: int) -> None: ...

    def epoch_end(self, metrics: dict[str, Any], is_best: bool) -> None: ...

    def stopping(self, reason: str) -> None: ...

    def warning(self, text: str) -> None: ...


class StopRequest:
    """Set by a signal handler (or a test); the loop stops at the next step boundary and saves."""

    def __init__(self) -> None:
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str = "stop requested") -> None:
        if self.reason is None:
            self.reason = reason


@contextlib.contextmanager
def graceful_interrupts(stop: StopRequest) -> Iterator[StopRequest]:
    """First Ctrl-C (or SIGTERM, which torchrun and schedulers send) asks for a clean stop:
    finish the step, save ``last.pt``, return. A second Ctrl-C aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: Any) -> None:
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.request("interrupted (Ctrl-C)" if signum == signal.SIGINT else f"received {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


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


# --- run directory -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFiles:
    dir: Path

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.dir / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.dir / "curves.png"

    @property
    def config(self) -> Path:
        return self.dir / "config.json"


def default_run_dir(arch: str) -> Path:
    return Path("runs") / f"{arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_resume(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``last.pt`` of a run directory, checked to be a training checkpoint."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UsageError(f"--resume takes a run directory; {run} is not one")
    if not (run / "last.pt").is_file():
        raise UsageError(f"{run} holds no last.pt to resume from")
    ckpt = load_checkpoint(run / "last.pt")
    for key in ("config", "optimizer", "scheduler", "epoch"):
        if key not in ckpt:
            raise UsageError(f"{run / 'last.pt'} is a model-only checkpoint (no {key}); it cannot be resumed")
    return ckpt


def resume_overrides(ckpt: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Check that the command line changes only what a resumed run may change."""
    saved = ckpt["config"]
    changed = sorted(k for k, v in overrides.items()
                     if v is not None and k not in RESUMABLE_OVERRIDES and v != saved.get(k)
                     and not (k == "model" and all(saved.get("model", {}).get(mk) == mv
                                                   for mk, mv in v.items() if mv is not None)))
    if changed:
        raise UsageError(f"cannot change {', '.join(changed)} of a run being resumed "
                         f"(only {', '.join(RESUMABLE_OVERRIDES)}); start a new run with --out")
    return {k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES}


# --- state that checkpoints carry ------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every RNG, as tensors and plain values (``torch.load(weights_only=True)`` must read it)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the state dict's bytes: equal digests mean bit-identical weights and statistics."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def he_normal_(model: nn.Module) -> None:
    """He-normal (fan-in) init of every convolution, as in the authors' 2019 ablation protocol."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, BinaryConv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")


class EpochSums:
    """An epoch's running loss, correct predictions, images and unreadable files.

    Loss and hits accumulate on the device, so a step does not wait for the GPU; ``start`` is the
    saved sums of an interrupted epoch.
    """

    def __init__(self, device: torch.device, start: list[float] | None = None) -> None:
        self.base = list(start or [0.0, 0.0, 0.0, 0.0])
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.float64, device=device)
        self.local_images = 0
        self.skipped = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss.detach().double() * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.local_images += len(y)

    def local(self) -> list[float]:
        b = self.base
        return [b[0] + self.loss.item(), b[1] + self.correct.item(), b[2] + self.local_images, b[3] + self.skipped]

    def averages(self) -> tuple[float, float]:
        loss, correct, images, _ = self.local()
        return loss / max(images, 1), correct / max(images, 1)

    def totals(self, ctx: distributed.Context) -> list[float]:
        """Summed over processes (a collective: every rank must call it)."""
        t = torch.tensor(self.local(), dtype=torch.float64, device=self.loss.device)
        return distributed.all_reduce(t, "sum", ctx).tolist()


# --- the loop ----------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, out: str | os.PathLike | None = None, *, resume: dict[str, Any] | None = None,
          reporter: Reporter | None = None, stop: StopRequest | None = None) -> TrainResult:
    """Train ``cfg`` into the run directory ``out`` (default ``runs/<arch>-<time>``).

    ``resume`` is the ``last.pt`` of the run to continue (see :func:`load_resume`); ``stop`` is
    polled between steps. Under torchrun every process calls this; rank 0 alone writes and reports.
    """
    ctx = distributed.setup(cfg.device)
    try:
        if not ctx.is_main:
            reporter = Reporter()
        return _train(cfg, out, resume, reporter or Reporter(), stop or StopRequest(), ctx)
    finally:
        distributed.teardown(ctx)


def _train(cfg: TrainConfig, out: str | os.PathLike | None, resume: dict[str, Any] | None, reporter: Reporter,
           stop: StopRequest, ctx: distributed.Context) -> TrainResult:
    device = ctx.device

    # ---- data: class names from the train split; eval preprocessing is what checkpoints record.
    data = open_train_data(cfg.data)
    if resume is not None and list(resume["class_names"]) != data.class_names:
        raise DataError(f"the classes in {cfg.data} differ from those of the run being resumed")
    image_size = cfg.image_size or data.native_size or 224
    in_channels = int(cfg.model.get("in_channels", 3))
    pre = preprocessing(cfg.preset or default_preset(image_size), image_size, in_channels)
    train_set = SampleDataset(data.train, train_transform(pre), in_channels)
    val_set = SampleDataset(data.val, eval_transform(pre), in_channels) if data.val is not None else None
    if cfg.batch_size % ctx.world_size:
        raise UsageError(f"batch size {cfg.batch_size} does not divide over {ctx.world_size} processes")
    batch = cfg.batch_size // ctx.world_size  # --batch-size is global, as in the paper's recipes
    workers = cfg.workers
    if workers is None:  # CPU training needs both cores for compute; a GPU needs decoding help
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
        workers = 0 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 1) // local))
    sampler = EpochSampler(train_set, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size)
    train_loader = make_loader(train_set, sampler, batch, workers, pin_memory=device.type == "cuda")
    val_loader = None
    if val_set is not None:
        val_loader = make_loader(val_set, ShardSampler(len(val_set), ctx.rank, ctx.world_size), batch, workers,
                                 pin_memory=device.type == "cuda")
    steps_per_epoch = math.ceil(len(sampler.inner) / batch)

    # ---- model: same seed on every rank; DDP also broadcasts rank 0's weights.
    seed_everything(cfg.seed)
    model_options = {"num_classes": len(data.class_names), **cfg.model}
    model_options.setdefault("thumbnail", image_size < 50)  # small inputs get the 3x3 stem
    if resume is not None:  # a run started before an option existed keeps what it was trained with
        for key, value in LEGACY_OPTIONS.items():
            if key not in resume["arch_kwargs"]:
                model_options[key] = value
    raw_model = create_model(cfg.arch, **model_options)
    if cfg.init == "he_normal":
        he_normal_(raw_model)
    raw_model.to(device)
    if cfg.channels_last:
        raw_model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and ctx.distributed:
        if device.type != "cuda":
            raise UsageError("--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel)")
        raw_model = nn.SyncBatchNorm.convert_sync_batchnorm(raw_model)
    model: nn.Module = raw_model
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(raw_model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)

    optimizer = build_optimizer(raw_model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None

    # ---- run directory and resumed state.
    run = RunFiles(Path(out) if out is not None else default_run_dir(cfg.arch))
    if ctx.distributed and out is None:  # every rank must agree on the timestamped name
        run = RunFiles(Path(distributed.all_gather_object(str(run.dir), ctx)[0]))
    start_epoch, start_step = 0, 0
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    partial = None
    if resume is not None:
        raw_model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        set_rng_state(resume["rng"])
        start_epoch, start_step = int(resume["epoch"]), int(resume.get("step_in_epoch", 0))
        history, best = list(resume.get("history", [])), resume.get("best")
        partial = resume.get("partial") if ctx.is_main else None  # rank 0 carries the epoch's sums
        same_layout = (resume.get("world_size", 1) == ctx.world_size
                       and resume["config"].get("batch_size") == cfg.batch_size)
        if start_step and not same_layout:
            reporter.warning("batch size or process count changed: the interrupted epoch restarts from its start")
            start_step, partial = 0, None
        if start_epoch >= cfg.epochs and start_step == 0:
            raise UsageError(f"{run.dir} has finished its {start_epoch} epochs; pass --epochs N (N > {start_epoch}) "
                             "to train longer")
    elif run.last.exists():
        raise UsageError(f"{run.dir} already holds a run; continue it with --resume {run.dir} or choose another --out")
    if ctx.is_main:
        run.dir.mkdir(parents=True, exist_ok=True)
        # Rewrite the log from the checkpoint: a kill between saving and logging loses or repeats nothing.
        _write_text_atomic(run.metrics, "".join(json.dumps(m) + "\n" for m in history))
        _write_text_atomic(run.config, json.dumps({
            "config": cfg.to_dict(), "arch": raw_model.bnn_arch, "arch_kwargs": raw_model.bnn_kwargs,
            "class_names": data.class_names, "preprocessing": pre, "world_size": ctx.world_size,
        }, indent=2) + "\n")

    seen_bad: set[str] = set()

    def note_skipped(bad: list[Skipped]) -> None:
        for s in bad:
            if s.path not in seen_bad:
                seen_bad.add(s.path)
                reporter.warning(f"{s.reason} (skipped)")

    def checkpoint(epochs_done: int, step_in_epoch: int, sums: list[float] | None) -> dict[str, Any]:
        return model_checkpoint(
            raw_model, data.class_names, pre,
            epoch=epochs_done, step_in_epoch=step_in_epoch, steps_per_epoch=steps_per_epoch,
            finished=epochs_done >= cfg.epochs, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else None, rng=rng_state(),
            metrics=history[-1] if history else None, best=best, history=history, partial=sums,
            config=cfg.to_dict(), world_size=ctx.world_size,
        )

    reporter.start({
        "run_dir": str(run.dir), "arch": cfg.arch, "device": str(device), "world_size": ctx.world_size,
        "params": sum(p.numel() for p in raw_model.parameters()), "classes": len(data.class_names),
        "train_images": len(train_set), "val_images": len(val_set) if val_set is not None else 0,
        "image_size": image_size, "preset": pre["preset"], "batch_size": cfg.batch_size, "workers": workers,
        "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch, "start_epoch": start_epoch,
        "start_step": start_step, "resumed": resume is not None, "data": cfg.data,
    })

    def agree(flag: bool) -> bool:
        """True on every process when it is true on any (a stop must happen at the same step everywhere)."""
        if not ctx.distributed:
            return flag
        return bool(distributed.all_reduce(torch.tensor([float(flag)], device=device), "max", ctx).item())

    def stopped(epochs_done: int, step_in_epoch: int, sums: list[float] | None, save: bool = True) -> TrainResult:
        reporter.stopping(stop.reason or "stop requested")
        if ctx.is_main and save:
            save_checkpoint(run.last, checkpoint(epochs_done, step_in_epoch, sums))
            if history:
                plot_curves(history, run.curves, cfg.arch)
        return TrainResult(run.dir, epochs_done, cfg.epochs, step_in_epoch, steps_per_epoch, True, stop.reason,
                           history, best, raw_model)

    for epoch in range(start_epoch, cfg.epochs):
        first_step = start_step if epoch == start_epoch else 0
        sampler.set_epoch(epoch, start=first_step * batch)
        # Rank 0 resumes the interrupted epoch's sums; they are summed over ranks at the end.
        sums = EpochSums(device, partial if first_step else None)
        partial = None
        model.train()
        reporter.epoch_start(epoch + 1, cfg.epochs, steps_per_epoch, first_step)
        t_start = last_report = time.perf_counter()

        step = first_step
        for x, y, bad in train_loader:
            sums.skipped += len(bad)
            note_skipped(bad)
            # Every process must take the same steps: agree on stopping, and on skipping a step
            # where some process has only unreadable files in its batch.
            stop_now, empty = stop.requested, x is None
            if ctx.distributed:
                flags = distributed.all_reduce(torch.tensor([float(stop_now), float(empty)], device=device), "max", ctx)
                stop_now, empty = bool(flags[0].item()), bool(flags[1].item())
            if stop_now:
                sums.skipped -= len(bad)  # this batch is not trained on: it is read again on resume
                return stopped(epoch, step, sums.totals(ctx))
            step += 1
            if empty:
                continue

            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, cfg.amp):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:  # fp16: scale the loss so small gradients do not underflow
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            # The Larq weight variant: latent weights outside [-t, t] get no gradient, so clamp
            # them back to where a sign flip is one gradient step away.
            clamp_latent_weights(raw_model)
            scheduler.step()

            sums.add(loss, logits, y)
            now = time.perf_counter()
            if now - last_report >= reporter.interval or step == steps_per_epoch:
                last_report = now
                loss_avg, top1 = sums.averages()
                reporter.step(epoch + 1, step, steps_per_epoch, loss_avg, top1,
                              sums.local_images * ctx.world_size / (now - t_start), optimizer.param_groups[0]["lr"])

        train_seconds = time.perf_counter() - t_start
        loss_sum, correct, images, skipped = sums.totals(ctx)
        distributed.sync_buffers(raw_model, ctx)
        local_images = sums.local_images

        # ---- validation on the held-out split (sharded across processes, counts summed).
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(images, 1),
            "train_top1": correct / max(images, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "images": int(images),
            "skipped": int(skipped),
            "seconds": train_seconds,
            "images_per_s": local_images * ctx.world_size / train_seconds if train_seconds > 0 else 0.0,
        }
        if val_loader is not None:
            reporter.validating(epoch + 1, len(val_set))
            raw_model.eval()

            @torch.inference_mode()
            def predict(xb: torch.Tensor) -> torch.Tensor:
                xb = xb.to(device, non_blocking=True)
                if cfg.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with autocast(device, cfg.amp):
                    return raw_model(xb)

            def reduce(t: torch.Tensor) -> torch.Tensor:
                return distributed.all_reduce(t.to(device), "sum", ctx).cpu()

            res = evaluate(predict, val_loader, data.class_names, reduce=reduce,
                           on_skip=lambda s: note_skipped([s]))
            metrics.update(val_loss=res["loss"], val_top1=res["top1"], val_top5=res["top5"],
                           val_images=res["images"], val_skipped=res["skipped"])
        history.append(metrics)

        # ---- checkpoints: last.pt every epoch, best.pt when the selection metric improves.
        key = "val_top1" if val_loader is not None else "train_top1"
        is_best = best is None or metrics[key] > best["value"]
        if is_best:
            best = {"metric": key, "value": metrics[key], "epoch": epoch + 1}
        if ctx.distributed:
            # Cheap proof that DDP kept every replica identical, recorded in the checkpoint.
            digests = distributed.all_gather_object(weights_digest(raw_model), ctx)
            metrics["rank_digests"] = digests
            if len(set(digests)) > 1:
                reporter.warning(f"epoch {epoch + 1}: the processes' weights differ ({len(set(digests))} versions)")
        if ctx.is_main:
            state = checkpoint(epoch + 1, 0, None)
            save_checkpoint(run.last, state)
            if is_best:
                save_checkpoint(run.best, state)
            with open(run.metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
        reporter.epoch_end(metrics, is_best)
        if epoch + 1 < cfg.epochs and agree(stop.requested):
            # Asked to stop during validation: the epoch's checkpoint is already written.
            return stopped(epoch + 1, 0, None, save=False)

    if ctx.is_main and history:
        plot_curves(history, run.curves, cfg.arch)
    distributed.barrier(ctx)
    return TrainResult(run.dir, cfg.epochs, cfg.epochs, 0, steps_per_epoch, False, None, history, best, raw_model)


"""Evaluation: top-1, top-5, loss, per-class accuracy and throughput of any classifier.

The model is any callable from an NCHW float32 batch to logits (a torch tensor or a NumPy array),
so checkpoints, ONNX sessions and packed artifacts are measured by the same loop.
:func:`load_eval_model` turns the ``MODEL`` argument of ``bnn eval`` into such a callable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bnncli.artifacts.open import CheckpointPredictor, Predictor, open_model, run_predictor
from bnncli.errors import ArtifactError, DataError

TOP5_MIN_CLASSES = 5  # top-5 is reported for more classes than this (with 5 or fewer it is always 100%)


@dataclass
class EvalModel:
    """A classifier ready to evaluate, with what it needs to see its data as it was trained."""

    predict: Callable[[torch.Tensor], Any]
    class_names: list[str]
    preprocessing: dict[str, Any]
    source: str
    kind: str
    arch: str | None = None
    backend: str = "pytorch"
    nonfinite_weights: int | None = None  # tensors holding NaN or inf (checkpoints; None: not checked)


def load_eval_model(path: str | os.PathLike, device: torch.device | str = "cpu",
                    amp: str = "none", channels_last: bool = False, backend: str | None = None,
                    threads: int | None = None) -> EvalModel:
    """The ``MODEL`` argument of ``bnn eval``: any model file, opened by the one inference seam
    :func:`bnncli.artifacts.open_model` (which applies ``threads``, ``backend``, ``device``, ``amp``
    and ``channels_last``). ONNX runs on onnxruntime and packed models on the NumPy runtime (both
    on CPU), checkpoints on ``device``."""
    predictor = open_model(path, threads=threads, backend=backend, device=device, amp=amp,
                           channels_last=channels_last)
    if isinstance(predictor, CheckpointPredictor):
        return EvalModel(predict=predictor.forward, class_names=predictor.class_names,
                         preprocessing=predictor.preprocessing, source=str(predictor.path), kind=predictor.kind,
                         arch=predictor.arch, nonfinite_weights=predictor.nonfinite_weights)
    return _deployed_eval_model(predictor)


def _deployed_eval_model(predictor: Predictor) -> EvalModel:
    """An ONNX or packed model as an EvalModel: a batch of 0 gives 0 rows without running it, and
    what it raises names the file (:func:`run_predictor`)."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_predictor(predictor, x.detach().cpu().numpy()))

    return EvalModel(predict=predict, class_names=predictor.class_names, preprocessing=predictor.preprocessing,
                     source=str(predictor.path), kind=predictor.kind, arch=predictor.arch, backend=predictor.backend)


def evaluate(
    predict: Callable[[torch.Tensor], Any],
    batches: Iterable,
    class_names: list[str],
    *,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_skip: Callable[[Any], None] | None = None,
    confusion: bool = False,
) -> dict[str, Any]:
    """Run ``predict`` over ``batches`` of ``(images, labels, skipped)`` and measure it.

    ``reduce`` sums the counters over processes (sharded evaluation during DDP training).
    Returns fractions in [0, 1]: ``top1``, ``top5``, mean cross-entropy ``loss``, ``images``,
    ``skipped``, ``images_per_s`` (wall clock, decoding included), ``model_images_per_s``
    (time inside ``predict`` only), ``per_class`` (``{name: {"images", "top1"}}``) and
    ``nonfinite_logits``: images whose logits hold NaN or inf. Such an image counts as wrong in
    top-1 and top-5 (a NaN "prediction" is no hit), and it makes ``loss`` NaN or inf. With 5
    classes or fewer every label is in the top 5, so ``top5`` is None (not measured).
    ``confusion=True`` adds ``confusion``: ``classes`` and ``counts[true][predicted]``, image counts
    by top-1 prediction (an image with non-finite logits counts in no column).
    """
    n_classes = len(class_names)
    k = min(5, n_classes)
    # One float64 vector of counters, so a single all-reduce combines every process's share.
    loss_sum = top1 = top5 = images = skipped = nonfinite = 0.0
    class_seen = torch.zeros(n_classes, dtype=torch.float64)
    class_correct = torch.zeros(n_classes, dtype=torch.float64)
    matrix = torch.zeros(n_classes * n_classes if confusion else 0, dtype=torch.float64)
    model_seconds = 0.0
    start = time.perf_counter()
    for x, y, bad in batches:
        skipped += len(bad)
        for s in bad:
            if on_skip is not None:
                on_skip(s)
        if x is None:
            if on_batch is not None:
                on_batch(len(bad))
            continue
        t0 = time.perf_counter()
        logits = predict(x)
        logits = torch.as_tensor(logits).float()
        if logits.is_cuda:
            torch.cuda.synchronize(logits.device)
        model_seconds += time.perf_counter() - t0
        logits = logits.cpu()
        if logits.shape != (len(y), n_classes):
            raise ArtifactError(f"the model gave logits of shape {tuple(logits.shape)} for {len(y)} images "
                                f"and {n_classes} classes")
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        finite = torch.isfinite(logits).all(dim=1)
        nonfinite += (~finite).sum().item()
        best = logits.topk(k, dim=1).indices
        hit1 = (best[:, 0] == y) & finite
        top1 += hit1.sum().item()
        top5 += ((best == y[:, None]).any(dim=1) & finite).sum().item()
        images += len(y)
        class_seen.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
        class_correct.index_add_(0, y, hit1.double())
        if confusion:
            cells = (y * n_classes + best[:, 0])[finite]
            matrix.index_add_(0, cells, torch.ones(len(cells), dtype=torch.float64))
        if on_batch is not None:
            on_batch(len(y) + len(bad))
    seconds = time.perf_counter() - start
    totals = torch.cat([torch.tensor([loss_sum, top1, top5, images, skipped, nonfinite], dtype=torch.float64),
                        class_seen, class_correct, matrix])
    if reduce is not None:
        totals = reduce(totals)
    loss_sum, top1, top5, images, skipped, nonfinite = totals[:6].tolist()
    class_seen, class_correct = totals[6:6 + n_classes], totals[6 + n_classes:6 + 2 * n_classes]
    matrix = totals[6 + 2 * n_classes:]
    n = max(images, 1.0)
    return {
        "top1": top1 / n,
        "top5": top5 / n if n_classes > TOP5_MIN_CLASSES else None,
        "loss": loss_sum / n,
        "images": int(images),
        "skipped": int(skipped),
        "nonfinite_logits": int(nonfinite),
        "seconds": seconds,
        "images_per_s": images / seconds if seconds > 0 else 0.0,
        "model_images_per_s": images / model_seconds if model_seconds > 0 else 0.0,
        "per_class": {
            name: {"images": int(seen), "top1": float(correct / seen)}
            for name, seen, correct in zip(class_names, class_seen.tolist(), class_correct.tolist())
            if seen > 0
        },
        **({"confusion": {"classes": list(class_names),
                          "counts": matrix.view(n_classes, n_classes).long().tolist()}} if confusion else {}),
    }


def published_numbers(arch: str | None, num_classes: int) -> dict[str, dict[str, float | None]] | None:
    """Published ImageNet-1k numbers for this architecture, as fractions (None when not ImageNet-1k)."""
    from bnncli.models import ANCHORS

    if arch not in ANCHORS or num_classes != 1000:
        return None
    return {source: {"top1": None if t1 is None else t1 / 100, "top5": None if t5 is None else t5 / 100}
            for source, (t1, t5) in ANCHORS[arch].items()}


def evaluate_model_file(model: str | os.PathLike, data: str, *, batch_size: int = 64, workers: int | None = None,
                        device: str = "auto", amp: str = "none", channels_last: bool = False,
                        on_start: Callable[[int], None] | None = None, on_batch: Callable[[int], None] | None = None,
                        on_skip: Callable[[Any], None] | None = None, backend: str | None = None,
                        threads: int | None = None, on_open: Callable[[str], None] | None = None,
                        confusion: bool = False) -> dict[str, Any]:
    """``bnn eval``: any model file on a labelled folder (or builtin dataset), measured by :func:`evaluate`.

    ``on_open(backend)`` is called once the model is open, ``on_start(images)`` once the data is.
    Returns the measurements with what was measured (model file, kind, arch, backend, data,
    device) and, for an ImageNet-1k model of an architecture with published results, ``published``:
    those ImageNet top-1 and top-5 by source (the paper, Larq Zoo) to compare with.
    """
    from bnncli.data.loading import SampleDataset, ShardSampler, make_loader, open_eval_data
    from bnncli.data.transforms import eval_transform
    from bnncli.engine.distributed import resolve_device

    dev = resolve_device(device)
    em = load_eval_model(model, dev, amp=amp, channels_last=channels_last, backend=backend, threads=threads)
    if on_open is not None:
        on_open(em.backend)
    pre = em.preprocessing
    dataset = SampleDataset(open_eval_data(data, em.class_names), eval_transform(pre), int(pre.get("channels", 3)))
    if workers is None:
        workers = 0 if dev.type == "cpu" else 4
    loader = make_loader(dataset, ShardSampler(len(dataset)), batch_size, workers, pin_memory=dev.type == "cuda")
    if on_start is not None:
        on_start(len(dataset))
    try:
        res = evaluate(em.predict, loader, em.class_names, on_batch=on_batch, on_skip=on_skip, confusion=confusion)
    except ArtifactError as e:
        if em.source in str(e):
            raise
        raise ArtifactError(f"{em.source}: {e}") from e
    if res["images"] == 0:
        raise DataError(f"no readable images in {data}")
    result = {"model": em.source, "kind": em.kind, "arch": em.arch, "backend": em.backend, "data": data, **res,
              "nonfinite_weights": em.nonfinite_weights, "device": str(dev) if em.kind == "checkpoint" else "cpu"}
    published = published_numbers(em.arch, len(em.class_names))
    if published is not None:  # only a 1000-class model of an architecture with published ImageNet numbers
        result["published"] = published
    return result

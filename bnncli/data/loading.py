"""From ``--data`` to batches: dataset sources, per-sample seeded augmentation, skipping of
unreadable files, and samplers that shard across processes and can start mid-epoch.

Two rules make training reproducible and resumable regardless of the number of DataLoader
workers: the order of an epoch is a function of ``(seed, epoch)`` (``DistributedSampler``), and
the random augmentation of one sample is a function of ``(seed, epoch, index)`` (each sample
seeds its own transform). A resumed run therefore sees exactly the batches the uninterrupted
run would have seen.
"""

from __future__ import annotations

import contextlib
import random
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from bnncli.data.builtin import BUILTIN, ShapesDataset
from bnncli.data.folder import DEFAULT_VAL_SPLIT, ImageFolderDataset, split_folders
from bnncli.data.shm import PREFETCH
from bnncli.errors import DataError
from bnncli.threads import available_cpus

BUILTIN_PREFIX = "builtin:"


class Source(Protocol):
    """What a dataset split offers: labels, class names, and decoding of one sample."""

    classes: list[str]
    targets: list[int]

    def __len__(self) -> int: ...

    def load(self, index: int, channels: int = 3) -> tuple[Any, int]: ...

    def describe(self, index: int) -> str: ...


@dataclass
class DataSplits:
    train: Source | None
    val: Source | None
    class_names: list[str]
    native_size: int | None  # the image size of a built-in dataset; None for folders
    held_out: float | None = None  # the fraction of a single folder held out as val; None: the data's own split


def _builtin_name(spec: str) -> str | None:
    return spec[len(BUILTIN_PREFIX):] if spec.startswith(BUILTIN_PREFIX) else None


def open_train_data(spec: str, val_split: float | None = None, seed: int = 0) -> DataSplits:
    """The train and val splits of ``--data`` for training.

    A built-in dataset and a root with ``val/`` bring their own val split. A single folder of
    classes (or a root with ``train/`` only) gets one held out: ``val_split`` of it
    (:data:`DEFAULT_VAL_SPLIT` when None; 0: none), stratified and fixed by ``seed``
    (:func:`hold_out`)."""
    name = _builtin_name(spec)
    if name is not None:
        _own_val_split(spec, val_split)
        builtin = ShapesDataset(name, "train")
        return DataSplits(builtin, ShapesDataset(name, "val"), builtin.classes, BUILTIN[name].image_size)
    train_dir, val_dir = split_folders(spec)
    if train_dir is None:
        raise DataError(f"{spec} has a val split but no train split: expected {spec}/train/<class>/<images>")
    train = require_readable(ImageFolderDataset(train_dir))
    if val_dir is not None:
        _own_val_split(spec, val_split)
        return DataSplits(train, require_readable(ImageFolderDataset(val_dir, classes=train.classes)),
                          train.classes, None)
    fraction = DEFAULT_VAL_SPLIT if val_split is None else val_split
    kept, held = hold_out(train, fraction, seed)
    return DataSplits(kept, held, train.classes, None, held_out=fraction)


def _own_val_split(spec: str, val_split: float | None) -> None:
    if val_split:
        raise DataError(f"--val-split holds out part of a single folder of classes; {spec} has its own val split "
                        "(leave out --val-split)")


def held_out_count(n: int, fraction: float) -> int:
    """Images of a class of ``n`` held out: ``fraction`` of them rounded, at least 1 and at most n - 1
    (none for a class of one image, or for fraction 0)."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(fraction * n)))


def hold_out(source: Source, fraction: float, seed: int) -> tuple[Source, Source | None]:
    """``(train, val)`` subsets of ``source``: per class, :func:`held_out_count` images drawn with a
    generator seeded by ``seed`` (the same files for the same folder and seed, whatever the
    machine), both in the source's order. ``val`` is None when nothing is held out."""
    rng = random.Random(f"bnncli val split {seed}")
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(source.targets):
        by_class.setdefault(label, []).append(i)
    held: set[int] = set()
    for label in sorted(by_class):
        members = by_class[label]
        held.update(rng.sample(members, held_out_count(len(members), fraction)))
    if not held:
        return source, None
    return (Subset(source, [i for i in range(len(source)) if i not in held]),
            Subset(source, sorted(held)))


class Subset:
    """Some samples of a source (one side of a held-out split), in the source's order."""

    def __init__(self, source: Source, indices: list[int]) -> None:
        self.source = source
        self.indices = indices
        self.classes = source.classes
        self.targets = [source.targets[i] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int, channels: int = 3) -> tuple[Any, int]:
        return self.source.load(self.indices[index], channels)

    def describe(self, index: int) -> str:
        return self.source.describe(self.indices[index])


def require_readable(source: ImageFolderDataset) -> ImageFolderDataset:
    """``source``, once one of its images decodes; DataError if none does.

    Tries the files in order and stops at the first readable one (one decode for a healthy
    folder), so a split of unreadable files fails before training rather than training on nothing.
    """
    first = None
    for i in range(len(source)):
        try:
            source.load(i)
            return source
        except DataError as e:
            first = first or str(e)
    raise DataError(f"no readable images in {source.root}: all {len(source)} image files are unreadable "
                    f"(the first: {first})")


def open_eval_data(spec: str, class_names: Sequence[str]) -> Source:
    """The split of ``--data`` to evaluate on, labelled with the model's class names.

    A dataset root gives its val split; a folder of class folders is evaluated as it is.
    """
    name = _builtin_name(spec)
    if name is not None:
        source = ShapesDataset(name, "val")
        if list(class_names) != source.classes:
            raise DataError(f"the model's classes are not those of builtin:{name}")
        return source
    train_dir, val_dir = split_folders(spec)
    if val_dir is None and train_dir is not None and train_dir != Path(spec):  # a root with train/ only
        raise DataError(f"{spec} has no val split; pass a split folder itself (e.g. {train_dir}) to evaluate on it")
    return ImageFolderDataset(val_dir if val_dir is not None else train_dir or spec, classes=list(class_names))


# --- samples and batches ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A sample whose file could not be decoded: where, and why (one line)."""

    path: str
    reason: str


@contextlib.contextmanager
def sample_rng(seed: int | None) -> Iterator[None]:
    """The draws of one sample's random transform, from the CPU generator seeded with its
    augmentation seed (forked, so the caller's stream is untouched); without a seed, the stream as
    it is. Every ``--loader`` draws through this, so a seed gives the same crops with each."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only: torch.manual_seed would also queue a lazy CUDA seeding with
        # a stack trace on every call (slow, and a queue that grows for the whole run).
        torch.default_generator.manual_seed(seed)
        yield


class SampleDataset:
    """Map-style dataset over a source: ``dataset[i]`` or ``dataset[(i, seed)] -> (tensor, label)``.

    With a seed, the random transform draws from a torch generator seeded with it (the global
    RNG is forked, so the caller's stream is untouched). An unreadable file gives
    :class:`Skipped` instead of raising, so one bad JPEG never stops an epoch.
    """

    def __init__(self, source: Source, transform: Callable, channels: int = 3) -> None:
        if channels not in (1, 3):
            raise DataError(f"the model takes {channels} input channels, but images are read as RGB (3) or "
                            "grayscale (1): set in_channels to 3 or 1")
        self.source = source
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:  # an image unreadable, or refused by the transform (too large once resized), is skipped
            img, label = self.source.load(index, self.channels)
            with sample_rng(seed):
                return self.transform(img), label
        except DataError as e:
            return Skipped(self.source.describe(index), str(e))


def collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor | None, list[Skipped]]:
    """Stack the readable samples; report the unreadable ones. All unreadable: ``(None, None, skipped)``."""
    good = [it for it in items if not isinstance(it, Skipped)]
    skipped = [it for it in items if isinstance(it, Skipped)]
    if not good:
        return None, None, skipped
    images = torch.stack([x for x, _ in good])
    labels = torch.tensor([y for _, y in good], dtype=torch.long)
    return images, labels, skipped


class EpochSampler(Sampler):
    """Training order: ``DistributedSampler`` (shuffled by seed and epoch, one shard per rank), each
    index paired with its augmentation seed, optionally starting at position ``start`` of the shard.
    """

    def __init__(self, dataset: SampleDataset, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.inner: DistributedSampler = DistributedSampler(
            dataset,  # type: ignore[arg-type]  # a map-style dataset by duck typing
            num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.epoch = epoch
        self.start = start

    def sample_seed(self, index: int) -> int:
        return ((self.seed * 1_000_003 + self.epoch) * 1_000_000_007 + index) % (2**63)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = list(self.inner)[self.start:]
        return iter([(i, self.sample_seed(i)) for i in order])

    def __len__(self) -> int:
        return len(self.inner) - self.start


class ShardSampler(Sampler):
    """Evaluation order: every ``world_size``-th sample from ``rank``, no padding and no duplicates,
    so per-rank sums add up to exactly the whole split."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group. Workers must not die of it: the main process
    # finishes its step, saves and then shuts the workers down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def capped_workers(workers: int) -> int:
    """``workers``, at most :func:`available_cpus`: more worker processes than CPUs only contend."""
    return min(workers, available_cpus())


# Seconds the training process waits for a worker's batch before it gives up: a worker that died
# or cannot hand its batch over (too little shared memory, bnncli.data.shm) ends the run instead
# of leaving it waiting forever. Far longer than a batch takes even from a slow network folder.
LOADER_TIMEOUT = 300


class GuardedLoader(DataLoader):
    """A DataLoader whose lost workers end the iteration with one :class:`DataError` line: a batch
    that does not come within ``timeout`` seconds, or a worker that exited (killed for memory)."""

    def __iter__(self):
        iterator = super().__iter__()
        return iterator if self.num_workers == 0 else self._guarded(iterator)

    def _guarded(self, iterator):
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except RuntimeError as e:
                text = str(e)
                if text.startswith("DataLoader timed out"):
                    raise DataError(f"no batch from the DataLoader workers in {self.timeout:g} s: a worker is stuck "
                                    f"or cannot hand its batch over (too little shared memory? docker run "
                                    f"--shm-size 2g, or --workers 0)") from None
                if text.startswith("DataLoader worker (pid"):
                    raise DataError(f"{text.splitlines()[0].rstrip('. ')}: out of memory? (fewer --workers, a "
                                    f"smaller --batch-size, or --workers 0)") from None
                raise
            yield batch


def make_loader(dataset: SampleDataset, sampler: Sampler, batch_size: int, workers: int,
                pin_memory: bool = False, collate_fn: Callable[[list], Any] = collate,
                prefetch: int = PREFETCH) -> DataLoader:
    """The loader of ``dataset``; ``workers`` is capped to the CPUs (see :func:`capped_workers`; the
    CLI says so once when an option asked for more), each with ``prefetch`` batches in flight
    (bnncli.data.shm.fit_workers fits both to the shared memory). ``collate_fn`` makes a batch of
    the samples (:func:`collate`; ``--loader device`` keeps them encoded, bnncli.data.tensor_loaders).
    A worker that dies or stops delivering ends the iteration with a DataError (:class:`GuardedLoader`)."""
    workers = capped_workers(workers)
    return GuardedLoader(
        dataset,  # type: ignore[arg-type]  # a map-style dataset by duck typing
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init if workers > 0 else None,
        prefetch_factor=prefetch if workers > 0 else None,
        timeout=LOADER_TIMEOUT if workers > 0 else 0,
    )

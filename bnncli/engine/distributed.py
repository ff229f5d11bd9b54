"""Single process, or many under ``torchrun`` (DDP): device choice and the few collectives we need.

``torchrun --nproc_per_node N -m bnncli train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and the rendezvous address; we then join a process group (NCCL on GPUs, gloo on CPUs). Rank 0
alone writes files and reports progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bnncli.errors import UsageError


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for but no CUDA GPU is available (try --device cpu)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device: str) -> Context:
    """Join the process group when launched by torchrun with more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(t: torch.Tensor, op: str = "sum", ctx: Context | None = None) -> torch.Tensor:
    """In-place sum/max over ranks (a no-op in a single process)."""
    if ctx is not None and ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def any_rank(flags: list[bool], ctx: Context) -> list[bool]:
    """Each flag, true on every process when it is true on any (a collective in a process group)."""
    if not ctx.distributed:
        return list(flags)
    t = all_reduce(torch.tensor([float(f) for f in flags], device=ctx.device), "max", ctx)
    return [bool(v) for v in t.tolist()]


def all_gather_object(obj, ctx: Context) -> list:
    if not ctx.distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def sync_buffers(module: torch.nn.Module, ctx: Context) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step of an epoch each
    rank holds statistics updated from its own batch. Syncing before validation and saving makes
    every rank evaluate, and end with, exactly the model rank 0 writes.
    """
    if ctx.distributed:
        for b in module.buffers():
            dist.broadcast(b, src=0)

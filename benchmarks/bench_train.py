"""Training throughput of a BNN against the same network with float convolutions (run by hand).

Synthetic 224x224 data and a 1000-class head, Adam, one optimizer step per batch (the latent
weight clamp included for the BNN), measured after warm-up steps in
alternating rounds (median), so that a shared machine's load falls on both variants alike. The "float convs" twin swaps
every BinaryConv2d for an nn.Conv2d of the same geometry, so the ratio is the cost of
binarization itself (sign, straight-through gradient, clamp).

    # CPU, a few steps (minutes on 2 cores)
    python benchmarks/bench_train.py --device cpu --batch-size 16 --steps 3 --warmup 1
    # CPU, the tiny model on 32 px images, eager and compiled (a minute or two)
    python benchmarks/bench_train.py --arch binarydensenet_tiny --device cpu --image-size 32 --batch-size 64 \
        --steps 5 --warmup 2 --repeats 5 --compile
    # one GPU: bf16 autocast + channels_last, eager and torch.compile, peak memory
    python benchmarks/bench_train.py --device cuda --compile   # batch 256, 50 steps, bf16, channels_last

Prints a table (or ``--json`` lines): images/s per variant, the BNN / float ratio, peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bnncli.models import create_model
from bnncli.nn import BinaryConv2d, LatentWeightClamp


def float_twin(model: nn.Module) -> nn.Module:
    """The same network with every binary conv replaced by a float conv of the same shape."""
    for name, child in model.named_children():
        if isinstance(child, BinaryConv2d):
            setattr(model, name, nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                           child.padding, child.dilation, bias=False))
        else:
            float_twin(child)
    return model


def prepare(model: nn.Module, args: argparse.Namespace, device: torch.device, compiled: bool) -> Callable[[], None]:
    """One training step of ``model`` on a fixed synthetic batch, as a function (nothing run yet)."""
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    clamp = LatentWeightClamp(model)  # collected once, as bnn train does; empty for the float twin
    step_model = torch.compile(model) if compiled else model
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    model.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clamp()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` steps."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def measure_pair(models: dict[str, nn.Module], args: argparse.Namespace, device: torch.device,
                 compiled: bool) -> dict[str, dict]:
    """Images/s of each model, warmed up, then timed in ``args.repeats`` alternating rounds of
    ``args.steps`` steps (median per model): on a shared machine the load then falls on both alike."""
    steps = {}
    for name, model in models.items():
        steps[name] = prepare(model, args, device, compiled)
        for _ in range(args.warmup):  # compilation, cuDNN autotuning, allocator warm-up
            steps[name]()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rounds: dict[str, list[float]] = {name: [] for name in models}
    peak: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rounds[name].append(timed(step, args.steps, device))
            if device.type == "cuda":
                peak[name] = max(peak.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)
    out = {}
    for name, seconds in rounds.items():
        median = statistics.median(seconds)
        out[name] = {"images_per_s": args.batch_size / median, "step_ms": 1000 * median,
                     "rounds_ms": [round(1000 * t, 3) for t in seconds]}
        if name in peak:
            out[name]["peak_memory_gib"] = peak[name]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="binarydensenet28")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 16 on CPU")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 50 on GPU, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 on GPU, 1 on CPU)")
    p.add_argument("--amp", default=None, choices=("none", "bf16", "fp16"), help="default: bf16 on GPU, none on CPU")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="default: on for GPU, off for CPU")
    p.add_argument("--repeats", type=int, default=None,
                   help="alternating timed rounds per variant, median reported (default: 3 on GPU, 5 on CPU)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (256 if gpu else 16)
    args.steps = args.steps or (50 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    args.repeats = args.repeats or (3 if gpu else 5)
    args.amp = args.amp or ("bf16" if gpu else "none")
    args.channels_last = gpu if args.channels_last is None else args.channels_last
    if gpu:
        torch.backends.cudnn.benchmark = True

    rows = []
    for compiled in (False, True) if args.compile else (False,):
        torch.manual_seed(0)
        binary = create_model(args.arch, num_classes=1000, thumbnail=args.image_size < 50)
        torch.manual_seed(0)
        twin = float_twin(create_model(args.arch, num_classes=1000, thumbnail=args.image_size < 50))
        results = measure_pair({"float convs": twin, "binary": binary}, args, device, compiled)
        for kind, r in results.items():
            rows.append({"arch": args.arch, "variant": kind, "compile": compiled, "device": str(device),
                         "device_name": torch.cuda.get_device_name(device) if gpu else "cpu",
                         "threads": torch.get_num_threads(), "batch_size": args.batch_size,
                         "image_size": args.image_size, "amp": args.amp, "channels_last": args.channels_last,
                         "steps": args.steps, "repeats": args.repeats, **r})
        del binary, twin
        if gpu:
            torch.cuda.empty_cache()
        fp, bnn = rows[-2], rows[-1]
        bnn["ratio_to_float"] = bnn["images_per_s"] / fp["images_per_s"]

    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"{args.arch} training, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"{rows[0]['device_name']}, amp {args.amp}, channels_last {args.channels_last}, {args.steps} timed steps")
    print(f"{'variant':<14}{'compile':>8}{'img/s':>10}{'ms/step':>10}{'vs float':>10}{'peak GiB':>10}")
    for r in rows:
        ratio = f"{r['ratio_to_float']:.2f}x" if "ratio_to_float" in r else ""
        mem = f"{r['peak_memory_gib']:.2f}" if "peak_memory_gib" in r else "-"
        print(f"{r['variant']:<14}{str(r['compile']):>8}{r['images_per_s']:>10.1f}{r['step_ms']:>10.1f}{ratio:>10}{mem:>10}")


if __name__ == "__main__":
    main()

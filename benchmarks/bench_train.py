"""Training throughput of a BNN against the same network with float convolutions (run by hand).

Synthetic 224x224 data and a 1000-class head, Adam, one optimizer step per batch (the latent
weight clamp included for the BNN), measured after warm-up steps. The "float convs" twin swaps
every BinaryConv2d for an nn.Conv2d of the same geometry, so the ratio is the cost of
binarization itself (sign, straight-through gradient, clamp).

    # CPU, a few steps (minutes on 2 cores)
    python benchmarks/bench_train.py --device cpu --batch-size 16 --steps 3 --warmup 1
    # one GPU: bf16 autocast + channels_last, eager and torch.compile, peak memory
    python benchmarks/bench_train.py --device cuda --compile   # batch 256, 50 steps, bf16, channels_last

Prints a table (or ``--json`` lines): images/s per variant, the BNN / float ratio, peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from bnncli.models import create_model
from bnncli.nn import BinaryConv2d, clamp_latent_weights


def float_twin(model: nn.Module) -> nn.Module:
    """The same network with every binary conv replaced by a float conv of the same shape."""
    for name, child in model.named_children():
        if isinstance(child, BinaryConv2d):
            setattr(model, name, nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                           child.padding, child.dilation, bias=False))
        else:
            float_twin(child)
    return model


def measure(model: nn.Module, args: argparse.Namespace, device: torch.device, compiled: bool) -> dict:
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step_model = torch.compile(model) if compiled else model
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clamp_latent_weights(model)  # a no-op for the float twin

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model.train()
    for _ in range(args.warmup):  # compilation, cuDNN autotuning, allocator warm-up
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = time.perf_counter() - t0
    result = {"images_per_s": args.batch_size * args.steps / seconds, "step_ms": 1000 * seconds / args.steps}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


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
    args.amp = args.amp or ("bf16" if gpu else "none")
    args.channels_last = gpu if args.channels_last is None else args.channels_last
    if gpu:
        torch.backends.cudnn.benchmark = True

    rows = []
    for compiled in (False, True) if args.compile else (False,):
        for kind in ("float convs", "binary"):
            torch.manual_seed(0)
            model = create_model(args.arch, num_classes=1000, thumbnail=args.image_size < 50)
            if kind == "float convs":
                model = float_twin(model)
            r = measure(model, args, device, compiled)
            rows.append({"arch": args.arch, "variant": kind, "compile": compiled, "device": str(device),
                         "device_name": torch.cuda.get_device_name(device) if gpu else "cpu",
                         "threads": torch.get_num_threads(), "batch_size": args.batch_size,
                         "image_size": args.image_size, "amp": args.amp, "channels_last": args.channels_last,
                         "steps": args.steps, **r})
            del model
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

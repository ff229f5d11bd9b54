"""The training data throughput of ``bnn train --loader pil|torchvision|device`` on the CPU (run by hand).

Generates a folder of ImageNet-sized JPEGs (``bench_decode.make_folder``: 500x375, quality 90,
about 100 KB each), then, for each loader and each ``--workers`` count, builds the training data
exactly as ``bnn train`` does (:func:`bnncli.engine.train.build_data`: ``imagenet`` preset,
RandomResizedCrop(224) and flip, seeded per sample) and iterates the training loader over the
folder without a model: images/s that reach the training step (normalised float batches on the
device, here the CPU), the median of ``--passes`` timed epochs after one untimed epoch (worker
start-up, page cache). The main process runs one torch thread; each worker process one.

With ``--workers 0`` everything runs in the main process (one core). ``device`` on a CPU decodes in
the main process whatever ``--workers`` is (workers only read the files): it is the GPU path run
on the CPU, for testing, not a CPU speed-up. ``--train ARCH`` also runs ``bnn train`` itself
(``--epochs 2``, ``--device cpu``) with each loader and reports the last epoch's images/s from
its metrics.jsonl, where the model's compute usually dominates.

    python benchmarks/bench_loaders.py --images 256 --workers 0,2 --json loaders.json
    python benchmarks/bench_loaders.py --images 128 --workers 2 --train binarydensenet_tiny --train-size 64

The load average of the machine is recorded before and after each measurement (other processes
on a shared machine slow every figure).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_decode  # noqa: E402

from bnncli.engine import distributed  # noqa: E402
from bnncli.engine.config import LOADERS, resolve_config  # noqa: E402
from bnncli.engine.train import build_data  # noqa: E402

CLASSES = 4


def make_data(root: Path, images: int) -> Path:
    """``root/train/c<k>/*.jpg``: ``images`` JPEGs over four classes."""
    for c in range(CLASSES):
        bench_decode.make_folder(root / "train" / f"c{c}", images // CLASSES, 500, 375, quality=90, seed=c)
    return root


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def measure(data: Path, loader: str, workers: int, batch_size: int, passes: int, image_size: int) -> dict:
    cfg = resolve_config(overrides=dict(arch="binarydensenet_tiny", data=str(data), image_size=image_size,
                                        preset="imagenet", batch_size=batch_size, workers=workers, loader=loader,
                                        device="cpu", val_split=0.0, seed=0))
    ctx = distributed.setup("cpu")
    d = build_data(cfg, ctx, None)
    before = load()
    rates = []
    for epoch in range(passes + 1):
        d.sampler.set_epoch(epoch)
        t0, n = time.perf_counter(), 0
        for x, _, _ in d.train_loader:
            n += 0 if x is None else len(x)
        if epoch:  # the first pass: workers start, files enter the page cache
            rates.append(n / (time.perf_counter() - t0))
    return {"loader": loader, "workers": workers, "images_per_s": statistics.median(rates),
            "passes": [round(r, 1) for r in rates], "load_before": before, "load_after": load()}


def train_run(data: Path, loader: str, workers: int, arch: str, image_size: int, batch_size: int) -> dict:
    """``bnn train --loader LOADER`` for two epochs; the last epoch's images/s."""
    with tempfile.TemporaryDirectory(prefix="bnn-loader-run-") as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "bnncli", "train", "--arch", arch, "--data", str(data), "--epochs", "2",
               "--batch-size", str(batch_size), "--image-size", str(image_size), "--preset", "imagenet",
               "--val-split", "0", "--workers", str(workers), "--loader", loader, "--device", "cpu",
               "--out", str(run), "--json"]
        before = load()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"loader": loader, "returncode": proc.returncode, "stderr_tail": proc.stderr[-2000:]}
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"loader": loader, "workers": workers, "arch": arch, "image_size": image_size,
            "images_per_s_by_epoch": [round(e["images_per_s"], 1) for e in epochs],
            "images_per_s": epochs[-1]["images_per_s"], "load_before": before, "load_after": load()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=None, help="folder for the JPEGs (default: a temp dir, removed)")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    p.add_argument("--loaders", default=",".join(LOADERS))
    p.add_argument("--train", metavar="ARCH", default=None, help="also run bnn train with this model")
    p.add_argument("--train-size", type=int, default=64, help="--image-size of the --train runs")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    loaders = [v for v in args.loaders.split(",") if v]
    unknown = sorted(set(loaders) - set(LOADERS))
    if unknown:
        p.error(f"unknown loader(s) {', '.join(unknown)}; choose from {', '.join(LOADERS)}")
    workers = [int(v) for v in args.workers.split(",") if v]
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="bnn-jpegs-") as tmp:
        data = make_data(args.work or Path(tmp), args.images)
        report = {"images": args.images // CLASSES * CLASSES, "jpeg": "500x375 q90", "batch_size": args.batch_size,
                  "image_size": args.image_size, "cpu_count": os.cpu_count(), "torch": torch.__version__,
                  "data": [], "train": []}
        for w in workers:
            for loader in loaders:
                r = measure(data, loader, w, args.batch_size, args.passes, args.image_size)
                report["data"].append(r)
                print(f"{loader:<12} workers {w}: {r['images_per_s']:7.1f} img/s  {r['passes']}  "
                      f"load {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}", flush=True)
        if args.train:
            for loader in loaders:
                r = train_run(data, loader, max(workers), args.train, args.train_size, args.batch_size)
                report["train"].append(r)
                shown = f"{r['images_per_s']:7.1f} img/s {r['images_per_s_by_epoch']}" if "images_per_s" in r \
                    else f"failed: {r.get('stderr_tail', '')[-300:]}"
                print(f"bnn train --loader {loader:<12} {shown}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""JPEG decoding and training augmentation per CPU core (run by hand).

Generates a folder of ImageNet-sized JPEGs (500x375, quality 90: smooth colour fields, shapes
and noise, about 100 KB each, near ImageNet's mean of about 110 KB), then measures images/s
on one core (one process, one torch thread) for:

- ``pil``: what ``bnn train`` does today: ``bnncli.images.decode.load_image`` (Pillow decode,
  RGB) and the ``imagenet`` preset's ``train_transform`` (RandomResizedCrop(224), flip,
  ToTensor, Normalize) from ``bnncli.data.transforms``;
- ``pil-draft``: the same crop drawn first from the JPEG header, then Pillow's ``Image.draft``
  decoding at 1/2, 1/4 or 1/8 scale wherever the crop still has 224 pixels or more on each side
  (a different resampling of the same crop, not the same pixels);
- ``tv``: ``torchvision.io.decode_jpeg`` (libjpeg-turbo) to a uint8 tensor, then the same
  augmentation on tensors (``transforms.v2``: RandomResizedCrop(224) antialiased, flip, float,
  Normalize);

and, to split decoding from augmentation, ``pil-decode`` and ``tv-decode`` (decoding alone).
Each variant runs ``--passes`` times over the folder (median pass reported) after one untimed
pass; files are read from the page cache. ``--processes N`` also runs the ``pil`` and ``tv``
pipelines in N processes at once (the figure that scales with cores).

    python benchmarks/bench_decode.py --images 300 --json decode.json
    python benchmarks/bench_decode.py --work /tmp/jpegs --processes 2

Prints a table; ``--json PATH`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, features

from bnncli.data.presets import preprocessing
from bnncli.data.transforms import train_transform
from bnncli.images.decode import load_image

SIZE = 224
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
VARIANTS = ("pil-decode", "pil", "pil-draft", "tv-decode", "tv")


# ---- the folder ------------------------------------------------------------------------------------------------


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A synthetic image with a photograph's mix of smooth regions, edges and fine noise."""
    field = rng.integers(0, 256, (rng.integers(3, 7), rng.integers(3, 7), 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    pixels = np.asarray(img, dtype=np.int16) + rng.normal(0, 22, (height, width, 3)).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_folder(root: Path, count: int, width: int, height: int, quality: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs in ``root`` (kept when they are already there with the same name)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = root / f"img_{width}x{height}_q{quality}_{i:05d}.jpg"
        if not path.exists():
            photo_like(rng, width, height).save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


# ---- the pipelines ---------------------------------------------------------------------------------------------


def pil_decode(path: Path):
    return load_image(path)


def make_pil() -> Callable[[Path], torch.Tensor]:
    transform = train_transform(preprocessing("imagenet", SIZE, 3))
    return lambda path: transform(load_image(path))


def make_pil_draft(stats: dict[str, int]) -> Callable[[Path], torch.Tensor]:
    """Crop drawn on the header's size, JPEG decoded at the smallest scale that keeps 224 px in it."""
    from torchvision.transforms import InterpolationMode, RandomResizedCrop
    from torchvision.transforms import functional as TF

    pre = preprocessing("imagenet", SIZE, 3)

    def run(path: Path) -> torch.Tensor:
        with Image.open(path) as img:
            w, h = img.size
            top, left, ch, cw = RandomResizedCrop.get_params(img, SCALE, RATIO)
            # draft picks the largest reduction whose result is at least the requested size
            img.draft("RGB", (math.ceil(w * SIZE / cw), math.ceil(h * SIZE / ch)))
            img = img.convert("RGB")
            s = img.size[0] / w
            stats["reduced"] += s < 1
            stats["seen"] += 1
            box = (round(top * s), round(left * s), max(1, round(ch * s)), max(1, round(cw * s)))
            out = TF.resized_crop(img, *box, [SIZE, SIZE], InterpolationMode.BILINEAR, antialias=True)
        if torch.rand(1) < 0.5:
            out = TF.hflip(out)
        return TF.normalize(TF.to_tensor(out), pre["mean"], pre["std"])

    return run


def tv_decode(path: Path) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    return decode_jpeg(data, mode=ImageReadMode.RGB)


def make_tv() -> Callable[[Path], torch.Tensor]:
    from torchvision.transforms import v2

    pre = preprocessing("imagenet", SIZE, 3)
    augment = v2.Compose([
        v2.RandomResizedCrop(SIZE, scale=SCALE, ratio=RATIO, interpolation=v2.InterpolationMode.BILINEAR,
                             antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(pre["mean"], pre["std"]),
    ])
    return lambda path: augment(tv_decode(path))


def pipeline(name: str, stats: dict[str, int]) -> Callable[[Path], object]:
    return {"pil-decode": lambda: pil_decode, "pil": make_pil, "pil-draft": lambda: make_pil_draft(stats),
            "tv-decode": lambda: tv_decode, "tv": make_tv}[name]()


# ---- measuring -------------------------------------------------------------------------------------------------


def one_core() -> None:
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def measure(name: str, paths: list[Path], passes: int) -> dict:
    """Median images/s of ``passes`` timed passes of one variant over ``paths`` on this core."""
    one_core()
    torch.manual_seed(0)
    stats = {"reduced": 0, "seen": 0}
    run = pipeline(name, stats)
    for p in paths:  # untimed: imports, allocator, page cache
        run(p)
    stats.update(reduced=0, seen=0)
    rates = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for p in paths:
            run(p)
        rates.append(len(paths) / (time.perf_counter() - t0))
    result = {"images_per_s": statistics.median(rates), "passes": [round(r, 1) for r in rates],
              "ms_per_image": 1000 / statistics.median(rates)}
    if name == "pil-draft":
        result["reduced_fraction"] = stats["reduced"] / max(1, stats["seen"])
    return result


def _worker(args: tuple[str, list[str], int]) -> float:
    name, paths, passes = args
    return measure(name, [Path(p) for p in paths], passes)["images_per_s"]


def measure_processes(name: str, paths: list[Path], passes: int, processes: int) -> dict:
    """``processes`` workers, each over the whole folder at once: the summed images/s."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        rates = pool.map(_worker, [(name, [str(p) for p in paths], passes)] * processes)
    return {"processes": processes, "images_per_s": sum(rates), "per_process": [round(r, 1) for r in rates]}


def describe(paths: list[Path]) -> dict:
    sizes = [p.stat().st_size for p in paths]
    with Image.open(paths[0]) as img:
        width, height = img.size
    return {"images": len(paths), "width": width, "height": height, "mean_bytes": int(statistics.mean(sizes))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=None, help="folder for the JPEGs (default: a temp dir, removed)")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--processes", type=int, default=1, help="also run pil and tv in N processes at once")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}")

    with tempfile.TemporaryDirectory(prefix="bnn-jpegs-") as tmp:
        root = args.work or Path(tmp)
        paths = make_folder(root, args.images, args.width, args.height, args.quality)
        report = {
            "folder": describe(paths), "quality": args.quality, "crop": SIZE,
            "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "torch": torch.__version__, "pillow": Image.__version__,
                        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo"))},
            "per_core": {},
        }
        import torchvision

        report["machine"]["torchvision"] = torchvision.__version__
        for name in variants:
            report["per_core"][name] = measure(name, paths, args.passes)
        if args.processes > 1:
            report["processes"] = {name: measure_processes(name, paths, args.passes, args.processes)
                                   for name in ("pil", "tv") if name in variants}

    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    f = report["folder"]
    print(f"{f['images']} JPEGs {f['width']}x{f['height']} q{args.quality}, {f['mean_bytes'] / 1e3:.0f} KB each; "
          f"one core, crop {SIZE}")
    print(f"{'variant':<12}{'img/s':>9}{'ms/img':>9}")
    for name, r in report["per_core"].items():
        extra = f"  (decoded reduced: {r['reduced_fraction']:.0%})" if "reduced_fraction" in r else ""
        print(f"{name:<12}{r['images_per_s']:>9.1f}{r['ms_per_image']:>9.2f}{extra}")
    for name, r in report.get("processes", {}).items():
        print(f"{name} in {r['processes']} processes: {r['images_per_s']:.1f} img/s ({r['per_process']})")


if __name__ == "__main__":
    main()

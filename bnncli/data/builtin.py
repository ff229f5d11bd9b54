"""Embedded datasets, generated on the fly from a seed (no download, nothing stored).

``shapes`` is the default demo: ten classes of filled geometric shapes (circle, ring, triangle,
square, pentagon, hexagon, star, cross, crescent, heart) drawn at a random position, size,
rotation and colour on a noisy two-colour gradient with clutter lines. It is hard enough that a
model must learn shape, not colour or position (pentagon vs hexagon vs circle at 32 px), and easy
enough that a tiny BNN gets far above chance in a few minutes on a laptop CPU.

Image ``i`` of a split is a pure function of ``(dataset seed, split, i)``, so any worker process
can draw any image in any order, and two machines produce the same pixels. Needs NumPy and
Pillow only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bnncli.errors import DataError

SHAPE_CLASSES = (
    "circle", "ring", "triangle", "square", "pentagon", "hexagon", "star", "cross", "crescent", "heart",
)
_SPLIT_IDS = {"train": 0, "val": 1}
_OVERSAMPLE = 2  # draw at 2x and downsample: antialiased edges, so the shapes look like photos, not masks


@dataclass(frozen=True)
class BuiltinSpec:
    """One embedded dataset: classes, native image size and images per class in each split."""

    name: str
    classes: tuple[str, ...]
    image_size: int
    train_per_class: int
    val_per_class: int
    seed: int
    description: str


BUILTIN: dict[str, BuiltinSpec] = {
    spec.name: spec
    for spec in (
        BuiltinSpec("shapes", SHAPE_CLASSES, 32, 600, 100, 2019,
                    "10 classes of shapes on clutter, 32 px: 6,000 train / 1,000 val images (the demo)"),
        BuiltinSpec("shapes-mini", SHAPE_CLASSES, 32, 12, 4, 1906,
                    "the same generator, 120 train / 40 val images (smoke tests)"),
    )
}


def builtin_spec(name: str) -> BuiltinSpec:
    if name not in BUILTIN:
        raise DataError(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTIN)}")
    return BUILTIN[name]


class ShapesDataset:
    """A split of a built-in dataset: ``dataset[i] -> (PIL RGB image, label)``.

    Labels cycle through the classes (image i has class i mod 10), so every split is balanced.
    """

    def __init__(self, name: str, split: str) -> None:
        if split not in _SPLIT_IDS:
            raise DataError(f"built-in datasets have the splits train and val, not {split!r}")
        self.spec = builtin_spec(name)
        self.split = split
        self.classes = list(self.spec.classes)
        per_class = self.spec.train_per_class if split == "train" else self.spec.val_per_class
        self.targets = [i % len(self.classes) for i in range(per_class * len(self.classes))]
        self.root = f"builtin:{name}"
        # Drawing costs about as much as a training step of a tiny model, so keep what was drawn:
        # 7,000 images of 32 px are 21 MB. Each DataLoader worker fills its own copy.
        self._cache: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self.targets)

    def describe(self, index: int) -> str:
        return f"{self.root}/{self.split}/{index}"

    def load(self, index: int, channels: int = 3) -> tuple[Image.Image, int]:
        label = self.targets[index]
        img = self._cache.get(index)
        if img is None:
            rng = np.random.default_rng((self.spec.seed, _SPLIT_IDS[self.split], index))
            img = self._cache[index] = draw_shape(self.classes[label], self.spec.image_size, rng)
        return (img if channels == 3 else img.convert("L")), label

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.load(index)


def write_samples(directory: str | os.PathLike, count: int = 10, dataset: str = "shapes",
                  split: str = "val") -> list[Path]:
    """The first ``count`` images of a built-in split as PNG files ``<index>-<class>.png`` in
    ``directory`` (created if needed; files of the same name are replaced); returns their paths."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise DataError(f"count must be a whole number >= 1, not {count!r}")
    data = ShapesDataset(dataset, split)
    if count > len(data):
        raise DataError(f"builtin:{dataset} has {len(data)} {split} images, fewer than {count}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        img, label = data.load(i)
        path = out / f"{i}-{data.classes[label]}.png"
        img.save(path)
        paths.append(path)
    return paths


# --- drawing -------------------------------------------------------------------------------------


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _regular(n: int, radius: float, inner: float | None = None) -> np.ndarray:
    """Vertices of a regular n-gon (or an n-pointed star with the given inner radius)."""
    if inner is None:
        t = np.arange(n) * 2 * math.pi / n
        return np.stack([np.cos(t), np.sin(t)], 1) * radius
    t = np.arange(2 * n) * math.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, radius, inner)
    return np.stack([np.cos(t) * r, np.sin(t) * r], 1)


def _shape_mask(kind: str, canvas: int, center: np.ndarray, radius: float, angle: float) -> Image.Image:
    """An L-mode mask (255 inside the shape) of one class, centred, scaled and rotated."""
    mask = Image.new("L", (canvas, canvas), 0)
    d = ImageDraw.Draw(mask)

    def poly(points: np.ndarray, fill: int = 255) -> None:
        d.polygon([tuple(p) for p in (_rotate(points, angle) + center)], fill=fill)

    def disk(c: np.ndarray, r: float, fill: int = 255) -> None:
        d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)

    if kind == "circle":
        disk(center, radius)
    elif kind == "ring":
        disk(center, radius)
        disk(center, radius * 0.55, fill=0)
    elif kind == "triangle":
        poly(_regular(3, radius * 1.1))
    elif kind == "square":
        poly(_regular(4, radius * 1.05))
    elif kind == "pentagon":
        poly(_regular(5, radius))
    elif kind == "hexagon":
        poly(_regular(6, radius))
    elif kind == "star":
        poly(_regular(5, radius * 1.1, inner=radius * 0.45))
    elif kind == "cross":
        w, h = radius, radius * 0.33
        poly(np.array([[-w, -h], [w, -h], [w, h], [-w, h]]))
        poly(np.array([[-h, -w], [h, -w], [h, w], [-h, w]]))
    elif kind == "crescent":
        disk(center, radius)
        offset = _rotate(np.array([[radius * 0.5, 0.0]]), angle)[0]
        disk(center + offset, radius * 0.85, fill=0)
    elif kind == "heart":
        # Two lobes and a point, built pointing down and then rotated.
        r = radius * 0.5
        lobes = _rotate(np.array([[-r, -r * 0.4], [r, -r * 0.4]]), angle) + center
        for c in lobes:
            disk(c, r)
        poly(np.array([[-2 * r * 0.98, -r * 0.2], [2 * r * 0.98, -r * 0.2], [0.0, radius * 1.15]]))
    else:  # pragma: no cover - the class list and this function change together
        raise DataError(f"no drawing for shape {kind!r}")
    return mask


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of ``kind``; every random choice comes from ``rng``."""
    canvas = size * _OVERSAMPLE
    # Background: a linear gradient between two random colours in a random direction, plus noise.
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:canvas, 0:canvas] / (canvas - 1) - 0.5
    t = np.clip((xx * math.cos(theta) + yy * math.sin(theta)) + 0.5, 0, 1)[..., None]
    bg = c0 * (1 - t) + c1 * t + rng.normal(0, rng.uniform(4, 18), (canvas, canvas, 3))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")

    # Clutter: a few thin random lines, so edges alone do not give the shape away.
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0, x1, y1 = rng.uniform(0, canvas, 4)
        d.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in rng.uniform(0, 255, 3)),
               width=int(rng.integers(1, 3)))

    # Foreground colour far enough in brightness from the background under the shape.
    bg_luma = _luma((c0 + c1) / 2)
    for _ in range(20):
        fg = rng.uniform(0, 255, 3)
        if abs(_luma(fg) - bg_luma) > 55:
            break
    else:
        fg = np.full(3, 255.0 if bg_luma < 128 else 0.0)

    radius = rng.uniform(0.22, 0.36) * canvas
    margin = radius * 1.1
    center = rng.uniform(margin, canvas - margin, 2) if canvas - margin > margin else np.full(2, canvas / 2)
    angle = rng.uniform(0, 2 * math.pi)
    mask = _shape_mask(kind, canvas, center, radius, angle)
    # A slightly shaded fill (a second colour blended across the shape) rather than a flat one.
    fg2 = np.clip(fg + rng.normal(0, 25, 3), 0, 255)
    s = np.clip((xx * math.sin(theta) - yy * math.cos(theta)) + 0.5, 0, 1)[..., None]
    fill = Image.fromarray(np.clip(fg * (1 - s) + fg2 * s, 0, 255).astype(np.uint8), "RGB")
    img.paste(fill, (0, 0), mask)
    return img.resize((size, size), Image.Resampling.BOX)

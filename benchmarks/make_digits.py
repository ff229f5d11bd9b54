"""Handwriting-like digits 0-9 as an image folder in the ImageNet layout (no fonts, no download).

    python benchmarks/make_digits.py OUT [--train-per-class N] [--val-per-class N] [--size PX] [--seed S]

writes ``OUT/train/<digit>/<index>.png`` and ``OUT/val/<digit>/<index>.png`` (8-bit grayscale,
light ink on a dark, noisy background, as MNIST) for ``bnn train --data OUT``. Every digit is drawn
from pen-stroke templates (polylines and arcs through a smooth spline, several writing styles per
digit: a 1 with or without a flag and a base, a 4 open or closed, a 5 in one stroke or two, a 7 with
or without a bar, ...), and each image varies the hand: slant, rotation, scale, aspect, position,
jitter of the control points, a smooth wobble of the whole glyph, stroke width and pressure along
the stroke, now and then a gap in a stroke or a stray mark at the edge, ink intensity, blur and
background noise.

Orientation matters, as on real digits: a mirrored 2 passes for a 5 (an S), a mirrored 5 for a 2,
a mirrored 7 for a 1 with a long flag, a 3 turns into an E and a 9 into a P, so a horizontal flip
during training (``bnn train``'s default, ``--flip 0.5``) teaches the model the wrong thing;
benchmarks/bench_orientation.py measures what it costs.

Image ``i`` of a split is a pure function of ``(seed, split, i)``: the same seed writes the same
bytes (with the same NumPy and Pillow), whatever was generated before, and image ``i`` has class
``i mod 10``. Needs NumPy and Pillow only; 5,000 images of 28 px take a few seconds.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DIGITS = tuple(str(d) for d in range(10))
SPLITS = {"train": 0, "val": 1}
DEFAULT_SEED = 1998
DEFAULT_SIZE = 28
DEFAULT_TRAIN_PER_CLASS = 400
DEFAULT_VAL_PER_CLASS = 100
_OVERSAMPLE = 4  # draw at 4x and downsample: antialiased strokes
_GLYPH_HEIGHT = (0.5, 0.8)  # of the image side, as MNIST's 20 px box in 28 px
_P_SKIP = 0.12  # images with a gap in a stroke
_P_STRAY = 0.15  # images with a stray stroke near the edge

Stroke = np.ndarray  # (n, 2) control points, x right, y up, the glyph box about [-0.35, 0.35] x [-0.5, 0.5]


# --- templates -----------------------------------------------------------------------------------


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, step: float = 30.0) -> list[list[float]]:
    """Control points along an elliptic arc from angle ``a0`` to ``a1`` (degrees, counter-clockwise
    positive; a1 < a0 runs clockwise)."""
    n = max(2, int(math.ceil(abs(a1 - a0) / step)) + 1)
    return [[cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a))]
            for a in np.linspace(a0, a1, n)]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def digit_strokes(digit: int, rng: np.random.Generator) -> list[Stroke]:
    """The pen strokes of one ``digit`` in one of its writing styles, with its proportions varied."""
    d = digit
    if d == 0:
        rx, ry, start = _u(rng, 0.2, 0.33), _u(rng, 0.42, 0.5), _u(rng, 60, 120)
        overlap = _u(rng, -15, 30)  # a small gap or an overshoot where the pen closes the loop
        strokes = [_arc(0, 0, rx, ry, start, start + 360 + overlap)]
    elif d == 1:
        top, bottom = [_u(rng, -0.02, 0.08), 0.5], [_u(rng, -0.08, 0.02), -0.5]
        strokes = [[top, [(top[0] + bottom[0]) / 2 + _u(rng, -0.02, 0.02), 0.0], bottom]]
        if rng.random() < 0.6:  # the flag
            strokes[0].insert(0, [top[0] - _u(rng, 0.12, 0.24), top[1] - _u(rng, 0.12, 0.26)])
        if rng.random() < 0.3:  # the base
            w = _u(rng, 0.12, 0.2)
            strokes.append([[bottom[0] - w, -0.5], [bottom[0] + w, -0.5]])
    elif d == 2:
        r = _u(rng, 0.22, 0.3)
        cy = 0.5 - r
        top = _arc(0, cy, r, r * _u(rng, 0.9, 1.1), _u(rng, 150, 175), _u(rng, -50, -25))
        corner = [_u(rng, -0.34, -0.26), -0.5]
        if rng.random() < 0.3:  # a small loop at the bottom left
            loop = [[corner[0] + 0.06, -0.38], [corner[0] - 0.02, -0.46], [corner[0] + 0.06, -0.52]]
            strokes = [top + loop + [[_u(rng, 0.26, 0.36), -0.49]]]
        else:
            strokes = [top + [corner, [_u(rng, 0.24, 0.36), _u(rng, -0.52, -0.46)]]]
    elif d == 3:
        if rng.random() < 0.8:  # two bowls
            r1, r2 = _u(rng, 0.2, 0.25), _u(rng, 0.24, 0.29)
            mid = [_u(rng, -0.08, 0.03), _u(rng, -0.04, 0.06)]
            upper = _arc(0, 0.5 - r1, r1, r1, _u(rng, 140, 170), -90)
            lower = _arc(0, -0.5 + r2, r2, r2, 90, _u(rng, -160, -135))
            strokes = [upper[:-1] + [mid] + lower[1:]]
        else:  # a flat top and one bowl
            r = _u(rng, 0.25, 0.3)
            top = [[_u(rng, -0.3, -0.2), 0.5], [_u(rng, 0.22, 0.3), 0.5]]
            strokes = [top + [[_u(rng, -0.05, 0.05), _u(rng, 0.02, 0.1)]]
                       + _arc(0, -0.5 + r, r, r, 80, _u(rng, -160, -135))]
    elif d == 4:
        bar_y, stem_x = _u(rng, -0.22, -0.08), _u(rng, 0.08, 0.18)
        left = [_u(rng, -0.34, -0.26), bar_y]
        bar = [left, [_u(rng, 0.28, 0.36), bar_y + _u(rng, -0.03, 0.03)]]
        if rng.random() < 0.55:  # open top: a down stroke and the bar, then the stem
            strokes = [[[_u(rng, -0.12, 0.02), 0.5]] + bar, [[stem_x, _u(rng, 0.15, 0.35)], [stem_x - 0.02, -0.5]]]
        else:  # closed: up the stem, down the diagonal, along the bar
            strokes = [[[stem_x - 0.02, -0.5], [stem_x, 0.5]] + bar]
    elif d == 5:
        r = _u(rng, 0.24, 0.3)
        cy = -0.5 + r
        corner = [_u(rng, -0.26, -0.16), 0.5]
        bowl = _arc(0.02, cy, r, r * _u(rng, 0.9, 1.1), _u(rng, 120, 140), _u(rng, -165, -140))
        bar_end = [_u(rng, 0.22, 0.34), _u(rng, 0.46, 0.54)]
        if rng.random() < 0.3:  # in one stroke, from the right end of the bar: rounder, S-like
            strokes = [[bar_end, corner] + bowl]
        else:  # down and round the bowl, then the bar
            strokes = [[corner] + bowl, [[corner[0], 0.5], bar_end]]
    elif d == 6:
        r = _u(rng, 0.22, 0.28)
        cy = -0.5 + r
        tail = [[_u(rng, 0.12, 0.26), 0.5], [_u(rng, -0.08, 0.02), _u(rng, 0.3, 0.38)],
                [-r - _u(rng, 0.0, 0.05), _u(rng, -0.05, 0.08)]]
        strokes = [tail + _arc(0, cy, r, r * _u(rng, 0.85, 1.05), 180, _u(rng, 500, 530))]
    elif d == 7:
        top_y = _u(rng, 0.46, 0.54)
        right = [_u(rng, 0.26, 0.34), 0.5]
        foot = [_u(rng, -0.16, 0.02), -0.5]
        stem_mid = [(right[0] + foot[0]) / 2 + _u(rng, -0.04, 0.05), 0.0]
        strokes = [[[_u(rng, -0.34, -0.24), top_y], right, stem_mid, foot]]
        if rng.random() < 0.3:  # the continental bar
            strokes.append([[stem_mid[0] - _u(rng, 0.1, 0.16), 0.0], [stem_mid[0] + _u(rng, 0.1, 0.16), 0.0]])
    elif d == 8:
        # One stroke: a figure eight crossing in the middle, the upper loop smaller.
        hu, hl = _u(rng, 0.4, 0.48), _u(rng, 0.46, 0.52)
        wu, wl = _u(rng, 0.36, 0.5), _u(rng, 0.5, 0.64)
        cross = _u(rng, -0.04, 0.06)
        t0 = _u(rng, -0.3, 0.0)
        ts = np.linspace(t0, t0 + 2 * math.pi + _u(rng, 0.1, 0.4), 26)
        pts = []
        for t in ts:
            up = math.cos(t) >= 0
            pts.append([(wu if up else wl) * math.sin(t) * math.cos(t) * 1.25,
                        cross + (hu - cross if up else hl + cross) * math.cos(t)])
        strokes = [pts]
    else:  # 9
        r = _u(rng, 0.2, 0.26)
        cy = 0.5 - r
        loop = _arc(0, cy, r, r * _u(rng, 0.85, 1.05), _u(rng, -20, 10), _u(rng, 345, 370))
        x_end = loop[-1][0]
        if rng.random() < 0.6:  # a straight stem
            tail = [[x_end - 0.01, cy - 0.1], [x_end - _u(rng, 0.02, 0.1), -0.5]]
        else:  # a curved tail
            tail = [[x_end, cy - 0.25], [x_end - 0.1, -0.42], [_u(rng, -0.25, -0.12), -0.5]]
        strokes = [loop + tail]
    return [np.asarray(s, dtype=np.float64) for s in strokes]


# --- drawing -------------------------------------------------------------------------------------


def _catmull_rom(points: np.ndarray, samples: int) -> np.ndarray:
    """A smooth curve through ``points`` (a uniform Catmull-Rom spline), ``samples`` points per segment."""
    if len(points) < 2:
        return points
    p = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t3))
    out.append(points[-1:])
    return np.vstack(out)


def _resample(curve: np.ndarray, spacing: float) -> np.ndarray:
    """Points along ``curve`` about ``spacing`` apart (so stamped disks overlap into a smooth stroke)."""
    seg = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    length = np.concatenate([[0.0], np.cumsum(seg)])
    if length[-1] <= spacing:
        return curve[[0, -1]]
    s = np.linspace(0, length[-1], int(length[-1] / spacing) + 2)
    return np.stack([np.interp(s, length, curve[:, 0]), np.interp(s, length, curve[:, 1])], 1)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: float) -> np.ndarray:
    """Jitter of a stroke's control points, correlated along the stroke (a wavering hand, not lumps)."""
    noise = rng.normal(0, sd, shape)
    if shape[0] > 4:  # a dense stroke (an arc): smooth, so neighbouring points move together
        padded = np.vstack([noise[:1], noise, noise[-1:]])
        noise = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
        noise *= 1.6  # keep about the same size after smoothing
    return noise


def _fragment(rng: np.random.Generator) -> np.ndarray:
    """A short stray stroke near the edge of the box: a piece of a neighbouring character in a scan."""
    side = rng.integers(4)
    along, out = _u(rng, -0.5, 0.5), _u(rng, 0.62, 0.8)
    x, y = [(out, along), (-out, along), (along, out), (along, -out)][side]
    a0, r = _u(rng, 0, 360), _u(rng, 0.1, 0.25)
    return np.asarray(_arc(x, y, r, r, a0, a0 + _u(rng, 60, 180), step=20))


def draw_digit(digit: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One 8-bit grayscale image of ``digit`` (light ink on dark); every random choice comes from ``rng``."""
    strokes = digit_strokes(digit, rng)
    # The hand: control-point jitter, then a smooth wobble, slant, aspect, rotation, scale and position.
    sd = _u(rng, 0.008, 0.03)
    strokes = [s + _smooth_noise(rng, s.shape, sd) for s in strokes]
    curves = [_catmull_rom(s, 8) for s in strokes]
    if rng.random() < _P_SKIP:  # the pen skips: a short gap in the longest stroke
        k = max(range(len(curves)), key=lambda i: len(curves[i]))
        n = len(curves[k])
        cut = int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4)))
        gap = max(2, n // 12)
        curves[k:k + 1] = [c for c in (curves[k][:cut], curves[k][cut + gap:]) if len(c) >= 2]
    stray = rng.random() < _P_STRAY
    if stray:
        curves.append(_catmull_rom(_fragment(rng), 4))
    slant = _u(rng, -0.5, 0.3)  # x += slant * y; writers lean right more often than left
    aspect = _u(rng, 0.7, 1.35)
    angle = math.radians(_u(rng, -14, 14))
    # The wobble: two random low-frequency sinusoids displace the glyph (elastic-ish).
    fx, fy = rng.uniform(0.8, 2.5, 2)
    px, py = rng.uniform(0, 2 * math.pi, 2)
    ax, ay = rng.uniform(0.0, 0.07, 2)
    canvas = size * _OVERSAMPLE
    height = _u(rng, *_GLYPH_HEIGHT) * canvas
    center = np.array([canvas / 2, canvas / 2]) + rng.uniform(-0.1, 0.1, 2) * canvas
    c, s = math.cos(angle), math.sin(angle)
    placed = []
    for curve in curves:
        x, y = curve[:, 0], curve[:, 1]
        x, y = x + ax * np.sin(fy * y * math.pi + px), y + ay * np.sin(fx * x * math.pi + py)
        x = (x + slant * y) * aspect
        x, y = c * x - s * y, s * x + c * y
        placed.append(np.stack([center[0] + x * height, center[1] - y * height], 1))  # y down on the canvas

    # The pen: a width per image, pressure varying along each stroke, disks stamped along the curve.
    width = _u(rng, 0.06, 0.19) * height
    ink_mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(ink_mask)
    for k, curve in enumerate(placed):
        pts = _resample(curve, max(1.0, width / 5))
        phase, freq = rng.uniform(0, 2 * math.pi), rng.uniform(0.5, 2.0)
        along = np.linspace(0, 1, len(pts))
        taper = np.minimum(1.0, 0.6 + 4 * np.minimum(along, 1 - along))  # lighter at the ends
        pressure = 1 + _u(rng, 0.1, 0.35) * np.sin(phase + 2 * math.pi * freq * along)
        radii = 0.5 * width * pressure * taper * (0.7 if stray and k == len(placed) - 1 else 1.0)
        for (x, y), r in zip(pts, radii):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    if rng.random() < 0.5:
        ink_mask = ink_mask.filter(ImageFilter.GaussianBlur(_u(rng, 0.3, 1.2) * _OVERSAMPLE))
    small = np.asarray(ink_mask.resize((size, size), Image.Resampling.BOX), dtype=np.float64) / 255

    # Paper and ink: a dark background with a faint gradient and noise, ink of varying brightness.
    background = _u(rng, 0, 40)
    gx, gy = rng.uniform(-15, 15, 2)
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1) - 0.5
    paper = background + gx * xx + gy * yy
    ink = _u(rng, 170, 255)
    img = paper * (1 - small) + ink * small + rng.normal(0, _u(rng, 0, 14), (size, size))
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "L")


def digit_image(seed: int, split: str, index: int, size: int = DEFAULT_SIZE) -> tuple[Image.Image, int]:
    """Image ``index`` of ``split`` and its label (``index mod 10``): a pure function of its arguments."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    label = index % len(DIGITS)
    rng = np.random.default_rng((int(seed), SPLITS[split], int(index)))
    return draw_digit(label, size, rng), label


def write_digits(out_dir: str | os.PathLike, per_class_train: int, per_class_val: int,
                 image_size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED) -> dict[str, int]:
    """Write ``out_dir/{train,val}/<digit>/<index>.png``; returns the number of images per split.

    ``out_dir`` may exist (files already there with other names are left alone; callers that need
    a clean folder check first, as :func:`main` does).
    """
    if image_size < 8:
        raise ValueError(f"image size must be at least 8 px, not {image_size}")
    out = Path(out_dir)
    counts = {}
    for split, per_class in (("train", per_class_train), ("val", per_class_val)):
        if per_class < 0:
            raise ValueError(f"images per class must be >= 0, not {per_class}")
        for digit in DIGITS:
            (out / split / digit).mkdir(parents=True, exist_ok=True)
        total = per_class * len(DIGITS)
        for i in range(total):
            img, label = digit_image(seed, split, i, image_size)
            img.save(out / split / DIGITS[label] / f"{i:05d}.png", optimize=False)
        counts[split] = total
    return counts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="make_digits.py",
        description="Write handwriting-like digits 0-9 as OUT/train/<digit>/*.png and OUT/val/<digit>/*.png.")
    p.add_argument("out", metavar="OUT", help="output folder, new or empty")
    p.add_argument("--train-per-class", type=int, default=DEFAULT_TRAIN_PER_CLASS, metavar="N",
                   help=f"training images per digit [default: {DEFAULT_TRAIN_PER_CLASS}]")
    p.add_argument("--val-per-class", type=int, default=DEFAULT_VAL_PER_CLASS, metavar="N",
                   help=f"validation images per digit [default: {DEFAULT_VAL_PER_CLASS}]")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="PX",
                   help=f"image side in pixels [default: {DEFAULT_SIZE}]")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="S",
                   help=f"the same seed writes the same images [default: {DEFAULT_SEED}]")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.train_per_class < 0 or args.val_per_class < 0:
        parser.error("images per class must be >= 0")
    if args.size < 8:
        parser.error("--size must be at least 8")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is not a folder" if not out.is_dir() else "is not empty"
        print(f"make_digits.py: error: {out} {what}; give a new or empty folder", file=sys.stderr)
        return 2
    try:
        counts = write_digits(out, args.train_per_class, args.val_per_class, args.size, args.seed)
    except OSError as e:
        print(f"make_digits.py: error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {counts['train']} train / {counts['val']} val images of {args.size} px to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loss and accuracy curves of a run as a PNG, drawn with Pillow (no plotting dependency)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from bnncli.fileio import atomic_open

_COLORS = {"train": (31, 119, 180), "val": (214, 39, 40), "val top-5": (255, 127, 14)}
_PANEL_W, _PANEL_H, _MARGIN = 460, 300, 48


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _panel(draw: ImageDraw.ImageDraw, x0: int, title: str, series: dict[str, list[tuple[float, float]]],
           y_range: tuple[float, float] | None, font: ImageFont.ImageFont, percent: bool) -> None:
    left, top = x0 + _MARGIN, _MARGIN // 2 + 14
    right, bottom = x0 + _PANEL_W - 12, _PANEL_H - _MARGIN + 10
    draw.text((left, 6), title, fill=(0, 0, 0), font=font)
    points = [p for pts in series.values() for p in pts]
    if not points:
        draw.text((left + 10, top + 40), "no data", fill=(120, 120, 120), font=font)
        return
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = y_range if y_range is not None else (min(ys), max(ys))
    if y_hi == y_lo:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    pad = (y_hi - y_lo) * 0.05 if y_range is None else 0.0
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * (right - left),
                bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))

    for y in _ticks(y_lo, y_hi):
        _, py = to_px(x_lo, y)
        draw.line([(left, py), (right, py)], fill=(230, 230, 230))
        label = f"{y * 100:.0f}%" if percent else f"{y:.3g}"
        draw.text((x0 + 4, py - 6), label, fill=(80, 80, 80), font=font)
    step = max(1, math.ceil((x_hi - x_lo) / 8))  # whole epochs, at most about 9 labels
    for x in range(math.ceil(x_lo), math.floor(x_hi) + 1, step):
        px, _ = to_px(x, y_lo)
        draw.text((px - 6, bottom + 4), f"{x:.0f}", fill=(80, 80, 80), font=font)
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    draw.text(((left + right) // 2 - 14, bottom + 18), "epoch", fill=(0, 0, 0), font=font)

    legend_y = top + 4
    for name, pts in series.items():
        if not pts:
            continue
        color = _COLORS.get(name, (0, 0, 0))
        px_pts = [to_px(x, y) for x, y in pts]
        if len(px_pts) > 1:
            draw.line(px_pts, fill=color, width=2)
        for px, py in px_pts:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
        draw.line([(right - 90, legend_y + 6), (right - 70, legend_y + 6)], fill=color, width=2)
        draw.text((right - 64, legend_y), name, fill=(0, 0, 0), font=font)
        legend_y += 14


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Write ``path`` (PNG): loss (train, val) and top-1 accuracy (train, val, val top-5) per epoch."""

    def series(key: str) -> list[tuple[float, float]]:
        return [(float(m["epoch"]), float(m[key])) for m in history if m.get(key) is not None]

    img = Image.new("RGB", (2 * _PANEL_W, _PANEL_H + 14), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    _panel(draw, 0, f"loss {title}".strip(), {"train": series("train_loss"), "val": series("val_loss")},
           None, font, percent=False)
    _panel(draw, _PANEL_W, f"accuracy {title}".strip(),
           {"train": series("train_top1"), "val": series("val_top1"), "val top-5": series("val_top5")},
           (0.0, 1.0), font, percent=True)
    with atomic_open(path) as f:
        img.save(f, format="PNG")
    return Path(path)

"""Image files -> model input, as an artifact's preprocessing dict says (NumPy and Pillow only).

The steps equal the training engineer's eval transform, torchvision's
``Resize(resize, BILINEAR, antialias=True) -> CenterCrop(image_size) -> ToTensor() -> Normalize(mean, std)``
on PIL images, operation for operation (the tests compare them):

1. resize so the shorter side is ``resize`` (the longer one ``int(resize * long / short)``) with
   PIL's bilinear filter, which antialiases; an image already at that size is left alone;
2. center-crop ``image_size`` squared, top = int(round((h - size) / 2.0)), left likewise
   (zero padding first if the image is smaller);
3. float32 / 255, then (x - mean) / std per channel, as CHW.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bnncli.errors import DataError


def _resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def preprocess_image(image, preprocessing: dict[str, Any]) -> np.ndarray:
    """A PIL image -> float32 ``[C, S, S]`` (C and S from ``preprocessing``)."""
    from PIL import Image

    channels = int(preprocessing["channels"])
    mode = "RGB" if channels == 3 else "L" if channels == 1 else None
    if mode is None:
        raise DataError(f"cannot read images for a model with {channels} input channels (only 1 or 3)")
    if image.mode != mode:
        image = image.convert(mode)
    size = int(preprocessing["image_size"])
    w, h = image.size
    new_w, new_h = _resized_size(w, h, int(preprocessing["resize"]))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    w, h = image.size
    if size > w or size > h:  # torchvision pads with 0 before cropping
        left, top = max(0, (size - w) // 2), max(0, (size - h) // 2)
        canvas = Image.new(mode, (max(w, size), max(h, size)), 0)
        canvas.paste(image, (left, top))
        image = canvas
        w, h = image.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = np.asarray(image, dtype=np.float32) / np.float32(255)
    x = x.reshape(size, size, channels).transpose(2, 0, 1)
    mean = np.asarray(preprocessing["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(preprocessing["std"], dtype=np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def load_image(path: str | os.PathLike, channels: int = 3):
    """Open an image file as a PIL image (EXIF orientation applied); DataError if unreadable."""
    from bnncli.runtime.images import load_image as _load

    return _load(path, channels=channels)


def preprocess_file(path: str | os.PathLike, preprocessing: dict[str, Any]) -> np.ndarray:
    """One image file -> float32 ``[C, S, S]``."""
    return preprocess_image(load_image(path, channels=int(preprocessing["channels"])), preprocessing)


def preprocess_files(paths: Sequence[str | os.PathLike], preprocessing: dict[str, Any]) -> np.ndarray:
    """Image files -> a float32 batch ``[N, C, S, S]``; the first unreadable file raises DataError."""
    return np.stack([preprocess_file(p, preprocessing) for p in paths]) if paths else np.zeros(
        (0, int(preprocessing["channels"]), int(preprocessing["image_size"]), int(preprocessing["image_size"])),
        np.float32)

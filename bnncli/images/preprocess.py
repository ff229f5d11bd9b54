"""Image files -> model input, as an artifact's preprocessing dict says (NumPy and Pillow only).

Two pipelines, chosen by ``interpolation``. ``"bilinear"`` (bnncli's presets) equals the
training engineer's eval transform, torchvision's
``Resize(resize, BILINEAR, antialias=True) -> CenterCrop(image_size) -> ToTensor() -> Normalize(mean, std)``
on PIL images, operation for operation (the tests compare them):

1. resize so the shorter side is ``resize`` (the longer one ``int(resize * long / short)``) with
   PIL's bilinear filter, which antialiases; an image already at that size is left alone;
2. center-crop ``image_size`` squared, top = int(round((h - size) / 2.0)), left likewise
   (zero padding first if the image is smaller);
3. float32 / 255, then (x - mean) / std per channel, as CHW.

``"tf-bicubic"`` (preset ``larq``) is Larq Zoo's evaluation preprocessing
(``larq_zoo.preprocess_input``), restated in NumPy and checked against TensorFlow's output
(tests/fixtures/larq): a centre crop of ``image_size / resize`` (224 / 256 = 0.875) of the shorter
side at full resolution, then TensorFlow 1's ``resize_bicubic`` to ``image_size`` (see
:func:`tf_bicubic_resize`), then ``(x - 255 * mean) / (255 * std)`` in float32 (the products rounded to float32 once).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bnncli.errors import DataError


def check_resize(w: int, h: int, resize: int) -> None:
    """Refuse an image that resizing to ``resize`` (the shorter side) would make larger than the
    largest image bnncli decodes (bnncli.images.decode.MAX_PIXELS): an elongated image meeting a
    model file's large ``resize``."""
    from bnncli.images.decode import MAX_PIXELS

    new_w, new_h = _resized_size(w, h, resize)
    if new_w * new_h > MAX_PIXELS:
        raise DataError(f"a {w}x{h} image would be resized to {new_w}x{new_h} for this model (resize {resize}), "
                        f"more than the {MAX_PIXELS:,} pixels bnncli handles")


def _resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


# TensorFlow 1's bicubic kernel (tensorflow/core/kernels/image/resize_bicubic_op.cc, legacy mode):
# Keys' cubic with a = -0.75, tabulated at 1024 steps and indexed by the rounded fraction.
_TABLE_STEPS = 1024


def _cubic_table() -> tuple[np.ndarray, np.ndarray]:
    a = -0.75
    t = np.arange(_TABLE_STEPS + 1) / _TABLE_STEPS
    near = ((a + 2) * t - (a + 3)) * t * t + 1  # weight at distance t in [0, 1]
    t1 = t + 1.0
    far = ((a * t1 - 5 * a) * t1 + 8 * a) * t1 - 4 * a  # weight at distance t + 1 in [1, 2]
    return near.astype(np.float32), far.astype(np.float32)


def _bicubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``[n_out, 4]`` and clamped source indices ``[n_out, 4]`` of one axis."""
    near, far = _cubic_table()
    scale = np.float32(n_in / n_out)
    src = np.arange(n_out, dtype=np.float32) * scale  # legacy: no half-pixel centres
    base = np.floor(src).astype(np.int64)
    step = np.rint((src - base.astype(np.float32)) * np.float32(_TABLE_STEPS)).astype(np.int64)
    weights = np.stack([far[step], near[step], near[_TABLE_STEPS - step], far[_TABLE_STEPS - step]], axis=1)
    index = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1)
    return weights, index


def _interpolate(x: np.ndarray, weights: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """Four-tap interpolation along ``axis``, summed as TensorFlow does: (w0 x0 + w1 x1) + (w2 x2 + w3 x3)."""
    shape = [1] * x.ndim
    shape[axis] = weights.shape[0]
    w = [weights[:, k].reshape(shape) for k in range(4)]
    v = [np.take(x, index[:, k], axis=axis) for k in range(4)]
    return (w[0] * v[0] + w[1] * v[1]) + (w[2] * v[2] + w[3] * v[3])


def tf_bicubic_resize(image: np.ndarray, size: int) -> np.ndarray:
    """float32 ``[H, W, C]`` -> ``[size, size, C]`` as ``tf.compat.v1.image.resize_bicubic``
    (align_corners=False, half_pixel_centers=False): source position ``out * in / out`` in float32,
    taps clamped to the edge, rows first, no antialiasing and no clamping of the result."""
    image = np.asarray(image, dtype=np.float32)
    wy, iy = _bicubic_taps(image.shape[0], size)
    wx, ix = _bicubic_taps(image.shape[1], size)
    return _interpolate(_interpolate(image, wy, iy, 0), wx, ix, 1).astype(np.float32, copy=False)


def larq_crop_box(h: int, w: int, crop_fraction: float) -> tuple[int, int, int]:
    """(top, left, side) of Larq Zoo's centre crop: side int(float32(fraction) * float32(min(h, w)))."""
    side = max(1, int(np.float32(crop_fraction) * np.float32(min(h, w))))
    return ((h - side) + 1) // 2, ((w - side) + 1) // 2, side


def _tf_bicubic_pipeline(image, preprocessing: dict[str, Any], channels: int) -> np.ndarray:
    size = int(preprocessing["image_size"])
    x = np.asarray(image, dtype=np.uint8).reshape(image.size[1], image.size[0], channels)
    top, left, side = larq_crop_box(x.shape[0], x.shape[1], size / int(preprocessing["resize"]))
    x = tf_bicubic_resize(x[top:top + side, left:left + side], size)
    # Larq Zoo's constants are float64 products (0.485 * 255, ...) that TensorFlow rounds to float32.
    mean = (np.asarray(preprocessing["mean"], dtype=np.float64) * 255).astype(np.float32)
    std = (np.asarray(preprocessing["std"], dtype=np.float64) * 255).astype(np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def preprocess_image(image, preprocessing: dict[str, Any]) -> np.ndarray:
    """A PIL image -> float32 ``[C, S, S]`` (C and S from ``preprocessing``)."""
    from PIL import Image

    channels = int(preprocessing["channels"])
    mode = "RGB" if channels == 3 else "L" if channels == 1 else None
    if mode is None:
        raise DataError(f"cannot read images for a model with {channels} input channels (only 1 or 3)")
    if image.mode != mode:
        image = image.convert(mode)
    if preprocessing["interpolation"] == "tf-bicubic":
        return _tf_bicubic_pipeline(image, preprocessing, channels)
    size = int(preprocessing["image_size"])
    w, h = image.size
    check_resize(w, h, int(preprocessing["resize"]))
    new_w, new_h = _resized_size(w, h, int(preprocessing["resize"]))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
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
    from bnncli.images.decode import load_image as _load

    return _load(path, channels=channels)


def preprocess_file(path: str | os.PathLike, preprocessing: dict[str, Any]) -> np.ndarray:
    """One image file -> float32 ``[C, S, S]``."""
    return preprocess_image(load_image(path, channels=int(preprocessing["channels"])), preprocessing)


def preprocess_files(paths: Sequence[str | os.PathLike], preprocessing: dict[str, Any]) -> np.ndarray:
    """Image files -> a float32 batch ``[N, C, S, S]``; the first unreadable file raises DataError."""
    return np.stack([preprocess_file(p, preprocessing) for p in paths]) if paths else np.zeros(
        (0, int(preprocessing["channels"]), int(preprocessing["image_size"]), int(preprocessing["image_size"])),
        np.float32)

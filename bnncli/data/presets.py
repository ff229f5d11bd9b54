"""Preprocessing presets, stored in checkpoints and artifacts as plain dicts (torch-free).

A preset says how an image file becomes the model's input: convert to RGB (or L for one
channel), resize the shorter side to ``resize``, center-crop ``image_size``, scale to [0, 1],
normalize with ``mean`` / ``std``. Preset ``larq`` (models imported from Larq Zoo) instead crops
``image_size / resize`` (``resize = image_size + 32``, as Larq Zoo) of the shorter side and
resizes the crop with TensorFlow's bicubic (``interpolation: "tf-bicubic"``, bnncli.images.preprocess).
Training augmentation is chosen by ``name``.
"""

from __future__ import annotations

from typing import Any

from bnncli.errors import UsageError
from bnncli.metadata import MAX_IMAGE_SIZE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PRESETS = ("imagenet", "small", "larq")
# larq_zoo.training.data.CROP_PADDING: Larq Zoo crops image_size / (image_size + 32) of the shorter side.
LARQ_CROP_PADDING = 32


def preprocessing(name: str = "imagenet", image_size: int | None = None, in_channels: int = 3,
                  mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> dict[str, Any]:
    """The eval-time preprocessing dict for a preset.

    ``imagenet``: resize shorter side to image_size / 0.875 (256 for 224), center crop.
    ``small``: resize to image_size, no crop margin (CIFAR-style 32 px images).
    ``larq``: Larq Zoo's evaluation (``larq_zoo.training.data.preprocess_image_tensor``): a centre
    crop of ``image_size / resize`` of the shorter side with ``resize = image_size + 32`` (Larq
    Zoo's CROP_PADDING: 0.875 at 224, 0.667 at 64), TensorFlow 1 bicubic resize to image_size.
    """
    if name not in PRESETS:
        raise UsageError(f"unknown preprocessing preset {name!r}; choose one of {', '.join(PRESETS)}")
    if image_size is None:
        image_size = 224 if name == "imagenet" else 32
    if not 8 <= image_size <= MAX_IMAGE_SIZE:
        raise UsageError(f"image size must be from 8 to {MAX_IMAGE_SIZE} pixels, not {image_size}")
    if name == "small":
        resize = image_size
    elif name == "larq":
        resize = image_size + LARQ_CROP_PADDING
    else:
        resize = int(round(image_size / 0.875))
    if mean is None:
        mean = IMAGENET_MEAN if in_channels == 3 else (0.5,) * in_channels
    if std is None:
        std = IMAGENET_STD if in_channels == 3 else (0.5,) * in_channels
    return {
        "preset": name,
        "image_size": int(image_size),
        "resize": resize,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "channels": in_channels,
        "interpolation": "tf-bicubic" if name == "larq" else "bilinear",
    }


def default_preset(image_size: int) -> str:
    """``small`` (pad + crop + flip) below 64 px, where a random-resized crop to 8% would leave
    nothing to see; ``imagenet`` (random-resized crop + flip) from 64 px up."""
    return "small" if image_size < 64 else "imagenet"

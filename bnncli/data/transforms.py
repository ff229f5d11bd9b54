"""Torchvision transforms for the presets of :mod:`bnncli.data.presets`.

The eval transform is the contract every backend reproduces (the NumPy runtime does it without
torch): PIL image -> resize shorter side to ``resize`` (bilinear, antialiased) -> center crop
``image_size`` -> [0, 1] tensor -> normalize with ``mean`` / ``std``.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from bnncli.errors import UsageError
from bnncli.runtime.preprocess import check_resize, preprocess_image


class RuntimePreprocess:
    """The NumPy runtime's preprocessing as a transform (PIL image -> tensor): the one
    implementation of pipelines torchvision has no equal for (Larq Zoo's ``tf-bicubic``)."""

    def __init__(self, pre: dict[str, Any]) -> None:
        self.pre = dict(pre)

    def __call__(self, image) -> torch.Tensor:
        return torch.from_numpy(preprocess_image(image, self.pre))


class _ResizeBound:
    """Refuses an image the eval resize would blow up (bnncli.runtime.preprocess.check_resize)."""

    def __init__(self, resize: int) -> None:
        self.resize = int(resize)

    def __call__(self, image):
        check_resize(*image.size, self.resize)
        return image


def eval_transform(pre: dict[str, Any]):
    if pre["interpolation"] != "bilinear":
        return RuntimePreprocess(pre)
    return T.Compose([
        _ResizeBound(pre["resize"]),
        T.Resize(pre["resize"], interpolation=InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(pre["image_size"]),
        T.ToTensor(),
        T.Normalize(pre["mean"], pre["std"]),
    ])


def train_transform(pre: dict[str, Any]) -> T.Compose:
    """Training augmentation of a preset.

    ``imagenet`` (and ``larq``): random-resized crop (8-100% of the area, aspect 3/4-4/3) to
    ``image_size`` and a horizontal flip, as the paper and Larq Zoo train. ``small``: resize to
    ``image_size``, pad by an eighth on each side (4 px at 32 px, as for CIFAR), random crop back,
    horizontal flip.
    """
    size = pre["image_size"]
    if pre["preset"] in ("imagenet", "larq"):
        geometry = [
            T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                                interpolation=InterpolationMode.BILINEAR, antialias=True),
        ]
    elif pre["preset"] == "small":
        geometry = [
            T.Resize(size, interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.RandomCrop(size, padding=max(1, size // 8)),
        ]
    else:
        raise UsageError(f"unknown preprocessing preset {pre['preset']!r}")
    return T.Compose([*geometry, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(pre["mean"], pre["std"])])

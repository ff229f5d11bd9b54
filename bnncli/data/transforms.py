"""Torchvision transforms for the presets of :mod:`bnncli.data.presets`.

The eval transform is the contract every backend reproduces (the NumPy runtime does it without
torch): PIL image -> resize shorter side to ``resize`` (bilinear, antialiased) -> center crop
``image_size`` -> [0, 1] tensor -> normalize with ``mean`` / ``std``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from bnncli.errors import UsageError
from bnncli.images.preprocess import check_resize, preprocess_image


class RuntimePreprocess:
    """The NumPy runtime's preprocessing as a transform (PIL image -> tensor): the one
    implementation of pipelines torchvision has no equal for (Larq Zoo's ``tf-bicubic``)."""

    def __init__(self, pre: dict[str, Any]) -> None:
        self.pre = dict(pre)

    def __call__(self, image) -> torch.Tensor:
        return torch.from_numpy(preprocess_image(image, self.pre))


class _ResizeBound:
    """Refuses an image that resizing its shorter side to ``resize`` would blow up (images.preprocess.check_resize)."""

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


# The paper's augmentation, the defaults of Augmentation's fields.
FLIP = 0.5
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class Augmentation:
    """What training augmentation does; None takes the preset's default (the paper's).

    ``flip``: probability of a horizontal flip (0: never, for digits, letters, arrows).
    ``crop_scale`` / ``crop_ratio``: the area fraction and aspect ranges of the random-resized crop
    of the ``imagenet`` and ``larq`` presets. ``pad_crop``: the ``small`` preset's margin in pixels
    (pad, then random-crop back; 0: no shift). ``enabled=False``: no augmentation at all, the
    evaluation transform.
    """

    enabled: bool = True
    flip: float | None = None
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] | None = None
    pad_crop: int | None = None


def resolved_augmentation(pre: dict[str, Any], aug: Augmentation | None = None) -> dict[str, Any]:
    """The augmentation a run of preset ``pre["preset"]`` uses, every default filled in (what
    config.json records): ``enabled``, ``flip``, and ``crop_scale`` / ``crop_ratio`` (imagenet, larq)
    or ``pad_crop`` (small)."""
    aug = aug or Augmentation()
    if not aug.enabled:
        return {"enabled": False}
    used: dict[str, Any] = {"enabled": True, "flip": FLIP if aug.flip is None else float(aug.flip)}
    if pre["preset"] in ("imagenet", "larq"):
        used["crop_scale"] = [float(v) for v in (aug.crop_scale or CROP_SCALE)]
        used["crop_ratio"] = [float(v) for v in (aug.crop_ratio or CROP_RATIO)]
    elif pre["preset"] == "small":
        used["pad_crop"] = max(1, pre["image_size"] // 8) if aug.pad_crop is None else int(aug.pad_crop)
    return used


def train_transform(pre: dict[str, Any], aug: Augmentation | None = None):
    """Training augmentation of a preset, as ``aug`` adjusts it.

    ``imagenet`` (and ``larq``): random-resized crop (by default 8-100% of the area, aspect
    3/4-4/3) to ``image_size`` and a horizontal flip, as the paper and Larq Zoo train. ``small``:
    resize to ``image_size``, pad by an eighth on each side (4 px at 32 px, as for CIFAR), random
    crop back, horizontal flip.
    """
    aug = aug or Augmentation()
    if not aug.enabled:
        return eval_transform(pre)
    size = pre["image_size"]
    used = resolved_augmentation(pre, aug)
    if pre["preset"] in ("imagenet", "larq"):
        geometry = [
            T.RandomResizedCrop(size, scale=tuple(used["crop_scale"]), ratio=tuple(used["crop_ratio"]),
                                interpolation=InterpolationMode.BILINEAR, antialias=True),
        ]
    elif pre["preset"] == "small":
        margin = used["pad_crop"]
        geometry = [_ResizeBound(size), T.Resize(size, interpolation=InterpolationMode.BILINEAR, antialias=True)]
        if margin:
            geometry.append(T.RandomCrop(size, padding=margin))
        else:
            geometry.append(T.CenterCrop(size))
    else:
        raise UsageError(f"unknown preprocessing preset {pre['preset']!r}")
    flip = used["flip"]
    steps = [*geometry, T.RandomHorizontalFlip(flip)] if flip > 0 else geometry
    return T.Compose([*steps, T.ToTensor(), T.Normalize(pre["mean"], pre["std"])])

"""Shared fixtures: small generated datasets on disk. Keep them generic; append new ones below."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnncli.data.builtin import draw_shape

FOLDER_CLASSES = ("circle", "cross", "ring")


def _save_variant(img: Image.Image, path_stem: Path, k: int) -> Path:
    """Save ``img`` in one of many formats and modes, cycling with ``k``."""
    variant = k % 8
    if variant == 0:
        path = path_stem.with_suffix(".png")
        img.save(path)
    elif variant == 1:
        path = path_stem.with_suffix(".jpg")
        img.save(path, quality=90)
    elif variant == 2:  # grayscale PNG
        path = path_stem.with_suffix(".png")
        img.convert("L").save(path)
    elif variant == 3:  # grayscale JPEG
        path = path_stem.with_suffix(".jpeg")
        img.convert("L").save(path, quality=90)
    elif variant == 4:  # RGBA PNG, half transparent
        path = path_stem.with_suffix(".png")
        rgba = img.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(path)
    elif variant == 5:  # palette PNG
        path = path_stem.with_suffix(".png")
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path)
    elif variant == 6:  # 16-bit grayscale PNG
        path = path_stem.with_suffix(".png")
        arr = (np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        Image.fromarray(arr, mode="I;16").save(path)
    else:  # CMYK JPEG with an EXIF orientation tag (rotated 180 degrees on load)
        path = path_stem.with_suffix(".jpg")
        exif = Image.Exif()
        exif[0x0112] = 3
        img.rotate(180).convert("CMYK").save(path, quality=90, exif=exif.tobytes())
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A tiny ImageNet-layout dataset of real image files: ``root/{train,val}/<class>/*``.

    Three shape classes (circle, cross, ring) at 24 px; 10 train and 4 val images per class in
    PNG and JPEG, RGB, grayscale, RGBA, palette, 16-bit and CMYK (with EXIF orientation).
    ``root/train/circle/broken.jpg`` is a corrupt file; a text file and a hidden file are noise.
    Read-only for tests: copy it before changing it.
    """
    root = tmp_path_factory.mktemp("imagefolder")
    for split, per_class in (("train", 10), ("val", 4)):
        for c, name in enumerate(FOLDER_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                rng = np.random.default_rng((7, split == "val", c, i))
                _save_variant(draw_shape(name, 24, rng), folder / f"{name}_{i:03d}", i + c)
    good = io.BytesIO()
    draw_shape("circle", 24, np.random.default_rng(0)).save(good, format="JPEG")
    (root / "train" / "circle" / "broken.jpg").write_bytes(good.getvalue()[:120])  # truncated JPEG
    (root / "train" / "notes.txt").write_text("not a class folder, not an image\n")
    (root / "train" / "cross" / "README.txt").write_text("not an image\n")
    (root / "train" / "ring" / ".DS_Store").write_bytes(b"\0\1\2")
    return root

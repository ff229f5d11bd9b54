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
        Image.fromarray(arr).save(path)  # uint16 -> mode I;16
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


# --- Deployment (export, pack, runtime, predict) ---------------------------------------------


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Give every BatchNorm statistics and affine parameters far from identity (some scales
    negative), so that folding BatchNorm into thresholds and biases is really exercised."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                # QuickNet's depthwise stem BatchNorm has no scale and centre; XNOR-Net's and
                # BinaryAlexNet's have a centre only.
                if m.weight is None and m.bias is None:
                    continue
                scale, shift = torch.randn(c, generator=g) * 0.6 + 0.8, torch.randn(c, generator=g) * 0.5
                if m.weight is not None:
                    m.weight.copy_(scale)
                if m.bias is not None:
                    m.bias.copy_(shift)


def write_checkpoint(path: Path, arch: str = "binarydensenet_tiny", class_names=("a", "b", "c", "d"),
                     image_size: int = 32, seed: int = 0, **model_kwargs) -> Path:
    """A checkpoint of a registry model with random weights and randomized BatchNorms."""
    import torch

    from bnncli import create_model
    from bnncli.artifacts.checkpoint import model_checkpoint, save_checkpoint
    from bnncli.data.presets import preprocessing

    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(class_names), **model_kwargs)
    randomize_batchnorm(model, seed)
    preset = "small" if image_size < 64 else "imagenet"
    return save_checkpoint(path, model_checkpoint(model.eval(), list(class_names),
                                                  preprocessing(preset, image_size)))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """binarydensenet_tiny, 4 classes, 32 px 'small' preprocessing, randomized BatchNorms."""
    return write_checkpoint(tmp_path_factory.mktemp("deploy") / "tiny.pt")


def make_exact(model, seed: int = 0) -> None:
    """Give a model weights on which float32 arithmetic is exact in every backend.

    Deep binary networks with random weights are chaotic: a last-bit difference in a float sum
    (BLAS, onnxruntime and PyTorch add in different orders) can flip one sign near a threshold,
    and the flip snowballs through dozens of binary layers. With small dyadic values (conv and
    linear weights in multiples of 1/16, binary latent weights +-0.5, BatchNorm eps 0 with
    variances that are powers of 4 and gammas +-2^k) the sums before every binarization are exact,
    so backends that compute the same function binarize identically and agree to float rounding
    in the last layers; any larger difference is a bug. Feed it inputs in multiples of 1/8.
    """
    import torch

    from bnncli.nn import BinaryConv2d

    g = torch.Generator().manual_seed(seed)

    def dyadic(shape, step, limit):
        n = int(limit / step)
        return torch.randint(-n, n + 1, shape, generator=g).float() * step

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BinaryConv2d):
                m.weight.copy_(torch.where(torch.rand(m.weight.shape, generator=g) < 0.5, -0.5, 0.5))
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                if not m.weight.requires_grad:  # fixed weights (QuickNet's blur pools, multiples of 1/16)
                    continue
                m.weight.copy_(dyadic(m.weight.shape, 1 / 16, 0.25))
                if m.bias is not None:
                    m.bias.copy_(dyadic(m.bias.shape, 1 / 8, 1.0))
            elif isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.eps = 0.0
                m.running_var.copy_(4.0 ** torch.randint(-1, 2, (c,), generator=g).float())
                gamma = 2.0 ** torch.randint(-3, 0, (c,), generator=g).float() \
                    * torch.where(torch.rand(c, generator=g) < 0.2, -1.0, 1.0)
                m.running_mean.copy_(dyadic((c,), 1 / 8, 2.0))
                beta = dyadic((c,), 1 / 8, 1.0)
                if m.weight is not None:  # QuickNet's depthwise stem BatchNorm has no scale and centre,
                    m.weight.copy_(gamma)
                if m.bias is not None:  # XNOR-Net's and BinaryAlexNet's no scale
                    m.bias.copy_(beta)
            elif isinstance(m, torch.nn.PReLU):
                m.weight.copy_(dyadic(m.weight.shape, 1 / 8, 1.0))
        # Real-to-Binary Net's per-image scales are sigmoids, which no float arithmetic computes
        # exactly, except sigmoid(0) = 1/2: its scaling branches get zero expanding weights (their
        # data-dependent scales are checked with random weights, within a tolerance).
        from bnncli.models.realtobinarynet import Scaling

        for m in model.modules():
            if isinstance(m, Scaling):
                m.expand.weight.zero_()


def exact_inputs(n: int, channels: int = 3, size: int = 32, seed: int = 0):
    """Inputs in multiples of 1/8 in [-2, 2] (see :func:`make_exact`)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(-16, 17, (n, channels, size, size), generator=g).float() / 8


def small_registry_model(name: str, seed: int = 0, **kw):
    """A registry model in eval mode for 32x32 inputs (the ImageNet ones with their thumbnail stem,
    10 classes), with randomized BatchNorms."""
    import torch

    from bnncli import create_model

    torch.manual_seed(seed)
    if "tiny" not in name:
        kw = {"thumbnail": True, "num_classes": 10, **kw}
    model = create_model(name, **kw).eval()
    randomize_batchnorm(model, seed)
    return model


def rewrite_packed_header(data: bytes, edit, version: int | None = None) -> bytes:
    """A packed file's bytes with ``edit`` applied to its header JSON (and, given ``version``, the
    preamble's format version changed), re-sealed with a valid checksum."""
    import hashlib
    import json
    import struct
    import zlib

    from bnncli.graph import format as fmt

    _, old_version, hlen, plen, _ = struct.unpack_from("<8sIIQ32s", data)
    header = json.loads(zlib.decompress(data[56:56 + hlen]))
    edit(header)
    new_header = zlib.compress(json.dumps(header).encode())
    payload = data[56 + hlen:]
    head = struct.pack("<8sIIQ", fmt.MAGIC, old_version if version is None else version, len(new_header), plen)
    return head + hashlib.sha256(head + new_header + payload).digest() + new_header + payload

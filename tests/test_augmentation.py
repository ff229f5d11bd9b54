"""Training augmentation you control (flip, crop ranges, pad-and-crop, off) and label smoothing."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from bnncli.cli.app import main
from bnncli.data.presets import preprocessing
from bnncli.data.transforms import Augmentation, eval_transform, train_transform
from bnncli.engine.config import augmentation, resolve_config, validate
from bnncli.errors import UsageError


def _image(size=(40, 30)) -> Image.Image:
    """An asymmetric picture: a flip or a shift changes it."""
    img = Image.new("RGB", size, (10, 20, 30))
    for x in range(size[0]):
        for y in range(size[1]):
            img.putpixel((x, y), (x * 6 % 256, y * 8 % 256, (x * y) % 256))
    return img


def _draws(transform, n=6):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(transform(_image()))
    return out


def _all_equal(xs) -> bool:
    return all(torch.equal(xs[0], x) for x in xs[1:])


def test_the_defaults_are_the_papers_and_random():
    for preset, size in (("small", 32), ("imagenet", 64)):
        assert not _all_equal(_draws(train_transform(preprocessing(preset, size))))


def test_flip_zero_stops_flipping_and_one_always_flips():
    pre = preprocessing("small", 32)
    still = _draws(train_transform(pre, Augmentation(flip=0.0, pad_crop=0)))
    assert _all_equal(still)
    flipped = _draws(train_transform(pre, Augmentation(flip=1.0, pad_crop=0)))
    assert _all_equal(flipped) and torch.equal(flipped[0], still[0].flip(-1))
    assert not _all_equal(_draws(train_transform(pre, Augmentation(pad_crop=0))))  # the default flips half


def test_crop_scale_and_ratio_set_the_random_resized_crop():
    pre = preprocessing("imagenet", 64)
    whole = Augmentation(flip=0.0, crop_scale=(1.0, 1.0), crop_ratio=(40 / 30, 40 / 30))
    assert _all_equal(_draws(train_transform(pre, whole)))  # the whole image, every time
    assert not _all_equal(_draws(train_transform(pre, Augmentation(flip=0.0))))


def test_pad_crop_margin_and_no_augmentation():
    pre = preprocessing("small", 32)
    assert not _all_equal(_draws(train_transform(pre, Augmentation(flip=0.0, pad_crop=6))))
    off = _draws(train_transform(pre, Augmentation(enabled=False)))
    assert _all_equal(off) and torch.equal(off[0], eval_transform(pre)(_image()))


def test_options_are_checked_and_reach_the_augmentation():
    cfg = resolve_config(overrides=dict(arch="binarydensenet_tiny", data="builtin:shapes", flip=0.0,
                                        crop_scale=[0.5, 1.0], pad_crop=2, augment=True, label_smoothing=0.1))
    assert augmentation(cfg) == Augmentation(True, 0.0, (0.5, 1.0), None, 2)
    for bad in ({"flip": 1.5}, {"crop_scale": [0.9, 0.5]}, {"crop_ratio": [0.0, 1.0]}, {"pad_crop": -1},
                {"label_smoothing": 1.0}, {"crop_scale": [0.5]}):
        with pytest.raises(UsageError):
            validate(resolve_config(overrides=dict(arch="binarydensenet_tiny", data="builtin:shapes", **bad)))


def test_cli_records_the_options_and_label_smoothing_changes_the_loss(image_folder, tmp_path):
    runs = {}
    for name, extra in (("plain", []), ("smooth", ["--label-smoothing", "0.3"])):
        out = tmp_path / name
        assert main(["train", "--arch", "binarydensenet_tiny", "--data", str(image_folder), "--epochs", "1",
                     "--batch-size", "8", "--image-size", "16", "--workers", "0", "--flip", "0", "--pad-crop", "1",
                     "--out", str(out), "--json", *extra]) == 0
        runs[name] = out
    config = json.loads((runs["smooth"] / "config.json").read_text())["config"]
    assert (config["flip"], config["pad_crop"], config["label_smoothing"], config["augment"]) == (0.0, 1, 0.3, True)
    used = json.loads((runs["smooth"] / "config.json").read_text())["used"]
    assert used["augmentation"] == {"enabled": True, "flip": 0.0, "pad_crop": 1}
    assert (used["image_size"], used["preset"], used["workers"], used["batch_per_process"]) == (16, "small", 0, 8)
    loss = {k: json.loads((v / "metrics.jsonl").read_text().splitlines()[0])["train_loss"] for k, v in runs.items()}
    assert loss["smooth"] != loss["plain"]
    assert main(["train", "--arch", "binarydensenet_tiny", "--data", str(image_folder), "--flip", "2"]) == 2


def test_the_augmentation_used_has_every_default_filled_in():
    """config.json records these values rather than the options' None (friction item 11)."""
    from bnncli.data.presets import preprocessing
    from bnncli.data.transforms import resolved_augmentation

    assert resolved_augmentation(preprocessing("small", 32), Augmentation()) == \
        {"enabled": True, "flip": 0.5, "pad_crop": 4}
    assert resolved_augmentation(preprocessing("imagenet", 64), Augmentation(flip=0.0)) == \
        {"enabled": True, "flip": 0.0, "crop_scale": [0.08, 1.0], "crop_ratio": [0.75, 4 / 3]}
    assert resolved_augmentation(preprocessing("small", 32), Augmentation(enabled=False)) == {"enabled": False}

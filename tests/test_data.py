"""Datasets: ImageNet-layout folders, the built-in shapes, transforms, samplers, skipping bad files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import FOLDER_CLASSES
from PIL import Image

from bnncli.data.builtin import BUILTIN, SHAPE_CLASSES, ShapesDataset
from bnncli.data.folder import ImageFolderDataset, split_folders
from bnncli.data.loading import (
    EpochSampler,
    SampleDataset,
    ShardSampler,
    Skipped,
    collate,
    make_loader,
    open_eval_data,
    open_train_data,
)
from bnncli.data.presets import default_preset, preprocessing
from bnncli.data.transforms import eval_transform, train_transform
from bnncli.errors import DataError


def test_folder_layout_classes_and_files(image_folder):
    data = open_train_data(str(image_folder))
    assert data.class_names == list(FOLDER_CLASSES)
    assert len(data.train) == 31  # 30 images + broken.jpg; README.txt, notes.txt, .DS_Store ignored
    assert len(data.val) == 12 and data.val.classes == data.train.classes
    assert sorted(set(data.train.targets)) == [0, 1, 2]
    paths = [data.train.describe(i) for i in range(len(data.train))]
    assert not any(p.endswith((".txt", ".DS_Store")) for p in paths)
    assert {p.rsplit(".", 1)[1] for p in paths} == {"png", "jpg", "jpeg"}


def test_every_image_mode_becomes_rgb_and_the_corrupt_file_is_skipped(image_folder):
    pre = preprocessing("small", 16)
    ds = SampleDataset(ImageFolderDataset(image_folder / "train"), eval_transform(pre))
    items = [ds[i] for i in range(len(ds))]
    bad = [it for it in items if isinstance(it, Skipped)]
    assert [b.path.rsplit("/", 1)[1] for b in bad] == ["broken.jpg"]
    assert "broken.jpg" in bad[0].reason and "\n" not in bad[0].reason
    for x, _ in (it for it in items if not isinstance(it, Skipped)):
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and torch.isfinite(x).all()
    images, labels, skipped = collate(items)
    assert images.shape == (30, 3, 16, 16) and labels.shape == (30,) and len(skipped) == 1
    assert collate(bad) == (None, None, bad)


def test_grayscale_model_reads_one_channel(image_folder):
    pre = preprocessing("small", 16, in_channels=1)
    ds = SampleDataset(ImageFolderDataset(image_folder / "val"), eval_transform(pre), channels=1)
    assert ds[0][0].shape == (1, 16, 16)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), "black")
    img.paste((255, 255, 255), (0, 0, 10, 10))  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 3  # rotate 180 on display: white must end up on the right
    (tmp_path / "a").mkdir()
    img.save(tmp_path / "a" / "x.jpg", exif=exif.tobytes(), quality=95)
    loaded, _ = ImageFolderDataset(tmp_path).load(0)
    arr = np.asarray(loaded).mean(axis=(0, 2))
    assert arr[:8].mean() < 50 and arr[-8:].mean() > 200


def test_eval_transform_is_resize_crop_normalize():
    pre = preprocessing("imagenet", 32)  # resize shorter side to 37, center crop 32
    img = Image.new("RGB", (80, 40), (255, 0, 128))
    x = eval_transform(pre)(img)
    assert x.shape == (3, 32, 32)
    expect = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(pre["mean"])) / torch.tensor(pre["std"])
    assert torch.allclose(x[:, 16, 16], expect, atol=1e-6)


@pytest.mark.parametrize("preset", ["small", "imagenet"])
def test_train_augmentation_is_a_function_of_the_sample_seed(preset):
    pre = preprocessing(preset, 16)
    ds = SampleDataset(ShapesDataset("shapes-mini", "train"), train_transform(pre))
    before = torch.get_rng_state()
    a, b = ds[(3, 123)][0], ds[(3, 123)][0]
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG stream is untouched
    assert any(not torch.equal(a, ds[(3, s)][0]) for s in range(1, 6))


def test_default_preset():
    assert default_preset(32) == "small" and default_preset(224) == "imagenet"


def test_builtin_shapes_are_deterministic_balanced_and_sized():
    spec = BUILTIN["shapes"]
    train, val = ShapesDataset("shapes", "train"), ShapesDataset("shapes", "val")
    assert (len(train), len(val)) == (6000, 1000) and train.classes == list(SHAPE_CLASSES)
    assert np.bincount(train.targets).tolist() == [spec.train_per_class] * 10
    a, b = train.load(17)[0], ShapesDataset("shapes", "train").load(17)[0]
    assert a.size == (32, 32) and a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(train.load(17)[0]), np.asarray(val.load(17)[0]))
    assert train.load(3, channels=1)[0].mode == "L"


@pytest.mark.parametrize("spec,needle", [
    ("builtin:nosuch", "unknown built-in dataset"),
    ("/nonexistent/data", "data folder not found"),
])
def test_bad_data_specs(spec, needle):
    with pytest.raises(DataError, match=needle):
        open_train_data(spec)


def test_empty_and_classless_folders(tmp_path):
    with pytest.raises(DataError, match="no class folders"):
        open_train_data(str(tmp_path))
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images found"):
        open_train_data(str(tmp_path))


def test_split_folders_and_eval_split(image_folder, tmp_path):
    assert split_folders(image_folder) == (image_folder / "train", image_folder / "val")
    assert split_folders(image_folder / "val") == (image_folder / "val", None)  # a single split folder
    assert len(open_eval_data(str(image_folder), FOLDER_CLASSES)) == 12  # the root means its val split
    assert len(open_eval_data(str(image_folder / "train"), FOLDER_CLASSES)) == 31
    only_train = tmp_path / "d"
    shutil.copytree(image_folder / "train", only_train / "train")
    with pytest.raises(DataError, match="no val split"):
        open_eval_data(str(only_train), FOLDER_CLASSES)
    with pytest.raises(DataError, match="the model does not know: ring"):
        open_eval_data(str(image_folder / "val"), ["circle", "cross"])


def test_epoch_sampler_shards_resumes_and_reshuffles():
    ds = SampleDataset(ShapesDataset("shapes-mini", "train"), lambda x: x)
    full = EpochSampler(ds, seed=5)
    full.set_epoch(2)
    order = list(full)
    assert sorted(i for i, _ in order) == list(range(len(ds)))
    full.set_epoch(2, start=40)
    assert list(full) == order[40:] and len(full) == len(ds) - 40
    full.set_epoch(3)
    assert [i for i, _ in full] != [i for i, _ in order]
    ranks = [EpochSampler(ds, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    shards = [[i for i, _ in r] for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 60 and not set(shards[0]) & set(shards[1])
    assert sorted(ShardSampler(7, 0, 2).indices + ShardSampler(7, 1, 2).indices) == list(range(7))


def test_loader_with_workers_matches_in_process(image_folder):
    pre = preprocessing("small", 16)
    ds = SampleDataset(ImageFolderDataset(image_folder / "train"), train_transform(pre))
    batches = []
    for workers in (0, 2):
        sampler = EpochSampler(ds, seed=1)
        sampler.set_epoch(1)
        batches.append(list(make_loader(ds, sampler, 8, workers)))
    for (x0, y0, s0), (x1, y1, s1) in zip(*batches):
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and s0 == s1
    assert sum(len(s) for _, _, s in batches[0]) == 1

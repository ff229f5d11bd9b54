"""`bnn train --loader pil|torchvision|device`: the same crops as pil, seeded, resumable, bad files skipped (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bnncli.artifacts.checkpoint import load_checkpoint
from bnncli.cli.app import main
from bnncli.data.builtin import ShapesDataset
from bnncli.data.folder import ImageFolderDataset
from bnncli.data.loading import EpochSampler, Skipped
from bnncli.data.presets import preprocessing
from bnncli.data.tensor_loaders import (
    DecodedDataset,
    DeviceDecoder,
    EncodedDataset,
    collate_encoded,
    train_batches,
    train_dataset,
)
from bnncli.data.transforms import Augmentation, train_transform
from bnncli.engine.config import load_recipe, resolve_config
from bnncli.engine.progress import Reporter
from bnncli.engine.resume import load_resume, resume_overrides
from bnncli.engine.stopping import StopRequest
from bnncli.engine.train import train
from bnncli.errors import UsageError

CPU = torch.device("cpu")
TENSOR_LOADERS = ("torchvision", "device")


def jpeg_folder(root: Path, classes: int = 3, per_class: int = 6, seed: int = 0) -> Path:
    """``root/<class>/*.jpg``: smooth colour fields of a few sizes (landscape and portrait), quality 90."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = (48 + 5 * i, 36 + 2 * i) if i % 2 else (30 + 2 * i, 44 + 3 * i)
            field = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            img = Image.fromarray(field).resize((w, h), Image.BICUBIC)
            img.save(folder / f"img{i:02d}.jpg", quality=90)
    return root


def batches(loader: str, source, transform, seed: int = 3, epoch: int = 1, batch: int = 8, workers: int = 0,
            channels: int = 3, channels_last: bool = False):
    ds = train_dataset(loader, source, transform, channels)
    sampler = EpochSampler(ds, seed=seed)
    sampler.set_epoch(epoch)
    return list(train_batches(ds, sampler, batch, workers, CPU, channels_last))


def one_uint8_step(pre) -> float:
    """The largest normalised difference one 8-bit level makes."""
    return 1 / 255 / min(pre["std"])


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    return jpeg_folder(tmp_path_factory.mktemp("jpegs"))


@pytest.mark.parametrize("preset,size", [("imagenet", 24), ("small", 16)])
@pytest.mark.parametrize("augment", [True, False])
@pytest.mark.parametrize("loader", TENSOR_LOADERS)
def test_tensor_loaders_give_the_pil_loaders_crops(jpegs, loader, preset, size, augment):
    """Same seed, same boxes and flips: the batches differ from pil's by resampling and rounding only."""
    pre = preprocessing(preset, size)
    transform = train_transform(pre, Augmentation(enabled=augment))
    source = ImageFolderDataset(jpegs)
    want = batches("pil", source, transform)
    got = batches(loader, source, transform, channels_last=True)
    assert len(got) == len(want) == 3
    for (x0, y0, s0), (x1, y1, s1) in zip(want, got):
        assert x1.shape == x0.shape == (len(y0), 3, size, size) and x1.dtype == torch.float32
        assert x1.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(y0, y1) and s0 == s1 == []
        # Within one 8-bit level: resampling and rounding (the device loader's floats are not rounded)
        assert (x1 - x0).abs().max() <= 1.5 * one_uint8_step(pre)
        assert (x1 - x0).abs().mean() < 0.4 * one_uint8_step(pre)


@pytest.mark.parametrize("loader", TENSOR_LOADERS)
def test_every_image_mode_reads_as_with_pil(image_folder, loader):
    """PNG, grayscale, RGBA, palette, 16-bit, CMYK and EXIF-rotated files (Pillow's, as a fallback), the
    corrupt JPEG skipped and named."""
    pre = preprocessing("small", 16)
    transform = train_transform(pre, Augmentation(enabled=False))
    source = ImageFolderDataset(image_folder / "train")
    want, got = batches("pil", source, transform, batch=31), batches(loader, source, transform, batch=31)
    (x0, y0, s0), (x1, y1, s1) = want[0], got[0]
    assert torch.equal(y0, y1) and len(y1) == 30
    assert [s.path for s in s1] == [s.path for s in s0] and s1[0].path.endswith("broken.jpg")
    assert (x1 - x0).abs().max() <= 1.5 * one_uint8_step(pre)


@pytest.mark.parametrize("loader", TENSOR_LOADERS)
def test_augmentation_is_a_function_of_the_seed(jpegs, loader):
    pre = preprocessing("imagenet", 24)
    transform = train_transform(pre)
    source = ImageFolderDataset(jpegs)
    ds = train_dataset(loader, source, transform, 3)
    before = torch.get_rng_state()
    ds[(0, 123)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG stream is untouched
    a, b = batches(loader, source, transform, seed=5), batches(loader, source, transform, seed=5, workers=1)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya, _), (xb, yb, _) in zip(a, b))
    other = batches(loader, source, transform, seed=6)
    assert any(not torch.equal(xa, xo) for (xa, _, _), (xo, _, _) in zip(a, other))
    later = batches(loader, source, transform, seed=5, epoch=2)
    assert any(not torch.equal(xa, xl) for (xa, _, _), (xl, _, _) in zip(a, later))


def test_builtin_images_go_through_the_tensor_path(tmp_path):
    """builtin:shapes is drawn in memory: no file to decode, the same geometry and normalisation."""
    pre = preprocessing("small", 32)
    source = ShapesDataset("shapes-mini", "train")
    transform = train_transform(pre)
    want = batches("pil", source, transform, batch=16)[:2]
    for loader in TENSOR_LOADERS:
        got = batches(loader, source, transform, batch=16)[:2]
        for (x0, y0, _), (x1, y1, _) in zip(want, got):
            assert torch.equal(y0, y1) and (x1 - x0).abs().max() <= 1.5 * one_uint8_step(pre)


def test_a_jpeg_truncated_after_its_header_is_skipped_by_both_decoders(tmp_path):
    """The header reads, so the device loader sends the bytes; the decode fails on the device and
    Pillow names the reason, as the pil loader would."""
    root = jpeg_folder(tmp_path / "data", classes=1, per_class=2)
    whole = (root / "class0" / "img01.jpg").read_bytes()
    scan = whole.index(b"\xff\xda")  # start of scan: the header ends here
    (root / "class0" / "cut.jpg").write_bytes(whole[: scan + (len(whole) - scan) // 2])
    source = ImageFolderDataset(root)
    transform = train_transform(preprocessing("small", 16))
    cut = [i for i in range(len(source)) if source.describe(i).endswith("cut.jpg")][0]
    decoded = DecodedDataset(source, transform)[(cut, 1)]
    assert isinstance(decoded, Skipped) and "cut.jpg" in decoded.reason and "truncated" in decoded.reason
    encoded = EncodedDataset(source, transform)
    sample = encoded[(cut, 1)]
    assert not isinstance(sample, Skipped) and sample.data is None  # bytes only: the worker did not decode
    batch = collate_encoded([encoded[(i, 1)] for i in range(len(source))])
    x, y, skipped = DeviceDecoder(encoded.tensor_transform, 3, CPU, False)(batch)
    assert x.shape == (2, 3, 16, 16) and len(y) == 2
    assert [s.path for s in skipped] == [str(root / "class0" / "cut.jpg")] and "truncated" in skipped[0].reason
    nothing = DeviceDecoder(encoded.tensor_transform, 3, CPU, False)(collate_encoded([skipped[0]]))
    assert nothing == (None, None, skipped)


def test_larq_eval_resize_needs_the_pil_loader():
    transform = train_transform(preprocessing("larq", 32), Augmentation(enabled=False))
    for loader in TENSOR_LOADERS:
        with pytest.raises(UsageError, match="use --loader pil"):
            train_dataset(loader, ShapesDataset("shapes-mini", "train"), transform, 3)


# --- bnn train -----------------------------------------------------------------------------------------------


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("loader,workers", [("pil", 0), ("torchvision", 0), ("device", 1)])
def test_each_loader_trains_an_epoch_and_is_recorded(image_folder, tmp_path, capsys, loader, workers):
    run = tmp_path / "run"
    code, out, err = bnn(capsys, "train", "--arch", "binarydensenet_tiny", "--data", image_folder, "--image-size",
                         "16", "--batch-size", "8", "--epochs", "1", "--loader", loader, "--workers", workers,
                         "--out", run, "--json")
    assert code == 0, err
    assert "broken.jpg" in err and "1 unreadable file(s) skipped" in err and "Traceback" not in err
    summary = json.loads(out)
    assert summary["last"]["images"] == 30 and summary["last"]["skipped"] == 1 and summary["last"]["val_images"] == 12
    assert json.loads((run / "config.json").read_text())["config"]["loader"] == loader
    assert load_checkpoint(run / "last.pt")["config"]["loader"] == loader
    assert torch.backends.cudnn.benchmark is False  # set on CUDA only


def test_bad_loader_is_one_line_and_exit_2(tmp_path, capsys):
    code, out, err = bnn(capsys, "train", "--arch", "binarydensenet_tiny", "--data", "builtin:shapes-mini",
                         "--loader", "gpu", "--out", tmp_path / "run")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1
    assert "unknown loader 'gpu'; choose one of pil, torchvision, device" in lines[0]


def test_loader_in_recipes_and_on_resume(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('arch = "binarydensenet_tiny"\nloader = "device"\n')
    assert load_recipe(recipe)["loader"] == "device"
    assert resolve_config(recipe=recipe, overrides={"data": "d"}).loader == "device"
    assert resolve_config(overrides={"arch": "binarydensenet_tiny", "data": "d"}).loader == "pil"
    recipe.write_text('arch = "binarydensenet_tiny"\nloader = "dali"\n')
    with pytest.raises(UsageError, match="unknown loader 'dali'"):
        resolve_config(recipe=recipe, overrides={"data": "d"})
    # A speed option like --device: a resumed run may change it (then it is no longer bit-identical).
    assert resume_overrides({"config": {"loader": "pil"}}, {"loader": "device"}) == {"loader": "device"}


class StopAt(Reporter):
    interval = 0.0

    def __init__(self, stop: StopRequest, epoch: int, step: int) -> None:
        self.stop, self.at = stop, (epoch, step)

    def step(self, epoch, step, *_):
        if (epoch, step) == self.at:
            self.stop.request("test stop")


def test_device_loader_resumes_exactly(tmp_path):
    """Interrupted in epoch 2 (reading with a worker process), resumed without one: the same weights,
    bit for bit, as the uninterrupted run; random-resized crops and flips on."""
    data = jpeg_folder(tmp_path / "data", classes=2, per_class=10, seed=4)
    options = dict(arch="binarydensenet_tiny", data=str(data), epochs=2, batch_size=6, image_size=16,
                   preset="imagenet", lr=5e-3, seed=11, workers=0, loader="device")
    full = train(resolve_config(overrides=options), tmp_path / "full")
    stop = StopRequest()
    first = train(resolve_config(overrides={**options, "workers": 1}), tmp_path / "resumed",
                  reporter=StopAt(stop, epoch=2, step=1), stop=stop)
    assert first.interrupted and (first.epochs_done, first.step_in_epoch) == (1, 1)
    ckpt = load_resume(tmp_path / "resumed")
    second = train(resolve_config(base=ckpt["config"], overrides={"workers": 0}), tmp_path / "resumed", resume=ckpt)
    assert not second.interrupted and second.epochs_done == 2
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "resumed" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    timing = ("seconds", "images_per_s")
    strip = [{k: v for k, v in m.items() if k not in timing} for m in full.history]
    assert strip == [{k: v for k, v in m.items() if k not in timing} for m in second.history]
    assert a["config"]["loader"] == b["config"]["loader"] == "device"

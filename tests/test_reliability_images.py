"""Decoding work bounded by the file, the same rule for every loader: a JPEG of too many scans is
refused before decoding; an elongated image is bounded by the pixels its resize would make, not
by its aspect ratio (a 4000x60 banner predicts)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnncli.cli.app import main
from bnncli.data.loading import SampleDataset, Skipped
from bnncli.data.presets import preprocessing
from bnncli.data.transforms import train_transform
from bnncli.errors import DataError
from bnncli.images.decode import MAX_JPEG_SCANS, load_image, read_image_bytes
from bnncli.images.preprocess import preprocess_file


def _many_scans(path: Path, copies: int) -> Path:
    """A small progressive JPEG whose last scan is repeated ``copies`` times (the issue's files
    repeat scans 20,000-100,000 times; each costs a pass over the whole image)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    last = data.rindex(b"\xff\xda")
    scan = data[last:-2]  # from the last SOS to the EOI
    path.write_bytes(data[:last] + scan * copies + data[-2:])
    return path


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(tmp_path):
    hostile = _many_scans(tmp_path / "scans.jpg", MAX_JPEG_SCANS + 50)
    assert hostile.stat().st_size < 64 << 10
    for read in (load_image, lambda p: read_image_bytes(p, 1 << 20)):  # pil, and the tensor loaders' bytes
        with pytest.raises(DataError, match=f"a JPEG of more than {MAX_JPEG_SCANS} scans") as e:
            read(hostile)
        assert str(hostile) in str(e.value)
    # An everyday progressive JPEG (10 scans) still decodes.
    fine = tmp_path / "fine.jpg"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(fine, "JPEG", progressive=True)
    assert load_image(fine).size == (64, 64) and read_image_bytes(fine, 1 << 20) is not None


@pytest.mark.parametrize("loader", ["pil", "torchvision", "device"])
def test_every_training_loader_skips_a_jpeg_of_too_many_scans(tmp_path, loader):
    from bnncli.data.folder import ImageFolderDataset

    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (40 * i, 90, 20)).save(data / cls / f"{i}.jpg")
    _many_scans(data / "a" / "slow.jpg", 5 * MAX_JPEG_SCANS)
    transform = train_transform(preprocessing("small", 16))
    if loader == "pil":
        ds = SampleDataset(ImageFolderDataset(data), transform)
    else:
        pytest.importorskip("torchvision")
        from bnncli.data.tensor_loaders import train_dataset

        ds = train_dataset(loader, ImageFolderDataset(data), transform, 3)
    items = [ds[(i, 1)] for i in range(len(ds))]
    skipped = [it for it in items if isinstance(it, Skipped)]
    assert len(items) == 7 and len(skipped) == 1, skipped
    assert "slow.jpg" in skipped[0].path and "scans" in skipped[0].reason


def test_a_4000x60_banner_predicts(tmp_path, capsys, tiny_checkpoint):
    banner = tmp_path / "banner.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 4000, 3), dtype=np.uint8)).save(banner)
    assert preprocess_file(banner, preprocessing("imagenet", 224)).shape == (3, 224, 224)
    code = main(["predict", "--model", str(tiny_checkpoint), str(banner), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "banner.jpg" in captured.out

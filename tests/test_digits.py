"""benchmarks/make_digits.py: deterministic handwriting-like digits in the ImageNet layout, and a
`bnn train --flip 0` smoke run on them (issue 12: data where orientation matters)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnncli.cli.app import main as bnn_main

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _load(name: str):
    """A module of benchmarks/ (not a package), imported by path."""
    if str(BENCHMARKS) not in sys.path:  # bench_orientation imports make_digits as a sibling
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


md = _load("make_digits")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "d"
    md.write_digits(out, per_class_train=4, per_class_val=2, image_size=16, seed=7)
    return out


def test_layout_counts_and_classes(digits):
    for split, per_class in (("train", 4), ("val", 2)):
        classes = sorted(p.name for p in (digits / split).iterdir())
        assert classes == [str(d) for d in range(10)]
        for name in classes:
            files = sorted((digits / split / name).iterdir())
            assert len(files) == per_class and all(f.suffix == ".png" for f in files)
            with Image.open(files[0]) as im:
                assert im.size == (16, 16) and im.mode in ("L", "RGB")
    # image i has class i mod 10
    assert (digits / "train" / "3" / "00013.png").is_file() and (digits / "val" / "9" / "00019.png").is_file()


def test_same_seed_same_bytes_other_seed_other_images(digits, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    md.write_digits(again, 4, 2, image_size=16, seed=7)
    md.write_digits(other, 4, 2, image_size=16, seed=8)
    assert _digest(again) == _digest(digits)
    theirs = _digest(other)
    assert theirs.keys() == _digest(digits).keys()
    assert all(theirs[k] != v for k, v in _digest(digits).items())


def test_image_is_a_pure_function_of_seed_split_and_index():
    a, label = md.digit_image(3, "train", 25, 20)
    b, _ = md.digit_image(3, "train", 25, 20)
    assert label == 5 and a.tobytes() == b.tobytes()
    assert md.digit_image(3, "val", 25, 20)[0].tobytes() != a.tobytes()
    assert md.digit_image(3, "train", 35, 20)[0].tobytes() != a.tobytes()  # another 5
    # ink on a dark background, not a blank image; mirrored digits are not the same picture
    pixels = np.asarray(a, dtype=np.float64)
    assert pixels.max() - np.median(pixels) > 80
    assert not np.array_equal(pixels, pixels[:, ::-1])


def test_cli_refuses_a_non_empty_output_folder(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "make_digits.py"), str(out), "--train-per-class", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "not empty" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written


def test_cli_writes_a_new_folder(tmp_path, capsys):
    out = tmp_path / "new"
    assert md.main([str(out), "--train-per-class", "1", "--val-per-class", "1", "--size", "12", "--seed", "1"]) == 0
    assert len(list((out / "train").rglob("*.png"))) == 10 and len(list((out / "val").rglob("*.png"))) == 10
    assert "10 train / 10 val" in capsys.readouterr().out
    assert md.main([str(out)]) == 2  # now it is not empty


def test_bnn_train_with_flip_zero_records_it(digits, tmp_path, capsys):
    out = tmp_path / "run"
    assert bnn_main(["train", "--arch", "binarydensenet_tiny", "--data", str(digits), "--epochs", "1",
                     "--batch-size", "8", "--image-size", "16", "--workers", "0", "--threads", "1", "--flip", "0",
                     "--log-every", "0", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["flip"] == 0.0
    assert config["class_names"] == [str(d) for d in range(10)]
    assert summary["last"]["images"] == 40 and summary["last"]["val_images"] == 20


def test_the_benchmarks_pixel_gauge_reads_the_folder(digits):
    bench = _load("bench_orientation")
    gauge = bench.pixel_gauge(digits, side=16)
    assert 0.0 <= gauge["top1"] <= 1.0 and 0.0 <= gauge["top1_flipped_train"] <= 1.0
    assert {c["class"] for c in gauge["mirrored_val_read_as"]} <= {str(d) for d in range(10)}

"""Hostile inputs in data folders, image files and names: nothing hangs, no image exhausts memory,
user text never reaches the terminal as markup or escapes, and eval reports stay valid JSON.

Each test reproduces a failure of issue 14 (items 5, 6, 9, 14, 15, 16, 17). Tests that hung
before run the CLI in a subprocess with a timeout, or in a thread that is joined with one.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_batchnorm, write_checkpoint
from PIL import Image

from bnncli.artifacts.checkpoint import model_checkpoint, save_checkpoint
from bnncli.cli.app import main
from bnncli.data.builtin import draw_shape
from bnncli.data.folder import ImageFolderDataset
from bnncli.data.loading import SampleDataset, Skipped, available_cpus, make_loader, open_train_data
from bnncli.data.presets import preprocessing
from bnncli.data.transforms import eval_transform, train_transform
from bnncli.errors import DataError
from bnncli.images.decode import DRAFT_PIXELS, MAX_PIXELS, load_image

REPO = Path(__file__).resolve().parents[1]
SHAPES = ("circle", "cross", "ring")


def make_folder(root: Path, classes=("a", "b"), per_class: int = 3, size: int = 16) -> Path:
    """``root/<class>/<i>.png``: small drawn shapes, one shape per class."""
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_shape(SHAPES[c % 3], size, np.random.default_rng((c, i))).save(folder / f"{i}.png")
    return root


def bnn(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bnn_subprocess(*args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "bnncli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def within(seconds: float, fn, *args):
    """``fn(*args)`` in a thread; fails the test if it has not returned after ``seconds``."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} still running after {seconds} s (hangs)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def release_fifo(path: Path) -> None:
    """Unblock a reader stuck on the FIFO ``path`` (so a failing test does not leave it hanging)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.fixture(scope="module")
def packed_model(tmp_path_factory) -> Path:
    from bnncli.deploy.pack import pack_model

    root = tmp_path_factory.mktemp("reliability")
    ckpt = write_checkpoint(root / "m.pt", class_names=("a", "b"), image_size=16)
    return pack_model(ckpt, root / "m.bnn", samples=1).path


# --- 5. FIFOs, sockets and devices are never opened ------------------------------------------------------


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


@needs_fifo
def test_a_fifo_socket_or_device_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.png"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    (tmp_path / "null.png").symlink_to(os.devnull)
    try:
        for path, kind in ((fifo, "FIFO"), (sock_path, "socket"), (tmp_path / "null.png", "character device")):
            with pytest.raises(DataError, match=kind) as e:
                within(10, load_image, path)
            assert str(path) in str(e.value)
    finally:
        release_fifo(fifo)
        sock.close()


@needs_fifo
def test_eval_skips_a_fifo_in_the_data_folder(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    fifo = data / "a" / "zz.png"
    os.mkfifo(fifo)
    ckpt = write_checkpoint(tmp_path / "m.pt", class_names=("a", "b"), image_size=16)
    try:
        code, out, err = within(60, bnn, capsys, "eval", ckpt, "--data", data, "--json")
    finally:
        release_fifo(fifo)
    assert code == 0, err
    result = json.loads(out)
    assert result["images"] == 6 and result["skipped"] == 1
    assert "zz.png" in err and "FIFO" in err


@needs_fifo
def test_predict_does_not_block_on_dev_stdin(packed_model):
    # stdin is a pipe nobody writes to: reading it would block forever.
    res = bnn_subprocess("predict", "--model", packed_model, "/dev/stdin", timeout=60, stdin=subprocess.PIPE)
    assert res.returncode == 1
    assert "/dev/stdin" in res.stderr and "not an image file" in res.stderr and "Traceback" not in res.stderr


# --- 6. symlinks cannot make a scan loop, multiply or leave the data ------------------------------------


def _count_in_subprocess(root: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from bnncli.data.folder import ImageFolderDataset; "
            "from bnncli.errors import DataError\n"
            "try:\n    print(len(ImageFolderDataset(sys.argv[1])))\n"
            "except DataError as e:\n    print('DataError:', e)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60,
                          env=env)


def test_links_to_parents_and_to_the_root_below_a_class_folder_are_not_followed(tmp_path):
    data = make_folder(tmp_path / "data", per_class=3)
    (data / "a" / "up").symlink_to("..")
    (data / "a" / "up2").symlink_to("../..")
    (data / "b" / "root").symlink_to("/")
    res = _count_in_subprocess(data)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "6"  # the real images, once each


def test_class_folders_and_image_files_may_be_links(tmp_path):
    elsewhere = make_folder(tmp_path / "elsewhere", classes=("x",), per_class=2)
    data = make_folder(tmp_path / "data", classes=("a",), per_class=2)
    (data / "b").symlink_to(elsewhere / "x")  # a class folder linked from elsewhere
    (data / "a" / "linked.png").symlink_to(elsewhere / "x" / "0.png")  # an image file linked
    ds = ImageFolderDataset(data)
    assert ds.classes == ["a", "b"] and len(ds) == 5
    assert ds.load(len(ds) - 1)[0].size == (16, 16)


@pytest.mark.parametrize("target", ["..", ".", "/"])
def test_a_class_folder_leading_back_above_the_data_is_refused(tmp_path, target):
    data = make_folder(tmp_path / "data")
    (data / "loop").symlink_to(target)
    res = _count_in_subprocess(data)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("DataError:") and "loop" in res.stdout and "holds the data folder" in res.stdout


# --- 9. images too large or elongated are refused from the header -------------------------------------


def _wide_png(path: Path) -> Path:
    """The 1,048-byte 1000000x1 PNG of the issue: within Pillow's bomb limit, billions of pixels once resized."""
    Image.new("L", (1_000_000, 1)).save(path)
    assert path.stat().st_size < 2000
    return path


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header claims ``width`` x ``height`` pixels (nothing behind it)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 4  # signature, chunk length
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def test_an_elongated_image_is_refused_by_the_pixels_its_resize_would_make(tmp_path):
    wide = _wide_png(tmp_path / "wide.png")
    assert load_image(wide).size == (1_000_000, 1)  # a million pixels decode fine
    from bnncli.images.preprocess import preprocess_file

    with pytest.raises(DataError, match="would be resized to") as e:  # bnn predict's path
        preprocess_file(wide, preprocessing("imagenet", 224))
    assert "1000000x1 image" in str(e.value)


def test_an_image_claiming_too_many_pixels_is_refused_from_its_header(tmp_path):
    big = _png_claiming(tmp_path / "big.png", 9000, 9000)  # 81 MP: under Pillow's bomb limit
    assert 9000 * 9000 > MAX_PIXELS
    with pytest.raises(DataError, match="9000x9000 pixels is more than"):
        load_image(big)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (5000, 4000), (200, 30, 60)).save(path, quality=80)
    assert 5000 * 4000 > DRAFT_PIXELS
    img = load_image(path)
    assert img.size == (2500, 2000) and img.mode == "RGB"
    assert np.abs(np.asarray(img)[1000, 1000].astype(int) - (200, 30, 60)).max() < 8
    small = tmp_path / "small.jpg"
    Image.new("RGB", (400, 300), (200, 30, 60)).save(small)
    assert load_image(small).size == (400, 300)  # everyday photos are decoded as they are


def test_training_skips_an_absurd_image_instead_of_aborting(tmp_path):
    data = make_folder(tmp_path / "data")
    _wide_png(data / "a" / "wide.png")
    ds = SampleDataset(ImageFolderDataset(data), train_transform(preprocessing("small", 16)))
    items = [ds[(i, 1)] for i in range(len(ds))]
    skipped = [it for it in items if isinstance(it, Skipped)]
    assert len(items) == 7 and [s.path for s in skipped] == [str(data / "a" / "wide.png")]
    assert "would be resized to" in skipped[0].reason


# --- 14. user text is shown literally ---------------------------------------------------------------------


HOSTILE = ("[bold]b", "esc\x1b[2Jx", "ok")


def test_a_file_named_like_markup_does_not_kill_training(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=("a", "[bold]b"))
    (data / "a" / "[").mkdir()
    (data / "a" / "[" / "oops].jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # its path holds "[/oops]"
    code, out, err = bnn(capsys, "train", "-a", "binarydensenet_tiny", "-d", data, "--image-size", "16",
                         "--batch-size", "4", "--epochs", "1", "--workers", "0", "-o", tmp_path / "run")
    assert code == 0, err
    assert "[/oops].jpg" in err and "(skipped)" in err and "internal error" not in err


def test_class_and_file_names_reach_the_terminal_literally(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "m.pt", class_names=HOSTILE, image_size=16)
    data = make_folder(tmp_path / "data", classes=HOSTILE, per_class=2)
    (data / "ok" / "\x1b[2J[red]bad.jpg").write_bytes(b"not an image")
    code, out, err = bnn(capsys, "eval", ckpt, "--data", data)
    assert code == 0, err
    assert "[bold]b" in out and "esc\\x1b[2Jx" in out
    assert "\x1b" not in out + err and "\\x1b[2J[red]bad.jpg" in err
    code, out, _ = bnn(capsys, "eval", ckpt, "--data", data, "--json")
    assert set(json.loads(out)["per_class"]) == set(HOSTILE)  # JSON keeps the real names

    code, out, err = bnn(capsys, "predict", "--model", ckpt, data / "ok" / "0.png", data / "ok" / "\x1b[2J[red]bad.jpg")
    assert code == 1
    assert "[bold]b" in out and "esc\\x1b[2Jx" in out and "\x1b" not in out + err
    assert "\\x1b[2J[red]bad.jpg" in err


def test_printable_escapes_control_characters_and_keeps_text():
    from bnncli.cli.common import printable

    assert printable("a\x1b[2Jb\nc\u202ed\x9b") == "a\\x1b[2Jb\\nc\\u202ed\\x9b"
    assert printable("[bold]café 中文 ok.jpg") == "[bold]café 中文 ok.jpg"


# --- 15. no training on nothing ---------------------------------------------------------------------------


def test_training_on_zero_readable_images_is_an_error(tmp_path, capsys):
    data = tmp_path / "data"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        (data / name / "x.jpg").write_bytes(b"\xff\xd8\xff truncated")
    run = tmp_path / "run"
    code, _, err = bnn(capsys, "train", "-a", "binarydensenet_tiny", "-d", data, "--image-size", "16",
                       "--epochs", "1", "--workers", "0", "-o", run)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no readable images in" in lines[0] and "all 2 image files" in lines[0]
    assert not (run / "best.pt").exists()


def test_open_train_data_checks_both_splits(tmp_path):
    make_folder(tmp_path / "train")
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a" / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="no readable images in .*val"):
        open_train_data(str(tmp_path))


def test_a_recipe_with_channels_images_cannot_have_is_an_error(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    recipe = tmp_path / "r.toml"
    recipe.write_text('arch = "binarydensenet_tiny"\nepochs = 1\n\n[model]\nin_channels = 5\n')
    run = tmp_path / "run"
    code, _, err = bnn(capsys, "train", "--recipe", recipe, "-d", data, "--image-size", "16", "--workers", "0",
                       "-o", run)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "5 input channels" in lines[0]
    assert not (run / "best.pt").exists()


# --- 16. eval never emits NaN and non-finite models fail the gate -----------------------------------------


def _nonfinite_checkpoint(path: Path, value: float) -> Path:
    from bnncli import create_model

    torch.manual_seed(0)
    model = create_model("binarydensenet_tiny", num_classes=3)
    randomize_batchnorm(model)
    with torch.no_grad():
        next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).bias.fill_(value)
    return save_checkpoint(path, model_checkpoint(model.eval(), ["a", "b", "c"], preprocessing("small", 16)))


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_eval_of_a_nonfinite_model_is_valid_json_and_fails_the_gate(tmp_path, capsys, value):
    ckpt = _nonfinite_checkpoint(tmp_path / "m.pt", value)
    data = make_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=2)
    code, out, err = bnn(capsys, "eval", ckpt, "--data", data, "--json", "--min-top1", "0")
    assert code == 1
    result = _strict_json(out)
    assert result["loss"] is None and result["top1"] == 0.0
    assert result["nonfinite_logits"] == 6 and result["nonfinite_weights"] == 1
    assert "--min-top1 0 fails: the model is not finite" in err.strip().splitlines()[-1]


def test_print_json_turns_nonfinite_floats_into_null(capsys):
    from bnncli.cli.common import print_json

    print_json({"a": float("nan"), "b": [1.5, float("-inf")], "c": (float("inf"),), "d": "NaN"})
    assert _strict_json(capsys.readouterr().out) == {"a": None, "b": [1.5, None], "c": [None], "d": "NaN"}


# --- 17. batches of 0, runtime errors naming the file, --workers capped ------------------------------------


def test_a_batch_of_zero_images_gives_zero_rows(packed_model):
    from bnncli.engine.evaluate import load_eval_model

    for path in (packed_model, packed_model.with_suffix(".pt")):
        logits = load_eval_model(path).predict(torch.zeros(0, 3, 16, 16))
        assert tuple(logits.shape) == (0, 2)


@pytest.mark.parametrize("raised", [DataError("input has 1 channels; the model takes 3"),
                                    ValueError("cannot reshape array of size 0 into shape (0,newaxis)")])
def test_a_runtime_error_names_the_model_file(packed_model, tmp_path, capsys, monkeypatch, raised):
    from bnncli.artifacts.open import PackedPredictor

    def fail(self, x):
        raise raised

    monkeypatch.setattr(PackedPredictor, "__call__", fail)
    image = make_folder(tmp_path / "data", classes=("a",), per_class=1) / "a" / "0.png"
    code, _, err = bnn(capsys, "predict", "--model", packed_model, image)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bnn: error: {packed_model}: ") and "internal" not in err
    code, _, err = bnn(capsys, "eval", packed_model, "--data", image.parent.parent)
    assert code == 2 and f"bnn: error: {packed_model}: " in err and "internal" not in err


def test_workers_above_the_cpu_count_are_capped_with_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=1)
    ckpt = write_checkpoint(tmp_path / "m.pt", class_names=("a", "b"), image_size=16)
    cpus = available_cpus()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = bnn(capsys, "eval", ckpt, "--data", data, "--workers", cpus + 5, "--json")
    assert code == 0, err
    assert [w for w in caught if "worker" in str(w.message)] == []
    assert err.count(f"--workers {cpus + 5} is more than the {cpus} CPUs") == 1
    loader = make_loader(SampleDataset(ImageFolderDataset(data), eval_transform(preprocessing("small", 16))),
                         None, 2, cpus + 5)
    assert loader.num_workers == cpus


def test_an_elongated_image_meeting_a_large_resize_is_refused_not_allocated():
    """32:1 at a model file's resize of 4096 would become 131072x4096 (1.6 GB)."""
    from PIL import Image

    from bnncli.data.presets import preprocessing
    from bnncli.data.transforms import eval_transform
    from bnncli.errors import DataError
    from bnncli.images.preprocess import preprocess_image

    pre = {**preprocessing("imagenet", 224), "resize": 4096}
    image = Image.new("RGB", (3200, 100))
    with pytest.raises(DataError, match="would be resized to 131072x4096"):
        preprocess_image(image, pre)
    with pytest.raises(DataError, match="would be resized"):
        eval_transform(pre)(image)
    assert preprocess_image(Image.new("RGB", (3200, 100)), preprocessing("imagenet", 224)).shape == (3, 224, 224)

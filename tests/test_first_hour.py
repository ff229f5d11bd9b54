"""What a new user meets in the first hour (issue 11): progress in log files, honest words and
numbers, the wrong model file, shareable files, `bnn predict DIR`, a held-out split of a single
folder, and help that reads at 80 columns."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FOLDER_CLASSES, write_checkpoint
from PIL import Image

from bnncli.cli.app import main
from bnncli.errors import ArtifactError, DataError


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One 3-class network (the image_folder classes, 24 px) as checkpoint, ONNX and packed file."""
    from bnncli.deploy.export import export_onnx
    from bnncli.deploy.pack import pack_model

    root = tmp_path_factory.mktemp("first_hour")
    ckpt = write_checkpoint(root / "model.pt", "binarydensenet_tiny", class_names=FOLDER_CLASSES, image_size=24)
    export_onnx(ckpt, root / "model.onnx", samples=1)
    pack_model(ckpt, root / "model.bnn", samples=1)
    return {"checkpoint": ckpt, "onnx": root / "model.onnx", "packed": root / "model.bnn"}


TRAIN_FAST = ("-a", "binarydensenet_tiny", "--epochs", "1", "-b", "8", "--image-size", "16")


# ---- 2. progress a log file can show ------------------------------------------------------------------------


def test_train_prints_plain_progress_lines_during_an_epoch_to_a_log(tmp_path, capsys):
    code, _, err = bnn(capsys, "train", *TRAIN_FAST, "-d", "builtin:shapes-mini", "--log-every", "0.001",
                       "--out", tmp_path / "run")
    assert code == 0, err
    steps = [int(m.group(1)) for m in re.finditer(r"^epoch 1/1  step (\d+)/15  loss \S+  acc \S+  \S+ img/s  "
                                                  r"lr \S+  ETA epoch \S+, run \S+$", err, re.M)]
    assert steps and all(s < 15 for s in steps)  # during the epoch, not only at its end
    assert re.search(r"^epoch 1/1  train loss .* best$", err, re.M)
    assert "\x1b" not in err and "\r" not in err  # plain text, no bars


def test_log_lines_are_the_default_off_a_terminal_and_configurable(monkeypatch, capsys):
    from bnncli.cli.progress import LOG_EVERY_DEFAULT, LineReporter, RichReporter, _parse_log_every, make_reporter

    monkeypatch.delenv("BNN_LOG_EVERY", raising=False)
    reporter = make_reporter(_parse_log_every(None))  # pytest's stderr is not a terminal
    assert isinstance(reporter, LineReporter) and reporter.interval == LOG_EVERY_DEFAULT
    assert make_reporter(_parse_log_every(2.5)).interval == 2.5
    assert make_reporter(_parse_log_every(0.0)).interval == float("inf")  # 0: epoch lines only
    # $BNN_LOG_EVERY is read by Typer (envvar=), shown in --help and named in its errors
    assert main(["train", "--help"]) == 0
    assert "BNN_LOG_EVERY" in capsys.readouterr().out
    monkeypatch.setenv("BNN_LOG_EVERY", "soon")
    assert main(["train", "--arch", "resnete_tiny", "--data", "builtin:shapes-mini"]) == 2
    assert "BNN_LOG_EVERY" in capsys.readouterr().err
    monkeypatch.setenv("BNN_LOG_EVERY", "-1")
    assert main(["eval", "nothing.pt", "--data", "builtin:shapes-mini"]) == 2
    err = capsys.readouterr().err
    assert "--log-every (from $BNN_LOG_EVERY) must be a number of seconds >= 0" in err
    monkeypatch.delenv("BNN_LOG_EVERY")
    assert main(["eval", "nothing.pt", "--data", "builtin:shapes-mini", "--log-every", "-1"]) == 2
    assert "--log-every must be" in capsys.readouterr().err  # given on the command line: no env var named
    assert main(["predict", "x.png", "--model", "nothing.bnn", "--backend", "gpu"]) == 2
    assert "unknown runtime backend 'gpu'; choose" in capsys.readouterr().err
    monkeypatch.setenv("BNN_BACKEND", "cuda")
    assert main(["predict", "x.png", "--model", "nothing.bnn"]) == 2
    err = capsys.readouterr().err
    assert "unknown runtime backend 'cuda' (from $BNN_BACKEND)" in err

    import bnncli.cli.progress as progress

    monkeypatch.setattr(progress, "err", SimpleNamespace(is_terminal=True))
    assert isinstance(make_reporter(None), RichReporter)  # bars on a terminal, unless asked
    assert isinstance(make_reporter(5.0), LineReporter)


def test_eval_prints_progress_lines_to_a_log(models, image_folder, capsys):
    code, _, err = bnn(capsys, "eval", models["checkpoint"], "-d", image_folder / "val", "-b", "2",
                       "--log-every", "1e-9")
    assert code == 0, err
    done = [int(m.group(1)) for m in re.finditer(r"^eval  (\d+)/12 images  \S+ img/s  ETA \S+$", err, re.M)]
    assert done and all(n < 12 for n in done) and done == sorted(done)


# ---- 3. correct words and numbers ---------------------------------------------------------------------------


def test_pack_names_bytes_as_bytes_and_weights_as_weights(models, tmp_path, capsys):
    code, out, _ = bnn(capsys, "pack", models["checkpoint"], "-o", tmp_path / "a.bnn", "--json", "--samples", "1")
    report = json.loads(out)
    assert code == 0 and "sizes" not in report
    sizes, binary = report["bytes_by_kind"], report["binary_params"]
    assert sum(v for k, v in sizes.items() if k != "total") == sizes["total"] == report["bytes"]
    assert binary / 8 <= sizes["binary_weights"] < binary  # 1 bit each, rows padded to 32-bit words
    code, out, _ = bnn(capsys, "pack", models["checkpoint"], "-o", tmp_path / "b.bnn", "--samples", "1")
    assert (f"{binary:,} binary weights at 1 bit in {sizes['binary_weights']:,} bytes, "
            f"{report['float_params']:,} float weights ({report['float_dtype']}) in {sizes['float_weights']:,} bytes, "
            f"{sizes['per_channel']:,} bytes of per-channel float32 vectors") in out


def test_top5_is_not_reported_for_five_classes_or_fewer(models, image_folder, capsys):
    from bnncli.engine.evaluate import evaluate

    logits = torch.tensor([[3.0, 1, 2, 0, -1], [0.0, 1, 2, 3, 4]])
    res = evaluate(lambda x: x, [(logits, torch.tensor([0, 1]), [])], list("abcde"))
    assert res["top1"] == 0.5 and res["top5"] is None
    res = evaluate(lambda x: x, [(torch.cat([logits, torch.zeros(2, 1)], 1), torch.tensor([0, 1]), [])],
                   list("abcdef"))
    assert res["top5"] == 1.0
    code, out, err = bnn(capsys, "eval", models["checkpoint"], "-d", image_folder / "val", "--json")
    result = json.loads(out)
    assert code == 0 and result["top5"] is None
    assert "anchors" not in result and "published" not in result  # no ImageNet numbers to compare a 3-class model with
    code, out, err = bnn(capsys, "eval", models["checkpoint"], "-d", image_folder / "val")
    assert code == 0 and "top-1" in out and "top-5" not in out


def test_epoch_lines_leave_out_top5_when_it_is_not_measured():
    from bnncli.cli.progress import _epoch_line

    m = {"epoch": 1, "train_loss": 1.0, "train_top1": 0.5, "val_loss": 1.1, "val_top1": 0.4, "val_top5": None,
         "images_per_s": 100.0, "seconds": 2.0, "skipped": 0}
    assert "top-5" not in _epoch_line(m, 3, True) and "top-1 40.00%" in _epoch_line(m, 3, True)
    assert "top-5 90.00%" in _epoch_line({**m, "val_top5": 0.9}, 3, False)


# ---- 4. model files given to the wrong command --------------------------------------------------------------


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "weights_only" not in err and "torch.load" not in err and "Traceback" not in err
    return lines[0]


def test_export_and_pack_say_what_the_file_is_and_what_they_need(models, tmp_path, capsys):
    needs = "needs a checkpoint (.pt) from bnn train or bnn import"
    code, _, err = bnn(capsys, "export", models["packed"], "-o", tmp_path / "x.onnx")
    assert code == 2 and _one_line(err) == f"bnn: error: {models['packed']} is a packed bnncli model (bnn pack); " \
                                           f"bnn export {needs}"
    code, _, err = bnn(capsys, "pack", models["onnx"], "-o", tmp_path / "x.bnn")
    assert code == 2 and _one_line(err) == f"bnn: error: {models['onnx']} is an ONNX model; bnn pack {needs}"
    (tmp_path / "notes.pt").write_text("my notes\n")
    code, _, err = bnn(capsys, "export", tmp_path / "notes.pt", "-o", tmp_path / "x.onnx")
    assert code == 2 and "notes.pt is a text file; bnn export needs a checkpoint" in _one_line(err)
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.bnn").exists()


def test_broken_checkpoints_are_described_in_bnncli_words(models, tmp_path, image_folder, capsys):
    data = models["checkpoint"].read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"when": __import__("datetime").date(2020, 1, 1)}, tmp_path / "objects.pt")
    image = next((image_folder / "val" / "ring").iterdir())
    expect = {"cut.pt": "is a truncated or damaged checkpoint (its zip archive is incomplete)",
              "empty.pt": "is empty (0 bytes)",
              "objects.pt": "is not a bnncli checkpoint: it holds Python objects other than tensors"}
    for name, words in expect.items():
        for args in (("eval", tmp_path / name, "-d", image_folder / "val"), ("predict", "-m", tmp_path / name, image),
                     ("export", tmp_path / name, "-o", tmp_path / "x.onnx")):
            code, _, err = bnn(capsys, *args)
            assert code == 2 and f"{tmp_path / name} {words}" in _one_line(err), (args, err)


def test_library_error_text_is_cut_between_sentences():
    from bnncli.artifacts.identify import reason

    long = "First sentence is here. " + "Second one is far too long to keep " * 10 + "in full."
    assert reason(RuntimeError(long)) == "First sentence is here."
    assert reason(ValueError("word " * 100), limit=40).endswith("word ...")
    assert reason(RuntimeError("\x1b[1mbold\x1b[0m text\nsecond line")) == "bold text"
    assert reason(RuntimeError("")) == "RuntimeError"


def test_load_checkpoint_refuses_other_model_files_by_kind(models):
    from bnncli.artifacts.checkpoint import load_checkpoint

    with pytest.raises(ArtifactError, match=r"is a packed bnncli model \(bnn pack\), not a checkpoint"):
        load_checkpoint(models["packed"])
    with pytest.raises(ArtifactError, match="is an ONNX model, not a checkpoint"):
        load_checkpoint(models["onnx"])


# ---- 5. files people can share ------------------------------------------------------------------------------


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_get_the_permissions_of_the_umask(tmp_path, umask, capsys, models):
    from bnncli.fileio import write_bytes

    umask(0o022)
    ckpt = write_checkpoint(tmp_path / "m.pt")
    assert _mode(ckpt) == 0o644
    code, _, err = bnn(capsys, "pack", ckpt, "-o", tmp_path / "m.bnn", "--samples", "1")
    assert code == 0, err
    assert _mode(tmp_path / "m.bnn") == 0o644
    umask(0o077)
    assert _mode(write_bytes(tmp_path / "private.bin", b"x")) == 0o600
    umask(0o002)
    os.chmod(ckpt, 0o640)  # a replaced file keeps its own permissions
    write_bytes(ckpt, b"y")
    assert _mode(ckpt) == 0o640 and not list(tmp_path.glob(".*.tmp"))


# ---- 6. bnn predict DIR ---------------------------------------------------------------------------------


def test_predict_a_folder_recursively_in_sorted_order(models, image_folder, tmp_path, capsys):
    shutil.copytree(image_folder / "val", tmp_path / "photos")
    (tmp_path / "photos" / "list.txt").write_text("not an image\n")
    (tmp_path / "empty").mkdir()
    code, out, err = bnn(capsys, "predict", "-m", models["packed"], tmp_path / "photos", tmp_path / "empty", "--json")
    results = json.loads(out)
    expected = sorted(str(p) for p in (image_folder / "val").rglob("*") if p.is_file())
    predicted = [r["path"] for r in results if "top_k" in r]
    assert [os.path.relpath(p, tmp_path / "photos") for p in predicted] == \
        [os.path.relpath(p, image_folder / "val") for p in expected]
    assert results[-1] == {"path": str(tmp_path / "empty"), "error": f"no image files under {tmp_path / 'empty'}"}
    assert code == 1 and f"bnn: error: no image files under {tmp_path / 'empty'}" in err


def test_predict_says_when_nothing_could_be_read(models, tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    code, out, err = bnn(capsys, "predict", "-m", models["packed"], tmp_path / "a.jpg", tmp_path / "nope.png")
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1] == "nothing to predict: none of the 2 input(s) could be read"


def test_predict_warns_about_images_far_from_the_model_input_size(models, tmp_path, capsys):
    from bnncli.cli.predict import size_warning

    assert size_warning((24, 30), 24) == "" and size_warning((300, 384), 24) == ""
    assert "less than half" in size_warning((11, 40), 24) and "over 16x" in size_warning((400, 390), 24)
    Image.new("RGB", (8, 10), "red").save(tmp_path / "tiny.png")
    Image.new("RGB", (600, 500), "red").save(tmp_path / "huge.png")
    code, _, err = bnn(capsys, "predict", "-m", models["checkpoint"], tmp_path / "tiny.png", tmp_path / "huge.png")
    assert code == 0
    assert f"warning: {tmp_path / 'tiny.png'} is 8x10 px, less than half the 24 px" in err
    assert f"warning: {tmp_path / 'huge.png'} is 600x500 px, over 16x the 24 px" in err


# ---- 7. a single folder of classes gets a held-out validation split ---------------------------------------


def test_a_single_folder_gets_a_seeded_stratified_held_out_split(image_folder):
    from bnncli.data.loading import held_out_count, open_train_data

    data = open_train_data(str(image_folder / "train"), seed=0)
    assert data.held_out == 0.1
    train, val = data.train, data.val
    paths = [train.describe(i) for i in range(len(train))]
    held = [val.describe(i) for i in range(len(val))]
    assert not set(paths) & set(held) and len(paths) + len(held) == 31  # 10 + 11 (broken.jpg) + 10
    assert sorted(val.targets) == [0, 1, 2]  # one image of each class
    again = open_train_data(str(image_folder / "train"), seed=0).val
    assert [again.describe(i) for i in range(len(again))] == held
    others = {tuple(open_train_data(str(image_folder / "train"), seed=s).val.describe(i) for i in range(3))
              for s in range(1, 6)}
    assert len(others | {tuple(held)}) > 1  # the seed chooses the images
    assert open_train_data(str(image_folder / "train"), val_split=0).val is None
    assert [held_out_count(n, 0.1) for n in (1, 2, 10, 14, 15, 100)] == [0, 1, 1, 1, 2, 10]
    assert [held_out_count(n, 0.9) for n in (2, 10)] == [1, 9]
    root = open_train_data(str(image_folder))  # a root with its own val split keeps it
    assert root.held_out is None and len(root.val) == 12
    with pytest.raises(DataError, match="has its own val split"):
        open_train_data("builtin:shapes-mini", val_split=0.2)
    assert open_train_data("builtin:shapes-mini", val_split=0).held_out is None


def test_training_on_a_single_folder_validates_on_what_it_held_out(image_folder, tmp_path, capsys):
    from bnncli.artifacts.checkpoint import load_checkpoint

    run = tmp_path / "run"
    folder = image_folder / "train"
    code, _, err = bnn(capsys, "train", *TRAIN_FAST, "-d", folder, "--out", run, "--log-every", "0")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["config"]["val_split"] == 0.1
    best = load_checkpoint(run / "best.pt")
    assert best["config"]["val_split"] == 0.1 and best["best"]["metric"] == "val_top1"
    assert best["metrics"]["val_images"] == 3
    done = err.strip().splitlines()[-1]
    assert done.startswith(f"done: {run} (best val_top1 ") and f"on the images of {folder} held out" in done
    assert f"--data {folder}" not in done and f"bnn eval {run} --data DIR" in done
    assert "val images (held out by seed: 3 of " in err
    # A run from before --val-split held nothing out, and keeps doing so when resumed.
    from bnncli.artifacts.checkpoint import save_checkpoint

    last = load_checkpoint(run / "last.pt")
    del last["config"]["val_split"]
    save_checkpoint(run / "last.pt", last)
    code, _, err = bnn(capsys, "train", "--resume", run, "--epochs", "2", "--log-every", "0")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["config"]["val_split"] == 0.0
    assert "val_top1" not in load_checkpoint(run / "last.pt")["metrics"]
    code, _, err = bnn(capsys, "train", *TRAIN_FAST, "-d", "builtin:shapes-mini", "--val-split", "0.2",
                       "--out", tmp_path / "r2")
    assert code == 2 and "has its own val split" in _one_line(err)
    code, _, err = bnn(capsys, "train", *TRAIN_FAST, "-d", folder, "--val-split", "1.5", "--out", tmp_path / "r3")
    assert code == 2 and "val split must be in [0, 0.9]" in _one_line(err)


# ---- 8. readable at 80 columns --------------------------------------------------------------------------


COMMANDS = ([], ["train"], ["eval"], ["export"], ["pack"], ["predict"], ["models"], ["import"], ["import", "larq"])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "bnn")
def test_help_reads_at_80_columns_without_type_noise(command, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = bnn(capsys, *command, "--help")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    for noise in ("<int", "<float", "<str>", "<path>", "list[", "{"):
        assert noise not in out, (noise, out)
    if "Commands:" in out:  # each command's summary whole, not cut with "..."
        assert not re.search(r"\.\.\.$", out.split("Commands:")[1], re.M), out


def test_every_option_says_what_it_does():
    import typer.main

    from bnncli.cli.app import app

    def commands(group):
        for name, cmd in group.commands.items():
            yield from commands(cmd) if hasattr(cmd, "commands") else [(name, cmd)]

    for name, cmd in commands(typer.main.get_command(app)):
        for param in cmd.params:
            if param.param_type_name == "option":
                assert param.help and not param.help.startswith("["), (name, param.opts)
                assert param.is_flag or param.metavar, (name, param.opts)


def test_builtin_datasets_are_listed_where_data_is_asked_for(capsys):
    for command in ("train", "eval"):
        code, out, _ = bnn(capsys, command, "--help")
        assert code == 0 and "builtin:shapes-mini" in " ".join(out.split()), command


def test_models_fits_80_columns_and_wide_shows_exact_counts(capsys):
    code, out, _ = bnn(capsys, "models")
    assert code == 0 and max(len(line.rstrip()) for line in out.splitlines()) <= 80
    assert re.search(r"^binarydensenet28 +5\.13M +4\.2M +3\.59G +202M +4\.04 MiB +60\.91%$", out, re.M)
    code, out, _ = bnn(capsys, "models", "--wide")
    assert code == 0 and "5,131,496" in out and "3,587,383,296" in out


def test_shell_completion_is_offered(capsys):
    assert main(["--help"]) == 0
    assert "--install-completion" in capsys.readouterr().out


def test_the_cli_renders_library_log_warnings(capsys):
    import logging

    from bnncli.cli.common import render_library_logs

    render_library_logs()
    render_library_logs()  # once per process, however often it is called
    logging.getLogger("bnncli.engine").warning("%s is odd", "[bold]x\x1b.png")
    logging.getLogger("bnncli.engine").info("not shown")
    assert capsys.readouterr().err == "warning: [bold]x\\x1b.png is odd\n"

"""`bnn train`: the loop, exact resume, checkpoints, recipes, Ctrl-C, and errors as users see them."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FOLDER_CLASSES
from PIL import Image

from bnncli.artifacts.checkpoint import FORMAT_VERSION, build_model, load_checkpoint, save_checkpoint
from bnncli.cli.app import main
from bnncli.engine.config import TrainConfig, load_recipe, resolve_config
from bnncli.engine.optim import lr_factor
from bnncli.engine.progress import Reporter
from bnncli.engine.resume import load_resume
from bnncli.engine.stopping import StopRequest
from bnncli.engine.train import train
from bnncli.errors import UsageError
from bnncli.models import create_model, list_models

REPO = Path(__file__).resolve().parents[1]
PIPELINES = sorted((REPO / "pipelines").glob("*.toml"))
TIMING_KEYS = ("seconds", "images_per_s")


def tiny_config(data: Path, **kw) -> TrainConfig:
    options = dict(arch="binarydensenet_tiny", data=str(data), epochs=3, batch_size=8, image_size=16, lr=5e-3,
                   seed=7, workers=0)
    return resolve_config(overrides={**options, **kw})


class StopAt(Reporter):
    """Asks for a stop after a given step, as Ctrl-C would."""

    interval = 0.0  # see every step

    def __init__(self, stop: StopRequest, epoch: int, step: int) -> None:
        self.stop, self.at = stop, (epoch, step)
        self.warnings: list[str] = []

    def step(self, epoch, step, *_):
        if (epoch, step) == self.at:
            self.stop.request("test stop")

    def warning(self, text):
        self.warnings.append(text)


def without_timing(history):
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in history]


@pytest.fixture(scope="module")
def full_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    result = train(tiny_config(image_folder), out)
    return out, result


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(image_folder, full_run, tmp_path):
    full_dir, full = full_run
    out = tmp_path / "resumed"
    stop = StopRequest()
    # Interrupt in the middle of epoch 2, loading with a worker process; resume without one.
    reporter = StopAt(stop, epoch=2, step=2)
    first = train(tiny_config(image_folder, workers=1), out, reporter=reporter, stop=stop)
    assert first.interrupted and (first.epochs_done, first.step_in_epoch) == (1, 2)
    assert any("broken.jpg" in w for w in reporter.warnings)
    saved = load_checkpoint(out / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"], saved["finished"]) == (1, 2, False)

    ckpt = load_resume(out)
    second = train(resolve_config(base=ckpt["config"], overrides={"workers": 0}), out, resume=ckpt)
    assert not second.interrupted and second.epochs_done == 3

    a, b = load_checkpoint(full_dir / "last.pt"), load_checkpoint(out / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["scheduler"] == b["scheduler"]
    assert without_timing(full.history) == without_timing(second.history)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert without_timing(logged) == without_timing(full.history) and [m["epoch"] for m in logged] == [1, 2, 3]


class StopAfterEpoch(StopAt):
    """Asks for a stop once an epoch is saved (as Ctrl-C during validation would)."""

    def epoch_end(self, metrics, is_best):
        if metrics["epoch"] == self.at[0]:
            self.stop.request("test stop")


def test_a_stop_after_an_epoch_is_saved_still_draws_the_curves(image_folder, tmp_path):
    out, stop = tmp_path / "run", StopRequest()
    result = train(tiny_config(image_folder), out, reporter=StopAfterEpoch(stop, epoch=1, step=0), stop=stop)
    assert result.interrupted and (result.epochs_done, result.step_in_epoch) == (1, 0)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1 and (out / "curves.png").stat().st_size > 0


def test_run_directory_and_checkpoint_contents(full_run):
    out, result = full_run
    assert {p.name for p in out.iterdir()} == {"last.pt", "best.pt", "metrics.jsonl", "curves.png", "config.json"}
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["arch"] == "binarydensenet_tiny"
    assert ckpt["class_names"] == list(FOLDER_CLASSES)
    assert ckpt["arch_kwargs"]["num_classes"] == 3 and ckpt["arch_kwargs"]["thumbnail"] is True
    assert ckpt["preprocessing"] == {"preset": "small", "image_size": 16, "resize": 16,
                                     "mean": ckpt["preprocessing"]["mean"], "std": ckpt["preprocessing"]["std"],
                                     "channels": 3, "interpolation": "bilinear"}
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["finished"]) == (3, 0, True)
    for key in ("optimizer", "scheduler", "rng", "metrics", "config", "history", "best"):
        assert key in ckpt
    assert ckpt["scaler"] is None and ckpt["config"]["optimizer"] == "adam" and ckpt["config"]["weight_decay"] == 0
    history = result.history
    assert [m["skipped"] for m in history] == [1, 1, 1]  # broken.jpg, counted every epoch
    assert all(m["images"] == 30 and m["val_images"] == 12 for m in history)
    assert all(0 <= m[k] <= 1 for m in history for k in ("train_top1", "val_top1"))
    assert all(m["val_top5"] is None for m in history)  # 3 classes: every label is in the top 5
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == result.best["epoch"]
    assert best["metrics"]["val_top1"] == max(m["val_top1"] for m in history)
    with Image.open(out / "curves.png") as img:
        assert img.format == "PNG" and img.size[0] > 400
    # Latent weights were clamped to the clip threshold after every step.
    model = create_model("binarydensenet_tiny", **ckpt["arch_kwargs"])
    model.load_state_dict(ckpt["model"])
    binary = [m.weight for m in model.modules() if hasattr(m, "clip_threshold")]
    assert binary and all(w.abs().max() <= 1.3 + 1e-6 for w in binary)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": "bnncli-checkpoint", "format_version": 1, "x": torch.ones(2)})

    def dies_halfway(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"format": "bnncli-checkpoint", "format_version": 1, "x": torch.zeros(2)})
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_lr_schedules():
    cfg = TrainConfig(arch="x", data="y", epochs=10, schedule="step", steps=[5, 8], factor=0.1, warmup_epochs=1)
    assert lr_factor(0, cfg, 4) == 0.25 and lr_factor(3, cfg, 4) == 1.0
    assert [round(lr_factor(e * 4, cfg, 4), 6) for e in (4, 5, 7, 8, 9)] == [1.0, 0.1, 0.1, 0.01, 0.01]
    cos = TrainConfig(arch="x", data="y", epochs=10, schedule="cosine")
    values = [lr_factor(s, cos, 10) for s in range(100)]
    assert values[0] == 1.0 and all(a >= b for a, b in zip(values, values[1:])) and values[-1] < 1e-3
    assert math.isclose(lr_factor(50, cos, 10), 0.5)
    linear = TrainConfig(arch="x", data="y", epochs=10, schedule="linear", warmup_epochs=2)
    assert [lr_factor(s, linear, 10) for s in (0, 19, 20, 60, 99)] == [0.05, 1.0, 1.0, 0.5, 1 - 79 / 80]


@pytest.mark.parametrize("recipe", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_every_recipe_builds_its_model(recipe):
    cfg = resolve_config(recipe=recipe, overrides={"data": "/imagenet"})
    assert cfg.arch in list_models() and cfg.optimizer == "adam"
    assert cfg.weight_decay == (1e-6 if cfg.arch == "xnornet" else 0)  # Larq Zoo's L2 5e-7 on XNOR-Net's kernels
    if cfg.schedule == "step":
        assert cfg.steps and cfg.epochs > max(cfg.steps)
    else:  # QuickNet's cosine with warmup, Bi-Real Net's linear decay
        assert cfg.schedule in ("cosine", "linear") and not cfg.steps
    with torch.device("meta"):  # check the options only: no memory, no init
        create_model(cfg.arch, num_classes=1000, **cfg.model)


def test_recipe_names_the_paper_experiments():
    names = {p.stem for p in PIPELINES}
    assert {"binarydensenet28_imagenet", "binarydensenet37_imagenet", "binarydensenet37_dilated_imagenet",
            "binarydensenet45_imagenet", "resnete18_imagenet", "resnete34_imagenet"} <= names
    ablation = {n: load_recipe(REPO / "pipelines" / f"{n}.toml")["model"] for n in names if "ablation" in n}
    assert ablation["resnete18_ablation_binary_downsample"]["binary_downsample"] is True
    assert ablation["resnete18_ablation_xnor_scaling"]["scaling"] == "xnor"
    assert ablation["resnete18_ablation_approxsign"]["activation_gradient"] == "approxsign"
    assert ablation["resnete18_ablation_baseline"]["binary_downsample"] is False


def test_command_line_overrides_the_recipe_and_unset_options_do_not():
    recipe = REPO / "pipelines" / "binarydensenet28_imagenet.toml"
    cfg = resolve_config(recipe=recipe, overrides={"data": "d", "epochs": 2, "lr": None, "batch_size": None,
                                                   "model": {"clip_threshold": 1.0, "scaling": None}})
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.steps) == (2, 4e-3, 256, [100, 110])
    assert cfg.model == {"clip_threshold": 1.0}


def test_bad_recipes(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('arch = "binarydensenet28"\nlearning_rate = 1\n')
    with pytest.raises(UsageError, match="unknown key learning_rate"):
        load_recipe(bad)
    bad.write_text("epochs = 'ten'\n")
    with pytest.raises(UsageError, match="epochs must be an integer"):
        load_recipe(bad)
    bad.write_text('arch = "resnete18"\n[model]\nclip_threshold = "high"\n')
    with pytest.raises(UsageError, match="clip_threshold of resnete18 must be like 1.25"):
        resolve_config(recipe=bad, overrides={"data": "d"})
    bad.write_text('arch = "binarydensenet28"\n[model]\nbinary_downsample = true\n')
    with pytest.raises(UsageError, match="has no option binary_downsample"):
        resolve_config(recipe=bad, overrides={"data": "d"})
    bad.write_text("epochs = [\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_recipe(bad)


# --- through the command line ----------------------------------------------------------------------------


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_trains_resumes_and_evaluates_an_image_folder(image_folder, tmp_path, capsys):
    run = tmp_path / "run"
    common = ("--arch", "resnete_tiny", "--data", image_folder, "--image-size", "16", "--batch-size", "8",
              "--seed", "1")
    code, out, err = bnn(capsys, "train", *common, "--epochs", "2", "--out", run)
    assert code == 0, err
    assert "broken.jpg" in err and "1 unreadable file(s) skipped" in err and "epoch 2/2" in err
    assert "Traceback" not in err and out == ""

    code, _, err = bnn(capsys, "train", *common, "--epochs", "2", "--out", run)
    assert code == 2 and "already holds a run" in err
    code, _, err = bnn(capsys, "train", "--resume", run)
    assert code == 2 and "pass --epochs" in err
    code, _, err = bnn(capsys, "train", "--resume", run, "--lr", "0.1")
    assert code == 2 and "cannot change lr" in err

    # A run begun before the float_weights option existed resumes with the float32 layers it had.
    assert load_checkpoint(run / "last.pt")["arch_kwargs"]["float_weights"] == "float16"  # the default
    legacy = load_checkpoint(run / "last.pt")
    del legacy["arch_kwargs"]["float_weights"]
    save_checkpoint(run / "last.pt", legacy)
    code, out, err = bnn(capsys, "train", "--resume", run, "--epochs", "3", "--json")
    assert code == 0, err
    assert load_checkpoint(run / "last.pt")["arch_kwargs"]["float_weights"] == "float32"
    summary = json.loads(out)
    assert summary["epochs_done"] == 3 and not summary["interrupted"] and summary["last"]["epoch"] == 3
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3

    code, out, err = bnn(capsys, "eval", run, "--data", image_folder, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["images"] == 12 and res["skipped"] == 0 and res["arch"] == "resnete_tiny"
    assert 0 <= res["top1"] <= 1 and res["top5"] is None and res["loss"] > 0 and res["images_per_s"] > 0
    assert set(res["per_class"]) == set(FOLDER_CLASSES) and "published" not in res
    best = load_checkpoint(run / "best.pt")
    assert res["top1"] == pytest.approx(best["metrics"]["val_top1"])  # eval reproduces the training-time val

    # The training split holds the corrupt file: evaluated with a warning, counted, no crash.
    code, out, err = bnn(capsys, "eval", run / "last.pt", "--data", image_folder / "train", "--json")
    assert code == 0 and json.loads(out)["skipped"] == 1 and json.loads(out)["images"] == 30 and "broken.jpg" in err

    # The CI gate: just below the measured top-1 passes, just above fails with exit 1.
    top1 = res["top1"]
    code, _, err = bnn(capsys, "eval", run, "--data", image_folder, "--min-top1", max(0.0, top1 - 0.01))
    assert code == 0, err
    if top1 < 1.0:
        code, out, err = bnn(capsys, "eval", run, "--data", image_folder, "--json", "--min-top1",
                             min(1.0, top1 + 0.01))
        assert code == 1 and json.loads(out)["top1"] == top1
        assert err.strip().splitlines()[-1].startswith("bnn: error: top-1") and "below --min-top1" in err

    code, out, _ = bnn(capsys, "eval", run, "--data", image_folder)
    assert code == 0 and "top-1" in out and "per class" in out and "ring" in out


@pytest.mark.parametrize("args,needle", [
    (["train", "--arch", "binarydensenet_tiny", "--data", "/no/such/dir"], "data folder not found"),
    (["train", "--arch", "binarydensenet_tinyy", "--data", "builtin:shapes-mini"], "did you mean binarydensenet_tiny"),
    (["train", "--arch", "binarydensenet_tiny", "--data", "{empty}"], "no class folders"),
    (["train", "--arch", "binarydensenet_tiny"], "no data"),
    (["train", "--data", "builtin:shapes-mini"], "no model"),
    (["train", "--recipe", "{bad_recipe}"], "unknown key"),
    (["train", "--recipe", "/no/such.toml"], "recipe not found"),
    (["train", "-a", "binarydensenet_tiny", "-d", "builtin:shapes-mini", "--optimizer", "lamb"], "unknown optimizer"),
    (["train", "-a", "binarydensenet_tiny", "-d", "builtin:shapes-mini", "--scaling", "abc"], "unknown scaling"),
    (["train", "-a", "binarydensenet_tiny", "-d", "builtin:nope"], "unknown built-in dataset"),
    (["train", "-a", "binarydensenet_tiny", "-d", "builtin:shapes-mini", "--float-weights", "bf16"],
     "float weights must be one of"),
    (["train", "--resume", "{empty}"], "no last.pt"),
    (["eval", "/no/such/run", "--data", "builtin:shapes-mini"], "model not found"),
    (["eval", "{empty}", "--data", "builtin:shapes-mini"], "holds no checkpoint"),
    (["eval", "{bad_recipe}", "--data", "builtin:shapes-mini"], "is a text file, not a bnncli checkpoint"),
    (["eval", "{empty}", "--data", "builtin:shapes-mini", "--min-top1", "60"], "fraction"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_recipe = tmp_path / "bad.toml"
    bad_recipe.write_text('arch = "binarydensenet_tiny"\nbogus = 1\n')
    args = [a.format(empty=empty, bad_recipe=bad_recipe) for a in args]
    code, out, err = bnn(capsys, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_ctrl_c_saves_and_tells_how_to_resume(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "bnncli", "train", "-a", "binarydensenet_tiny", "-d", "builtin:shapes-mini",
           "--image-size", "16", "-b", "8", "--epochs", "500", "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 90
        while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not finish an epoch"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert f"Resume with: bnn train --resume {run}" in err and "Traceback" not in err
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] >= 1 and not ckpt["finished"]
    assert (run / "curves.png").exists()
    done = ckpt["epoch"] + (1 if ckpt["step_in_epoch"] else 0)
    res = subprocess.run([sys.executable, "-m", "bnncli", "train", "--resume", str(run), "--epochs", str(done + 1)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(run / "last.pt")["epoch"] == done + 1


def test_grayscale_model_trains_and_records_one_channel(tmp_path):
    cfg = resolve_config(overrides=dict(arch="resnete_tiny", data="builtin:shapes-mini", epochs=1, batch_size=40,
                                        image_size=16, model={"in_channels": 1}))
    result = train(cfg, tmp_path / "gray")
    ckpt = load_checkpoint(tmp_path / "gray" / "best.pt")
    assert not result.interrupted and ckpt["arch_kwargs"]["in_channels"] == 1
    assert ckpt["preprocessing"]["channels"] == 1 and len(ckpt["preprocessing"]["mean"]) == 1


def test_tensorflow_padding_trains_and_is_recorded(tmp_path, capsys):
    run = tmp_path / "tf"
    code, _, err = bnn(capsys, "train", "--arch", "resnete_tiny", "--data", "builtin:shapes-mini", "--epochs", "1",
                       "--batch-size", "40", "--image-size", "32", "--padding", "tensorflow", "--out", run)
    assert code == 0, err
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["arch_kwargs"]["padding"] == "tensorflow"
    model = build_model(ckpt)
    assert model.features[2].conv.padding_rule == "tensorflow"  # its stride-2 binary conv (thumbnail stem)
    code, _, err = bnn(capsys, "train", "--arch", "resnete_tiny", "--data", "builtin:shapes-mini", "--epochs", "1",
                       "--padding", "valid", "--out", tmp_path / "bad")
    assert code == 2 and "padding must be one of symmetric, tensorflow" in err


def test_the_python_api_trains_a_config_and_logs_warnings(image_folder, tmp_path, caplog):
    """bnncli.train runs the CLI's loop on a config; without a reporter, the library's warnings go to
    the ``bnncli`` logger (stdlib logging), where a library user can route or silence them."""
    import logging

    import bnncli

    with caplog.at_level(logging.WARNING, logger="bnncli"):
        result = bnncli.train(tiny_config(image_folder), out=tmp_path / "api", epochs=1)
    assert result.epochs_done == 1 and (tmp_path / "api" / "best.pt").is_file()
    assert any(r.name == "bnncli.engine" and "broken.jpg" in r.getMessage() for r in caplog.records)
    config = load_checkpoint(tmp_path / "api" / "last.pt")["config"]
    assert config["epochs"] == 1 and config["arch"] == "binarydensenet_tiny"  # options override the config


def test_in_channels_trains_a_grey_model_from_the_command_line(image_folder, tmp_path, capsys):
    """--in-channels 1 (friction item 14): grey images are read as one channel, not three equal ones."""
    from bnncli.cli.app import main

    run = tmp_path / "grey"
    assert main(["train", "--arch", "resnete_tiny", "--data", str(image_folder), "--epochs", "1", "--batch-size",
                 "8", "--image-size", "16", "--workers", "0", "--in-channels", "1", "--out", str(run), "--json"]) == 0
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["arch_kwargs"]["in_channels"] == 1 and ckpt["preprocessing"]["channels"] == 1
    assert build_model(ckpt).stem[0].in_channels == 1
    image = next(p for p in sorted(image_folder.rglob("*.png")))
    capsys.readouterr()
    assert main(["predict", str(image), "--model", str(run), "--json"]) == 0


def test_every_training_option_is_one_parameter_named_as_its_field():
    """Each training option is written once on the command line side: a `bnn train` parameter named
    as its TrainConfig field (or model option), turned into overrides without a hand-kept list."""
    import inspect

    from bnncli.cli import train as cli_train
    from bnncli.engine.config import FIELDS, MODEL_OPTIONS

    params = {cli_train.RENAMED.get(p, p) for p in inspect.signature(cli_train.train).parameters}
    params -= set(cli_train.RUN_OPTIONS)
    recipe_only = {"model", "description", "reference", "thumbnail"}  # set in recipes, not on the command line
    assert params == (set(FIELDS) | set(MODEL_OPTIONS)) - recipe_only
    given = {p: None for p in inspect.signature(cli_train.train).parameters}
    given.update(arch="resnete_tiny", steps="3,4", crop_scale=(0.5, 1.0), compile_=True, scaling="xnor")
    overrides = cli_train.config_overrides(given)
    assert overrides["steps"] == [3, 4] and overrides["crop_scale"] == [0.5, 1.0] and overrides["compile"] is True
    assert overrides["model"] == {"scaling": "xnor"} and overrides["arch"] == "resnete_tiny"
    assert overrides["epochs"] is None and "json_" not in overrides and "compile_" not in overrides


def test_an_image_size_the_model_cannot_take_is_refused_before_training(tmp_path, capsys):
    code, _, err = bnn(capsys, "train", "--arch", "binary_alexnet", "--data", "builtin:shapes-mini", "--epochs", "1",
                       "--image-size", "64", "--out", tmp_path / "run")
    assert code == 2 and "binary_alexnet cannot take 64x64 inputs" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("arch", ["quicknet_tiny", "birealnet_larq_tiny", "meliusnet_tiny", "realtobinarynet_tiny",
                                  "xnornet_tiny", "binary_alexnet_tiny"])
def test_larq_zoo_models_train_pack_and_evaluate(arch, tmp_path, capsys):
    """QuickNet (depthwise and blur-pool GroupConv nodes, +1 padding, in-conv ReLU), MeliusNet (Slice), Larq Zoo's
    Bi-Real Net, Real-to-Binary Net (PRelu, Sigmoid, ChannelMul), XNOR-Net (scaled binary convs, BatchNorms without
    scale) and BinaryAlexNet (binary weights on the float image) train on the CLI, and their checkpoints pack and
    evaluate."""
    run = tmp_path / "run"
    code, _, err = bnn(capsys, "train", "--arch", arch, "--data", "builtin:shapes-mini", "--epochs", "1",
                       "--batch-size", "40", "--image-size", "32", "--out", run)
    assert code == 0, err
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["arch"] == arch and ckpt["arch_kwargs"]["thumbnail"] is True
    code, _, err = bnn(capsys, "pack", run, "-o", tmp_path / "m.bnn")
    assert code == 0, err
    code, out, err = bnn(capsys, "eval", tmp_path / "m.bnn", "--data", "builtin:shapes-mini", "--json")
    assert code == 0, err
    assert json.loads(out)["images"] > 0

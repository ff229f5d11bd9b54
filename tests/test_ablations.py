"""The small-data ablation recipes (pipelines/small/), their runner, and `bnn compare --group-seeds`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bnncli.cli.app import main
from bnncli.engine.compare import _group_name, _mean_std, group_by_seed
from bnncli.engine.config import load_recipe, resolve_config
from bnncli.models import count_model, create_model

pytest.importorskip("matplotlib")

SMALL = Path(__file__).resolve().parents[1] / "pipelines" / "small"
ARMS = {"resnete_baseline": {}, "resnete_binary_downsample": {"binary_downsample": True},
        "resnete_xnor_scaling": {"scaling": "xnor"}, "resnete_approxsign": {"activation_gradient": "approxsign"}}


def _runner():
    spec = importlib.util.spec_from_file_location("run_all", SMALL / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_arm_changes_one_thing_from_the_baseline():
    recipes = {p.stem: load_recipe(p) for p in SMALL.glob("*.toml")}
    assert set(recipes) == {*ARMS, "binarydensenet"} == set(_runner().ARMS)
    base = recipes["resnete_baseline"]
    for name, recipe in recipes.items():
        # The same protocol everywhere: only the model (its options, or the architecture) differs.
        same = {k: v for k, v in recipe.items() if k not in ("model", "description", "reference", "arch")}
        assert same == {k: v for k, v in base.items() if k not in ("model", "description", "reference", "arch")}
        assert "data" not in recipe and recipe["image_size"] == 32 and recipe["preset"] == "small"
        if name in ARMS:
            changed = {k: v for k, v in recipe["model"].items() if base["model"][k] != v}
            assert recipe["arch"] == "resnete_tiny" and changed == ARMS[name], name
    assert recipes["binarydensenet"]["arch"] == "binarydensenet_tiny_wide"
    assert {k: v for k, v in recipes["binarydensenet"]["model"].items() if k in base["model"]} == \
        {k: v for k, v in base["model"].items() if k in ("clip_threshold", "weight_gradient", "pad_value",
                                                         "scaling", "activation_gradient")}


def test_the_densenet_arm_is_no_larger_than_the_resnete_arms():
    # The paper compares BinaryDenseNet and ResNetE at equal size: within 5% here, the DenseNet not larger.
    sizes = {}
    for arm in ("resnete_baseline", "binarydensenet"):
        cfg = resolve_config(recipe=SMALL / f"{arm}.toml", overrides={"data": "d"})
        sizes[arm] = count_model(create_model(cfg.arch, num_classes=10, **cfg.model), cfg.image_size).size_bytes
    assert 0.95 * sizes["resnete_baseline"] <= sizes["binarydensenet"] <= sizes["resnete_baseline"]


def test_group_helpers():
    assert _group_name(["resnete_baseline-seed0", "resnete_baseline-seed1"]) == "resnete_baseline"
    assert _group_name(["a_s1", "a_s2"]) == "a" and _group_name(["x", "y"]) == "x" and _group_name(["one"]) == "one"
    assert _group_name(["arm-seed3"]) == "arm" and _group_name(["resnete18"]) == "resnete18"
    assert _mean_std([0.5, 0.7]) == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1414213)}
    assert _mean_std([0.5]) == {"mean": 0.5, "std": None} and _mean_std([0.5, None]) == {"mean": None, "std": None}


def _row(run, seed, flip, best):
    return {"run": run, "arch": "a", "options": {"seed": seed, "flip": flip}, "epochs": 2, "selected_by": "val_top1",
            "best_top1": best, "last_top1": best, "best_top5": None, "last_top5": None, "images_per_s": 10.0,
            "params": 5, "binary_params": 3, "size_bytes": 7}


def test_group_by_seed_folds_only_the_seed():
    rows = [_row("r/f-seed0", 0, 0.5, 0.6), _row("r/n-seed0", 0, 0.0, 0.9), _row("r/f-seed1", 1, 0.5, 0.8)]
    grouped = group_by_seed({"differing": ["flip", "seed"], "runs": rows,
                             "histories": {r["run"]: [{"epoch": 1, "val_top1": r["best_top1"]}] for r in rows}})
    assert grouped["differing"] == ["flip"]
    first, second = grouped["groups"]
    assert (first["name"], first["seeds"], first["options"]) == ("f", [0, 1], {"flip": 0.5})
    assert first["best_top1_mean"] == pytest.approx(0.7) and first["best_top1_std"] == pytest.approx(0.1414213)
    assert (second["name"], second["seeds"], second["best_top1_std"]) == ("n", [0], None)
    assert [len(h) for h in grouped["histories"].values()] == [2, 1]


def test_run_all_trains_every_arm_resumes_and_compares(image_folder, tmp_path, capsys, monkeypatch):
    # Two arms, two seeds, one tiny epoch each through the real runner and CLI.
    out = tmp_path / "abl"
    args = ["--data", str(image_folder), "--out", str(out), "--seeds", "0", "1",
            "--arms", "resnete_baseline", "binarydensenet", "--threads", "1",
            "--", "--epochs", "1", "--batch-size", "8", "--image-size", "16", "--workers", "0"]
    runner = _runner()
    assert runner.main(args) == 0
    shown = capsys.readouterr().out
    assert shown.count("done ") == 4 and "binarydensenet" in shown and "resnete_baseline" in shown
    assert (out / "compare.png").stat().st_size > 0 and (out / "resnete_baseline-seed1.log").stat().st_size > 0
    config = json.loads((out / "binarydensenet-seed1" / "config.json").read_text())["config"]
    assert (config["seed"], config["arch"], config["epochs"]) == (1, "binarydensenet_tiny_wide", 1)
    # A second call keeps the finished runs and compares again.
    assert runner.main(args) == 0
    assert capsys.readouterr().out.count("kept ") == 4
    # The grouped comparison through the CLI: one row per arm, both seeds in it.
    runs = [str(out / f"{a}-seed{s}") for a in ("resnete_baseline", "binarydensenet") for s in (0, 1)]
    assert main(["compare", *runs, "--group-seeds", "--plot", str(tmp_path / "g.png"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["differing"][0] == "arch" and report["differing"].count("arch") == 1
    assert "seed" not in report["differing"]
    assert [(g["name"], g["seeds"]) for g in report["groups"]] == [("resnete_baseline", [0, 1]),
                                                                   ("binarydensenet", [0, 1])]
    assert all(0 <= g["best_top1_mean"] <= 1 and g["best_top1_std"] is not None for g in report["groups"])
    assert main(["compare", *runs, "--group-seeds", "--plot", str(tmp_path / "h.png")]) == 0
    assert "mean ± standard deviation" in capsys.readouterr().out


def test_run_all_refuses_a_run_it_cannot_resume(tmp_path, capsys):
    stale = tmp_path / "abl" / "resnete_baseline-seed0"
    stale.mkdir(parents=True)
    (stale / "notes.txt").write_text("not a run")
    with pytest.raises(SystemExit, match="holds no checkpoint to resume from"):
        _runner().main(["--data", "builtin:shapes-mini", "--out", str(tmp_path / "abl"), "--seeds", "0",
                        "--arms", "resnete_baseline"])
    assert (stale / "notes.txt").read_text() == "not a run"

"""`bnn compare` on run files that are malformed, hostile or many: one line and exit 2 for what it
cannot use, bounded reads, parameters counted without building models, a legend that stays readable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bnncli.cli.app import main
from bnncli.engine import compare as compare_mod
from bnncli.engine import curves

pytest.importorskip("matplotlib")

CONFIG = {"config": {"arch": "binarydensenet_tiny", "seed": 0, "lr": 0.01}, "arch": "binarydensenet_tiny",
          "arch_kwargs": {"num_classes": 4}, "class_names": ["a", "b", "c", "d"],
          "preprocessing": {"image_size": 16}, "world_size": 1}


def run(folder: Path, config=None, metrics=None, seed: int = 0) -> Path:
    """A run directory holding only what bnn compare reads (config.json and metrics.jsonl)."""
    folder.mkdir(parents=True)
    config = config if config is not None else {**CONFIG, "config": {**CONFIG["config"], "seed": seed}}
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    rows = metrics if metrics is not None else [{"epoch": 1, "val_top1": 0.4 + seed / 100, "val_loss": 1.0,
                                                 "images_per_s": 50.0}]
    (folder / "metrics.jsonl").write_text(rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n"
                                                                                      for r in rows))
    return folder


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, tmp_path, needle: str, *runs: Path, extra=()) -> str:
    code, out, err = bnn(capsys, "compare", *runs, "--plot", tmp_path / "c.png", *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and needle in lines[0], err
    assert not (tmp_path / "c.png").exists()
    return lines[0]


def _without(key):
    return {k: v for k, v in CONFIG.items() if k != key}


@pytest.mark.parametrize("config,needle", [
    (_without("arch"), "arch is missing"),
    (_without("preprocessing"), "preprocessing is missing"),
    ({**CONFIG, "arch": 7}, "arch is int"),
    ({**CONFIG, "arch_kwargs": [1, 2]}, "arch_kwargs is list"),
    ({**CONFIG, "preprocessing": "imagenet"}, "preprocessing is str"),
    ({**CONFIG, "config": None}, "config is NoneType"),
    ({**CONFIG, "preprocessing": {"image_size": "big"}}, "image_size is 'big'"),
    ([1, 2, 3], "is not an object"),
    ({**CONFIG, "arch": "nosuchnet"}, "unknown model"),
    ({**CONFIG, "arch_kwargs": {"num_classes": "ten"}}, "config.json"),
    ({**CONFIG, "arch_kwargs": {"wings": 2}}, "config.json"),
])
def test_a_malformed_config_is_one_line(tmp_path, capsys, config, needle):
    good = run(tmp_path / "good")
    bad = run(tmp_path / "bad", config=config)
    line = refused(capsys, tmp_path, needle, good, bad)
    assert "bad" in line


@pytest.mark.parametrize("metrics,needle", [
    ('{"epoch": 1, "val_top1": "high"}\n', "val_top1 is 'high', not a number"),
    ('{"val_top1": 0.5}\n', "line 1: not what bnn train writes"),
    ("[1]\n", "line 1: not what bnn train writes"),
    ('{"epoch": 1}\n{"epoch": \n', "line 2 is not valid JSON"),
])
def test_malformed_metrics_are_one_line(tmp_path, capsys, metrics, needle):
    refused(capsys, tmp_path, needle, run(tmp_path / "good"), run(tmp_path / "bad", metrics=metrics))


def test_run_files_nested_deep_are_one_line(tmp_path, capsys):
    deep = "[" * 200_000 + "]" * 200_000
    refused(capsys, tmp_path, "config.json nests deeper than 32 levels", run(tmp_path / "a", config=deep))
    refused(capsys, tmp_path, "metrics.jsonl line 1 nests deeper", run(tmp_path / "b", metrics=deep + "\n"))


@pytest.mark.parametrize("kind", ["loop", "folder", "fifo", "dev-zero", "huge"])
def test_run_files_that_are_not_plain_bounded_files_are_one_line(tmp_path, capsys, kind):
    bad = run(tmp_path / "bad")
    target = bad / ("metrics.jsonl" if kind == "huge" else "config.json")
    target.unlink()
    if kind == "loop":
        target.symlink_to(target)
        needle = "Too many levels of symbolic links"
    elif kind == "folder":
        target.mkdir()
        needle = "a folder, not a run file"
    elif kind == "fifo":
        os.mkfifo(target)
        needle = "a FIFO (named pipe), not a run file"
    elif kind == "dev-zero":
        target.symlink_to("/dev/zero")
        needle = "a character device, not a run file"
    else:
        with open(target, "wb") as f:
            f.truncate(200 << 20)  # 200 MB, sparse
        needle = "holds more than 16,777,216 bytes"
    refused(capsys, tmp_path, needle, run(tmp_path / "good"), bad)


def test_nan_and_infinite_top1_group_by_seed(tmp_path, capsys):
    runs = [run(tmp_path / "a-seed0", seed=0),
            run(tmp_path / "a-seed1", metrics='{"epoch": 1, "val_top1": NaN, "val_loss": Infinity}\n', seed=1),
            run(tmp_path / "a-seed2", metrics='{"epoch": 1, "val_top1": Infinity}\n', seed=2)]
    code, out, err = bnn(capsys, "compare", *runs, "--plot", tmp_path / "c.png", "--group-seeds", "--json")
    assert code == 0, err
    group = json.loads(out)["groups"][0]
    assert group["best_top1_mean"] is None and len(group["runs"]) == 3 and (tmp_path / "c.png").is_file()


def test_a_huge_model_is_counted_without_being_built(tmp_path, capsys):
    huge = run(tmp_path / "huge", config={**CONFIG, "arch_kwargs": {"num_classes": 10**9}})
    code, out, err = bnn(capsys, "compare", run(tmp_path / "small"), huge, "--plot", tmp_path / "c.png", "--json")
    assert code == 0, err
    small_row, huge_row = json.loads(out)["runs"]
    assert huge_row["params"] > 10**10 > small_row["params"]


def test_many_runs_count_each_model_once_and_keep_the_legend_short(tmp_path, capsys, monkeypatch):
    compare_mod.model_size.cache_clear()
    figures = []
    monkeypatch.setattr(curves, "_save", lambda fig, path, *args: figures.append(fig) or Path(path))
    runs = [run(tmp_path / f"r{i:03d}", seed=i) for i in range(60)]
    code, out, err = bnn(capsys, "compare", *runs, "--plot", tmp_path / "c.png", "--json")
    assert code == 0, err
    assert compare_mod.model_size.cache_info().misses == 1  # 60 runs of one model: counted once
    texts = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert len(texts) == curves.MAX_LEGEND and texts[-1] == "... and 41 more"

"""`bnn compare`: runs side by side (the options that differ, accuracy, speed, size) and one PNG."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from bnncli.cli.app import main  # noqa: E402


@pytest.fixture(scope="module")
def two_runs(image_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    for name, flip in (("flip", "0.5"), ("noflip", "0")):
        assert main(["train", "--arch", "binarydensenet_tiny", "--data", str(image_folder), "--epochs", "2",
                     "--batch-size", "8", "--image-size", "16", "--workers", "0", "--flip", flip,
                     "--out", str(root / name), "--json"]) == 0
    return root


def test_compare_lists_what_differs_and_draws_the_curves(two_runs, tmp_path, capsys):
    capsys.readouterr()
    plot = tmp_path / "cmp.png"
    assert main(["compare", str(two_runs / "flip"), str(two_runs / "noflip"), "--plot", str(plot), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["differing"] == ["flip"] and report["plot"] == str(plot) and plot.stat().st_size > 0
    flip, noflip = report["runs"]
    assert (flip["options"], noflip["options"]) == ({"flip": 0.5}, {"flip": 0.0})
    for row in (flip, noflip):
        assert row["arch"] == "binarydensenet_tiny" and row["epochs"] == 2 and row["selected_by"] == "val_top1"
        assert 0 <= row["last_top1"] <= row["best_top1"] <= 1 and row["best_epoch"] in (1, 2)
        assert row["params"] > row["binary_params"] > 0 and row["size_bytes"] > 0 and row["images_per_s"] > 0
    assert main(["compare", str(two_runs / "flip"), str(two_runs / "noflip"), "--plot", str(plot)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["compare", str(two_runs / "flip"), str(two_runs / "noflip"), "--plot", str(plot), "--force"]) == 0
    shown = capsys.readouterr().out
    assert "flip" in shown and "noflip" in shown and "best top-1" in shown
    assert " KiB" in shown and " MiB" not in shown  # a tiny model: 41.3 KiB, not 0.04 MiB


def test_compare_refuses_what_is_not_a_run(tmp_path, capsys, two_runs):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(two_runs / "flip"), str(tmp_path / "empty"), "--plot", str(tmp_path / "c.png")]) == 2
    assert "is not a run directory of bnn train: config.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_the_default_plot_is_redrawn_on_a_rerun_but_never_replaces_another_file(two_runs, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = [str(two_runs / "flip"), str(two_runs / "noflip")]
    for _ in range(2):  # the README's `bnn compare c1 c2`, twice
        assert main(["compare", *runs, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["plot"] == "compare.png"
    (tmp_path / "compare.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)  # somebody else's PNG
    assert main(["compare", *runs]) == 2
    assert "compare.png exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "compare.png").stat().st_size == 40

"""At 80 columns nothing a person needs is cut: the training bars' step count, elapsed time and ETA,
`bnn models NAME --layers`, and the file names `bnn predict` shows (friction item 9)."""

from __future__ import annotations

import io
import shutil

from rich.console import Console

from bnncli.cli.app import main


def _console(monkeypatch, *modules) -> io.StringIO:
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    for module, name in modules:
        monkeypatch.setattr(module, name, console)
    return buf


def test_training_bars_keep_the_step_count_elapsed_time_and_eta(monkeypatch):
    import bnncli.cli.common as common
    import bnncli.cli.progress as progress

    buf = _console(monkeypatch, (progress, "err"), (common, "err"))
    reporter = progress.RichReporter()
    reporter.start({"run_dir": "runs/x", "epochs": 10, "steps_per_epoch": 1234, "start_epoch": 0, "start_step": 0,
                    "arch": "binarydensenet_tiny", "device": "cpu", "world_size": 1, "params": 54500,
                    "train_images": 6000, "val_images": 1000, "batch_size": 64, "image_size": 32,
                    "resumed": False, "data": "builtin:shapes", "classes": 10, "preset": "small"})
    reporter.epoch_start(10, 10, 1234, 0)
    reporter.step(10, 1000, 1234, 1.23456, 0.4567, 1234.0, 4e-3)
    reporter.progress.refresh()
    reporter._stop_progress()
    shown = buf.getvalue()
    assert "1000/1234" in shown and "loss 1.235 acc 45.7%" in shown and "ETA" in shown and "0:00:00" in shown
    assert "…" not in shown


def test_models_layers_fit_80_columns_without_cutting_names(monkeypatch):
    import bnncli.cli.models as models

    buf = _console(monkeypatch, (models, "out"))
    assert main(["models", "resnete18", "--layers"]) == 0
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80 and not any("…" in line for line in lines)
    assert any(line.startswith(" total") and "11.7M" in line for line in lines)


def test_predict_shows_the_whole_path_of_a_long_one(monkeypatch, tiny_checkpoint, image_folder, tmp_path):
    import bnncli.cli.predict as predict

    buf = _console(monkeypatch, (predict, "out"))
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "and-another-level" / "the-image-file-name.png"
    deep.parent.mkdir(parents=True)
    shutil.copy(next(iter(sorted(image_folder.rglob("*.png")))), deep)
    assert main(["predict", str(deep), "--model", str(tiny_checkpoint), "-k", "1"]) == 0
    shown = "".join(line.strip() for line in buf.getvalue().splitlines())
    assert "the-image-file-name.png" in shown and "…" not in buf.getvalue()

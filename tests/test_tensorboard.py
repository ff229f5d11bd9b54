"""`bnn train --tensorboard`: the run's numbers in TensorBoard event files, read back; resume appends
without repeating a step; without the extra, one line before training; without the flag, nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bnncli.cli.app import main
from bnncli.engine.config import resolve_config
from bnncli.engine.progress import Reporter
from bnncli.engine.resume import load_resume
from bnncli.engine.stopping import StopRequest
from bnncli.engine.train import train

FAST = ("-a", "binarydensenet_tiny", "-d", "builtin:shapes-mini", "-b", "8", "--image-size", "16", "--seed", "2")
STEPS = 15  # builtin:shapes-mini: 120 training images in batches of 8
EPOCH_TAGS = {f"epoch/{k}" for k in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr",
                                     "images_per_s", "seconds")}
STEP_TAGS = {"step/train_loss", "step/lr"}


def bnn(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in ``log_dir`` as TensorBoard shows it: ``tag -> [(step, value), ...]``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def f32(x: float) -> float:
    """What an event file holds of a number (a float32)."""
    return float(np.float32(x))


def assert_epochs_match(logged: dict[str, list[tuple[int, float]]], history: list[dict]) -> None:
    for tag in EPOCH_TAGS:
        key = tag.split("/")[1]
        assert logged[tag] == [(m["epoch"] * STEPS, f32(m[key])) for m in history], tag


def assert_no_step_twice(logged: dict[str, list[tuple[int, float]]]) -> None:
    for tag, points in logged.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), (tag, steps)


def test_cli_logs_the_run_and_resume_appends(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    code, out, err = bnn(capsys, "train", *FAST, "--epochs", "1", "--tensorboard", "--out", run)
    assert code == 0, err
    assert "Traceback" not in err and out == ""
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    logged = scalars(run / "tensorboard")
    assert set(logged) == EPOCH_TAGS | STEP_TAGS
    assert_epochs_match(logged, metrics(run))
    # The last step report of an epoch lands on the epoch's step; its lr is the epoch's.
    assert logged["step/lr"][-1] == logged["epoch/lr"][-1] and logged["epoch/lr"][-1][0] == STEPS

    # --tensorboard-dir implies --tensorboard; pointing it at the same place appends there.
    code, _, err = bnn(capsys, "train", "--resume", run, "--epochs", "2", "--tensorboard-dir", run / "tensorboard")
    assert code == 0, err
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    logged = scalars(run / "tensorboard")
    assert_no_step_twice(logged)
    assert_epochs_match(logged, metrics(run))
    assert [s for s, _ in logged["epoch/val_top1"]] == [STEPS, 2 * STEPS]


class StopAt(Reporter):
    """Asks for a stop at one step, as Ctrl-C would; sees every step."""

    interval = 0.0

    def __init__(self, stop: StopRequest, epoch: int, step: int) -> None:
        self.stop, self.at = stop, (epoch, step)
        self.steps: list[tuple[int, int]] = []

    def step(self, epoch, step, *_):
        self.steps.append((epoch, step))
        if (epoch, step) == self.at:
            self.stop.request("test stop")


def test_a_stopped_run_resumes_into_the_same_steps_and_orphans_are_hidden(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from bnncli.engine.tensorboard import TensorBoardReporter

    cfg = resolve_config(overrides=dict(arch="resnete_tiny", data="builtin:shapes-mini", epochs=1, batch_size=8,
                                        image_size=16, seed=3, workers=0))
    run, stop = tmp_path / "run", StopRequest()
    inner = StopAt(stop, epoch=1, step=6)
    with TensorBoardReporter(inner, every=0) as reporter:
        first = train(cfg, run, reporter=reporter, stop=stop)
    assert first.interrupted and (first.epochs_done, first.step_in_epoch) == (0, 6)
    assert inner.steps == [(1, s) for s in range(1, 7)]  # every step passed on
    logged = scalars(run / "tensorboard")
    assert [s for s, _ in logged["step/train_loss"]] == list(range(1, 7))
    # What a process killed after its last checkpoint would have left: steps past the resume point.
    with SummaryWriter(str(run / "tensorboard")) as orphan:
        for s in range(7, 11):
            orphan.add_scalar("step/train_loss", 99.0, s)

    ckpt = load_resume(run)
    with TensorBoardReporter(every=0) as reporter:
        second = train(resolve_config(base=ckpt["config"]), run, resume=ckpt, reporter=reporter)
    assert not second.interrupted and second.epochs_done == 1
    logged = scalars(run / "tensorboard")
    assert_no_step_twice(logged)
    for tag in STEP_TAGS:  # every step once, the orphans gone
        assert [s for s, _ in logged[tag]] == list(range(1, STEPS + 1)), tag
    assert 99.0 not in [v for _, v in logged["step/train_loss"]]
    assert_epochs_match(logged, metrics(run))


def test_every_reporter_call_reaches_the_wrapped_reporter(tmp_path):
    pytest.importorskip("tensorboard")
    from bnncli.engine.tensorboard import TensorBoardReporter

    calls = []

    class Recorder:
        interval = 0.0
        run_dir = "shown"

        def __getattr__(self, name):
            return lambda *args: calls.append(name)

    info = {"run_dir": str(tmp_path), "start_epoch": 0, "start_step": 0, "steps_per_epoch": 3, "resumed": False}
    samples = {"start": (info,), "epoch_start": (1, 1, 3, 0), "step": (1, 3, 3, 1.0, 0.5, 10.0, 1e-3),
               "validating": (1, 4), "epoch_end": ({"epoch": 1, "train_loss": 1.0}, True), "stopping": ("stop",),
               "warning": ("text",)}
    names = [n for n in vars(Reporter) if not n.startswith("_") and callable(getattr(Reporter, n))]
    with TensorBoardReporter(Recorder()) as reporter:
        for name in names:  # a callback added to Reporter later is passed on too
            getattr(reporter, name)(*samples.get(name, ()))
            assert calls[-1] == name, name
        assert reporter.run_dir == "shown"
    assert calls[0] == "__enter__" and calls[-1] == "__exit__"
    assert scalars(tmp_path / "tensorboard")["epoch/train_loss"] == [(3, 1.0)]


def test_without_the_extra_one_line_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    run = tmp_path / "run"
    code, out, err = bnn(capsys, "train", *FAST, "--epochs", "1", "--tensorboard", "--out", run)
    assert code == 2 and out == ""
    assert err.splitlines() == ["bnn: error: --tensorboard needs the tensorboard extra: pip install "
                                "'bnncli[tensorboard]'"]
    assert not run.exists()  # nothing started


def test_a_log_directory_that_cannot_be_made_is_refused_before_training(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    taken = tmp_path / "file"
    taken.write_text("")
    for where, needle in ((taken, "is not a directory"), (taken / "sub", "is not a directory"),
                          ("  ", "needs a directory name")):
        code, _, err = bnn(capsys, "train", *FAST, "--epochs", "1", "--tensorboard-dir", where,
                           "--out", tmp_path / "run")
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "run").exists()


def test_without_the_flag_no_directory_and_no_import(tmp_path):
    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys
        from bnncli.cli.app import main
        code = main(["train", *{FAST!r}, "--epochs", "1", "--log-every", "0", "--out", {str(run)!r}])
        print(code, any(m == "tensorboard" or m.startswith(("tensorboard.", "torch.utils.tensorboard"))
                        for m in sys.modules))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["0", "False"], res.stderr[-2000:]
    assert (run / "last.pt").exists() and not (run / "tensorboard").exists()

"""The `bnn` command as a user runs it: help, `bnn models`, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_models import ZOO

from bnncli.cli.app import main

SUBCOMMANDS = ("train", "eval", "export", "pack", "predict", "import", "models", "compare")


def run_bnn(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bnncli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_help_lists_the_subcommands():
    res = run_bnn("--help")
    assert res.returncode == 0
    listed = [line.split()[0] for line in res.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert sorted(listed) == sorted(SUBCOMMANDS)


def test_console_script_is_installed():
    res = subprocess.run(["bnn", "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("bnn ")


def test_models_json_matches_the_zoo(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, (params, _, binary, bmacs, fpmacs, size) in ZOO.items():
        r = rows[name]
        assert (r["params"], r["binary_params"], r["binary_macs"], r["fp_macs"], r["size_bytes"]) == (
            params, binary, bmacs, fpmacs, size)
    assert {"resnete34", "birealnet18", "binarydensenet_tiny"} <= set(rows)


def test_models_table_and_filter(capsys):
    assert main(["models", "binarydensenet2*"]) == 0
    out = capsys.readouterr().out
    assert "binarydensenet28" in out and "5.13M" in out and "4.04 MiB" in out and "resnete18" not in out
    assert main(["models", "binarydensenet2*", "--wide"]) == 0
    assert "5,131,496" in capsys.readouterr().out


@pytest.mark.parametrize("args,needle", [
    (["models", "nosuchnet"], "no model matches"),
    (["models", "binarydensnet28"], "no model matches 'binarydensnet28'; did you mean binarydensenet28"),
    (["models", "--image-size", "2"], "--image-size"),
    (["models", "--bogus"], "No such option"),
    (["nosuchcommand"], "No such command"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    res = run_bnn(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr
    assert res.stdout == ""


def test_bnn_debug_shows_the_traceback():
    res = run_bnn("models", "nosuchnet", env={"BNN_DEBUG": "1"})
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_refusals_and_the_model_table_do_not_load_torch(tmp_path):
    """Friction item 6: a misspelt model, a missing model file, and `bnn models` at its default size
    answer without importing torch (which costs seconds of CPU)."""
    code = ("import sys; from bnncli.cli.app import main; "
            "rcs = [main(['train', '--arch', 'binarydensnet_tiny', '--data', 'builtin:shapes']), main(['models']), "
            "main(['models', 'resnete*', '--json']), main(['eval', 'missing.pt', '--data', 'builtin:shapes']), "
            "main(['pack', 'missing.pt']), main(['export', 'missing.pt']), "
            "main(['predict', 'x.png', '--model', 'missing.bnn'])]; "
            "print(rcs, 'torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert res.stdout.strip().splitlines()[-1] == "[2, 0, 0, 2, 2, 2, 2] False", res.stdout + res.stderr
    assert "did you mean binarydensenet_tiny" in res.stderr

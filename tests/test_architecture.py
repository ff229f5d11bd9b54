"""The house: import contracts, one module per command, --help defaults from the config objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bnncli.cli.app import app, main
from bnncli.engine.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """pyproject.toml [tool.importlinter]: layers, no circles, a torch-free runtime (docs/architecture.md)."""
    r = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                        "sys.exit(lint_imports_command())", "--no-cache"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_each_command_lives_in_its_own_module():
    import typer.main

    commands = typer.main.get_command(app).commands
    assert sorted(commands) == ["compare", "eval", "export", "import", "models", "pack", "predict", "train"]
    modules = {"import": "imports"}  # `import` is a Python keyword; the group's commands live in cli/imports.py
    for name, command in commands.items():
        callbacks = [c.callback for c in command.commands.values()] if hasattr(command, "commands") else \
            [command.callback]
        assert callbacks and all(cb.__module__ == f"bnncli.cli.{modules.get(name, name)}" for cb in callbacks), name


def test_train_help_shows_the_config_defaults(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    d = TrainConfig()
    for shown in (f"[default: {d.epochs}]", f"[default: {d.batch_size}]", f"[default: {d.lr}]",
                  f"[default: {d.optimizer}]", f"[default: {d.schedule}]", f"[default: {d.seed}]"):
        assert shown in text, shown

"""docs/api.md is the Python API: every name it lists is exported, and every example on it runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import bnncli


@pytest.fixture
def keep_torch_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def test_the_page_lists_the_exported_api():
    text = PAGE.read_text(encoding="utf-8")
    for name in bnncli.__all__:
        if name != "__version__":
            assert f"`{name}" in text, f"docs/api.md does not document bnncli.{name}"
    for name in ("create_model", "save", "load", "train", "evaluate", "export", "pack", "open_model"):
        assert name in bnncli.__all__ and callable(getattr(bnncli, name))
    from bnncli import nn as layers

    for name in ("BinaryConv2d", "SteSign", "ApproxSign", "ste_sign", "approx_sign", "LatentWeightClamp",
                 "FloatConv2d", "FloatLinear", "MaxPool2d"):
        assert name in layers.__all__ and f"`{name}" in text


def test_importing_the_package_and_opening_names_does_not_load_torch():
    code = ("import sys, bnncli; bnncli.open_model; bnncli.preprocess_files; bnncli.UsageError; "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.stdout.strip() == "False", res.stderr


def test_the_examples_run_in_order(tmp_path, monkeypatch, keep_torch_threads):
    """The whole page, one block after the other in one namespace, in an empty directory: the
    researcher's script (own model -> train -> save -> export -> pack -> predict) included."""
    examples = _examples()
    assert len(examples) >= 8
    assert any("class MyBNN" in e and "bnncli.pack(" in e and "probabilities" in e for e in examples)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "api_docs"}
    for i, code in enumerate(examples):
        try:
            exec(compile(code, f"docs/api.md example {i + 1}", "exec"), namespace)
        except Exception as e:  # name the block that failed
            pytest.fail(f"docs/api.md example {i + 1} failed: {type(e).__name__}: {e}\n{code}")
    assert (tmp_path / "my_bnn.bnn").is_file() and (tmp_path / "runs" / "api" / "best.pt").is_file()


def test_every_import_the_docs_show_works():
    """Each ``from bnncli... import ...`` / ``import bnncli...`` line in a Python block of the README
    and docs/ imports what it names (docs/deployment.md once showed an ImportError)."""
    root = PAGE.parents[1]
    lines = set()
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
            lines.update(line.strip() for line in block.splitlines()
                         if re.match(r"\s*(from bnncli[\w.]* import |import bnncli)", line))
    assert "from bnncli import open_model" in lines
    for line in sorted(lines):
        exec(line, {})

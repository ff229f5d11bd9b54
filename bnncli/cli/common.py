"""What the CLI commands share: option aliases, consoles, JSON output.

Results go to stdout (tables, or JSON with ``--json``); progress and messages to stderr,
so ``bnn eval --json | jq`` always sees clean JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
if not out.is_terminal and out.width < 160:
    out.width = 160  # pipes and CI logs: wide enough that tables are not truncated

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout (for CI).")]
ArchOpt = Annotated[str, typer.Option("--arch", "-a", help="Model name from `bnn models`.")]


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout, unstyled."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    err.print(message, highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

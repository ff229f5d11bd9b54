"""What the CLI commands share: option aliases (defined once), consoles, JSON output.

Results go to stdout (tables, or JSON with ``--json``); progress and messages to stderr,
so ``bnn eval --json | jq`` always sees clean JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
if not out.is_terminal and out.width < 160:
    out.width = 160  # pipes and CI logs: wide enough that tables are not truncated

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout (for CI).")]
ArchOpt = Annotated[str | None, typer.Option("--arch", "-a", help="Model name from `bnn models`.")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", "-j", min=0, help="DataLoader worker processes [default: 0 on CPU, up to 8 per GPU].")]
CheckpointArg = Annotated[Path, typer.Argument(
    help="A checkpoint written by `bnn train` (runs/NAME/best.pt), or its run directory.")]
SamplesOpt = Annotated[int, typer.Option("--samples", min=1, max=256,
                                         help="Random inputs the result is verified on against PyTorch.")]
BackendOpt = Annotated[str | None, typer.Option(
    "--backend", help="Kernels of a packed model: numpy (the reference), numba (compiled; pip install "
    "'bnncli[fast]') or auto [default: $BNN_BACKEND, else auto: numba where it is installed].")]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, help="Threads of the packed runtime and onnxruntime [default: the CPUs this process may "
    "use].")]
ToleranceOpt = Annotated[float, typer.Option(
    "--tolerance", min=0.0, help="Largest relative logit difference from PyTorch accepted; the top-1 must agree "
    "regardless. Deep dense nets with random or imported weights can exceed the default where float rounding "
    "flips one near-zero binarization (docs/deployment.md, Parity).")]


def default_output(checkpoint: Path, suffix: str) -> Path:
    """Next to the checkpoint, with ``suffix`` (runs/NAME/best.pt -> runs/NAME/best.onnx)."""
    from bnncli.artifacts.rundir import resolve_model_path

    return resolve_model_path(checkpoint, what="checkpoint").with_suffix(suffix)


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout, unstyled."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def note_compiling(backend: str) -> None:
    """Say so when the numba kernels are about to be compiled, so a first run does not look hung."""
    if backend != "numba":
        return
    from bnncli.runtime.backends import compiled_cache_is_warm

    if not compiled_cache_is_warm():
        info("compiling the numba kernels: once per machine, a few seconds; later runs load them from numba's cache")


def info(message: str) -> None:
    err.print(message, highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

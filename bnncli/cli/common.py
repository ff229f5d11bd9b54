"""What the CLI commands share: option aliases (defined once), consoles, JSON output.

Results go to stdout (tables, or JSON with ``--json``); progress and messages to stderr,
so ``bnn eval --json | jq`` always sees clean JSON.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import unicodedata
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
if not out.is_terminal and out.width < 160:
    out.width = 160  # pipes and CI logs: wide enough that tables are not truncated

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout (for CI).")]
ArchOpt = Annotated[str | None, typer.Option(
    "--arch", "-a", metavar="NAME", help="Model name from `bnn models`.")]


def _cap_to_cpus(option: str, why: str = ""):
    """A Typer callback: ``option`` above the CPUs this process may use is capped, with one warning line."""
    def cap(value: int | None) -> int | None:
        if value is None:
            return None
        from bnncli.threads import available_cpus

        cpus = available_cpus()
        if value > cpus:
            warn(f"{option} {value} is more than the {cpus} CPUs this process may use; using {cpus}")
            return cpus
        return value

    cap.__doc__ = f"``{option}`` above the CPUs this process may use: capped, with one warning line{why}."
    return cap


_cap_workers = _cap_to_cpus("--workers")
_cap_threads = _cap_to_cpus("--threads", " (more threads than CPUs only wait for each other)")


WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", "-j", metavar="N", min=0, callback=_cap_workers,
    help="DataLoader worker processes, at most the CPUs [default: 0 on CPU, up to 8 per GPU].")]
CheckpointArg = Annotated[Path, typer.Argument(
    metavar="CHECKPOINT",
    help="A checkpoint (.pt) written by `bnn train` (runs/NAME/best.pt) or `bnn import`, or a run directory.")]
SamplesOpt = Annotated[int, typer.Option("--samples", metavar="N", min=1, max=256,
                                         help="Random inputs the result is verified on against PyTorch.")]
def from_environment(ctx: typer.Context, param: Any) -> str:
    """`` (from $VAR)`` when an option's value came from its environment variable, else ""."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    return f" (from ${param.envvar})" if source is not None and source.name == "ENVIRONMENT" else ""


def _check_backend(ctx: typer.Context, param: Any, value: str | None) -> str | None:
    """``--backend`` (or ``$BNN_BACKEND``, which Typer reads) is a known name."""
    if value is None:
        return None
    choices = ("auto", "numpy", "numba")  # bnncli.runtime.backends.CHOICES, without importing the runtime
    if value.strip().lower() not in choices:
        from bnncli.errors import UsageError

        raise UsageError(f"unknown runtime backend {value!r}{from_environment(ctx, param)}; choose one of "
                         f"{', '.join(choices)}")
    return value


BackendOpt = Annotated[str | None, typer.Option(
    "--backend", metavar="NAME", envvar="BNN_BACKEND", show_envvar=True, callback=_check_backend,
    help="Kernels of a packed model: numpy (the reference), numba (compiled; pip install 'bnncli[fast]') or auto "
    "[default: auto: numba where it is installed].")]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, metavar="N", callback=_cap_threads, help="CPU threads of PyTorch, onnxruntime and the "
    "packed runtime, at most the CPUs [default: the CPUs this process may use].")]
ToleranceOpt = Annotated[float, typer.Option(
    "--tolerance", metavar="X", min=0.0, help="Largest relative logit difference from PyTorch accepted; the "
    "top-1 must agree regardless. Deep dense nets with random or imported weights can exceed the default where "
    "float rounding flips one near-zero binarization (docs/deployment.md, Parity).")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Replace OUTPUT if it exists (never the command's input, nor a run directory's own files).")]


def short_count(n: int) -> str:
    """A count in at most 7 characters: 9,408, 54,500, 115.6M, 1.68G."""
    for scale, unit in ((1e9, "G"), (1e6, "M")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}" if n < 100 * scale else f"{n / scale:.0f}{unit}"
    return f"{n:,}"


def short_size(nbytes: float) -> str:
    """A size in MiB, KiB or bytes, whichever keeps three digits: 4.04 MiB, 41.3 KiB, 512 B."""
    if nbytes >= 2**20:
        return f"{nbytes / 2**20:.2f} MiB"
    return f"{nbytes / 2**10:.1f} KiB" if nbytes >= 1024 else f"{nbytes:.0f} B"


def default_output(checkpoint: Path, suffix: str) -> Path:
    """Next to the checkpoint, with ``suffix`` (runs/NAME/best.pt -> runs/NAME/best.onnx)."""
    from bnncli.artifacts.rundir import resolve_model_path

    return resolve_model_path(checkpoint, what="checkpoint").with_suffix(suffix)


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout, unstyled; NaN and infinities become null (valid JSON)."""
    sys.stdout.write(json.dumps(finite_or_null(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) inside dicts, lists and tuples replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def note_compiling(backend: str) -> None:
    """Before a run on the numba backend: where its cache is cold, say so and compile every kernel
    now (once per machine; later runs load them, whichever model they use); where numba cannot
    write its cache, say that every run compiles and what to do about it. Nothing when warm."""
    if backend != "numba":
        return
    import os

    from bnncli.runtime.backends import compiled_cache_state, warm_compiled_cache

    state = compiled_cache_state()
    if state == "cold":
        info("compiling the numba kernels: once per machine, some seconds; later runs load them from numba's cache")
        warm_compiled_cache()
    elif state == "unwritable":
        where = os.environ.get("NUMBA_CACHE_DIR") or "~/.cache/numba"
        fix = "a volume on it" if os.environ.get("BNNCLI_CONTAINER") else "a writable NUMBA_CACHE_DIR"
        info(f"numba cannot write its cache ({where}), so the kernels compile in every run (some seconds); "
             f"{fix} keeps them")


# Bidirectional-text controls and line separators: they reorder or break what a terminal shows.
_INVISIBLE = frozenset("\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: object) -> str:
    """``text`` safe to show on a terminal: control characters (ESC, newline, DEL, C1, bidi overrides)
    as visible escapes such as ``\\x1b``. For file, folder and class names; JSON keeps the real text."""
    return "".join(ascii(c)[1:-1] if c in _INVISIBLE or unicodedata.category(c) == "Cc" else c for c in str(text))


def plain(text: object) -> Text:
    """User-controlled text as a rich ``Text``: shown as it is, never parsed as markup (table cells)."""
    return Text(printable(text))


def say(message: str) -> None:
    """One line on stdout, shown literally (no markup, no control characters): results that name user paths."""
    out.print(printable(message), markup=False, highlight=False)


def info(message: str) -> None:
    """One line on stderr, shown literally (messages hold user paths: no markup, no control characters)."""
    err.print(printable(message), markup=False, highlight=False)


def warn(message: str) -> None:
    err.print(Text.assemble(("warning:", "yellow"), " ", printable(message)), highlight=False)


class _LogLines(logging.Handler):
    """Library log records (the ``bnncli`` logger) as the CLI's own lines: warnings as ``warning:``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            (warn if record.levelno >= logging.WARNING else info)(record.getMessage())
        except Exception:  # a handler must not raise into the library
            self.handleError(record)


def render_library_logs() -> None:
    """Show the library's warnings (stdlib logging, logger ``bnncli``) on stderr, once per process."""
    logger = logging.getLogger("bnncli")
    if not any(isinstance(h, _LogLines) for h in logger.handlers):
        logger.addHandler(_LogLines(logging.WARNING))

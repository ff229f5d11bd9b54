"""The `bnn` command: one Typer app composed of one module per subcommand.

``main`` runs the app in non-standalone mode so that every failure becomes one line on
stderr and a non-zero exit; the traceback is shown only with ``BNN_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from bnncli import __version__
from bnncli.cli import compare as compare_cmd
from bnncli.cli import eval as eval_cmd
from bnncli.cli import export as export_cmd
from bnncli.cli import imports as import_cmd
from bnncli.cli import models as models_cmd
from bnncli.cli import pack as pack_cmd
from bnncli.cli import predict as predict_cmd
from bnncli.cli import train as train_cmd


def _arguments_by_metavar() -> None:
    """Show an argument by its metavar (``MODEL``, ``IMAGE|DIR...``), as Click does, without the type and
    braces that newer Typer versions add (``{model}``, ``model <path>``). Older Typer shows metavars
    plainly already and lacks these hooks."""
    from typer.core import TyperArgument

    if hasattr(TyperArgument, "display_type_rich"):
        plain_type = TyperArgument.display_type_rich
        setattr(TyperArgument, "display_type_rich",  # noqa: B010  (patching a method)
                lambda self, ctx: None if self.metavar else plain_type(self, ctx))
    if hasattr(TyperArgument, "_usage_display_name"):
        usage_name = TyperArgument._usage_display_name

        def _usage(self) -> str:
            if self.metavar is None:
                return usage_name(self)
            name = self.metavar if self.required else f"[{self.metavar}]"
            return name + ("..." if self.nargs != 1 else "")

        setattr(TyperArgument, "_usage_display_name", _usage)  # noqa: B010  (patching a method)


_arguments_by_metavar()

app = typer.Typer(
    name="bnn",
    help="Train, evaluate and ship binary neural networks (Bethge et al., 2019: 'Back to Simplicity').",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Train, evaluate and ship binary neural networks."""


# One module per command (bnncli/cli/<command>.py), in the order `bnn --help` lists them.
# short_help: what `bnn --help` lists, whole at 80 columns (the docstrings' first lines are longer).
app.command("train", short_help="Train a model from scratch (the paper's recipe by default).")(train_cmd.train)
app.command("eval", short_help="Top-1, top-5, loss and speed of any model file; a CI gate.")(eval_cmd.evaluate)
app.command("export", short_help="A checkpoint to ONNX, verified with onnxruntime.")(export_cmd.export)
app.command("pack", short_help="A checkpoint to one 1-bit packed file, verified.")(pack_cmd.pack)
app.command("predict", short_help="Top-k classes of images, or of every image in folders.")(predict_cmd.predict)
app.add_typer(import_cmd.app, name="import", short_help="Models trained elsewhere (Larq Zoo) to checkpoints.")
app.command("models", short_help="The model zoo: sizes, MACs, published weights.")(models_cmd.models)
app.command("compare", short_help="Training runs side by side, with their curves.")(compare_cmd.compare)


def _debug() -> bool:
    return os.environ.get("BNN_DEBUG", "") not in ("", "0")


def _is(exc: BaseException, name: str) -> bool:
    """Class-name check, since Typer may ship its own copy of Click's exceptions."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `bnn` script; returns the exit code."""
    from bnncli.errors import BnnError
    from bnncli.threads import prefer_sleeping_waits

    prefer_sleeping_waits()  # before anything loads PyTorch's OpenMP (bnncli.threads)
    from bnncli.cli.common import render_library_logs

    render_library_logs()

    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="bnn", standalone_mode=False)
    except BnnError as e:
        if _debug():
            raise
        from bnncli.cli.common import printable

        sys.stderr.write(f"bnn: error: {printable(e)}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("bnn: interrupted\n")
        return 130
    except Exception as e:
        if _is(e, "Exit"):
            return int(getattr(e, "exit_code", 0) or 0)
        if _is(e, "NoArgsIsHelpError"):  # `bnn` or `bnn CMD` alone: show the help
            ctx = getattr(e, "ctx", None)
            click_error: Any = e  # Click's exception, not imported here
            sys.stdout.write((ctx.get_help() if ctx is not None else click_error.format_message()) + "\n")
            return 0
        if _is(e, "UsageError") and not _debug():
            ctx = getattr(e, "ctx", None)
            path = ctx.command_path if ctx is not None else "bnn"
            usage_error: Any = e
            sys.stderr.write(f"{path}: error: {usage_error.format_message()} (see '{path} --help')\n")
            return 2
        if _is(e, "Abort"):
            sys.stderr.write("bnn: aborted\n")
            return 130
        if _debug():
            raise
        # A bug: keep it to one line unless debugging.
        sys.stderr.write(f"bnn: internal error: {type(e).__name__}: {e} (set BNN_DEBUG=1 for the traceback)\n")
        return 1
    return rv if isinstance(rv, int) else 0


def run() -> None:
    sys.exit(main())

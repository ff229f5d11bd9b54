"""`bnn pack`: a checkpoint to one file with 1-bit binary weights, verified with the NumPy runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bnncli.artifacts.identify import require_checkpoint
from bnncli.artifacts.rundir import check_model_output
from bnncli.cli.common import (
    CheckpointArg,
    ForceOpt,
    JsonOpt,
    SamplesOpt,
    ThreadsOpt,
    ToleranceOpt,
    default_output,
    print_json,
    say,
)
from bnncli.deploy.verification import SAMPLES, TOLERANCE
from bnncli.graph.format import FLOAT_DTYPES


def pack(
    checkpoint: CheckpointArg,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE",
        help="Where to write (default: CHECKPOINT.bnn); an existing file needs --force.")] = None,
    float_dtype: Annotated[str, typer.Option(
        "--float-dtype", metavar="DTYPE", help=f"Storage of the full-precision layers: {' or '.join(FLOAT_DTYPES)}, "
        "or auto: float16 when that stores every weight unchanged (models trained with --float-weights float16, "
        "the default), else float32.")] = "auto",
    samples: SamplesOpt = SAMPLES,
    tolerance: ToleranceOpt = TOLERANCE,
    force: ForceOpt = False,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Pack a checkpoint into one file with 1-bit binary weights (format: docs/FORMAT.md).

    Runs the packed file in the NumPy runtime against PyTorch before writing; a relative logit
    difference above --tolerance (1e-3) or a different top-1 is an error, except where float16 storage had to
    round weights (a model trained with --float-weights float32), which is reported.
    """
    from bnncli.errors import UsageError

    if float_dtype not in (*FLOAT_DTYPES, "auto"):
        raise UsageError(f"--float-dtype must be {', '.join(FLOAT_DTYPES)} or auto, not {float_dtype!r}")
    require_checkpoint(checkpoint, "bnn pack")
    target = check_model_output(output or default_output(checkpoint, ".bnn"), checkpoint, force, ".bnn")
    from bnncli.deploy.pack import pack_model  # torch: only once the paths are known to be good

    result = pack_model(checkpoint, target, float_dtype, samples=samples, tolerance=tolerance, threads=threads)
    if json_:
        print_json(result.as_dict())
        return
    p = result.parity
    say(f"wrote {result.path}: {describe_sizes(result)}")
    note = ""
    if result.float_dtype == "float16":
        note = (" (float16 stores every weight unchanged: the model computes with float16-valued weights)"
                if result.lossless else
                f" (float16 rounded {len(result.rounded)} weight tensors of a model trained with float32 float "
                f"weights, so small differences are expected; models trained with --float-weights float16, the "
                f"default, pack losslessly)")
    say(f"verified against PyTorch with the NumPy runtime on {p.samples} inputs: {p.describe()}{note}")


def describe_sizes(result) -> str:
    """The file's bytes by kind, with the weight counts (the numbers of ``--json``'s ``bytes_by_kind``,
    ``binary_params`` and ``float_params``)."""
    s = result.sizes
    parts = [f"{result.binary_params:,} binary weights at 1 bit in {s['binary_weights']:,} bytes",
             f"{result.float_params:,} float weights ({result.float_dtype}) in {s['float_weights']:,} bytes",
             f"{s['per_channel']:,} bytes of per-channel float32 vectors", f"{s['header']:,} bytes of header"]
    if s["alignment"]:
        parts.append(f"{s['alignment']:,} bytes of alignment")
    return f"{result.bytes:,} bytes: {', '.join(parts)}"

"""`bnn export`: a checkpoint to standard ONNX, verified with onnxruntime before it is written."""

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


def export(
    checkpoint: CheckpointArg,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE",
        help="Where to write (default: CHECKPOINT.onnx); an existing file needs --force.")] = None,
    samples: SamplesOpt = SAMPLES,
    tolerance: ToleranceOpt = TOLERANCE,
    force: ForceOpt = False,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Export a checkpoint to standard ONNX (opset 17, dynamic batch), verified with onnxruntime.

    Binarization is written as Where(x < 0, -1, 1), so sign(0) = +1; the pad value of binary convs
    as an explicit Pad; binary weights as +-1 floats. Fails, writing nothing, if onnxruntime and
    PyTorch disagree (relative logit difference above --tolerance, 1e-3, or a different top-1).
    """
    require_checkpoint(checkpoint, "bnn export")
    target = check_model_output(output or default_output(checkpoint, ".onnx"), checkpoint, force, ".onnx")
    from bnncli.deploy.export import export_onnx  # torch and onnx: only once the paths are known to be good

    result = export_onnx(checkpoint, target, samples=samples, tolerance=tolerance, threads=threads)
    if json_:
        print_json(result.as_dict())
        return
    p = result.parity
    say(f"wrote {result.path} ({result.bytes:,} bytes, ONNX opset {result.opset})")
    say(f"verified against PyTorch with onnxruntime on {p.samples} inputs: {p.describe()}")

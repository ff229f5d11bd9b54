"""`bnn import larq`: published Larq Zoo weights (Keras HDF5) to a bnncli checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bnncli.cli.common import ArchOpt, ForceOpt, JsonOpt, print_json, say

app = typer.Typer(help="Bring models trained elsewhere into bnncli (they become ordinary checkpoints).",
                  no_args_is_help=True)


@app.command("larq", short_help="Larq Zoo's published Keras weights (.h5) to a checkpoint.")
def larq(
    weights: Annotated[Path, typer.Argument(
        metavar="WEIGHTS", help="A Larq Zoo weights file (.h5), e.g. binary_densenet_28_weights.h5.")],
    arch: ArchOpt = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="Checkpoint to write (default: ARCH.pt).")] = None,
    image_size: Annotated[int, typer.Option(
        "--image-size", metavar="PX", min=32, help="Input size the preprocessing crops to.")] = 224,
    classes: Annotated[Path | None, typer.Option(
        "--classes", metavar="FILE", help="Text file with one class name per line, in output order [default: the "
        "1000 ImageNet synset ids for a 1000-class model, else class_0, class_1, ...].")] = None,
    force: ForceOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Import Larq Zoo weights: BinaryDenseNet28/37/37Dilated/45 or BinaryResNetE18.

    The architecture is read off the file (pass --arch where two models have the same shapes:
    binarydensenet37 and binarydensenet37_dilated). The checkpoint records TensorFlow's padding,
    Larq Zoo's preprocessing (preset larq) and where it came from; `bnn eval`, `export`, `pack` and
    `predict` then take it like any checkpoint. Download the .h5 files yourself: nothing here fetches.
    """
    from bnncli.convert.larq import import_larq
    from bnncli.fileio import read_regular_text

    names = None
    if classes is not None:
        text = read_regular_text(classes, what="class names file")
        names = [line.strip() for line in text.splitlines() if line.strip()]
    result = import_larq(weights, output, arch, image_size, names, overwrite=force)
    if json_:
        print_json(result.as_dict())
        return
    say(f"imported {result.source['file']} as {result.arch} ({result.layers} layers, {result.params:,} "
        f"parameters, TensorFlow padding, float32 float layers) -> {result.output}")
    say(f"next: bnn predict --model {result.output} IMAGE, or bnn eval {result.output} --data DIR")

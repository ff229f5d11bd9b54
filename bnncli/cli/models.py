"""`bnn models`: the registry with parameter, MAC and size counts."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bnncli.cli.common import JsonOpt, out, plain, print_json
from bnncli.cli.common import short_count as _count
from bnncli.cli.common import short_size as _size


def models(
    pattern: Annotated[str | None, typer.Argument(
        metavar="PATTERN", help="A model name, or a glob filter such as 'binarydensenet*'.")] = None,
    image_size: Annotated[int, typer.Option(
        "--image-size", metavar="PX", min=8, help="Input size the MACs are counted at.")] = 224,
    num_classes: Annotated[int, typer.Option(
        "--num-classes", metavar="N", min=1, help="Classifier size the counts use.")] = 1000,
    wide: Annotated[bool, typer.Option(
        "--wide", help="Every column with exact counts (about 150 characters wide); --json has them all too.")] = False,
    layers: Annotated[bool, typer.Option("--layers", help="One model, layer by layer: kind (binary/float), "
                                         "output shape, parameters, MACs and size at 1 bit.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List registered models with params, binary params, MACs, OPs and 1-bit size (ImageNet head),
    and which have published ImageNet weights to `bnn import larq`, with their accuracy."""
    import fnmatch

    from bnncli.convert.published import PUBLISHED
    from bnncli.errors import UsageError
    from bnncli.models.anchors import ANCHORS
    from bnncli.models.zoo import IMAGE_SIZE, NUM_CLASSES, ZOO

    # The zoo at its default size comes from a table of plain data (bnncli.models.zoo): no torch to
    # load, no model to build. Other sizes, and --layers, build the models.
    static = not layers and (image_size, num_classes) == (IMAGE_SIZE, NUM_CLASSES)
    if static:
        known = list(ZOO)
    else:
        from bnncli.models import list_models

        known = list_models()
    names = [n for n in known if fnmatch.fnmatch(n, pattern)] if pattern else known
    if not names:
        import difflib

        close = difflib.get_close_matches(pattern or "", known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        raise UsageError(f"no model matches {pattern!r}; {hint}")
    if layers:
        from bnncli.models import create_model

        if len(names) != 1 and pattern not in names:
            raise UsageError(f"--layers lists one model; {pattern!r} matches {len(names)}: {', '.join(names)}")
        name = pattern if pattern in names else names[0]
        model = create_model(name, num_classes=num_classes, thumbnail=image_size < 50, in_channels=3)
        _print_layers(name, model, image_size, json_)
        return
    rows = []
    too_small = []  # models that cannot take the size (XNOR-Net below 217 px, ResNetE at 100): left out, named
    for name in names:
        s: Any  # ZooCounts or ModelStats: the same fields
        if static:
            s, family = ZOO[name], ZOO[name].family
        else:
            from bnncli.models import count_model, create_model, model_family

            # Count every model as configured for ImageNet-sized input, so rows are comparable.
            model = create_model(name, num_classes=num_classes, thumbnail=image_size < 50, in_channels=3)
            try:
                s, family = count_model(model, image_size=image_size), model_family(name)
            except UsageError:
                if len(names) == 1:
                    raise
                too_small.append(name)
                continue
        rows.append({
            "name": name,
            "family": family,
            "params": s.params,
            "params_with_bn_stats": s.params_with_bn_stats,
            "binary_params": s.binary_params,
            "binary_macs": s.binary_macs,
            "fp_macs": s.fp_macs,
            "ops": s.ops,
            "size_bytes": s.size_bytes,
            "image_size": image_size,
            "num_classes": num_classes,
            "larq_zoo": _published(name, PUBLISHED, ANCHORS),
        })
    if json_:
        print_json(rows)
        return
    (_print_wide if wide else _print_narrow)(rows, f"bnn models ({num_classes} classes, {image_size}x{image_size})")
    if too_small:
        out.print(f"Left out, their layers do not fit {image_size} px inputs: {', '.join(too_small)}.",
                  highlight=False)
    if any(r["larq_zoo"] for r in rows):
        out.print("Larq Zoo weights: download the .h5 file (bnn models --json lists the URLs),\n"
                  "then `bnn import larq FILE.h5`.", highlight=False)
    if pattern is None:
        import textwrap

        from bnncli.convert.published import NOT_IMPORTED

        out.print("Larq Zoo models bnncli does not import:", highlight=False)
        for zoo_name, (top1, reason) in NOT_IMPORTED.items():
            text = textwrap.fill(f"{zoo_name} ({top1:.2f}% top-1): {reason}", width=78, initial_indent="  ",
                                 subsequent_indent="    ")
            out.print(text, highlight=False, soft_wrap=True)


def _mib(nbytes: int) -> str:
    """A size in MiB in eight columns at most: 4.04 MiB, 22.7 MiB (XNOR-Net's float classifier)."""
    mib = nbytes / 2**20
    return f"{mib:.2f} MiB" if mib < 9.995 else f"{mib:.1f} MiB"


def _zoo_top1(row: dict) -> str:
    return f"{row['larq_zoo']['top1']:.2f}%" if row["larq_zoo"] else "-"


def _print_narrow(rows: list[dict], title: str) -> None:
    """The registry in 80 columns: counts rounded (115.6M, 1.68G), sizes in MiB; --wide for exact ones."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
    for col in ("name", "params", "binary\nweights", "binary\nMACs", "FP\nMACs", "1-bit\nsize",
                "Larq Zoo\ntop-1"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in rows:
        table.add_row(plain(r["name"]), _count(r["params"]), _count(r["binary_params"]), _count(r["binary_macs"]),
                      _count(r["fp_macs"]), _mib(r["size_bytes"]), _zoo_top1(r))
    out.print(table)


def _print_wide(rows: list[dict], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("name", "params", "binary params", "binary MACs", "FP MACs", "OPs", "size (1-bit + fp32)",
                "Larq Zoo weights (top-1)"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in rows:
        table.add_row(
            plain(r["name"]), f"{r['params']:,}", f"{r['binary_params']:,}", f"{r['binary_macs']:,}",
            f"{r['fp_macs']:,}", f"{r['ops']:.3g}", f"{r['size_bytes'] / 2**20:.2f} MiB", _zoo_top1(r),
        )
    out.print(table)


def _published(name: str, published: dict, anchors: dict) -> dict | None:
    """Where Larq Zoo's ImageNet weights for ``name`` are and how accurate they are, or None."""
    if name not in published:
        return None
    top1, top5 = anchors[name]["larq_zoo"]
    p = published[name]
    return {"model": p.larq_zoo_model, "file": p.file, "url": p.url, "sha256": p.sha256, "top1": top1, "top5": top5}


def _print_layers(name: str, model, image_size: int, json_: bool) -> None:
    """`bnn models NAME --layers`: bnncli.models.layer_summary as a table or JSON, with the totals."""
    from bnncli.models import count_model, layer_summary

    rows = layer_summary(model, image_size)
    totals = count_model(model, image_size)
    if json_:
        print_json({"name": name, "image_size": image_size, "layers": [r.as_dict() for r in rows],
                    "totals": totals.as_dict()})
        return
    from rich import box
    from rich.table import Table

    # Within 80 columns: no vertical rules, the layer type says binary or float (BinaryConv2d; --json
    # has the kind), and a long layer name folds onto a second line rather than being cut.
    table = Table(title=f"{name} at {image_size}x{image_size}", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 0, 0, 1))
    for col in ("layer", "type", "output", "params", "bin MACs", "FP MACs", "size"):
        text = col in ("layer", "type")
        table.add_column(col, justify="left" if text else "right", overflow="fold", no_wrap=not text)
    for r in rows:
        table.add_row(plain(r.name or "(model)"), r.type, "x".join(map(str, r.output_shape)),
                      _count(r.params), _count(r.binary_macs), _count(r.fp_macs), _size(r.size_bytes))
    table.add_section()
    table.add_row("total", "", "", _count(totals.params), _count(totals.binary_macs), _count(totals.fp_macs),
                  _size(totals.size_bytes))
    out.print(table)
    out.print("Exact counts: --json.", highlight=False)


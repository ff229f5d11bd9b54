"""`bnn compare`: runs side by side, and one PNG of their validation curves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bnncli.cli.common import ForceOpt, JsonOpt, out, plain, print_json, say


def compare(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN", help="Run directories of bnn train.")],
    plot: Annotated[Path, typer.Option("--plot", metavar="FILE", help="Where to draw the runs' validation "
                                       "curves, overlaid (an existing file needs --force).")] = Path("compare.png"),
    force: ForceOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Compare training runs: architecture, the options that differ, epochs, best and last top-1/top-5,
    images/s, parameters and 1-bit size, and their validation curves in one PNG."""
    from bnncli.engine.compare import compare_runs
    from bnncli.engine.curves import plot_comparison
    from bnncli.fileio import check_output

    target = check_output(plot, inputs=runs, force=force, suffix=".png")
    result = compare_runs(runs)
    names = _names(result["runs"])
    plot_comparison({n: result["histories"][r["run"]] for n, r in zip(names, result["runs"])}, target)
    if json_:
        print_json({"differing": result["differing"], "runs": result["runs"], "plot": str(target)})
        return
    from rich.table import Table

    table = Table(title="bnn compare")
    columns = ["run", *result["differing"], "epochs", "best top-1", "top-5", "last top-1", "img/s", "params",
               "1-bit size"]
    for col in columns:
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, r in zip(names, result["runs"]):
        table.add_row(plain(name), *(plain(_short(r["options"].get(k, r["arch"] if k == "arch" else None)))
                                     for k in result["differing"]),
                      str(r["epochs"]), _pct(r["best_top1"]) + (f" (ep {r['best_epoch']})" if r["best_epoch"] else ""),
                      _pct(r["best_top5"]), _pct(r["last_top1"]),
                      f"{r['images_per_s']:.0f}" if r["images_per_s"] else "-", f"{r['params'] / 1e6:.2f}M",
                      f"{r['size_bytes'] / 2**20:.2f} MiB")
    out.print(table)
    say(f"wrote {target} (validation curves; top-1 by {result['runs'][0]['selected_by']})")


def _names(rows: list[dict]) -> list[str]:
    """Run directory names, or whole paths where two names are the same."""
    names = [Path(r["run"]).name for r in rows]
    return names if len(set(names)) == len(names) else [r["run"] for r in rows]


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "-" if v is None else str(v)

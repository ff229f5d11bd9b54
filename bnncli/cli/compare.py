"""`bnn compare`: runs side by side, and one PNG of their validation curves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bnncli.cli.common import ForceOpt, JsonOpt, out, plain, print_json, say, short_count, short_size

if TYPE_CHECKING:
    from rich.text import Text

DEFAULT_PLOT = "compare.png"


def compare(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN", help="Run directories of bnn train.")],
    plot: Annotated[Path | None, typer.Option("--plot", metavar="FILE", help="Where to draw the runs' validation "
                    "curves, overlaid; an existing file needs --force, except the default's own earlier plot "
                    f"[default: {DEFAULT_PLOT}].")] = None,
    group_seeds: Annotated[bool, typer.Option(
        "--group-seeds", help="One row for the runs that differ only by --seed: mean ± standard deviation "
        "over the seeds, and one mean curve with a band from the lowest to the highest run.")] = False,
    force: ForceOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Compare training runs: architecture, the options that differ, epochs, best and last top-1/top-5,
    images/s, parameters and 1-bit size, and their validation curves in one PNG."""
    from bnncli.artifacts.rundir import check_command_output
    from bnncli.engine.compare import compare_runs
    from bnncli.engine.curves import COMPARISON, plot_comparison, written_by

    if plot is None:  # the default file is replaced when bnn compare drew it (a rerun), never another file
        plot = Path(DEFAULT_PLOT)
        force = force or written_by(plot, COMPARISON)
    target = check_command_output(plot, inputs=runs, force=force, suffix=".png", option="--plot")
    result = compare_runs(runs)
    if group_seeds:
        _show_groups(result, target, json_)
        return
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
        table.add_column(_header(col), justify="left" if col == "run" else "right")
    for name, r in zip(names, result["runs"]):
        table.add_row(plain(name), *_cells(r["options"], result["differing"]),
                      str(r["epochs"]), _pct(r["best_top1"]) + (f" (ep {r['best_epoch']})" if r["best_epoch"] else ""),
                      _pct(r["best_top5"]), _pct(r["last_top1"]),
                      f"{r['images_per_s']:.0f}" if r["images_per_s"] else "-", short_count(r["params"]),
                      short_size(r["size_bytes"]))
    out.print(table)
    say(f"wrote {target} (validation curves; top-1 by {result['runs'][0]['selected_by']})")


def _show_groups(result: dict, target: Path, json_: bool) -> None:
    from bnncli.engine.compare import group_by_seed
    from bnncli.engine.curves import plot_groups

    grouped = group_by_seed(result)
    plot_groups(grouped["histories"], target)
    if json_:
        print_json({"differing": grouped["differing"], "groups": grouped["groups"], "plot": str(target)})
        return
    from rich.table import Table

    table = Table(title="bnn compare (groups of seeds: mean ± standard deviation)")
    for col in ["group", *grouped["differing"], "seeds", "best top-1", "last top-1", "img/s", "1-bit size"]:
        table.add_column(_header(col), justify="left" if col == "group" else "right")
    for g in grouped["groups"]:
        table.add_row(plain(g["name"]), *_cells(g["options"], grouped["differing"]),
                      str(len(g["runs"])), _pm(g["best_top1_mean"], g["best_top1_std"]),
                      _pm(g["last_top1_mean"], g["last_top1_std"]),
                      f"{g['images_per_s']:.0f}" if g["images_per_s"] else "-", short_size(g["size_bytes"]))
    out.print(table)
    say(f"wrote {target} (validation curves, mean of each group's runs; top-1 by "
        f"{grouped['groups'][0]['selected_by']})")


def _cells(options: dict, keys: list[str]) -> list[Text]:
    """A row's values of the differing options (``arch`` among them when the architectures differ)."""
    return [plain(_short(options.get(k))) for k in keys]


def _header(option: str) -> str:
    """A column's title: model options without their ``model.`` prefix (narrower tables)."""
    return option.removeprefix("model.")


def _pm(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.1f}%" + ("" if std is None else f" ± {100 * std:.1f}")


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

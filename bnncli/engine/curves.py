"""Training curves as PNG files, drawn with matplotlib's headless Agg backend.

``plot_curves``: one run, loss and accuracy per epoch. ``plot_comparison``: several runs'
validation accuracy and loss overlaid (``bnn compare``); ``plot_groups``: the same for groups of runs
that differ only by seed, a mean line with a band (``bnn compare --group-seeds``). All put the legend
beside the axes, never over the data, use whole-epoch ticks, mark the best epoch, and draw the loss
on a log scale when it spans more than a decade.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnncli.fileio import atomic_open

_LOG_SPAN = 10.0  # a loss whose largest / smallest value exceeds this is drawn on a log scale
MAX_LEGEND = 20  # legend entries; with more curves the legend ends with "... and N more"


def _figure(panels: int):
    # A bare Figure renders PNG with the Agg canvas: no pyplot, no display, no global backend change.
    from matplotlib.figure import Figure

    return Figure(figsize=(5.2 * panels + 1.6, 3.6), dpi=110, layout="constrained")


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(float(m["epoch"]), float(m[key])) for m in history if m.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _style(ax, title: str, ylabel: str, percent: bool, values: list[float]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.grid(True, alpha=0.3)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    else:
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > _LOG_SPAN:
            ax.set_yscale("log")
            # Plain numbers (0.2, 0.3, 0.5, 1, 2), not matplotlib's 3 x 10^-1; minor ticks at 2, 3 and 5 only.
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > MAX_LEGEND:  # hundreds of runs: the first ones, and how many more (the table lists all)
        handles = handles[:MAX_LEGEND - 1] + [Line2D([], [], linestyle="none")]
        labels = labels[:MAX_LEGEND - 1] + [f"... and {len(labels) - MAX_LEGEND + 1} more"]
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)


def _minor_log_label(value: float, _position=None) -> str:
    if value <= 0:
        return ""
    leading = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if leading in (2, 3, 5) else ""


def selection_key(history: Sequence[dict[str, Any]]) -> str:
    """The metric a run's best epoch is chosen by: validation top-1, or training top-1 without a val split."""
    return "val_top1" if any(m.get("val_top1") is not None for m in history) else "train_top1"


def best_epoch(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The metrics of the best epoch (by :func:`selection_key`; the first of equals), or None."""
    key = selection_key(history)
    scored = [m for m in history if m.get(key) is not None]
    return max(scored, key=lambda m: m[key]) if scored else None


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Write ``path`` (PNG): loss (train, val) and top-1 accuracy (train, val, val top-5) per epoch,
    the best epoch marked."""
    fig = _figure(2)
    loss_ax, acc_ax = fig.subplots(1, 2)
    losses: list[float] = []
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        xs, ys = _series(history, key)
        if xs:
            loss_ax.plot(xs, ys, marker="o", markersize=3, label=label)
            losses += ys
    for key, label in (("train_top1", "train top-1"), ("val_top1", "val top-1"), ("val_top5", "val top-5")):
        xs, ys = _series(history, key)
        if xs:
            acc_ax.plot(xs, ys, marker="o", markersize=3, label=label)
    best = best_epoch(history)
    if best is not None:
        key = selection_key(history)
        epoch, top1 = float(best["epoch"]), float(best[key])
        which = "val" if key == "val_top1" else "train"
        acc_ax.axvline(epoch, color="0.5", linestyle="--", linewidth=1)
        acc_ax.plot([epoch], [top1], marker="*", markersize=11, color="black", linestyle="none",
                    label=f"best: {which} {top1:.1%}, epoch {epoch:.0f}")
        loss_ax.axvline(epoch, color="0.5", linestyle="--", linewidth=1)
    acc_ax.set_ylim(0.0, 1.0)
    _style(loss_ax, f"loss {title}".strip(), "cross-entropy", False, losses)
    _style(acc_ax, f"accuracy {title}".strip(), "top-1", True, [])
    return _save(fig, path)


def plot_comparison(runs: dict[str, Sequence[dict[str, Any]]], path: str | os.PathLike) -> Path:
    """Write ``path`` (PNG): each run's validation top-1 (training top-1 where it has no validation
    split) and loss per epoch, overlaid, each run's best epoch marked."""
    return plot_groups({name: [history] for name, history in runs.items()}, path)


def plot_groups(groups: dict[str, Sequence[Sequence[dict[str, Any]]]], path: str | os.PathLike) -> Path:
    """Write ``path`` (PNG) like :func:`plot_comparison`, one line a group of runs (the same options,
    several seeds): the mean over the group's runs at each epoch they all reached, with a band from
    the lowest to the highest run, and a star at the best epoch of the mean."""
    fig = _figure(2)
    acc_ax, loss_ax = fig.subplots(1, 2)
    losses: list[float] = []
    for name, histories in groups.items():
        key = selection_key([m for h in histories for m in h])
        xs, ys, low, high = _spread(histories, key)
        if not xs:
            continue
        label = name if key == "val_top1" else f"{name} (train)"
        if len(histories) > 1:
            label += f" (mean of {len(histories)})"
        line, = acc_ax.plot(xs, ys, marker="o", markersize=3, label=label)
        if len(histories) > 1:
            acc_ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        best = max(range(len(ys)), key=ys.__getitem__)  # the first of equals
        acc_ax.plot([xs[best]], [ys[best]], marker="*", markersize=10, color=line.get_color(), linestyle="none")
        lxs, lys, llow, lhigh = _spread(histories, "val_loss" if key == "val_top1" else "train_loss")
        if lxs:
            loss_ax.plot(lxs, lys, marker="o", markersize=3, color=line.get_color(), label=name)
            if len(histories) > 1:
                loss_ax.fill_between(lxs, llow, lhigh, color=line.get_color(), alpha=0.15, linewidth=0)
            losses += llow + lhigh
    acc_ax.set_ylim(0.0, 1.0)
    several = any(len(h) > 1 for h in groups.values())
    _style(acc_ax, "validation top-1\n(stars: best epoch" + ("; bands: lowest to highest run)" if several else ")"),
           "top-1", True, [])
    _style(loss_ax, "validation loss", "cross-entropy", False, losses)
    return _save(fig, path, COMPARISON)


def _spread(histories: Sequence[Sequence[dict[str, Any]]], key: str):
    """Epochs every history has ``key`` for, with the mean, lowest and highest value at each."""
    series = [dict(zip(*_series(h, key))) for h in histories]
    epochs = sorted(set.intersection(*(set(s) for s in series))) if series else []
    values = [[s[e] for s in series] for e in epochs]
    return (epochs, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values])


# The PNG text chunk every bnncli plot carries, so a command can tell its own earlier output from a user's file.
SOFTWARE = "bnncli"
COMPARISON = "bnncli compare"  # bnn compare's plots: its default output is replaced only when it is one


def _save(fig, path: str | os.PathLike, software: str = SOFTWARE) -> Path:
    with atomic_open(path) as f:
        fig.savefig(f, format="png", metadata={"Software": software})
    return Path(path)


def written_by(path: str | os.PathLike, software: str) -> bool:
    """True when ``path`` is a PNG whose ``Software`` text chunk is ``software`` (a plot bnncli drew)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    at = 8
    while at + 8 <= len(head):  # chunks: length, type, data, CRC
        length, kind = int.from_bytes(head[at:at + 4], "big"), head[at + 4:at + 8]
        data = head[at + 8:at + 8 + length]
        if kind == b"tEXt" and data == b"Software\x00" + software.encode("latin-1"):
            return True
        if kind == b"IDAT":
            return False
        at += 12 + length
    return False

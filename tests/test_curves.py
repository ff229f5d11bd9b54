"""Training curves (bnncli.engine.curves): readable ticks, legend beside the data, best epoch marked,
log-scale loss across decades."""

from __future__ import annotations

import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from bnncli.engine import curves  # noqa: E402


def _history(epochs=12, val=True, loss_decades=False):
    rows = []
    for e in range(1, epochs + 1):
        loss = 10.0 ** -(e / 3) if loss_decades else 2.0 / e ** 0.5
        m = {"epoch": e, "train_loss": loss, "train_top1": 0.1 + 0.05 * e}
        if val:
            m.update(val_loss=2.2 / e ** 0.5, val_top1=0.07 * e if e != 9 else 0.95, val_top5=min(1.0, 0.2 + 0.07 * e))
        rows.append(m)
    return rows


@pytest.fixture
def figures(monkeypatch):
    """The figures the module saves, kept for inspection."""
    saved = []
    real = curves._save
    monkeypatch.setattr(curves, "_save", lambda fig, path, *rest: saved.append(fig) or real(fig, path, *rest))
    return saved


def test_run_curves_mark_the_best_epoch_and_keep_the_legend_off_the_data(tmp_path, figures):
    path = curves.plot_curves(_history(), tmp_path / "c.png", "binarydensenet_tiny")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 200
    loss_ax, acc_ax = figures[0].axes
    assert any("best: val 95.0%, epoch 9" in t.get_text() for t in acc_ax.get_legend().get_texts())
    for ax in (loss_ax, acc_ax):
        anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
        assert anchor.x0 >= 1.0  # the legend starts right of the axes
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 12]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert loss_ax.get_yscale() == "linear"


def test_a_loss_over_decades_is_drawn_on_a_log_scale_and_no_val_marks_train(tmp_path, figures):
    curves.plot_curves(_history(val=False, loss_decades=True), tmp_path / "c.png")
    loss_ax, acc_ax = figures[0].axes
    assert loss_ax.get_yscale() == "log"
    assert any(t.get_text().startswith("best: train") for t in acc_ax.get_legend().get_texts())


def test_comparison_overlays_runs(tmp_path, figures):
    curves.plot_comparison({"a": _history(), "b": _history(8), "c": _history(5, val=False)}, tmp_path / "cmp.png")
    acc_ax, loss_ax = figures[0].axes
    labels = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert labels == ["a", "b", "c (train)"]
    assert (tmp_path / "cmp.png").stat().st_size > 0


def test_log_scale_ticks_are_plain_numbers(tmp_path, figures):
    curves.plot_curves(_history(val=False, loss_decades=True), tmp_path / "c.png")
    loss_ax = figures[0].axes[0]
    fmt = loss_ax.yaxis.get_major_formatter()
    assert [fmt(v, 0) for v in (0.01, 1.0, 10.0)] == ["0.01", "1", "10"]
    assert [curves._minor_log_label(v) for v in (0.2, 0.3, 0.4, 0.5, 0.7, 20.0, 0.0)] == \
        ["0.2", "0.3", "", "0.5", "", "20", ""]


def test_groups_draw_a_mean_line_with_a_band(tmp_path, figures):
    low, high = _history(6), [dict(m, val_top1=m["val_top1"] + 0.02) for m in _history(6)]
    curves.plot_groups({"arm": [low, high], "single": [_history(6)]}, tmp_path / "g.png")
    acc_ax = figures[0].axes[0]
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == ["arm (mean of 2)", "single"]
    mean_line = acc_ax.get_lines()[0]
    assert list(mean_line.get_ydata()) == pytest.approx([m["val_top1"] + 0.01 for m in low])
    assert len(acc_ax.collections) == 1  # one band: the group of two, not the single run
    assert xs_equal(mean_line.get_xdata(), range(1, 7))


def xs_equal(xs, expected) -> bool:
    return [float(x) for x in xs] == [float(e) for e in expected]

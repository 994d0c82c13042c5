"""Training curves: loss terms and evaluation metrics over steps, in one PNG."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._figure import check_pairs, new_figure, save_figure


def plot_training_curves(
    losses: Sequence[tuple[int, Mapping[str, float]]],
    evaluations: Mapping[str, Sequence[tuple[int, float]]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write one PNG with two panels: the loss terms over training steps (log scale),
    and the evaluation metrics (e.g. CPL mIoU on train, segmentation mIoU on val) in %.

    A loss term that appears only part of the time (e.g. after a warm-up) is drawn
    where it was recorded. Drawn with matplotlib's Agg canvas directly, so no pyplot
    state or display backend is touched.

    Args:
        losses: (step, {term name: unweighted loss value}) records, steps increasing.
        evaluations: metric name → (step, value in [0, 1]) pairs; NaN values (a metric
            the run does not have) are not drawn.
        path: output PNG path; parent folders are created.
        title: optional figure title.
        dpi: resolution of the PNG.
    Returns:
        The path written.
    Raises:
        ValueError: if a loss record is not a (step, mapping) pair or an evaluation
            entry is not a (step, value) pair.
    Example:
        >>> import tempfile
        >>> out = plot_training_curves([(0, {"cls": 0.7}), (10, {"cls": 0.5, "c2s": 1.2})],
        ...                            {"val mIoU": [(10, 0.3)]}, tempfile.mkdtemp() + "/c.png")
        >>> out.stat().st_size > 0
        True
    """
    terms: dict[str, list[tuple[int, float]]] = {}
    for record in losses:
        if len(record) != 2 or not isinstance(record[1], Mapping):
            raise ValueError(f"losses must hold (step, {{term: value}}) pairs, got {record!r}")
        for name, value in record[1].items():
            terms.setdefault(name, []).append((record[0], float(value)))
    check_pairs("evaluations", evaluations)

    fig = new_figure(11, 3.6)
    ax_loss, ax_eval = fig.subplots(1, 2)
    if title:
        fig.suptitle(title)

    for name, series in terms.items():
        steps, values = zip(*series, strict=True)
        ax_loss.plot(steps, values, label=name, lw=1.0)
    if any(v > 0 for series in terms.values() for _, v in series):
        ax_loss.set_yscale("log")  # terms differ by orders of magnitude
    _finish(ax_loss, "loss (unweighted)", "loss terms", legend=bool(terms))

    drawn = False
    for name, series in evaluations.items():
        points = [(s, 100 * v) for s, v in series if not math.isnan(v)]
        if points:
            steps, values = zip(*points, strict=True)
            ax_eval.plot(steps, values, "o-", label=name, lw=1.2, ms=4)
            drawn = True
    _finish(ax_eval, "mIoU (%)", "evaluation", legend=drawn)
    return save_figure(fig, path, dpi)


def _finish(ax, ylabel: str, title: str, legend: bool) -> None:
    """Labels, title, grid, and a legend where something was drawn."""
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)

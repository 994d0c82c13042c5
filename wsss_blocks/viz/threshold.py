"""Diagnostics figure for the dynamic threshold: ξ over training and the queue's fitted GMM."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._figure import check_pairs, new_figure, save_figure

_DISPLAY_BINS = 128

if TYPE_CHECKING:  # imported lazily at run time: the figure code needs no torch module state
    from ..threshold import GMMThresholdSearcher


def plot_threshold_diagnostics(
    history: dict[str, list[tuple[int, float]]],
    searchers: dict[str, GMMThresholdSearcher],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write one PNG: ξ curves over training steps, then each searcher's queue and fit.

    The top panel plots every ``history`` series (e.g. ``"xi"``, ``"xi_dagger"``) against the
    step. Below it, one panel per searcher shows the queue's CAM-confidence histogram as a
    density, the fitted mixture (each weighted component and their sum, Sheppard-corrected
    standard deviations) and the current thresholds as vertical lines (ξ, and the dual
    bounds for the ``"cosa-code"`` policy). Drawn with matplotlib's Agg canvas directly, so
    no pyplot state or display backend is touched. Reading the searchers' tensors syncs the
    host: call this at evaluation time, not every step.

    Args:
        history: name → list of (step, value) pairs; an empty dict or list draws no curve.
        searchers: name → :class:`~wsss_blocks.threshold.GMMThresholdSearcher`.
        path: output PNG path; parent folders are created.
        title: optional figure title.
        dpi: resolution of the PNG.
    Returns:
        The path written.
    Raises:
        ValueError: if a history entry is not a (step, value) pair.
    Example:
        >>> import tempfile, torch
        >>> from wsss_blocks.threshold import GMMThresholdSearcher
        >>> s = GMMThresholdSearcher(queue_size=4, bins=64)
        >>> _ = s.update(torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0)))
        >>> out = plot_threshold_diagnostics({"xi": [(0, 0.5), (1, float(s.threshold))]},
        ...                                  {"xi": s}, tempfile.mkdtemp() + "/thr.png")
        >>> out.stat().st_size > 0
        True
    """
    check_pairs("history", history)
    rows = 1 + len(searchers)
    fig = new_figure(8, 2.6 * rows)
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    if title:
        fig.suptitle(title)

    ax = axes[0]
    for name, series in history.items():
        if series:
            steps, values = zip(*series, strict=True)
            ax.plot(steps, values, label=name, lw=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("threshold")
    ax.set_ylim(0.0, 1.0)
    ax.set_title("dynamic threshold over training")
    if any(history.values()):
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)

    for ax, (name, searcher) in zip(axes[1:], searchers.items(), strict=True):
        _draw_queue(ax, name, searcher)

    return save_figure(fig, path, dpi)


def _draw_queue(ax, name: str, searcher: GMMThresholdSearcher) -> None:
    """Histogram of the queue as a density, the fitted mixture and the thresholds."""
    counts, edges = searcher.histogram()
    counts = counts.double().cpu().numpy()
    edges = edges.cpu().numpy()
    total = counts.sum()
    if total > 0:
        kept = total
        if searcher.policy == "cosa-code":
            # The mixture describes the values above the filter only; scale it to that share.
            kept = counts[(edges[:-1] + edges[1:]) / 2 > searcher.filter_threshold].sum()
        # Display at most _DISPLAY_BINS bins (sums of neighbours): 1024 bins look like noise.
        step = max(1, len(counts) // _DISPLAY_BINS)
        shown, shown_edges = np.add.reduceat(counts, np.arange(0, len(counts), step)), edges[::step]
        if shown_edges[-1] != edges[-1]:
            shown_edges = np.append(shown_edges, edges[-1])
        density = shown / (total * np.diff(shown_edges))
        ax.stairs(density, shown_edges, fill=True, alpha=0.35, label="queue")
        x = np.linspace(0.0, 1.0, 801)
        pi, mu, var = (t.cpu().numpy() for t in searcher.mixture())
        std = np.sqrt(var)
        comps = [
            p * kept / total * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
            for p, m, s in zip(pi, mu, std, strict=True)
        ]
        ax.plot(x, np.sum(comps, axis=0), color="k", lw=1.2, label="mixture")
        for k, comp in enumerate(comps):  # drawn over the sum, which hides them otherwise
            ax.plot(x, comp, lw=1.2, ls="--", label=f"comp {k}: μ={mu[k]:.3f} σ={std[k]:.3f}")
    else:
        ax.text(0.5, 0.5, "queue empty", ha="center", va="center", transform=ax.transAxes)
    low, high = (float(b) for b in searcher.bounds)
    xi = float(searcher.threshold)
    ax.axvline(xi, color="r", lw=1.5, label=f"ξ = {xi:.3f}")
    if searcher.policy == "cosa-code":
        ax.axvline(low, color="r", lw=1, ls=":", label=f"low = {low:.3f}")
        ax.axvline(high, color="r", lw=1, ls=":", label=f"high = {high:.3f}")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("max-CAM confidence")
    ax.set_ylabel("density")
    ax.set_title(
        f"{name}: queue of {min(searcher.num_updates, searcher.queue_size)} batches "
        f"({int(total)} values), policy {searcher.policy!r}"
    )
    ax.legend(loc="upper center", fontsize=7, ncol=2)
    ax.grid(alpha=0.3)

"""What every figure of this package shares: input checks, an Agg figure, saving."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def check_pairs(arg: str, series: Mapping[str, Sequence]) -> None:
    """Raise ValueError naming ``arg[name]`` unless every entry is a (step, value) pair."""
    for name, entries in series.items():
        for item in entries:
            if len(item) != 2:
                raise ValueError(f"{arg}[{name!r}] must hold (step, value) pairs, got {item!r}")


def new_figure(width: float, height: float):
    """A matplotlib Figure on its own Agg canvas: no pyplot state, no display backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path

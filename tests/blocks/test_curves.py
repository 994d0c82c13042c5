"""plot_training_curves: the PNG is written, holds the curves, and bad records are refused."""

from __future__ import annotations

import math

import pytest
from matplotlib import image

from wsss_blocks.viz import plot_training_curves

LOSSES = [(s, {"cls": 0.7 / (1 + s), **({"c2s": 1.5 - s / 100} if s >= 50 else {})})
          for s in range(0, 100, 10)]  # fmt: skip
EVALS = {"val": [(50, 0.2), (100, 0.3)], "CPL": [(50, math.nan), (100, math.nan)]}


def test_writes_a_png_that_shows_the_curves(tmp_path):
    out = plot_training_curves(LOSSES, EVALS, tmp_path / "sub" / "curves.png", title="run")
    empty = plot_training_curves([], {}, tmp_path / "empty.png")
    drawn, blank = image.imread(out), image.imread(empty)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn.shape == blank.shape  # same layout ...
    assert (drawn != blank).any(axis=-1).mean() > 0.01  # ... with curves and legends on it


def test_a_metric_with_only_nan_is_skipped(tmp_path):
    only_nan = plot_training_curves(LOSSES, {"CPL": EVALS["CPL"]}, tmp_path / "a.png")
    nothing = plot_training_curves(LOSSES, {}, tmp_path / "b.png")
    assert (image.imread(only_nan) == image.imread(nothing)).all()


@pytest.mark.parametrize(
    "losses, evals",
    [([(0, 0.5)], {}), ([(0,)], {}), ([], {"val": [(1, 0.2, 3)]})],
)
def test_bad_records_raise(tmp_path, losses, evals):
    with pytest.raises(ValueError, match="pairs"):
        plot_training_curves(losses, evals, tmp_path / "bad.png")

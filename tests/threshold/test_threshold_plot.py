"""The trainer's threshold diagnostics figure."""

from __future__ import annotations

import pytest
import torch

from wsss_blocks.threshold import GMMThresholdSearcher
from wsss_blocks.viz.threshold import plot_threshold_diagnostics


def test_threshold_plot_writes_png_with_history_and_both_policies(tmp_path):
    g = torch.Generator().manual_seed(0)
    paper, cosa = GMMThresholdSearcher(queue_size=8), GMMThresholdSearcher(policy="cosa-code")
    history = {"xi": [], "xi_dagger": []}
    for step in range(5):
        bg, fg = torch.rand(600, generator=g), torch.rand(300, generator=g)
        x = torch.cat((0.25 * bg, 0.6 + 0.4 * fg))
        history["xi"].append((step, float(paper.update(x))))
        history["xi_dagger"].append((step, float(cosa.update(x))))
    out = plot_threshold_diagnostics(
        history, {"xi": paper, "xi_dagger": cosa}, tmp_path / "sub" / "thr.png"
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    from matplotlib import image

    img = image.imread(out)
    assert img.shape[0] >= 3 * 250  # one 2.6-inch row per panel: history + two queues


def test_threshold_plot_handles_empty_queue_and_history(tmp_path):
    out = plot_threshold_diagnostics({}, {"xi": GMMThresholdSearcher()}, tmp_path / "e.png")
    assert out.exists()
    with pytest.raises(ValueError, match="pairs"):
        plot_threshold_diagnostics({"xi": [(1, 0.5, 3)]}, {}, tmp_path / "bad.png")

"""plot_pseudo_label_diagnostics: panel (c) shows what the run logged."""

from __future__ import annotations

import pytest

from wsss_blocks.viz import diagnostics as viz_diagnostics
from wsss_blocks.viz import plot_pseudo_label_diagnostics

SWEEP = {"thresholds": [0.25, 0.5, 0.75], "miou": [0.2, 0.3, 0.1], "oracle_threshold": 0.5,
         "current_threshold": 0.5, "gap": 0.0}  # fmt: skip
CURVE = {"edges": [0.0, 0.5, 1.0], "accuracy": [0.9, 0.6], "counts": [10, 5]}


def _entry(step: int, teacher: bool) -> dict:
    d = {"cpl": {"miou": 0.30 + step / 1e4}, "spl": {"miou": 0.25 + step / 1e4},
         "xi_sweep": SWEEP, "reliability_curve": CURVE, "auroc_inv_perplexity": 0.75}  # fmt: skip
    if teacher:
        d["an_vs_on"] = {"cpl_an": 0.3, "cpl_on": 0.31, "spl_an": 0.28, "spl_on": 0.29}
        d["low_perplexity"] = {"miou_m": 0.4, "miou_m_dagger": 0.2}
    return {"step": step, "diagnostics": d}


@pytest.fixture
def panel_c(monkeypatch, tmp_path):
    saved = {}

    def keep(fig, path, dpi):
        saved["fig"] = fig
        return path

    monkeypatch.setattr(viz_diagnostics, "save_figure", keep)

    def draw(teacher: bool):
        plot_pseudo_label_diagnostics([_entry(s, teacher) for s in (300, 600)],
                                      tmp_path / "d.png")  # fmt: skip
        ax = saved["fig"].axes[2]
        return ax.get_title(), [line.get_label() for line in ax.lines], ax.lines

    return draw


def test_with_a_teacher_panel_c_compares_an_and_on_and_m_with_m_dagger(panel_c):
    title, labels, _ = panel_c(teacher=True)
    assert title == "(c) AN vs ON; M vs M†"
    assert labels == ["CPL AN", "CPL ON", "SPL AN", "SPL ON", "M, P† ≤ ε", "M†, P† ≤ ε"]


def test_without_a_teacher_panel_c_shows_the_cpl_against_the_spl(panel_c):
    title, labels, lines = panel_c(teacher=False)  # was an empty panel
    assert title == "(c) CPL vs SPL" and labels == ["CPL", "SPL"]
    assert list(lines[1].get_ydata()) == pytest.approx([0.28, 0.31])


def test_an_empty_history_is_refused(tmp_path):
    with pytest.raises(ValueError, match="history"):
        plot_pseudo_label_diagnostics([], tmp_path / "d.png")

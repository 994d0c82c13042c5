"""The figure of the pseudo-label diagnostics (``wsss_blocks.diagnostics``) of a run."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from ._figure import new_figure, save_figure


def plot_pseudo_label_diagnostics(history: Sequence[dict], path: str | os.PathLike,
                                  dpi: int = 110) -> Path:  # fmt: skip
    """Four panels from a run's evaluations, each ``{"step": int, "diagnostics": dict}``
    with the dict the CoSA example's ``EvalDiagnostics.summary`` returns:

    (a) the last evaluation's reliability curve: CPL accuracy per confidence bin, with
    the pixel counts (CoSA Fig. 3a); (b) its ξ sweep: CPL mIoU against ξ, the oracle ξ
    and the run's ξ; (c) over steps: CPL and SPL mIoU of the AN and the ON (Fig. 8), or
    of the AN alone where no ``an_vs_on`` was logged (a run whose ON is its own AN), and
    M vs M† where P† ≤ ε (Fig. 5b) where logged; (d) over steps: the AUROC of 1/P for
    correct CPL pixels (Fig. 3b) and the ξ gap to the oracle.

    Args:
        history: one entry per evaluation, in step order, at least one.
        path: the PNG to write (folders created).
        dpi: resolution.
    Returns:
        The path written.
    Raises:
        ValueError: an empty history or an entry without ``step`` and ``diagnostics``.
    """
    if not history:
        raise ValueError("history must hold at least one evaluation")
    for i, h in enumerate(history):
        if "step" not in h or "diagnostics" not in h:
            raise ValueError(f"history[{i}] must have 'step' and 'diagnostics', got {sorted(h)}")
    last = history[-1]["diagnostics"]
    steps = [h["step"] for h in history]
    fig = new_figure(12, 3.2)
    ax = fig.subplots(1, 4)

    curve = last.get("reliability_curve")
    if curve:
        edges = curve["edges"]
        mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        width = edges[1] - edges[0]
        twin = ax[0].twinx()
        twin.bar(mids, curve["counts"], width=0.9 * width, color="0.85")
        twin.set_ylabel("pixels", color="0.5")
        ax[0].set_zorder(twin.get_zorder() + 1)
        ax[0].patch.set_visible(False)
        ax[0].plot(mids, curve["accuracy"], "o-", color="C0")
    ax[0].set(xlabel="confidence ν", ylabel="CPL accuracy", ylim=(0, 1),
              title=f"(a) reliability, step {steps[-1]}")  # fmt: skip

    s = last["xi_sweep"]
    ax[1].plot(s["thresholds"], s["miou"], "o-", ms=3, color="C0")
    oracle = s["oracle_threshold"]
    ax[1].axvline(oracle, color="C2", ls="--", label=f"oracle {oracle:.2f}")
    if "current_threshold" in s:
        run = s["current_threshold"]
        ax[1].axvline(run, color="C3", ls=":", label=f"run {run:.2f}")
    ax[1].set(xlabel="ξ", ylabel="CPL mIoU", title="(b) threshold sweep")
    ax[1].legend(fontsize=7)

    def series(key, sub=None):
        out = []
        for h in history:
            v = h["diagnostics"].get(key)
            v = v.get(sub) if isinstance(v, dict) and sub is not None else v
            out.append(float("nan") if v is None else v)
        return out

    def logged(key):
        return any(key in h["diagnostics"] for h in history)

    if logged("an_vs_on"):
        title = ["AN vs ON"]
        pairs = [("an_vs_on", "cpl_an", "CPL AN", "C0", "-"),
                 ("an_vs_on", "cpl_on", "CPL ON", "C0", "--"),
                 ("an_vs_on", "spl_an", "SPL AN", "C1", "-"),
                 ("an_vs_on", "spl_on", "SPL ON", "C1", "--")]  # fmt: skip
    else:  # the AN is the ON: its CPL against its SPL (the premise of GC)
        title = ["CPL vs SPL"]
        pairs = [("cpl", "miou", "CPL", "C0", "-"), ("spl", "miou", "SPL", "C1", "-")]
    if logged("low_perplexity"):
        pairs += [("low_perplexity", "miou_m", "M, P† ≤ ε", "C2", "-"),
                  ("low_perplexity", "miou_m_dagger", "M†, P† ≤ ε", "C2", "--")]  # fmt: skip
        title.append("M vs M†")
    for key, sub, label, color, ls in pairs:
        values = series(key, sub)
        if not all(math.isnan(v) for v in values):
            ax[2].plot(steps, values, ls, marker="o", ms=3, color=color, label=label)
    ax[2].set(xlabel="step", ylabel="mIoU", title="(c) " + "; ".join(title))
    if ax[2].lines:
        ax[2].legend(fontsize=7)

    ax[3].plot(steps, series("auroc_inv_perplexity"), "o-", ms=3, color="C4", label="AUROC 1/P")
    gaps = [h["diagnostics"]["xi_sweep"].get("gap", float("nan")) for h in history]
    ax[3].plot(steps, gaps, "s--", ms=3, color="C3", label="ξ gap to oracle")
    ax[3].set(xlabel="step", title="(d) reliability and ξ over steps")
    ax[3].legend(fontsize=7)
    return save_figure(fig, path, dpi)

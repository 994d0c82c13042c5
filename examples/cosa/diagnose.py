"""Pseudo-label diagnostics of a CoSA run: what each block contributes, in CoSA's own
analyses (Figs. 3, 5, 8; C-mIoU of Tab. 4b), from ``wsss_blocks.diagnostics``.

    python examples/cosa/diagnose.py runs/cosa_default/checkpoint.pt
    python examples/cosa/diagnose.py runs/cosa_default/checkpoint.pt --images 200

The trainer runs the same at every evaluation (:class:`EvalDiagnostics`, fed with the
CAMs and pseudo-labels it already makes) and keeps the result under ``diagnostics`` in
metrics.json, plotted in ``diagnostics.png`` beside curves.png. For a checkpoint this
script prints the report and writes ``diagnostics_step_<N>.png`` beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if not __package__:  # run as a file: make `examples` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch.nn.functional as F

from wsss_blocks import IGNORE_INDEX, seg_to_spl, set_data_checks
from wsss_blocks.diagnostics import (
    VOC_COEXISTENCE_CLASSES,
    coexistence_miou,
    cpl_sweep_confusions,
    label_confusion,
    label_quality,
    reliability_auroc,
    reliability_curve,
    restrict,
    texture_fp_counts,
    texture_fp_rates,
    threshold_sweep,
)
from wsss_blocks.training import (
    ConfigError,
    gather_objects,
    load_checkpoint,
    merge,
    parse_overrides,
    sum_over_ranks_,
)

XI_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""The ξ of the threshold sweep: 0.05, 0.10, ..., 0.95."""


class EvalDiagnostics:
    """Accumulates one evaluation's diagnostics over the CPL batches.

    ``add`` takes what the trainer computes for CPL mIoU anyway (AN's normalised CAM M'
    and, with an early layer, M†', their CPLs, perplexities and the AN's segmentation
    logits S'); ``add_on`` the ON's CPL and SPL on the first ``compare_images`` images
    for Fig. 8. ``summary`` sums over ranks and returns a JSON-able dict.

    Args:
        num_classes: K = C + 1.
        xi: the ξ the CPLs were cut with (the searcher's, or the fixed one).
        epsilon: the low-pass perplexity ε of Fig. 5b (CSC's anchor rule).
        seg_tau: τ of the SPL (seg_to_spl).
        preferred: per class, the background kind it coexists with (MF-Seg's
            preferred texture), or None.
        coexistence: classes of C-mIoU (VOC: :data:`VOC_COEXISTENCE_CLASSES`), or None.

    The AUROC and the reliability curve use every 7th scored pixel (a sort of all of
    them would cost as much as the evaluation); the counts use every pixel.
    """

    def __init__(self, num_classes: int, xi: float, epsilon: float, seg_tau: float,
                 preferred=None, coexistence=None) -> None:  # fmt: skip
        self.k, self.xi, self.eps, self.tau = num_classes, xi, epsilon, seg_tau
        self.subsample = 7  # every 7th scored pixel for the AUROC and reliability curve
        self.preferred, self.coexistence = preferred, coexistence
        k = num_classes
        self.cpl = torch.zeros(k, k + 1, dtype=torch.int64)
        self.spl = torch.zeros(k, k + 1, dtype=torch.int64)
        self.sweep = torch.zeros(len(XI_GRID), k, k + 1, dtype=torch.int64)
        self.low = torch.zeros(2, k, k + 1, dtype=torch.int64)  # M, M-dagger where P-dagger <= eps
        self.pair = torch.zeros(4, k, k + 1, dtype=torch.int64)  # CPL AN, ON; SPL AN, ON
        self.texture = torch.zeros(k - 1, 4, dtype=torch.int64)
        self.has_early = self.has_pair = False
        self.scores: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []
        self.confidence: list[torch.Tensor] = []

    def hard_spl(self, seg: torch.Tensor, labels: torch.Tensor, size) -> torch.Tensor:
        """The SPL as labels: the argmax of seg_to_spl (absent classes masked) at the
        network's grid, where L_s2c uses it, brought to ``size`` by nearest neighbour."""
        spl = seg_to_spl(seg.float(), labels, self.tau).argmax(1, keepdim=True).float()
        return F.interpolate(spl, size=tuple(size), mode="nearest")[:, 0].long()

    @torch.no_grad()
    def add(self, cam, labels, gt, cpl, ppl, nu, seg, cpl_d=None, ppl_d=None, kinds=None):
        """One batch: M' (B, C, H, W) and its CPL, P and ν (B, H, W); S' logits; with an
        early layer the CPL and P of M†'; ``kinds`` (B,) background kind per image.
        Everything here comes out of checked blocks, so values are not checked again."""
        previous = set_data_checks(False)
        try:
            self._add(cam, labels, gt.long(), cpl, ppl, nu, seg, cpl_d, ppl_d, kinds)
        finally:
            set_data_checks(previous)

    def _add(self, cam, labels, gt, cpl, ppl, nu, seg, cpl_d, ppl_d, kinds) -> None:
        self.cpl += label_confusion(cpl, gt, self.k)
        self.spl += label_confusion(self.hard_spl(seg, labels, gt.shape[-2:]), gt, self.k)
        self.sweep += cpl_sweep_confusions(cam, labels, gt, XI_GRID)
        scored = (gt != IGNORE_INDEX) & (cpl != IGNORE_INDEX)
        keep = slice(None, None, self.subsample)  # a fixed stride: AUROC needs a sort
        self.scores.append((-ppl.float())[scored][keep].cpu())  # ranks as 1/P
        self.correct.append((cpl == gt)[scored][keep].cpu())
        self.confidence.append(nu.float()[scored][keep].cpu())
        if cpl_d is not None:
            self.has_early = True
            low = ppl_d <= self.eps
            self.low[0] += label_confusion(restrict(cpl, low), gt, self.k)
            self.low[1] += label_confusion(restrict(cpl_d, low), gt, self.k)
        if kinds is not None and self.preferred is not None:
            kind_map = kinds.view(-1, 1, 1).expand_as(gt)
            self.texture += texture_fp_counts(cpl, gt, labels, kind_map, self.preferred)

    @torch.no_grad()
    def add_on(self, labels, gt, cpl_an, seg_an, cpl_on, seg_on) -> None:
        """AN against ON on the same images (Fig. 8): their CPLs and SPLs."""
        self.has_pair = True
        gt = gt.long()
        size = gt.shape[-2:]
        for i, label_map in enumerate((cpl_an, cpl_on, self.hard_spl(seg_an, labels, size),
                                       self.hard_spl(seg_on, labels, size))):  # fmt: skip
            self.pair[i] += label_confusion(label_map, gt, self.k)

    def summary(self) -> dict:
        """The evaluation's diagnostics (summed over ranks under torchrun)."""
        for counts in (self.cpl, self.spl, self.sweep, self.low, self.pair, self.texture):
            sum_over_ranks_(counts)
        scores = torch.cat([s for part in gather_objects(self.scores) for s in part])
        correct = torch.cat([c for part in gather_objects(self.correct) for c in part])
        confidence = torch.cat([c for part in gather_objects(self.confidence) for c in part])
        cpl, spl = label_quality(self.cpl), label_quality(self.spl)
        out = {
            "cpl": _brief(cpl),
            "spl": _brief(spl),
            "auroc_inv_perplexity": _auroc(scores, correct),
            "auroc_confidence": _auroc(confidence, correct),
            "reliability_curve": reliability_curve(confidence, correct, 10, (0.0, 1.0))
            if confidence.numel() else None,
            "xi_sweep": threshold_sweep(self.sweep, XI_GRID, current=self.xi),
        }  # fmt: skip
        if self.has_early:
            m, d = label_quality(self.low[0]), label_quality(self.low[1])
            out["low_perplexity"] = {"epsilon": self.eps, "coverage": m["coverage"],
                                     "miou_m": m["miou"], "miou_m_dagger": d["miou"]}  # fmt: skip
        if self.has_pair:
            q = [label_quality(c)["miou"] for c in self.pair]
            out["an_vs_on"] = {"cpl_an": q[0], "cpl_on": q[1], "spl_an": q[2], "spl_on": q[3]}
        if self.preferred is not None:
            out["texture_fp"] = texture_fp_rates(self.texture)
        if self.coexistence:
            out["c_miou"] = coexistence_miou(self.cpl, list(self.coexistence))
        return out


def _brief(q: dict) -> dict:
    return {k: q[k] for k in ("miou", "fg_precision", "fg_recall", "coverage", "iou",
                              "missed_as_bg", "bg_labelled_as")}  # fmt: skip


def _auroc(score: torch.Tensor, correct: torch.Tensor) -> float:
    if not (bool(correct.any()) and not bool(correct.all())):
        return float("nan")  # every pixel right (or wrong): no ranking to judge
    return reliability_auroc(score, correct)


def background_kinds(data, class_names):
    """MF-Seg's per-image texture ids and each class's preferred texture, or (None, None)
    for data without a known background kind."""
    from wsss_blocks.data.mfseg import FASHION_MNIST_CLASSES, PREFERRED_TEXTURE_IDS

    ids = getattr(data, "texture_ids", None)
    if ids is None:
        return None, None
    preferred = [PREFERRED_TEXTURE_IDS[FASHION_MNIST_CLASSES.index(c)] for c in class_names]
    return torch.as_tensor(ids), preferred


def coexistence_classes(data_name: str):
    """The C-mIoU class set of a data set (VOC: CoSA's named examples), or None."""
    return VOC_COEXISTENCE_CLASSES if data_name == "voc" else None


def format_report(d: dict, class_names) -> str:
    """The diagnostics of one evaluation as text, one answer per line."""

    def pct(v) -> str:
        return "n/a" if v is None or v != v else f"{100 * v:.1f}%"

    cpl, spl, s = d["cpl"], d["spl"], d["xi_sweep"]
    xi, gap = s.get("current_threshold", float("nan")), s.get("gap", float("nan"))
    lines = [
        f"CPL (AN, xi {xi:.2f}): mIoU {pct(cpl['miou'])}, fg precision "
        f"{pct(cpl['fg_precision'])}, recall {pct(cpl['fg_recall'])}",
        f"SPL (AN): mIoU {pct(spl['miou'])}, fg precision {pct(spl['fg_precision'])}, "
        f"recall {pct(spl['fg_recall'])} (SPL - CPL {100 * (spl['miou'] - cpl['miou']):+.1f})",
        f"does low perplexity mark correct CPL pixels? AUROC of 1/P "
        f"{d['auroc_inv_perplexity']:.3f}, of the confidence {d['auroc_confidence']:.3f} "
        "(0.5: no information)",
        f"xi sweep: oracle xi {s['oracle_threshold']:.2f} (CPL mIoU {pct(s['oracle_miou'])}); "
        f"the run's xi {pct(s.get('current_miou'))}, gap {100 * gap:.1f} points",
    ]
    if "low_perplexity" in d:
        lp = d["low_perplexity"]
        lines.append(f"where P-dagger <= {lp['epsilon']} ({pct(lp['coverage'])} of pixels): "
                     f"CPL mIoU of M {pct(lp['miou_m'])}, of M-dagger "
                     f"{pct(lp['miou_m_dagger'])}")  # fmt: skip
    if "an_vs_on" in d:
        p = d["an_vs_on"]
        lines.append(f"AN vs ON: CPL {pct(p['cpl_an'])} vs {pct(p['cpl_on'])}, "
                     f"SPL {pct(p['spl_an'])} vs {pct(p['spl_on'])}")  # fmt: skip
    if "texture_fp" in d:
        t = d["texture_fp"]
        lines.append(f"CPL false positives on background: {pct(t['mean_preferred'])} of the "
                     f"class's own texture vs {pct(t['mean_other'])} of other textures (mean "
                     "over classes)")  # fmt: skip
        ranked = sorted((r, n) for r, n in zip(t["ratio"], class_names, strict=False) if r == r)
        lines.append("  highest own/other ratio: "
                     + ", ".join(f"{n} {r:.1f}x" for r, n in ranked[::-1][:3]))  # fmt: skip
    if "c_miou" in d:
        lines.append(f"C-mIoU (classes with coexistence): {pct(d['c_miou'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from examples.cosa import train as T
    from wsss_blocks.viz import plot_pseudo_label_diagnostics

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=int, help="CPL images (default: the run's)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. data.root")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        state = load_checkpoint(args.checkpoint)
        cfg = merge(state["config"], parse_overrides(args.set))
        if args.images:
            cfg["data"]["cpl_eval_images"] = args.images
        d = T.checkpoint_diagnostics(args.checkpoint, cfg)
    except (ConfigError, OSError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    print(f"{args.checkpoint} (step {state['step']}, {cfg['method']}):")
    print(format_report(d, state.get("class_names", [])))
    path = Path(args.checkpoint).with_name(f"diagnostics_step_{state['step']:06d}.png")
    plot_pseudo_label_diagnostics([{"step": state["step"], "diagnostics": d}], path)
    print(f"figure: {path}")
    with open(path.with_suffix(".json"), "w") as f:
        json.dump(d, f, indent=1)
    return d


if __name__ == "__main__":
    main()

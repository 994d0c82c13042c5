"""Pseudo-label diagnostics: the analyses CoSA uses to show what each block does
(Yang et al., CoSA, ECCV 2024: Figs. 3, 5 and 8, C-mIoU of Tab. 4b), as functions on
tensors that any WSSS method can run on any data with masks.

Counts, not means, are what the functions return where a caller accumulates over
batches (and over ranks: sum them): :func:`label_confusion`, :func:`cpl_sweep_confusions`
and :func:`texture_fp_counts`; the summaries (:func:`label_quality`,
:func:`threshold_sweep`, :func:`texture_fp_rates`, :func:`coexistence_miou`) turn the
summed counts into numbers. :func:`reliability_auroc` and :func:`reliability_curve` take
per-pixel scores directly.

Label maps hold class indices in [0, K) (0 = background) and 255 (:data:`~wsss_blocks.IGNORE_INDEX`)
where a pixel has no label; a pseudo-label's 255 pixels count as *unlabelled* (its
coverage falls), the ground truth's as not scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import (
    IGNORE_INDEX,
    check_int,
    check_label_map,
    check_ndim,
    check_open_unit,
    check_tensor,
)
from .pseudo_labels import cam_confidence

__all__ = [
    "VOC_COEXISTENCE_CLASSES",
    "coexistence_miou",
    "cpl_sweep_confusions",
    "label_confusion",
    "label_quality",
    "reliability_auroc",
    "reliability_curve",
    "restrict",
    "texture_fp_counts",
    "texture_fp_rates",
    "threshold_sweep",
]

VOC_COEXISTENCE_CLASSES = (3, 4, 19)
"""VOC class indices (1-based, background 0) of the coexistence examples CoSA names:
bird (branches), boat (sea), train (railways) (Sec. 3.3, Fig. 4). The paper reports
C-mIoU (Tab. 4b) without listing its class set; these three are the ones it names."""


def _check_pair(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> None:
    check_tensor("pred", pred)
    check_tensor("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape "
                         f"{tuple(target.shape)}")  # fmt: skip
    check_int("num_classes", num_classes, 2)  # background and one class at least
    check_label_map("pred", pred, num_classes)
    check_label_map("target", target, num_classes)


def label_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion counts of a pseudo-label (or prediction) against the ground truth.

    Args:
        pred: label map, integer, any shape, values in [0, K) or 255 (unlabelled).
        target: ground truth of the same shape, values in [0, K) or 255 (not scored).
        num_classes: K, with background (>= 2).
    Returns:
        (K, K + 1) int64 on the CPU: row = ground-truth class, column = label given, the
        last column = left unlabelled (pred 255). Sum over batches or ranks freely.
    Raises:
        ValueError: shapes differ, float maps, values outside [0, K) and 255, K < 2.
    Example:
        >>> label_confusion(torch.tensor([0, 1, 255]), torch.tensor([0, 1, 1]), 2).tolist()
        [[1, 0, 0], [0, 1, 1]]
    """
    _check_pair(pred, target, num_classes)
    return _confusions(pred[None], target, num_classes)[0]


def _confusions(preds: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """(T, K, K + 1) counts of T label maps ``preds`` (T, *S) against one ``target``
    (*S), in one bincount; inputs already checked."""
    scored = target != IGNORE_INDEX
    t = target[scored].long().cpu()
    p = preds[:, scored].long().cpu()
    p = torch.where(p == IGNORE_INDEX, torch.full_like(p, k), p)
    offset = torch.arange(p.shape[0])[:, None] * (k * (k + 1))
    index = (offset + t * (k + 1) + p).reshape(-1)
    return torch.bincount(index, minlength=p.shape[0] * k * (k + 1)).view(p.shape[0], k, k + 1)


def _check_confusion(confusion: torch.Tensor) -> int:
    check_ndim("confusion", confusion, 2, "(K, K+1)")
    k = confusion.shape[0]
    if confusion.shape[1] != k + 1 or k < 2:
        raise ValueError(f"confusion must be (K, K+1) with K >= 2 as label_confusion gives, "
                         f"got shape {tuple(confusion.shape)}")  # fmt: skip
    return k


def label_quality(confusion: torch.Tensor) -> dict:
    """Quality of a pseudo-label from its summed :func:`label_confusion` counts.

    Scored on the pixels it labels (as CoSA's CPL mIoU, where 255 is not a guess):

    - ``miou``, ``iou``: per-class IoU (K values, NaN for a class neither in the ground
      truth nor labelled) and their mean over the classes present;
    - ``fg_precision``, ``fg_recall``: foreground vs background as a binary mask
      (labelled foreground that is foreground; foreground labelled foreground);
    - ``missed_as_bg``: per class c >= 1, the fraction of its labelled pixels given
      background; ``bg_labelled_as``: per class c >= 1, the fraction of pixels given c
      that are background (the coexistence error); NaN where undefined;
    - ``coverage``: the fraction of scored pixels that got a label.

    Args:
        confusion: (K, K + 1) counts from :func:`label_confusion` (summed).
    Returns:
        A dict of floats (lists of K or K - 1 floats for per-class entries), values in
        [0, 1] or NaN.
    Raises:
        ValueError: if ``confusion`` is not (K, K + 1).
    Example:
        >>> c = label_confusion(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 1]), 2)
        >>> q = label_quality(c)
        >>> q["miou"], q["fg_precision"], q["coverage"]
        (0.3333333333333333, 0.5, 1.0)
    """
    k = _check_confusion(confusion)
    c = confusion.double()
    labelled = c[:, :k]
    tp = labelled.diag()
    union = labelled.sum(0) + labelled.sum(1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    fg_fg = labelled[1:, 1:].sum()
    given_fg, true_fg = labelled[:, 1:].sum(), labelled[1:, :].sum()

    def ratio(a, b):
        return float(a / b) if float(b) > 0 else float("nan")

    return {
        "miou": float(iou[present].mean()) if bool(present.any()) else float("nan"),
        "iou": iou.tolist(),
        "fg_precision": ratio(fg_fg, given_fg),
        "fg_recall": ratio(fg_fg, true_fg),
        "missed_as_bg": [ratio(labelled[i, 0], labelled[i].sum()) for i in range(1, k)],
        "bg_labelled_as": [ratio(labelled[0, i], labelled[:, i].sum()) for i in range(1, k)],
        "coverage": ratio(labelled.sum(), c.sum()),
    }


def coexistence_miou(confusion: torch.Tensor, classes: Sequence[int]) -> float:
    """C-mIoU (CoSA Tab. 4b): the mIoU over the given classes only (e.g. those with
    coexistence, :data:`VOC_COEXISTENCE_CLASSES` for VOC), from summed counts.

    Args:
        confusion: (K, K + 1) counts from :func:`label_confusion`.
        classes: class indices in [0, K), at least one.
    Returns:
        The mean IoU over those of ``classes`` that are present (NaN if none is).
    Raises:
        ValueError: on a bad ``confusion`` or a class outside [0, K).
    """
    k = _check_confusion(confusion)
    if not classes or any(not isinstance(i, int) or not 0 <= i < k for i in classes):
        raise ValueError(f"classes must be indices in [0, {k}), got {list(classes)!r}")
    iou = torch.tensor(label_quality(confusion)["iou"], dtype=torch.float64)[list(classes)]
    seen = ~torch.isnan(iou)
    return float(iou[seen].mean()) if bool(seen.any()) else float("nan")


def _scores_and_correct(score: torch.Tensor, correct: torch.Tensor):
    check_tensor("score", score)
    check_tensor("correct", correct)
    if score.shape != correct.shape:
        raise ValueError(f"score shape {tuple(score.shape)} differs from correct shape "
                         f"{tuple(correct.shape)}")  # fmt: skip
    if not score.is_floating_point():
        raise ValueError(f"score must be a floating-point tensor, got dtype {score.dtype}")
    if correct.dtype != torch.bool:
        raise ValueError(f"correct must be a bool tensor, got dtype {correct.dtype}")
    s = score.detach().reshape(-1).double().cpu()
    if not bool(torch.isfinite(s).all()):
        raise ValueError("score must be finite, but it contains NaN or inf")
    return s, correct.reshape(-1).cpu()


def reliability_auroc(score: torch.Tensor, correct: torch.Tensor) -> float:
    """AUROC of a per-pixel reliability score for telling correct pseudo-labels from
    wrong ones: the probability that a random correct pixel scores higher than a
    random wrong one, ties counting one half (scikit-learn's ``roc_auc_score``).

    CoSA's Fig. 3b correlates perplexity P with CPL accuracy; with ``score = 1 / P``
    (or the confidence ν) an AUROC near 1 says low perplexity marks correct pixels, 0.5
    that it says nothing.

    Args:
        score: float, any shape, finite; higher = more reliable.
        correct: bool of the same shape: the pseudo-label equals the ground truth
            (select the scored pixels before the call).
    Returns:
        AUROC in [0, 1].
    Raises:
        ValueError: shapes differ, wrong dtypes, non-finite scores, or no correct or no
            wrong pixel (AUROC undefined, as in scikit-learn).
    Example:
        >>> reliability_auroc(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([True, True, False]))
        1.0
    """
    s, y = _scores_and_correct(score, correct)
    n_pos = int(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("correct must hold both correct (True) and wrong (False) pixels: "
                         f"got {n_pos} correct and {n_neg} wrong")  # fmt: skip
    # average ranks (1-based) of the scores, ties sharing their mean rank
    _, inverse, counts = torch.unique(s, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = (ends - (counts.double() - 1) / 2)[inverse]
    auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(auc)


def reliability_curve(score: torch.Tensor, correct: torch.Tensor, bins: int = 10,
                      value_range: tuple[float, float] | None = None) -> dict:  # fmt: skip
    """Accuracy of pseudo-labels per bin of a reliability score (CoSA Fig. 3a/b), for
    a plot: equal-width bins over ``value_range`` (default: the scores' min and max).

    Args:
        score, correct: as :func:`reliability_auroc` (a wrong or correct pixel per value).
        bins: number of bins, >= 1.
        value_range: (low, high) with low < high; scores outside fall in no bin.
    Returns:
        ``{"edges": bins + 1 floats, "accuracy": bins floats (NaN for an empty bin),
        "counts": bins ints}``.
    Raises:
        ValueError: as :func:`reliability_auroc` (except that one class may be missing),
            bins < 1 or an empty range.
    Example:
        >>> score, correct = torch.tensor([0.1, 0.2, 0.9]), torch.tensor([False, True, True])
        >>> r = reliability_curve(score, correct, bins=2)
        >>> r["accuracy"], r["counts"]
        ([0.5, 1.0], [2, 1])
    """
    s, y = _scores_and_correct(score, correct)
    check_int("bins", bins, 1)
    if value_range is None:
        lo, hi = (float(s.min()), float(s.max())) if s.numel() else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
    else:
        lo, hi = (float(v) for v in value_range)
        if not lo < hi:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    idx = torch.bucketize(s, edges, right=True) - 1
    idx[s == hi] = bins - 1  # the last bin includes its upper edge
    inside = (idx >= 0) & (idx < bins)
    counts = torch.bincount(idx[inside], minlength=bins)
    hits = torch.bincount(idx[inside], weights=y[inside].double(), minlength=bins)
    acc = torch.where(counts > 0, hits / counts.clamp_min(1), torch.full_like(hits, float("nan")))
    return {"edges": edges.tolist(), "accuracy": acc.tolist(), "counts": counts.tolist()}


def cpl_sweep_confusions(cam: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
                         thresholds: Sequence[float]) -> torch.Tensor:  # fmt: skip
    """Confusion counts of the CPL (CoSA Eq. 3, :func:`~wsss_blocks.cam_to_cpl`) at every
    threshold ξ of a grid, for :func:`threshold_sweep` (sum over batches first); one
    pass over the CAM, whatever the grid's length.

    Args:
        cam: (B, C, H, W) float in [0, 1], the normalised CAM (absent classes zeroed).
        labels: (B, C) multi-hot image labels.
        target: (B, H, W) ground truth, values in [0, C] or 255.
        thresholds: T values ξ in (0, 1).
    Returns:
        (T, C + 1, C + 2) int64: one :func:`label_confusion` per ξ.
    Raises:
        ValueError: on bad shapes or values (as :func:`~wsss_blocks.cam_to_cpl` and
            :func:`label_confusion`), or an empty grid.
    """
    if len(thresholds) == 0:
        raise ValueError("thresholds must hold at least one value")
    for xi in thresholds:
        check_open_unit("thresholds", float(xi))
    nu, cls = cam_confidence(cam, labels)  # checks cam and labels once
    k, t = cam.shape[1] + 1, len(thresholds)
    _check_pair(cls, target, k)
    order = sorted(range(t), key=lambda i: float(thresholds[i]))
    xis = torch.tensor([float(thresholds[i]) for i in order], dtype=nu.dtype, device=nu.device)
    # cam_to_cpl (Eq. 3) at xi: the arg-max class where nu >= xi, else background. With
    # b = #{xi <= nu}, a pixel takes its class at the b smallest xi: one histogram over
    # (target, class, b), then suffix sums give every xi's counts
    scored = target != IGNORE_INDEX
    b = torch.searchsorted(xis, nu[scored].contiguous(), right=True).cpu()
    tgt, a = target[scored].long().cpu(), cls[scored].cpu()
    hist = torch.bincount((tgt * k + a) * (t + 1) + b, minlength=k * k * (t + 1))
    hist = hist.view(k, k, t + 1)
    above = hist.flip(-1).cumsum(-1).flip(-1)[..., 1:]  # (K, K, T): nu >= xi_j
    out = torch.zeros(t, k, k + 1, dtype=torch.int64)
    fg = above.permute(2, 0, 1)  # (T, K target, K class)
    out[:, :, :k] = fg
    out[:, :, 0] = hist.sum((1, 2)) - fg[:, :, 1:].sum(-1)  # the rest: background
    return out[torch.tensor(order).argsort()]


def threshold_sweep(confusions: torch.Tensor, thresholds: Sequence[float],
                    current: float | None = None) -> dict:  # fmt: skip
    """CPL mIoU over a grid of ξ, the oracle ξ (best mIoU on the ground truth) and the
    gap of a given ξ (the searcher's, Eq. 6) to it.

    Args:
        confusions: (T, K, K + 1) summed counts from :func:`cpl_sweep_confusions`.
        thresholds: the T values ξ of the grid, in the order of ``confusions``.
        current: a ξ to score against the oracle, e.g. the searched one; it is scored
            at the nearest grid value.
    Returns:
        ``{"thresholds", "miou" (T floats), "oracle_threshold", "oracle_miou"}`` and,
        with ``current``, ``"current_threshold"``, ``"current_miou"`` and ``"gap"``
        (oracle mIoU − current mIoU, >= 0).
    Raises:
        ValueError: T differs between the arguments, or a bad confusion.
    """
    check_ndim("confusions", confusions, 3, "(T, K, K+1)")
    if confusions.shape[0] != len(thresholds):
        raise ValueError(f"confusions has {confusions.shape[0]} entries but thresholds "
                         f"{len(thresholds)}")  # fmt: skip
    mious = [label_quality(c)["miou"] for c in confusions]
    best = max(range(len(mious)), key=lambda i: -1.0 if mious[i] != mious[i] else mious[i])
    out = {"thresholds": [float(t) for t in thresholds], "miou": mious,
           "oracle_threshold": float(thresholds[best]), "oracle_miou": mious[best]}  # fmt: skip
    if current is not None:
        i = min(range(len(thresholds)), key=lambda j: abs(float(thresholds[j]) - current))
        out.update(current_threshold=float(current), current_miou=mious[i],
                   gap=mious[best] - mious[i])  # fmt: skip
    return out


def restrict(label_map: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``label_map`` with 255 where ``keep`` is False: score a pseudo-label on a region
    only, e.g. where the perplexity is low (CoSA Fig. 5b: M vs M† where P ≤ ε).

    Args:
        label_map: integer map, any shape.
        keep: bool of the same shape.
    Returns:
        A new map of ``label_map``'s dtype.
    Raises:
        ValueError: shapes differ or ``keep`` is not bool.
    """
    check_tensor("label_map", label_map)
    check_tensor("keep", keep)
    if keep.shape != label_map.shape or keep.dtype != torch.bool:
        raise ValueError(f"keep must be a bool tensor of shape {tuple(label_map.shape)}, got "
                         f"{keep.dtype} {tuple(keep.shape)}")  # fmt: skip
    return label_map.masked_fill(~keep, IGNORE_INDEX)


def texture_fp_counts(
    pred: torch.Tensor,
    target: torch.Tensor,
    labels: torch.Tensor,
    background_type: torch.Tensor,
    preferred: Sequence[int],
) -> torch.Tensor:
    """False positives of each class on background by its kind: the coexistence problem
    measured where the kind of every background pixel is known (MF-Seg knows the
    texture under each one, and each class has a preferred texture).

    For class c (1..C), over the images that contain c: among the background pixels of
    c's preferred kind, how many ``pred`` labels c; and the same on every other kind.
    (The counts are made in one pass over the pixels, whatever C.)

    Args:
        pred: (B, H, W) labels in [0, C] or 255 (a CPL, a prediction).
        target: (B, H, W) ground truth in [0, C] or 255.
        labels: (B, C) multi-hot image labels.
        background_type: (B, H, W) integer kind of the background at each pixel (for
            MF-Seg the image's texture id, broadcast), read on background pixels only.
        preferred: C kinds, ``preferred[c - 1]`` the one class c coexists with.
    Returns:
        (C, 4) int64 counts: [labelled c on its preferred kind, background pixels of
        that kind, labelled c on other kinds, background pixels of other kinds].
    Raises:
        ValueError: shapes or lengths that disagree, bad label values.
    """
    check_ndim("labels", labels, 2, "(B, C)")
    b, c = labels.shape
    _check_pair(pred, target, c + 1)
    check_ndim("pred", pred, 3, "(B, H, W)")
    if labels.shape[0] != pred.shape[0]:
        raise ValueError(f"labels batch {labels.shape[0]} differs from pred batch {pred.shape[0]}")
    if background_type.shape != pred.shape or background_type.is_floating_point():
        raise ValueError(f"background_type must be an integer tensor of shape "
                         f"{tuple(pred.shape)}, got {background_type.dtype} "
                         f"{tuple(background_type.shape)}")  # fmt: skip
    if len(preferred) != c:
        raise ValueError(f"preferred must have one kind per class ({c}), got {len(preferred)}")
    bg = (target == 0).cpu().flatten(1)  # (B, P)
    pred, kind = pred.cpu().flatten(1).long(), background_type.cpu().flatten(1).long()
    has = labels.cpu().to(torch.int64)  # (B, C)
    pref = torch.as_tensor([int(p) for p in preferred], dtype=torch.int64)  # (C,)
    kinds = int(max(int(kind.max()) if kind.numel() else 0, int(pref.max()))) + 1
    # background pixels of each kind per image, (B, kinds)
    per_image = torch.stack([torch.bincount(kind[i][bg[i]], minlength=kinds)
                             for i in range(kind.shape[0])]) if kind.shape[0] else (
        torch.zeros(0, kinds, dtype=torch.int64))  # fmt: skip
    own_bg = (has * per_image[:, pref]).sum(0)  # images with class c: bg of c's kind
    all_bg = (has * per_image.sum(1, keepdim=True)).sum(0)
    # false positives: background labelled c in images with c, split by whether the
    # pixel's kind is c's preferred one
    fp = bg & (pred >= 1) & (pred <= c)
    fp &= has.gather(1, (pred - 1).clamp(0, c - 1)).bool()
    cls = pred[fp] - 1
    own = kind[fp] == pref[cls]
    fp_own = torch.bincount(cls[own], minlength=c)
    fp_all = torch.bincount(cls, minlength=c)
    return torch.stack([fp_own, own_bg, fp_all - fp_own, all_bg - own_bg], 1)


def texture_fp_rates(counts: torch.Tensor) -> dict:
    """False-positive rates from summed :func:`texture_fp_counts`.

    Args:
        counts: (C, 4) counts.
    Returns:
        ``{"preferred": C floats, "other": C floats, "ratio": C floats}``: the rate on
        the class's preferred kind, on other kinds, and their ratio (> 1: the class
        spreads onto its coexisting background), NaN where a count is 0; and
        ``"mean_preferred"``, ``"mean_other"``: the means over the classes with a rate
        (NaN if none).
    Raises:
        ValueError: if ``counts`` is not (C, 4).
    """
    check_ndim("counts", counts, 2, "(C, 4)")
    if counts.shape[1] != 4:
        raise ValueError(f"counts must be (C, 4), got shape {tuple(counts.shape)}")
    x = counts.double()
    nan = torch.full_like(x[:, 0], float("nan"))
    pref = torch.where(x[:, 1] > 0, x[:, 0] / x[:, 1].clamp_min(1), nan)
    other = torch.where(x[:, 3] > 0, x[:, 2] / x[:, 3].clamp_min(1), nan)
    ratio = torch.where(other > 0, pref / other, nan)
    means = {"mean_preferred": float(pref.nanmean()), "mean_other": float(other.nanmean())}
    return {"preferred": pref.tolist(), "other": other.tolist(), "ratio": ratio.tolist(), **means}


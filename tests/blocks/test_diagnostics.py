"""Pseudo-label diagnostics on hand-made cases, with scikit-learn as the AUROC oracle."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from wsss_blocks import IGNORE_INDEX
from wsss_blocks.diagnostics import (
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


def test_auroc_of_a_perfect_score_its_negation_and_a_constant():
    correct = torch.tensor([True, False, True, True, False, False])
    score = torch.where(correct, 2.0, 1.0) + torch.rand(6) * 0.1  # every correct above
    assert reliability_auroc(score, correct) == 1.0
    assert reliability_auroc(-score, correct) == 0.0
    assert reliability_auroc(torch.full((6,), 0.3), correct) == 0.5


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.integers(0, 2**31 - 1), st.sampled_from([3, 7, 1000]))
def test_auroc_equals_scikit_learn_with_ties(n, seed, levels):
    g = torch.Generator().manual_seed(seed)
    score = torch.randint(0, levels, (n,), generator=g).double() / levels  # many ties
    correct = torch.rand(n, generator=g) < 0.5
    correct[0], correct[-1] = True, False
    expected = roc_auc_score(correct.numpy(), score.numpy())
    assert reliability_auroc(score, correct) == pytest.approx(expected, abs=1e-12)


def test_auroc_needs_both_kinds_and_names_bad_input():
    with pytest.raises(ValueError, match="both correct"):
        reliability_auroc(torch.rand(4), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="correct must be a bool"):
        reliability_auroc(torch.rand(4), torch.ones(4))
    with pytest.raises(ValueError, match="score must be finite"):
        reliability_auroc(torch.tensor([0.1, float("nan")]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="score shape"):
        reliability_auroc(torch.rand(3), torch.ones(4, dtype=torch.bool))


def test_reliability_curve_bins_and_counts():
    score = torch.tensor([0.0, 0.1, 0.55, 0.6, 1.0])
    correct = torch.tensor([False, True, True, True, True])
    r = reliability_curve(score, correct, bins=2, value_range=(0.0, 1.0))
    assert r["counts"] == [2, 3] and r["accuracy"] == [0.5, 1.0]
    assert r["edges"] == [0.0, 0.5, 1.0]
    r = reliability_curve(score, correct, bins=4, value_range=(0.0, 1.0))
    assert r["counts"] == [2, 0, 2, 1] and math.isnan(r["accuracy"][1])
    with pytest.raises(ValueError, match="bins"):
        reliability_curve(score, correct, bins=0)
    with pytest.raises(ValueError, match="value_range"):
        reliability_curve(score, correct, value_range=(1.0, 1.0))


def test_label_quality_by_hand():
    # 3 classes; pixels: (target, pred)
    pairs = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 0), (1, 255), (2, 2), (2, 1), (255, 2)]
    target = torch.tensor([t for t, _ in pairs])
    pred = torch.tensor([p for _, p in pairs])
    conf = label_confusion(pred, target, 3)
    assert conf.tolist() == [[2, 1, 0, 0], [1, 1, 0, 1], [0, 1, 1, 0]]
    q = label_quality(conf)
    assert q["iou"] == pytest.approx([2 / 4, 1 / 4, 1 / 2])  # labelled pixels only
    assert q["miou"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 2) / 3)
    assert q["fg_precision"] == pytest.approx(3 / 4)  # given fg: (0,1) (1,1) (2,2) (2,1)
    assert q["fg_recall"] == pytest.approx(3 / 4)  # labelled fg: (1,1) (1,0) (2,2) (2,1)
    assert q["missed_as_bg"] == pytest.approx([1 / 2, 0.0])
    assert q["bg_labelled_as"] == pytest.approx([1 / 3, 0.0])
    assert q["coverage"] == pytest.approx(7 / 8)


def test_c_miou_equals_the_miou_restricted_by_hand():
    target = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    pred = torch.tensor([0, 1, 1, 1, 2, 0, 3, 2])
    q = label_quality(label_confusion(pred, target, 4))
    assert coexistence_miou(label_confusion(pred, target, 4), [1, 3]) == pytest.approx(
        (q["iou"][1] + q["iou"][3]) / 2
    )
    with pytest.raises(ValueError, match="classes must be indices"):
        coexistence_miou(label_confusion(pred, target, 4), [4])


def test_the_sweep_finds_the_known_best_threshold():
    # one image, one class; the object covers the left half with CAM 0.6, the right
    # half is background with CAM 0.3: any xi in (0.3, 0.6] is perfect
    cam = torch.zeros(1, 1, 4, 4)
    cam[..., :2] = 0.6
    cam[..., 2:] = 0.3
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[..., :2] = 1
    labels = torch.ones(1, 1)
    grid = [0.1, 0.2, 0.5, 0.7, 0.9]
    r = threshold_sweep(cpl_sweep_confusions(cam, labels, target, grid), grid, current=0.2)
    assert r["oracle_threshold"] == 0.5 and r["oracle_miou"] == 1.0
    assert r["miou"][0] == pytest.approx(0.25)  # all foreground: bg IoU 0, fg IoU 0.5
    assert r["current_miou"] == pytest.approx(0.25) and r["gap"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="thresholds"):
        threshold_sweep(cpl_sweep_confusions(cam, labels, target, grid), grid[:2])


def test_restrict_marks_the_rest_unlabelled():
    cpl = torch.tensor([[1, 2], [0, 1]])
    out = restrict(cpl, torch.tensor([[True, False], [False, True]]))
    assert out.tolist() == [[1, IGNORE_INDEX], [IGNORE_INDEX, 1]]
    with pytest.raises(ValueError, match="keep must be a bool"):
        restrict(cpl, torch.ones(2, 2))


def test_texture_false_positives_by_hand():
    # 2 classes; class 1 prefers kind 0, class 2 kind 1. Image 0 holds class 1 on kind 0
    target = torch.tensor([[[1, 0, 0, 0]], [[2, 0, 0, 0]]])
    pred = torch.tensor([[[1, 1, 0, 0]], [[2, 2, 2, 0]]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    kind = torch.tensor([[[0, 0, 0, 0]], [[0, 0, 0, 0]]])
    counts = texture_fp_counts(pred, target, labels, kind, preferred=[0, 1])
    assert counts.tolist() == [[1, 3, 0, 0], [0, 0, 2, 3]]
    r = texture_fp_rates(counts)
    assert r["preferred"][0] == pytest.approx(1 / 3) and math.isnan(r["other"][0])
    assert r["mean_preferred"] == pytest.approx(1 / 3) and r["mean_other"] == pytest.approx(2 / 3)
    assert r["other"][1] == pytest.approx(2 / 3) and math.isnan(r["preferred"][1])
    with pytest.raises(ValueError, match="preferred must have one kind per class"):
        texture_fp_counts(pred, target, labels, kind, preferred=[0])
    with pytest.raises(ValueError, match="background_type"):
        texture_fp_counts(pred, target, labels, kind.float(), preferred=[0, 1])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: label_confusion(torch.tensor([0, 5]), torch.tensor([0, 1]), 3), "pred"),
        (lambda: label_confusion(torch.tensor([0.0]), torch.tensor([0]), 3), "pred"),
        (lambda: label_confusion(torch.tensor([0]), torch.tensor([0, 1]), 3), "pred shape"),
        (lambda: label_confusion(torch.tensor([0]), torch.tensor([0]), 1), "num_classes"),
        (lambda: label_quality(torch.zeros(3, 3)), "confusion"),
        (lambda: texture_fp_rates(torch.zeros(3, 3)), "counts"),
        (lambda: threshold_sweep(torch.zeros(2, 3), [0.5, 0.6]), "confusions"),
    ],
)
def test_bad_input_is_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_the_sweep_equals_cam_to_cpl_at_every_threshold():
    from wsss_blocks import cam_to_cpl

    g = torch.Generator().manual_seed(3)
    cam = torch.rand(3, 4, 6, 6, generator=g)
    labels = (torch.rand(3, 4, generator=g) < 0.5).float()
    target = torch.randint(0, 5, (3, 6, 6), generator=g)
    target[0, 0, 0] = IGNORE_INDEX
    grid = [0.5, 0.1, 0.9, 0.35]  # any order
    sweep = cpl_sweep_confusions(cam, labels, target, grid)
    for i, xi in enumerate(grid):
        assert torch.equal(sweep[i], label_confusion(cam_to_cpl(cam, labels, xi), target, 5))


def test_texture_counts_equal_a_per_class_loop():
    g = torch.Generator().manual_seed(4)
    b, c, kinds = 6, 3, 4
    target = torch.randint(0, c + 1, (b, 5, 5), generator=g)
    pred = torch.randint(0, c + 1, (b, 5, 5), generator=g)
    labels = (torch.rand(b, c, generator=g) < 0.6).float()
    kind = torch.randint(0, kinds, (b, 5, 5), generator=g)
    preferred = [2, 0, 3]
    expected = torch.zeros(c, 4, dtype=torch.int64)
    for i in range(c):
        imgs = labels[:, i].bool()
        bg, k, fp = target[imgs] == 0, kind[imgs], pred[imgs] == i + 1
        own, other = bg & (k == preferred[i]), bg & (k != preferred[i])
        expected[i] = torch.stack([(fp & own).sum(), own.sum(), (fp & other).sum(), other.sum()])
    assert torch.equal(texture_fp_counts(pred, target, labels, kind, preferred), expected)

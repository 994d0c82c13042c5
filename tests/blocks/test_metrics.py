"""MeanIoU (confusion-matrix mIoU, VOC convention) and tag masking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix, jaccard_score

from wsss_blocks import MeanIoU, mask_absent_classes


def test_hand_computed_confusion():
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    m = MeanIoU(3)
    m.update(pred, target)
    r = m.compute()
    # rows = GT, cols = prediction; the ignored pixel (GT 255) is not counted
    assert torch.equal(r.confusion, torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 0]]))
    # IoU_0 = 1/(1+1+1), IoU_1 = 2/(2+1+0), IoU_2 = 0/(0+0+1)
    np.testing.assert_allclose(r.iou, [1 / 3, 2 / 3, 0.0])
    assert math.isclose(r.miou, 1 / 3)
    assert math.isclose(r.pixel_accuracy, 3 / 5)


def test_classes_never_seen_are_nan_and_skipped():
    m = MeanIoU(4)
    m.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    r = m.compute()
    assert math.isnan(r.iou[2]) and math.isnan(r.iou[3])
    assert math.isclose(r.miou, (1 / 2 + 1 / 2) / 2)


def test_class_only_predicted_counts_as_zero():
    m = MeanIoU(3)
    m.update(torch.tensor([0, 2]), torch.tensor([0, 0]))  # class 2 is a false positive only
    r = m.compute()
    assert r.iou[2] == 0.0 and math.isnan(r.iou[1])
    assert math.isclose(r.miou, (1 / 2 + 0.0) / 2)


def test_ignore_pixels_do_not_count_whatever_the_prediction():
    target = torch.tensor([[0, 255], [1, 255]])
    a, b = MeanIoU(3), MeanIoU(3)
    a.update(torch.tensor([[0, 0], [1, 1]]), target)
    b.update(torch.tensor([[0, 2], [1, 2]]), target)
    assert torch.equal(a.compute().confusion, b.compute().confusion)
    assert a.compute().miou == 1.0


def test_accumulates_over_batches_and_resets():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (4, 6, 7), generator=g)
    target = torch.randint(0, 5, (4, 6, 7), generator=g)
    target[0, :2] = 255
    whole, parts = MeanIoU(5), MeanIoU(5)
    whole.update(pred, target)
    for i in range(4):
        parts.update(pred[i], target[i])
    assert torch.equal(whole.compute().confusion, parts.compute().confusion)
    assert whole.compute().miou == parts.compute().miou
    parts.reset()
    assert int(parts.compute().confusion.sum()) == 0
    assert math.isnan(parts.compute().miou) and math.isnan(parts.compute().pixel_accuracy)


@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 6))
def test_matches_sklearn(seed, k):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (3, 5, 5), generator=g)
    pred = torch.where(
        torch.rand(3, 5, 5, generator=g) < 0.6, target, torch.randint(0, k, (3, 5, 5), generator=g)
    )
    target[torch.rand(3, 5, 5, generator=g) < 0.1] = 255
    m = MeanIoU(k)
    m.update(pred, target)
    r = m.compute()
    keep = (target != 255).flatten().numpy()
    y, p = target.flatten().numpy()[keep], pred.flatten().numpy()[keep]
    np.testing.assert_array_equal(r.confusion.numpy(), confusion_matrix(y, p, labels=range(k)))
    present = sorted(set(y.tolist()) | set(p.tolist()))
    want = jaccard_score(y, p, labels=present, average=None, zero_division=0)
    np.testing.assert_allclose([r.iou[c] for c in present], want)
    assert math.isclose(r.miou, float(np.mean(want)), rel_tol=1e-12)


@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 21))
def test_mask_against_itself_is_one(seed, k):
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, k, (2, 4, 6), generator=g)
    mask[torch.rand(2, 4, 6, generator=g) < 0.2] = 255
    m = MeanIoU(k)
    m.update(mask.clamp_max(k - 1), mask)
    r = m.compute()
    if bool((mask != 255).any()):
        assert r.miou == 1.0 and r.pixel_accuracy == 1.0
    else:
        assert math.isnan(r.miou)


def test_meaniou_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        MeanIoU(0)
    m = MeanIoU(3)
    with pytest.raises(ValueError, match="pred"):
        m.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        m.update(torch.zeros(2, dtype=torch.long), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="target"):
        m.update(torch.zeros(2, dtype=torch.long), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="target"):
        m.update(torch.zeros(2, dtype=torch.long), torch.tensor([-1, 1]))
    with pytest.raises(ValueError, match="pred"):
        m.update(torch.tensor([0, 3]), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="pred"):
        m.update(torch.tensor([0, 255]), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="pred"):
        m.update(torch.tensor([0.0, 1.0]), torch.zeros(2, dtype=torch.long))
    assert int(m.compute().confusion.sum()) == 0  # failed updates added nothing


def test_meaniou_custom_ignore_index():
    m = MeanIoU(3, ignore_index=100)
    m.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 100]))
    assert m.compute().miou == 1.0


# ---- mask_absent_classes ---------------------------------------------------------------


def test_mask_absent_classes_hand_computed():
    s = torch.tensor([[[[0.0, 1.0]], [[2.0, 0.5]], [[3.0, -1.0]]]])
    out = mask_absent_classes(s, torch.tensor([[1, 0]]))
    want = torch.tensor([[[[0.0, 1.0]], [[2.0, 0.5]], [[-math.inf, -math.inf]]]])
    assert torch.equal(out, want)
    assert torch.equal(out.argmax(1), torch.tensor([[[1, 0]]]))
    assert not torch.equal(s, out)  # input left alone


def test_mask_absent_classes_keeps_background_and_present():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, 5, 2, 2, generator=g)
    labels = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]])
    out = mask_absent_classes(s, labels)
    keep = torch.cat([torch.ones(3, 1), labels.float()], 1).bool()
    assert torch.equal(out[keep], s[keep])
    assert torch.all(out[~keep] == -math.inf)
    assert torch.all(out[0].argmax(0) == 0)


def test_mask_absent_classes_bad_input():
    s = torch.zeros(2, 3, 2, 2)
    with pytest.raises(ValueError, match="seg_logits"):
        mask_absent_classes(torch.zeros(3, 2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="labels"):
        mask_absent_classes(s, torch.ones(2, 3))
    with pytest.raises(ValueError, match="labels"):
        mask_absent_classes(s, torch.ones(1, 2))
    with pytest.raises(ValueError, match="labels"):
        mask_absent_classes(s, torch.full((2, 2), 0.5))


def test_mask_absent_classes_rejects_integer_logits():
    with pytest.raises(ValueError, match="seg_logits"):
        mask_absent_classes(torch.zeros(1, 2, 1, 1, dtype=torch.long), torch.tensor([[0]]))


def test_average_gt_drops_classes_only_predicted():
    # The official CoSA release averages over the classes in the ground truth only.
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])  # class 2 never in the GT: a pure false positive
    present, gt = MeanIoU(3), MeanIoU(3, average="gt")
    present.update(pred, target)
    gt.update(pred, target)
    # IoU_0 = 1/2, IoU_1 = 1, IoU_2 = 0
    assert math.isclose(present.compute().miou, (0.5 + 1.0 + 0.0) / 3)
    assert math.isclose(gt.compute().miou, (0.5 + 1.0) / 2)
    assert gt.compute().average == "gt" and present.compute().average == "present"


def test_average_rules_agree_when_predictions_stay_in_gt_classes():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (500,), generator=g)
    pred = torch.randint(0, 4, (500,), generator=g)
    a, b = MeanIoU(6), MeanIoU(6, average="gt")
    a.update(pred, target)
    b.update(pred, target)
    assert math.isclose(a.compute().miou, b.compute().miou)


def test_unknown_average_is_rejected():
    with pytest.raises(ValueError, match="average"):
        MeanIoU(3, average="union")

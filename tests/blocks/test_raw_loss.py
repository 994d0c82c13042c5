"""RAW-weighted CAM2Seg loss (CoSA Eq. 5) against a hand-written weighted cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wsss_blocks import perplexity, raw_cam2seg_loss, raw_weights


def _oracle(seg: torch.Tensor, cpl: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """(1/|R|) Σ_{R} w · (−log softmax(S)[cpl]) in float64, R = pixels with cpl ≠ 255."""
    logp = torch.log_softmax(seg.double(), 1)
    w = torch.ones(cpl.shape, dtype=torch.float64) if w is None else w.double()
    total, count = 0.0, 0
    b, _, h, wd = seg.shape
    for i in range(b):
        for y in range(h):
            for x in range(wd):
                k = int(cpl[i, y, x])
                if k == 255:
                    continue
                total += float(w[i, y, x]) * -float(logp[i, k, y, x])
                count += 1
    return torch.tensor(total / max(count, 1), dtype=torch.float64)


def test_hand_computed():
    seg = torch.tensor([[[[0.0, 1.0, 5.0]], [[math.log(3), 1.0, -5.0]]]])
    cpl = torch.tensor([[[0, 1, 255]]])
    w = torch.tensor([[[2.0, 0.5, 7.0]]])
    # pixel 0: softmax = [1/4, 3/4], CE(bg) = log 4 ; pixel 1: equal logits, CE = log 2
    want = (2.0 * math.log(4) + 0.5 * math.log(2)) / 2
    assert math.isclose(float(raw_cam2seg_loss(seg, cpl, w)), want, rel_tol=1e-6)
    want = (math.log(4) + math.log(2)) / 2
    assert math.isclose(float(raw_cam2seg_loss(seg, cpl)), want, rel_tol=1e-6)


def test_matches_weighted_ce():
    seg = torch.randn(2, 4, 3, 5, dtype=torch.float64) * 2
    cpl = torch.randint(0, 4, (2, 3, 5))
    cpl[0, 0, :3] = 255
    cpl[1, 2, 4] = 255
    w = torch.rand(2, 3, 5, dtype=torch.float64) * 3
    torch.testing.assert_close(raw_cam2seg_loss(seg, cpl, w), _oracle(seg, cpl, w))
    torch.testing.assert_close(raw_cam2seg_loss(seg, cpl), _oracle(seg, cpl, None))


def test_ignored_pixels_have_no_effect_and_no_gradient():
    seg = torch.randn(1, 3, 4, 4).requires_grad_(True)
    cpl = torch.randint(0, 3, (1, 4, 4))
    cpl[0, :2] = 255
    w = torch.rand(1, 4, 4) + 0.1
    loss = raw_cam2seg_loss(seg, cpl, w)
    loss.backward()
    assert torch.all(seg.grad[0, :, :2] == 0)
    assert torch.all(seg.grad[0, :, 2:].abs().sum(0) > 0)
    moved = seg.detach().clone()
    moved[0, :, :2] = torch.randn(3, 2, 4) * 100  # change only ignored pixels
    w2 = w.clone()
    w2[0, :2] = 1e6  # their weights do not count either
    torch.testing.assert_close(raw_cam2seg_loss(moved, cpl, w2), loss.detach())


def test_mean_is_over_valid_pixels_only():
    seg = torch.zeros(1, 2, 1, 4)  # every valid pixel has CE = log 2
    cpl = torch.tensor([[[0, 1, 255, 255]]])
    assert math.isclose(float(raw_cam2seg_loss(seg, cpl)), math.log(2), rel_tol=1e-6)


def test_weights_are_detached():
    seg = torch.randn(1, 3, 2, 2).requires_grad_(True)
    w = (torch.rand(1, 2, 2) + 0.5).requires_grad_(True)
    raw_cam2seg_loss(seg, torch.randint(0, 3, (1, 2, 2)), w).backward()
    assert w.grad is None and seg.grad is not None


def test_with_raw_weights_pipeline():
    """Eq. (4) → Eq. (5) end to end: confident pixels weigh more."""
    nu = torch.tensor([[[0.95, 0.55]]])
    w = raw_weights(perplexity(nu, 0.5))
    seg = torch.zeros(1, 2, 1, 2)
    cpl = torch.tensor([[[1, 1]]])
    # both pixels have CE = log 2 and the weights average to 1, so the loss is log 2
    assert math.isclose(float(raw_cam2seg_loss(seg, cpl, w)), math.log(2), rel_tol=1e-5)
    seg2 = torch.tensor([[[[0.0, 0.0]], [[5.0, 0.0]]]])  # pixel 0 (confident) learned
    assert float(raw_cam2seg_loss(seg2, cpl, w)) < float(raw_cam2seg_loss(seg2, cpl))


def test_bad_input():
    seg, cpl = torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="seg_logits"):
        raw_cam2seg_loss(torch.zeros(3, 4, 4), cpl)
    with pytest.raises(ValueError, match="seg_logits"):
        raw_cam2seg_loss(seg.long(), cpl)
    with pytest.raises(ValueError, match="seg_logits"):
        raw_cam2seg_loss(torch.full_like(seg, float("nan")), cpl)
    with pytest.raises(ValueError, match="cpl"):
        raw_cam2seg_loss(seg, torch.zeros(2, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="cpl"):
        raw_cam2seg_loss(seg, torch.zeros(3, 4, 4, dtype=torch.long))  # batch mismatch
    with pytest.raises(ValueError, match="cpl"):
        raw_cam2seg_loss(seg, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="cpl"):
        raw_cam2seg_loss(seg, torch.full((2, 4, 4), 3))  # C+1 = 3 channels: 3 out of range
    with pytest.raises(ValueError, match="cpl"):
        raw_cam2seg_loss(seg, torch.full((2, 4, 4), -1))
    with pytest.raises(ValueError, match="cpl"):
        raw_cam2seg_loss(seg, torch.zeros(2, 4, 4))  # float labels
    with pytest.raises(ValueError, match="weights"):
        raw_cam2seg_loss(seg, cpl, torch.ones(2, 4, 5))
    with pytest.raises(ValueError, match="weights"):
        raw_cam2seg_loss(seg, cpl, torch.ones(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="weights"):
        raw_cam2seg_loss(seg, cpl, torch.full((2, 4, 4), float("inf")))
    with pytest.raises(ValueError, match="weights"):
        raw_cam2seg_loss(seg, cpl, -torch.ones(2, 4, 4))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32])
def test_cpl_narrow_integer_dtypes(dtype):
    seg, cpl = torch.randn(1, 3, 2, 2), torch.tensor([[[0, 2], [255, 1]]])
    want = raw_cam2seg_loss(seg, cpl)
    try:
        got = raw_cam2seg_loss(seg, cpl.to(dtype))
    except ValueError as err:  # a clear refusal naming cpl is an acceptable fix too
        assert "cpl" in str(err)
        return
    torch.testing.assert_close(got, want)


def test_balanced_hand_case():
    # The official release's L_c2s: 0.5 * mean CE over bg pixels + 0.5 * mean over fg pixels.
    logits = torch.tensor([[[[2.0, 0.0, 1.0, 3.0]], [[0.0, 1.0, 0.0, 0.0]]]])  # (1, 2, 1, 4)
    cpl = torch.tensor([[[0, 0, 1, 255]]])
    ce = F.cross_entropy(logits, torch.tensor([[[0, 0, 1, 0]]]), reduction="none")[0, 0]
    want = 0.5 * (ce[0] + ce[1]) / 2 + 0.5 * ce[2]
    torch.testing.assert_close(raw_cam2seg_loss(logits, cpl, balanced=True), want)
    # with weights: each part is the mean of w * CE over its pixels
    w = torch.tensor([[[2.0, 0.5, 3.0, 1.0]]])
    want_w = 0.5 * (2.0 * ce[0] + 0.5 * ce[1]) / 2 + 0.5 * 3.0 * ce[2]
    torch.testing.assert_close(raw_cam2seg_loss(logits, cpl, w, balanced=True), want_w)
    # the plain form weighs the two bg pixels twice as much as the fg pixel
    torch.testing.assert_close(raw_cam2seg_loss(logits, cpl), ce[:3].mean())


def test_balanced_missing_part_is_zero_not_renormalised():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    bg_only = torch.zeros(1, 2, 2, dtype=torch.long)
    loss = raw_cam2seg_loss(logits, bg_only, balanced=True)
    torch.testing.assert_close(loss, 0.5 * raw_cam2seg_loss(logits, bg_only))
    nothing = torch.full((1, 2, 2), 255)
    empty = raw_cam2seg_loss(logits, nothing, balanced=True)
    empty.backward()
    assert float(empty.detach()) == 0.0 and torch.isfinite(logits.grad).all()


def test_raw_loss_ignore_index_is_an_argument():
    """Another ignore value (PyTorch's -100) gives the loss of the same pixels marked 255;
    an ignore value that is a class is refused."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 6, 6, generator=g)
    cpl = torch.randint(0, 4, (2, 6, 6), generator=g)
    drop = torch.rand(2, 6, 6, generator=g) < 0.3
    weights = torch.rand(2, 6, 6, generator=g)
    for balanced in (False, True):
        expected = raw_cam2seg_loss(logits, cpl.masked_fill(drop, 255), weights, balanced)
        got = raw_cam2seg_loss(logits, cpl.masked_fill(drop, -100), weights, balanced,
                               ignore_index=-100)  # fmt: skip
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="ignore_index must lie outside the classes"):
        raw_cam2seg_loss(logits, cpl, ignore_index=3)

"""pool_cam, pooled_logits and normalize_cam: hand-computed cases, the equations, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from wsss_blocks import normalize_cam, pool_cam, pooled_logits


def _cam(seed: int, shape=(2, 3, 4, 5), scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# ---- pool_cam -------------------------------------------------------------------------
# "cam-max" is the old pool_cam "gmp" (max over the CAM), renamed because CoSA's GMP
# (Eq. 1) max-pools the features, not the CAM; see pooled_logits below.


def test_pool_cam_hand_computed():
    cam = torch.tensor([[[[1.0, -2.0], [4.0, 0.5]], [[-1.0, -3.0], [-2.0, -4.0]]]])
    assert torch.equal(pool_cam(cam, "cam-max"), torch.tensor([[4.0, -1.0]]))
    assert torch.allclose(pool_cam(cam, "gap"), torch.tensor([[3.5 / 4, -10.0 / 4]]))


def test_pool_cam_refuses_gmp_and_points_to_pooled_logits():
    # pooling the CAM cannot give CoSA's GMP, so the old name must not silently work
    with pytest.raises(ValueError, match="pooling 'gmp'.*features.*pooled_logits"):
        pool_cam(_cam(1), "gmp")


def test_pool_cam_equals_max_and_mean_over_pixels():
    cam = _cam(2)
    b, c = cam.shape[:2]
    flat = cam.reshape(b, c, -1)
    assert torch.equal(pool_cam(cam, "cam-max"), flat.max(dim=2).values)
    assert torch.allclose(pool_cam(cam, "gap"), flat.sum(dim=2) / flat.shape[2])
    assert pool_cam(cam, "gap").dtype == torch.float64


def test_pool_cam_gradient_goes_to_the_max_pixel():
    cam = torch.tensor([[[[1.0, 5.0], [2.0, 3.0]]]], requires_grad=True)
    pool_cam(cam, "cam-max").sum().backward()
    assert torch.equal(cam.grad, torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]]))


def test_pool_cam_bad_input():
    with pytest.raises(ValueError, match="cam"):
        pool_cam(torch.zeros(2, 3, 4), "gap")
    with pytest.raises(ValueError, match="cam"):
        pool_cam(torch.zeros(1, 2, 3, 4, dtype=torch.int64), "gap")
    with pytest.raises(ValueError, match="pooling"):
        pool_cam(torch.zeros(1, 2, 3, 4), "avg")


def test_pool_cam_rejects_non_finite():
    with pytest.raises(ValueError, match="cam"):
        pool_cam(torch.tensor([[[[float("nan"), 1.0]]]]), "cam-max")


# ---- pooled_logits (CoSA Eq. 1) -------------------------------------------------------


def _fc(weight) -> nn.Conv2d:
    """Bias-free 1×1 classifier with the given (C, D) weight."""
    w = torch.as_tensor(weight, dtype=torch.float64)
    fc = nn.Conv2d(w.shape[1], w.shape[0], 1, bias=False).double()
    with torch.no_grad():
        fc.weight.copy_(w[:, :, None, None])
    return fc


def test_pooled_logits_hand_computed():
    # F: D=2 channels on a 1×3 grid; W_fc: one class, weights (1, -1)
    feats = torch.tensor([[[[1.0, 3.0, 0.0]], [[2.0, -1.0, 5.0]]]], dtype=torch.float64)
    fc = _fc([[1.0, -1.0]])
    # Eq. 1, GMP: G = (max(1, 3, 0), max(2, -1, 5)) = (3, 5); Z = 3 - 5
    assert torch.equal(pooled_logits(feats, fc, "gmp"), torch.tensor([[-2.0]]).double())
    # GAP: G = (4/3, 6/3); Z = 4/3 - 2
    torch.testing.assert_close(pooled_logits(feats, fc, "gap"), torch.tensor([[-2 / 3]]).double())
    # cam-max: CAM = (1-2, 3+1, 0-5) = (-1, 4, -5); max 4, not Eq. 1's -2
    assert torch.equal(pooled_logits(feats, fc, "cam-max"), torch.tensor([[4.0]]).double())


def test_pooled_logits_gmp_is_cosa_eq1_not_max_of_cam():
    # The numbers of issue 14: seed 0, features drawn first, then the classifier.
    torch.manual_seed(0)
    feats = torch.randn(1, 8, 5, 5)
    classifier = nn.Conv2d(8, 2, 1, bias=False)
    want = classifier.weight[:, :, 0, 0] @ feats.amax((2, 3))[0]  # Z = W_fc · GMP(F)
    got = pooled_logits(feats, classifier, "gmp")
    torch.testing.assert_close(got, want[None])
    torch.testing.assert_close(got, torch.tensor([[0.151, -1.122]]), atol=1e-3, rtol=0)
    cam_max = pooled_logits(feats, classifier, "cam-max")
    torch.testing.assert_close(cam_max, classifier(feats).amax((2, 3)))
    torch.testing.assert_close(cam_max, torch.tensor([[1.921, 0.812]]), atol=1e-3, rtol=0)


def test_pooled_logits_default_is_gmp():
    feats = _cam(6, shape=(2, 4, 3, 3))
    fc = _fc(_cam(7, shape=(3, 4)))
    assert torch.equal(pooled_logits(feats, fc), pooled_logits(feats, fc, "gmp"))


def test_pooled_logits_gap_equals_mean_of_cam():
    feats = _cam(8, shape=(2, 4, 3, 5))
    fc = _fc(_cam(9, shape=(3, 4)))
    cam = fc(feats)
    torch.testing.assert_close(pooled_logits(feats, fc, "gap"), cam.mean((2, 3)))
    torch.testing.assert_close(pooled_logits(feats, fc, "gap"), pool_cam(cam, "gap"))


def test_pooled_logits_cam_max_equals_amax_of_cam():
    feats = _cam(10, shape=(2, 4, 3, 5))
    fc = _fc(_cam(11, shape=(3, 4)))
    cam = fc(feats)
    assert torch.equal(pooled_logits(feats, fc, "cam-max"), cam.amax((2, 3)))
    assert torch.equal(pooled_logits(feats, fc, "cam-max"), pool_cam(cam, "cam-max"))


def test_pooled_logits_with_bias_adds_it():
    feats = _cam(12, shape=(2, 4, 3, 3))
    fc = nn.Conv2d(4, 3, 1).double()
    want = feats.amax((2, 3)) @ fc.weight[:, :, 0, 0].T + fc.bias
    torch.testing.assert_close(pooled_logits(feats, fc, "gmp"), want)


def test_pooled_logits_gmp_gradient_goes_through_max_pooled_features():
    feats = torch.tensor(
        [[[[1.0, 5.0], [2.0, 3.0]], [[-1.0, -4.0], [0.0, -2.0]]]], requires_grad=True
    )
    fc = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]])[:, :, None, None])
    pooled_logits(feats, fc, "gmp").sum().backward()
    # dZ_c/dW[c, d] = G_d = max of channel d = (5, 0), for both classes
    assert torch.equal(fc.weight.grad[:, :, 0, 0], torch.tensor([[5.0, 0.0], [5.0, 0.0]]))
    # dΣZ/dF[d] = Σ_c W[c, d] at channel d's arg-max pixel only: (1 + 3, 2 - 1)
    want = torch.tensor([[[[0.0, 4.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]]])
    assert torch.equal(feats.grad, want)


def test_pooled_logits_bad_input():
    fc = nn.Conv2d(4, 2, 1, bias=False)
    feats = torch.zeros(1, 4, 3, 3)
    with pytest.raises(ValueError, match="features"):
        pooled_logits(torch.zeros(4, 3, 3), fc)
    with pytest.raises(ValueError, match="features"):
        pooled_logits(torch.zeros(1, 4, 3, 3, dtype=torch.int64), fc)
    with pytest.raises(ValueError, match="features"):
        pooled_logits(torch.full((1, 4, 3, 3), float("nan")), fc)
    with pytest.raises(ValueError, match="features"):
        pooled_logits(torch.zeros(1, 5, 3, 3), fc)  # D differs from in_channels
    with pytest.raises(ValueError, match="classifier"):
        pooled_logits(feats, nn.Linear(4, 2))
    with pytest.raises(ValueError, match="classifier"):
        pooled_logits(feats, nn.Conv2d(4, 2, 3, bias=False))
    with pytest.raises(ValueError, match="classifier"):
        pooled_logits(feats, nn.Conv2d(4, 2, 1, padding=1, bias=False))
    with pytest.raises(ValueError, match="pooling"):
        pooled_logits(feats, fc, "max")


# ---- normalize_cam -------------------------------------------------------------------


def test_normalize_cam_hand_computed():
    cam = torch.tensor([[[[-1.0, 0.0], [2.0, 4.0]], [[1.0, 1.0], [3.0, 5.0]]]])
    eps = 1e-5
    # class 0: relu -> [0, 0, 2, 4], min 0, max 4; class 1: min 1, max 5
    c0 = [[0.0, 0.0], [2 / (4 + eps), 4 / (4 + eps)]]
    c1 = [[0.0, 0.0], [2 / (4 + eps), 4 / (4 + eps)]]  # (x - 1) / (5 - 1 + eps)
    want = torch.tensor([[c0, c1]])
    assert torch.allclose(normalize_cam(cam), want, atol=1e-7)


def test_normalize_cam_equals_min_max_formula():
    cam = _cam(3)
    eps = 1e-3
    r = cam.clamp_min(0)
    lo = r.amin(dim=(2, 3), keepdim=True)
    hi = r.amax(dim=(2, 3), keepdim=True)
    assert torch.allclose(normalize_cam(cam, eps=eps), (r - lo) / (hi - lo + eps))


def test_normalize_cam_labels_zero_absent_classes_exactly():
    cam = _cam(4)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    out = normalize_cam(cam, labels)
    assert torch.equal(out[0, 1], torch.zeros_like(out[0, 1]))
    assert torch.equal(out[1, 0], torch.zeros_like(out[1, 0]))
    assert torch.equal(out[1, 2], torch.zeros_like(out[1, 2]))
    # present classes are untouched by the label filter
    full = normalize_cam(cam)
    assert torch.equal(out[0, 0], full[0, 0])
    assert torch.equal(out[1, 1], full[1, 1])


def test_normalize_cam_flat_map_is_zero_not_nan():
    out = normalize_cam(torch.full((1, 2, 3, 3), 7.0))
    assert torch.equal(out, torch.zeros_like(out))
    out = normalize_cam(torch.full((1, 1, 3, 3), -2.0))  # all negative -> relu -> flat 0
    assert torch.equal(out, torch.zeros_like(out))


@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-2, 1e3))
def test_normalize_cam_in_unit_interval_max_near_one(seed, scale):
    cam = _cam(seed, scale=scale)
    labels = (torch.rand(2, 3, generator=torch.Generator().manual_seed(seed)) > 0.5).long()
    out = normalize_cam(cam, labels)
    assert out.min() >= 0.0 and out.max() <= 1.0
    peak = out.amax(dim=(2, 3))
    lo_hi = cam.clamp_min(0).amax(dim=(2, 3)) - cam.clamp_min(0).amin(dim=(2, 3))
    # a present class with a real dynamic range reaches ~1; absent classes are exactly 0
    present = labels.bool() & (lo_hi > 1e-2)
    assert torch.all((peak[present] - 1).abs() < 1e-3)
    assert torch.all(peak[~labels.bool()] == 0)


def test_normalize_cam_is_differentiable():
    cam = _cam(5).requires_grad_(True)
    normalize_cam(cam, torch.ones(2, 3)).sum().backward()
    assert cam.grad is not None and torch.isfinite(cam.grad).all()
    assert cam.grad.abs().sum() > 0


def test_normalize_cam_bad_input():
    with pytest.raises(ValueError, match="cam"):
        normalize_cam(torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match="cam"):
        normalize_cam(torch.zeros(1, 2, 3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="eps"):
        normalize_cam(torch.zeros(1, 2, 3, 4), eps=0.0)
    with pytest.raises(ValueError, match="labels"):
        normalize_cam(torch.zeros(1, 2, 3, 4), torch.ones(1, 3))  # wrong class count
    with pytest.raises(ValueError, match="labels"):
        normalize_cam(torch.zeros(1, 2, 3, 4), torch.ones(2, 2))  # wrong batch
    with pytest.raises(ValueError, match="labels"):
        normalize_cam(torch.zeros(1, 2, 3, 4), torch.tensor([[0.5, 1.0]]))  # not multi-hot
    with pytest.raises(ValueError, match="labels"):
        normalize_cam(torch.zeros(1, 2, 3, 4), torch.ones(2))  # wrong rank


def test_normalize_cam_rejects_non_finite():
    with pytest.raises(ValueError, match="cam"):
        normalize_cam(torch.tensor([[[[float("inf"), 1.0]]]]))


def test_normalize_cam_rejects_infinite_eps():
    with pytest.raises(ValueError, match="eps"):
        normalize_cam(torch.rand(1, 1, 2, 2), eps=float("inf"))

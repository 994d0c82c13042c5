"""pool_cam and normalize_cam: hand-computed cases, the equations, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wsss_blocks import normalize_cam, pool_cam


def _cam(seed: int, shape=(2, 3, 4, 5), scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# ---- pool_cam -------------------------------------------------------------------------


def test_pool_cam_hand_computed():
    cam = torch.tensor([[[[1.0, -2.0], [4.0, 0.5]], [[-1.0, -3.0], [-2.0, -4.0]]]])
    assert torch.equal(pool_cam(cam, "gmp"), torch.tensor([[4.0, -1.0]]))
    assert torch.allclose(pool_cam(cam, "gap"), torch.tensor([[3.5 / 4, -10.0 / 4]]))


def test_pool_cam_default_is_gmp():
    cam = _cam(1)
    assert torch.equal(pool_cam(cam), pool_cam(cam, "gmp"))


def test_pool_cam_equals_max_and_mean_over_pixels():
    cam = _cam(2)
    b, c = cam.shape[:2]
    flat = cam.reshape(b, c, -1)
    assert torch.equal(pool_cam(cam, "gmp"), flat.max(dim=2).values)
    assert torch.allclose(pool_cam(cam, "gap"), flat.sum(dim=2) / flat.shape[2])
    assert pool_cam(cam, "gap").dtype == torch.float64


def test_pool_cam_gradient_goes_to_the_max_pixel():
    cam = torch.tensor([[[[1.0, 5.0], [2.0, 3.0]]]], requires_grad=True)
    pool_cam(cam, "gmp").sum().backward()
    assert torch.equal(cam.grad, torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]]))


def test_pool_cam_bad_input():
    with pytest.raises(ValueError, match="cam"):
        pool_cam(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="cam"):
        pool_cam(torch.zeros(1, 2, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="pooling"):
        pool_cam(torch.zeros(1, 2, 3, 4), "avg")


def test_pool_cam_rejects_non_finite():
    with pytest.raises(ValueError, match="cam"):
        pool_cam(torch.tensor([[[[float("nan"), 1.0]]]]))


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

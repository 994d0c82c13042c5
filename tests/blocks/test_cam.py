"""pool_cam, normalize_cam and multiscale_cam: hand-computed cases, the equations, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from wsss_blocks import multiscale_cam, normalize_cam, pool_cam


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


def _conv(seed: int = 0) -> torch.nn.Conv2d:
    torch.manual_seed(seed)
    return torch.nn.Conv2d(3, 2, 1)


def test_multiscale_cam_single_scale_is_relu_of_cam():
    conv, x = _conv(), torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(multiscale_cam(conv, x), torch.relu(conv(x)))
    up = multiscale_cam(conv, x, size=(16, 16))
    want = F.interpolate(torch.relu(conv(x)), size=(16, 16), mode="bilinear")
    torch.testing.assert_close(up, want)


def test_multiscale_cam_flip_is_max_with_mirrored_cam():
    # a CAM function that is not mirror-symmetric: it returns the image's first channel
    x = torch.rand(1, 3, 4, 6)
    got = multiscale_cam(lambda im: im[:, :1], x, flip=True)
    # the mirrored image's CAM, mirrored back, is the image's CAM again
    torch.testing.assert_close(got, x[:, :1])
    ramp = torch.arange(6.0).expand(1, 1, 4, 6)  # CAM = a fixed ramp, whatever the image
    got = multiscale_cam(lambda im: ramp.expand(len(im), -1, -1, -1), x, flip=True)
    torch.testing.assert_close(got, torch.maximum(ramp, ramp.flip(-1)))


def test_multiscale_cam_sums_scales_at_the_first_scale_size():
    x = torch.full((1, 3, 8, 8), 0.5)
    conv = _conv()
    single = torch.relu(conv(x))
    got = multiscale_cam(conv, x, scales=(1.0, 0.5, 1.5), flip=True)
    assert got.shape == (1, 2, 8, 8)
    torch.testing.assert_close(got, 3 * single)  # a flat image gives the same map at every scale
    assert multiscale_cam(conv, x, scales=(0.5, 1.0)).shape == (1, 2, 4, 4)


def test_multiscale_cam_keeps_gradients():
    conv, x = _conv(), torch.rand(1, 3, 8, 8)
    multiscale_cam(conv, x, (1.0, 1.5), flip=True).sum().backward()
    assert conv.weight.grad is not None


def test_multiscale_cam_bad_input():
    conv, x = _conv(), torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="images"):
        multiscale_cam(conv, x[0])
    with pytest.raises(ValueError, match="images"):
        multiscale_cam(conv, x.long())
    with pytest.raises(ValueError, match="scales"):
        multiscale_cam(conv, x, scales=())
    with pytest.raises(ValueError, match="scales"):
        multiscale_cam(conv, x, scales=(1.0, 0.0))
    with pytest.raises(ValueError, match="cam_fn"):
        multiscale_cam(lambda im: im[0], x)
    with pytest.raises(ValueError, match="images"):
        multiscale_cam(conv, x.masked_fill(x > 0.5, float("nan")))
    with pytest.raises(ValueError, match="scales"):
        multiscale_cam(conv, x, scales=(float("inf"),))
    for size in [(8,), (0, 8), (8.5, 8)]:
        with pytest.raises(ValueError, match="size"):
            multiscale_cam(conv, x, size=size)

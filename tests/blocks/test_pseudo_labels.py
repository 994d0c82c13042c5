"""CPL (Eq. 3), perplexity (Eq. 4), RAW weights (Eq. 5) and SPL (Eq. 7).

Oracles: hand-computed cases and straightforward float64 re-statements of the equations.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from wsss_blocks import (
    cam_confidence,
    cam_to_cpl,
    cam_to_cpl_dual,
    perplexity,
    raw_weights,
    seg_to_spl,
)

unit_open = st.floats(0.01, 0.99)


def _rand_cam(seed: int, shape=(2, 3, 4, 5)) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rand_labels(seed: int, b: int = 2, c: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.rand(b, c, generator=g) > 0.4).long()


def _cpl_oracle(cam: torch.Tensor, labels: torch.Tensor, xi: float) -> torch.Tensor:
    """Eq. (3), pixel by pixel: the best *present* class if its score reaches ξ."""
    b, c, h, w = cam.shape
    out = torch.zeros(b, h, w, dtype=torch.int64)
    for i in range(b):
        present = [k for k in range(c) if labels[i, k] == 1]
        for y in range(h):
            for x in range(w):
                if not present:
                    continue
                best = max(present, key=lambda k: float(cam[i, k, y, x]))
                if float(cam[i, best, y, x]) >= xi:
                    out[i, y, x] = best + 1
    return out


# ---- cam_confidence / cam_to_cpl ----------------------------------------------------


def test_cam_confidence_hand_computed():
    # classes 1 and 3 present, class 2 absent but strongest at pixel 0
    cam = torch.tensor([[[[0.3, 0.6]], [[0.9, 0.1]], [[0.4, 0.2]]]])
    nu, cls = cam_confidence(cam, torch.tensor([[1, 0, 1]]))
    assert torch.allclose(nu, torch.tensor([[[0.4, 0.6]]]))
    assert torch.equal(cls, torch.tensor([[[3, 1]]]))
    assert cls.dtype == torch.int64


def test_cam_to_cpl_hand_computed():
    cam = torch.tensor([[[[0.3, 0.6, 0.5]], [[0.9, 0.1, 0.2]], [[0.4, 0.2, 0.1]]]])
    labels = torch.tensor([[1, 0, 1]])
    # nu = [0.4, 0.6, 0.5]; class 2 absent although strongest at pixel 0
    assert torch.equal(cam_to_cpl(cam, labels, 0.45), torch.tensor([[[0, 1, 1]]]))
    assert torch.equal(cam_to_cpl(cam, labels, 0.35), torch.tensor([[[3, 1, 1]]]))
    labels = torch.tensor([[1, 1, 1]])
    assert torch.equal(cam_to_cpl(cam, labels, 0.35), torch.tensor([[[2, 1, 1]]]))


def test_cam_to_cpl_threshold_is_inclusive():
    cam = torch.tensor([[[[0.5, 0.25, 0.75]]]])
    assert torch.equal(cam_to_cpl(cam, torch.ones(1, 1), 0.5), torch.tensor([[[1, 0, 1]]]))


@given(seed=st.integers(0, 2**31 - 1), xi=unit_open)
def test_cam_to_cpl_matches_equation(seed, xi):
    cam, labels = _rand_cam(seed), _rand_labels(seed)
    cpl = cam_to_cpl(cam, labels, xi)
    assert torch.equal(cpl, _cpl_oracle(cam, labels, xi))
    assert torch.equal(cam_to_cpl(cam, labels, torch.tensor(xi)), cpl)


@given(seed=st.integers(0, 2**31 - 1), xi=unit_open)
def test_cam_to_cpl_never_assigns_absent_class(seed, xi):
    cam, labels = _rand_cam(seed), _rand_labels(seed)
    cam[:, 0] = 1.0  # class 1 is the strongest everywhere
    labels[:, 0] = 0  # ... but absent
    cpl = cam_to_cpl(cam, labels, xi)
    assert not bool((cpl == 1).any())
    for i in range(cam.shape[0]):
        allowed = {0} | {k + 1 for k in range(3) if labels[i, k] == 1}
        assert set(cpl[i].unique().tolist()) <= allowed


def test_cam_to_cpl_no_present_class_is_all_background():
    cam = torch.ones(1, 2, 3, 3)
    assert torch.equal(cam_to_cpl(cam, torch.zeros(1, 2), 0.5), torch.zeros(1, 3, 3).long())


# ---- dual threshold -------------------------------------------------------------------


def test_cam_to_cpl_dual_truth_table():
    nu = torch.tensor([0.0, 0.125, 0.24, 0.25, 0.5, 0.74, 0.75, 1.0])
    want = torch.tensor([0, 0, 0, 255, 255, 255, 2, 2])
    cam = torch.stack([torch.zeros_like(nu), nu])[None, :, None, :]  # class 2 carries ν
    out = cam_to_cpl_dual(cam, torch.tensor([[1, 1]]), low=0.25, high=0.75)
    assert torch.equal(out[0, 0], want)
    assert out.dtype == torch.int64


def test_cam_to_cpl_dual_defaults_are_official_values():
    cam = torch.tensor([[[[0.2, 0.3, 0.69, 0.71]]]])
    want = torch.tensor([[[0, 255, 255, 1]]])
    assert torch.equal(cam_to_cpl_dual(cam, torch.ones(1, 1)), want)


@given(seed=st.integers(0, 2**31 - 1), xi=unit_open)
def test_cam_to_cpl_dual_with_equal_thresholds_is_single_threshold(seed, xi):
    cam, labels = _rand_cam(seed), _rand_labels(seed)
    assert torch.equal(cam_to_cpl_dual(cam, labels, xi, xi), cam_to_cpl(cam, labels, xi))


@given(seed=st.integers(0, 2**31 - 1), a=unit_open, b=unit_open)
def test_cam_to_cpl_dual_agrees_with_single_outside_band(seed, a, b):
    low, high = min(a, b), max(a, b)
    cam, labels = _rand_cam(seed), _rand_labels(seed)
    dual = cam_to_cpl_dual(cam, labels, low, high)
    nu, _ = cam_confidence(cam, labels)
    band = (nu >= low) & (nu < high)
    assert torch.all(dual[band] == 255)
    assert torch.equal(dual[nu >= high], cam_to_cpl(cam, labels, high)[nu >= high])
    assert torch.all(dual[nu < low] == 0)


# ---- perplexity ----------------------------------------------------------------------


def _perplexity_oracle(nu: float, xi: float, alpha=0.8, beta=1.0, eps=1e-4) -> float:
    d = (nu - xi) / (1 - xi) if nu >= xi else (xi - nu) / xi
    return (-math.log(alpha * max(d, eps))) ** beta


def test_perplexity_hand_computed():
    nu = torch.tensor([1.0, 0.0, 0.75, 0.25, 0.5], dtype=torch.float64)
    p = perplexity(nu, 0.5)
    # d = 1, 1, 0.5, 0.5, 0 (floored to 1e-4)
    want = [-math.log(0.8), -math.log(0.8), -math.log(0.4), -math.log(0.4), -math.log(0.8e-4)]
    torch.testing.assert_close(p, torch.tensor(want, dtype=torch.float64))


@given(xi=unit_open, alpha=st.floats(0.05, 0.95), beta=st.floats(0.25, 4.0))
def test_perplexity_at_unit_distance_is_minimum(xi, alpha, beta):
    nu = torch.tensor([0.0, 1.0], dtype=torch.float64)  # d = 1 on both sides
    p = perplexity(nu, xi, alpha=alpha, beta=beta)
    want = (-math.log(alpha)) ** beta
    torch.testing.assert_close(p, torch.full((2,), want, dtype=torch.float64))


@given(xi=unit_open, t=st.floats(0.0, 1.0))
def test_perplexity_symmetric_in_normalised_distance(xi, t):
    above = xi + t * (1 - xi)
    below = xi - t * xi
    p = perplexity(torch.tensor([above, below], dtype=torch.float64), xi)
    torch.testing.assert_close(p[0], p[1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(float(p[0]), _perplexity_oracle(above, xi), rtol=1e-6, atol=1e-9)


@given(xi=unit_open, beta=st.floats(0.25, 4.0))
def test_perplexity_monotone_decreasing_in_distance(xi, beta):
    t = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    up = perplexity(xi + t * (1 - xi), xi, beta=beta)  # d = t above ξ
    down = perplexity(xi - t * xi, xi, beta=beta)  # d = t below ξ
    for p in (up, down):
        assert torch.all(p[1:] <= p[:-1])
        assert p[-1] < p[0]


@given(seed=st.integers(0, 2**31 - 1), xi=unit_open, beta=st.floats(0.25, 4.0))
def test_perplexity_matches_equation_and_bounds(seed, xi, beta):
    nu = _rand_cam(seed, (37,))
    nu[0] = xi  # d = 0 -> floored at eps
    p = perplexity(nu, xi, beta=beta)
    want = torch.tensor([_perplexity_oracle(float(v), xi, beta=beta) for v in nu], dtype=p.dtype)
    torch.testing.assert_close(p, want)
    low, high = (-math.log(0.8)) ** beta, (-math.log(0.8e-4)) ** beta
    assert torch.all(p >= low * (1 - 1e-12)) and torch.all(p <= high * (1 + 1e-12))
    torch.testing.assert_close(float(p[0]), high)


def test_perplexity_keeps_dtype_shape_and_accepts_tensor_threshold():
    nu = torch.rand(2, 3, 4)
    p = perplexity(nu, torch.tensor(0.3))
    assert p.shape == nu.shape and p.dtype == torch.float32
    torch.testing.assert_close(p, perplexity(nu, 0.3))


def test_perplexity_bad_input():
    nu = torch.rand(4)
    with pytest.raises(ValueError, match="confidence"):
        perplexity(torch.tensor([0.5, 1.5]), 0.5)
    with pytest.raises(ValueError, match="confidence"):
        perplexity(torch.tensor([-0.1]), 0.5)
    with pytest.raises(ValueError, match="confidence"):
        perplexity(torch.tensor([float("nan")]), 0.5)
    with pytest.raises(ValueError, match="confidence"):
        perplexity(torch.tensor([0, 1]), 0.5)
    for bad in (0.0, 1.0, -0.2, 2.0):
        with pytest.raises(ValueError, match="threshold"):
            perplexity(nu, bad)
        with pytest.raises(ValueError, match="alpha"):
            perplexity(nu, 0.5, alpha=bad)
        with pytest.raises(ValueError, match="eps"):
            perplexity(nu, 0.5, eps=bad)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="beta"):
            perplexity(nu, 0.5, beta=bad)


# ---- RAW weights ---------------------------------------------------------------------


def test_raw_weights_hand_computed():
    w = raw_weights(torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(w, torch.tensor([1.5, 0.5]))
    p = torch.tensor([[2.0, 4.0], [1.0, 8.0]])
    valid = torch.tensor([[True, True], [False, True]])
    # r = 1/2, 1/4, -, 1/8 ; mean over valid = (7/8)/3 = 7/24
    want = torch.tensor([[12 / 7, 6 / 7], [0.0, 3 / 7]])
    torch.testing.assert_close(raw_weights(p, valid), want)


@given(seed=st.integers(0, 2**31 - 1), k=st.floats(1e-3, 1e3), frac=st.floats(0.05, 1.0))
def test_raw_weights_mean_one_proportional_to_inverse_and_scale_invariant(seed, k, frac):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(2, 5, 6, generator=g, dtype=torch.float64) * 9 + 0.2
    valid = torch.rand(2, 5, 6, generator=g) < frac
    assume(bool(valid.any()))
    w = raw_weights(p, valid)
    torch.testing.assert_close(w[valid].mean(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.all(w[~valid] == 0) and torch.all(w >= 0)
    wp = w[valid] * p[valid]  # w ∝ 1/P  <=>  w·P is constant
    torch.testing.assert_close(wp, wp[0].expand_as(wp))
    torch.testing.assert_close(raw_weights(k * p, valid), w)


def test_raw_weights_of_perplexity_favour_confident_pixels():
    nu = torch.tensor([0.5, 0.6, 0.95, 0.05])
    w = raw_weights(perplexity(nu, 0.5))
    assert w[0] < w[1] < w[2] and torch.isclose(w[2], w[3])


def test_raw_weights_detached_and_nothing_valid():
    p = (torch.rand(3, 4) + 0.5).requires_grad_(True)
    w = raw_weights(p)
    assert not w.requires_grad and w.dtype == p.dtype and w.shape == p.shape
    w0 = raw_weights(p, torch.zeros(3, 4, dtype=torch.bool))
    assert torch.equal(w0, torch.zeros(3, 4))


def test_raw_weights_bad_input():
    with pytest.raises(ValueError, match="perplexity"):
        raw_weights(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="perplexity"):
        raw_weights(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="perplexity"):
        raw_weights(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="perplexity"):
        raw_weights(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="perplexity"):
        raw_weights(torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match="valid"):
        raw_weights(torch.ones(2, 3), torch.ones(3, 2, dtype=torch.bool))


# ---- SPL ---------------------------------------------------------------------------


def _spl_oracle(seg: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. (7) in float64: exp((S - max)/τ) over kept channels, renormalised."""
    seg = seg.double()
    keep = torch.cat([torch.ones_like(labels[:, :1]), labels], 1).bool()[:, :, None, None]
    z = torch.where(keep, seg / tau, torch.full_like(seg, -1e300))
    e = torch.exp(z - z.amax(1, keepdim=True)) * keep
    return e / e.sum(1, keepdim=True)


def test_seg_to_spl_hand_computed():
    s = torch.tensor([[[[0.0]], [[0.01]], [[5.0]]]])
    # class 2 absent; bg vs class 1 with τ = 0.01: softmax([0, 1]) = [1/(1+e), e/(1+e)]
    out = seg_to_spl(s, torch.tensor([[1, 0]])).flatten()
    e = math.e
    torch.testing.assert_close(out, torch.tensor([1 / (1 + e), e / (1 + e), 0.0]))
    assert out[2] == 0.0


@given(seed=st.integers(0, 2**31 - 1), tau=st.floats(0.005, 5.0))
def test_seg_to_spl_matches_equation(seed, tau):
    g = torch.Generator().manual_seed(seed)
    seg = torch.randn(2, 4, 3, 5, generator=g) * 3
    labels = (torch.rand(2, 3, generator=g) > 0.5).long()
    spl = seg_to_spl(seg, labels, tau=tau)
    torch.testing.assert_close(spl.double(), _spl_oracle(seg, labels, tau), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(spl.sum(1), torch.ones(2, 3, 5))
    absent = ~labels.bool()
    for i in range(2):
        for c in range(3):
            if absent[i, c]:
                assert torch.all(spl[i, c + 1] == 0)  # exactly 0, not just small
    assert torch.all(spl >= 0) and torch.all(spl <= 1)


def test_seg_to_spl_only_background_when_no_class_present():
    spl = seg_to_spl(torch.randn(1, 3, 2, 2) * 10, torch.zeros(1, 2))
    assert torch.equal(spl[:, 0], torch.ones(1, 2, 2))
    assert torch.equal(spl[:, 1:], torch.zeros(1, 2, 2, 2))


def test_seg_to_spl_resizes_before_softmax_and_is_detached():
    seg = (torch.randn(1, 3, 4, 4) * 0.05).requires_grad_(True)
    labels = torch.tensor([[1, 1]])
    spl = seg_to_spl(seg, labels, tau=0.1, size=(8, 6))
    assert spl.shape == (1, 3, 8, 6) and not spl.requires_grad
    up = F.interpolate(seg.detach(), size=(8, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(spl, torch.softmax(up / 0.1, 1))


def test_seg_to_spl_large_logits_stay_finite():
    seg = torch.tensor([[[[300.0]], [[-300.0]], [[299.0]]]])
    spl = seg_to_spl(seg, torch.ones(1, 2))  # (S/τ) spans 6e4: needs the max shift
    assert torch.isfinite(spl).all()
    torch.testing.assert_close(spl.flatten(), torch.tensor([1.0, 0.0, 0.0]))


def test_seg_to_spl_bad_input():
    labels = torch.ones(1, 2)
    with pytest.raises(ValueError, match="seg_logits"):
        seg_to_spl(torch.zeros(3, 2, 2), labels)
    with pytest.raises(ValueError, match="seg_logits"):
        seg_to_spl(torch.zeros(1, 3, 2, 2, dtype=torch.long), labels)
    with pytest.raises(ValueError, match="seg_logits"):
        seg_to_spl(torch.full((1, 3, 2, 2), float("nan")), labels)
    with pytest.raises(ValueError, match="labels"):
        seg_to_spl(torch.zeros(1, 3, 2, 2), torch.ones(1, 3))  # C+1 given as C
    with pytest.raises(ValueError, match="labels"):
        seg_to_spl(torch.zeros(1, 3, 2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="labels"):
        seg_to_spl(torch.zeros(1, 3, 2, 2), torch.tensor([[1.0, 0.3]]))
    for bad in (0.0, -0.01, float("inf")):
        with pytest.raises(ValueError, match="tau"):
            seg_to_spl(torch.zeros(1, 3, 2, 2), labels, tau=bad)


# ---- bad input for the CPL functions --------------------------------------------------


@pytest.mark.parametrize("fn", ["confidence", "single", "dual"])
def test_cpl_bad_input(fn):
    call = {
        "confidence": lambda cam, labels: cam_confidence(cam, labels),
        "single": lambda cam, labels: cam_to_cpl(cam, labels, 0.5),
        "dual": lambda cam, labels: cam_to_cpl_dual(cam, labels),
    }[fn]
    cam, labels = torch.rand(2, 3, 4, 4), torch.ones(2, 3)
    call(cam, labels)  # the good input passes
    with pytest.raises(ValueError, match="cam"):
        call(torch.rand(3, 4, 4), labels)
    with pytest.raises(ValueError, match="cam"):
        call(torch.ones(2, 3, 4, 4, dtype=torch.long), labels)
    with pytest.raises(ValueError, match="cam"):
        call(cam * 2, labels)  # outside [0, 1]: not normalised
    with pytest.raises(ValueError, match="cam"):
        call(torch.full_like(cam, float("nan")), labels)
    with pytest.raises(ValueError, match="labels"):
        call(cam, torch.ones(3, 3))
    with pytest.raises(ValueError, match="labels"):
        call(cam, torch.ones(2, 4))
    with pytest.raises(ValueError, match="labels"):
        call(cam, torch.full((2, 3), 2))
    with pytest.raises(ValueError, match="labels"):
        call(cam, torch.ones(2, 3, 1))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 1.5, float("nan"), torch.tensor(1.2)])
def test_cpl_thresholds_outside_open_unit(bad):
    cam, labels = torch.rand(1, 2, 3, 3), torch.ones(1, 2)
    with pytest.raises(ValueError, match="threshold"):
        cam_to_cpl(cam, labels, bad)
    with pytest.raises(ValueError, match="low"):
        cam_to_cpl_dual(cam, labels, low=bad, high=0.7)
    with pytest.raises(ValueError, match="high"):
        cam_to_cpl_dual(cam, labels, low=0.25, high=bad)


def test_cpl_dual_low_above_high():
    with pytest.raises(ValueError, match="low"):
        cam_to_cpl_dual(torch.rand(1, 2, 3, 3), torch.ones(1, 2), low=0.8, high=0.3)


def test_cpl_threshold_tensor_with_many_elements():
    with pytest.raises(ValueError, match="threshold"):
        cam_to_cpl(torch.rand(1, 2, 3, 3), torch.ones(1, 2), torch.tensor([0.3, 0.4]))


def test_raw_weights_rejects_non_binary_valid():
    with pytest.raises(ValueError, match="valid"):
        raw_weights(torch.ones(2), torch.tensor([2.0, 0.0]))


@pytest.mark.parametrize("size", [(0, 3), (-1, 2)])
def test_seg_to_spl_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        seg_to_spl(torch.zeros(1, 3, 2, 2), torch.ones(1, 2), size=size)

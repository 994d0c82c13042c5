"""Hypothesis properties of the CoSA losses: finite values and gradients on random and
degenerate input, non-negativity, and the RAW identities."""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from wsss_blocks import (
    classification_loss,
    perplexity,
    raw_cam2seg_loss,
    raw_weights,
    seg2cam_loss,
    seg_to_spl,
)

seeds = st.integers(0, 2**31 - 1)
classes = st.integers(1, 4)  # C foreground classes; C = 1 is the single-class case
scales = st.sampled_from([1e-3, 1.0, 30.0, 1e3])  # logit magnitude, up to saturation


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_finite_loss_and_grad(loss: torch.Tensor, leaf: torch.Tensor) -> None:
    value = float(loss.detach())
    assert loss.dim() == 0 and math.isfinite(value) and value >= 0
    loss.backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


# ---- classification (Eq. 1) ---------------------------------------------------------


@given(seed=seeds, c=classes, scale=scales, kind=st.sampled_from(["random", "none", "all"]))
def test_classification_finite_nonnegative(seed, c, scale, kind):
    g = _gen(seed)
    logits = (torch.randn(3, c, generator=g) * scale).requires_grad_(True)
    labels = {
        "random": (torch.rand(3, c, generator=g) > 0.5).long(),
        "none": torch.zeros(3, c, dtype=torch.long),
        "all": torch.ones(3, c, dtype=torch.long),
    }[kind]
    _assert_finite_loss_and_grad(classification_loss(logits, labels), logits)


# ---- RAW CAM2Seg (Eq. 5) ------------------------------------------------------------


def _seg_and_cpl(seed: int, c: int, scale: float, ignore_frac: float):
    g = _gen(seed)
    seg = (torch.randn(2, c + 1, 3, 4, generator=g) * scale).requires_grad_(True)
    cpl = torch.randint(0, c + 1, (2, 3, 4), generator=g)
    cpl[torch.rand(2, 3, 4, generator=g) < ignore_frac] = 255
    return seg, cpl


@given(
    seed=seeds, c=classes, scale=scales, ignore_frac=st.floats(0.0, 0.9),
    weighted=st.booleans(), balanced=st.booleans(),
)  # fmt: skip
def test_raw_loss_finite_on_random_input(seed, c, scale, ignore_frac, weighted, balanced):
    seg, cpl = _seg_and_cpl(seed, c, scale, ignore_frac)
    w = torch.rand(2, 3, 4, generator=_gen(seed + 1)) * 4 if weighted else None
    _assert_finite_loss_and_grad(raw_cam2seg_loss(seg, cpl, w, balanced=balanced), seg)


@given(seed=seeds, c=classes, scale=scales, weighted=st.booleans(), balanced=st.booleans())
def test_raw_loss_all_ignore_is_zero_with_zero_grad(seed, c, scale, weighted, balanced):
    seg, _ = _seg_and_cpl(seed, c, scale, 0.0)
    cpl = torch.full((2, 3, 4), 255)
    w = torch.rand(2, 3, 4) if weighted else None
    loss = raw_cam2seg_loss(seg, cpl, w, balanced=balanced)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(seg.grad, torch.zeros_like(seg))


@given(seed=seeds, c=classes, scale=scales)
def test_raw_loss_zero_weights_is_zero_with_zero_grad(seed, c, scale):
    seg, cpl = _seg_and_cpl(seed, c, scale, 0.3)
    loss = raw_cam2seg_loss(seg, cpl, torch.zeros(2, 3, 4))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(seg.grad, torch.zeros_like(seg))


@given(seed=seeds, c=classes, scale=scales)
def test_raw_loss_all_background_finite(seed, c, scale):
    seg, _ = _seg_and_cpl(seed, c, scale, 0.0)
    _assert_finite_loss_and_grad(raw_cam2seg_loss(seg, torch.zeros(2, 3, 4, dtype=torch.long)), seg)


@given(seed=seeds, c=classes, ignore_frac=st.floats(0.0, 0.9), p=st.floats(0.1, 10.0))
def test_raw_loss_uniform_weights_equal_unweighted_ce(seed, c, ignore_frac, p):
    seg, cpl = _seg_and_cpl(seed, c, 1.0, ignore_frac)
    plain = raw_cam2seg_loss(seg, cpl)
    ones = raw_cam2seg_loss(seg, cpl, torch.ones(2, 3, 4))
    # a constant perplexity gives RAW weights of exactly 1 over valid pixels
    w = raw_weights(torch.full((2, 3, 4), p), cpl != 255)
    torch.testing.assert_close(ones, plain)
    torch.testing.assert_close(raw_cam2seg_loss(seg, cpl, w), plain)
    ref = torch.nn.functional.cross_entropy(seg, cpl, ignore_index=255) if (cpl != 255).any() else 0
    torch.testing.assert_close(plain, torch.as_tensor(ref, dtype=plain.dtype))


@given(seed=seeds, k=st.floats(1e-3, 1e3), xi=st.floats(0.05, 0.95))
def test_raw_loss_invariant_to_perplexity_scale(seed, k, xi):
    seg, cpl = _seg_and_cpl(seed, 2, 1.0, 0.2)
    nu = torch.rand(2, 3, 4, generator=_gen(seed + 2))
    p = perplexity(nu, xi)
    valid = cpl != 255
    a = raw_cam2seg_loss(seg, cpl, raw_weights(p, valid))
    b = raw_cam2seg_loss(seg, cpl, raw_weights(k * p, valid))
    torch.testing.assert_close(a, b)


# ---- Seg2CAM (Eq. 8) ----------------------------------------------------------------


@given(seed=seeds, c=classes, scale=scales, tau=st.sampled_from([0.01, 1.0]))
def test_seg2cam_finite_nonnegative(seed, c, scale, tau):
    g = _gen(seed)
    cam = (torch.randn(2, c, 3, 3, generator=g) * scale).requires_grad_(True)
    labels = (torch.rand(2, c, generator=g) > 0.5).long()
    spl = seg_to_spl(torch.randn(2, c + 1, 3, 3, generator=g) * scale, labels, tau)
    _assert_finite_loss_and_grad(seg2cam_loss(cam, spl), cam)


@given(seed=seeds, c=classes, target=st.sampled_from([0.0, 1.0]))
def test_seg2cam_hard_targets_and_saturated_logits_finite(seed, c, target):
    cam = (torch.randn(1, c, 2, 2, generator=_gen(seed)) * 1e4).requires_grad_(True)
    spl = torch.full((1, c + 1, 2, 2), target)
    _assert_finite_loss_and_grad(seg2cam_loss(cam, spl), cam)


# ---- perplexity (Eq. 4) -------------------------------------------------------------


@given(seed=seeds, xi=st.floats(0.01, 0.99), alpha=st.floats(0.05, 0.95), beta=st.floats(0.2, 5))
def test_perplexity_at_least_its_minimum_and_finite_grad(seed, xi, alpha, beta):
    nu = torch.rand(50, generator=_gen(seed), dtype=torch.float64)
    nu[:2] = torch.tensor([0.0, 1.0])
    nu = nu.requires_grad_(True)
    p = perplexity(nu, xi, alpha=alpha, beta=beta)
    assert torch.all(p >= (-math.log(alpha)) ** beta * (1 - 1e-12))
    p.sum().backward()
    assert torch.isfinite(nu.grad).all()

"""Affinity blocks: non-local affinity, cross-task fusion, propagation (AuxSegNet)."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wsss_blocks.affinity import (
    CrossTaskAffinityFusion,
    NonLocalAffinity,
    fuse_affinities,
    nonlocal_affinity,
    propagate,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_affinity(b: int, n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """A random row-stochastic (B, N, N) matrix."""
    return torch.softmax(3 * torch.randn(b, n, n, generator=_gen(seed), dtype=dtype), -1)


def _naive_affinity(theta, phi, scale):
    """Float64 oracle: one position pair at a time."""
    b, _, h, w = theta.shape
    n = h * w
    q, k = theta.double().flatten(2), phi.double().flatten(2)
    out = torch.empty(b, n, n, dtype=torch.float64)
    for bi in range(b):
        for i in range(n):
            logits = torch.tensor([scale * float(q[bi, :, i] @ k[bi, :, j]) for j in range(n)])
            e = torch.exp(logits - logits.max())
            out[bi, i] = e / e.sum()
    return out


# ----------------------------------------------------------------- non-local affinity


@given(
    b=st.integers(1, 3), d=st.integers(1, 5), h=st.integers(1, 4), w=st.integers(1, 4),
    scale=st.floats(0.05, 3.0), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_nonlocal_affinity_shape_rows_and_oracle(b, d, h, w, scale, seed):
    g = _gen(seed)
    theta, phi = torch.randn(b, d, h, w, generator=g), torch.randn(b, d, h, w, generator=g)
    a = nonlocal_affinity(theta, phi, scale)
    assert a.shape == (b, h * w, h * w)
    assert bool((a >= 0).all())
    torch.testing.assert_close(a.sum(-1), torch.ones(b, h * w), atol=1e-5, rtol=0)
    torch.testing.assert_close(a.double(), _naive_affinity(theta, phi, scale), atol=1e-5, rtol=0)


def test_nonlocal_affinity_rows_follow_the_query_position():
    # Positions 0 and 2 share an embedding, so row 0 gives them equal weight.
    f = torch.tensor([[[[1.0, -1.0, 1.0]]]])
    a = nonlocal_affinity(f, f, scale=1.0)[0]
    assert torch.isclose(a[0, 0], a[0, 2])
    assert a[0, 0] > a[0, 1]
    assert a[1, 1] > a[1, 0]


@pytest.mark.parametrize(
    "theta, phi, scale, match",
    [
        (torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), 1.0, "theta must be 4-D"),
        (torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4), 1.0, "one shape"),
        (torch.zeros(1, 2, 3, 3, dtype=torch.long), torch.zeros(1, 2, 3, 3), 1.0, "floating"),
        (torch.full((1, 1, 1, 2), math.nan), torch.zeros(1, 1, 1, 2), 1.0, "finite"),
        (torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), 0.0, "scale"),
    ],
)
def test_nonlocal_affinity_rejects_bad_input(theta, phi, scale, match):
    with pytest.raises(ValueError, match=match):
        nonlocal_affinity(theta, phi, scale)


def test_nonlocal_affinity_module_rows_sum_to_one_and_gradients_flow():
    module = NonLocalAffinity(6, key_channels=4)
    assert module.scale == pytest.approx(0.5)  # 1 / sqrt(D')
    f = torch.randn(2, 6, 3, 4, requires_grad=True)
    a = module(f)
    assert a.shape == (2, 12, 12)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 12))
    # A loss that prefers a different mixing sends gradient everywhere.
    (a * torch.randn(2, 12, 12)).sum().backward()
    for name, p in [("features", f), *module.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_nonlocal_affinity_module_matches_functional_with_its_embeddings():
    module = NonLocalAffinity(3, key_channels=2, scale=1.0)
    f = torch.randn(1, 3, 2, 2)
    expected = nonlocal_affinity(module.theta(f), module.phi(f), 1.0)
    torch.testing.assert_close(module(f), expected)


@pytest.mark.parametrize("kwargs", [{"in_channels": 0}, {"in_channels": 2, "key_channels": 0},
                                    {"in_channels": 2, "scale": -1.0}])  # fmt: skip
def test_nonlocal_affinity_module_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        NonLocalAffinity(**kwargs)


# ------------------------------------------------------------------------------ fusion


@given(k=st.integers(1, 4), b=st.integers(1, 3), n=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_fused_affinity_is_the_weighted_sum_and_stays_row_stochastic(k, b, n, seed):
    affs = [_random_affinity(b, n, seed + i) for i in range(k)]
    weights = torch.softmax(torch.randn(k, generator=_gen(seed)), 0)
    fused = fuse_affinities(affs, weights)
    expected = sum(float(weights[i]) * affs[i] for i in range(k))
    torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(fused.sum(-1), torch.ones(b, n))


def test_fusion_with_per_image_weights():
    a, e = torch.full((2, 2, 2), 0.5), torch.eye(2).expand(2, 2, 2)
    fused = fuse_affinities([a, e], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(fused[0], a[0])
    torch.testing.assert_close(fused[1], e[1])


@pytest.mark.parametrize(
    "affs, weights, match",
    [
        ([], torch.ones(1), "at least one"),
        ([torch.eye(2)[None], torch.eye(3)[None]], torch.tensor([0.5, 0.5]), "shape"),
        ([torch.eye(2)[None]] * 2, torch.tensor([0.5, 0.5, 0.0]), "weights must have shape"),
        ([torch.eye(2)[None]] * 2, torch.tensor([1.5, -0.5]), "weights must be >= 0 everywhere"),
        ([torch.eye(2)[None]] * 2, torch.tensor([0.4, 0.4]), "weights must sum to 1"),
        ([torch.ones(1, 2, 3)], torch.ones(1), "square"),
    ],
)
def test_fusion_rejects_bad_input(affs, weights, match):
    with pytest.raises(ValueError, match=match):
        fuse_affinities(affs, weights)


def test_cross_task_fusion_learns_its_weights():
    fusion = CrossTaskAffinityFusion(2)
    torch.testing.assert_close(fusion.weights, torch.tensor([0.5, 0.5]))
    seg, sal = torch.eye(3)[None], torch.full((1, 3, 3), 1 / 3)
    target = torch.eye(3)[None]  # the segmentation affinity is the right one here
    opt = torch.optim.SGD(fusion.parameters(), lr=5.0)
    for _ in range(20):
        loss = (fusion(seg, sal) - target).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        assert fusion.logits.grad.abs().sum() > 0
        opt.step()
    w = fusion.weights.detach()
    assert float(w[0]) > 0.9 and float(w.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(fusion(seg, sal).sum(-1), torch.ones(1, 3))


def test_cross_task_fusion_checks_the_number_of_tasks():
    with pytest.raises(ValueError, match="num_tasks"):
        CrossTaskAffinityFusion(0)
    with pytest.raises(ValueError, match="expected 2 affinities, got 1"):
        CrossTaskAffinityFusion(2)(torch.eye(2)[None])


# ------------------------------------------------------------------------- propagation


@given(b=st.integers(1, 3), k=st.integers(1, 4), h=st.integers(1, 4), w=st.integers(1, 4),
       steps=st.integers(0, 4), seed=st.integers(0, 2**16))  # fmt: skip
def test_propagation_with_the_identity_is_a_no_op(b, k, h, w, steps, seed):
    y = torch.randn(b, k, h, w, generator=_gen(seed))
    eye = torch.eye(h * w).expand(b, h * w, h * w)
    torch.testing.assert_close(propagate(eye, y, steps), y)


@given(b=st.integers(1, 2), k=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3),
       steps=st.integers(1, 3), seed=st.integers(0, 2**16))  # fmt: skip
def test_propagation_is_repeated_matrix_product_and_keeps_range(b, k, h, w, steps, seed):
    n = h * w
    a = _random_affinity(b, n, seed, torch.float64)
    y = torch.randn(b, k, h, w, generator=_gen(seed + 1), dtype=torch.float64)
    out = propagate(a, y, steps)
    expected = y.flatten(2)
    for _ in range(steps):
        expected = torch.einsum("bij,bkj->bki", a, expected)
    torch.testing.assert_close(out, expected.view(b, k, h, w))
    # Row-stochastic A: every output is a convex combination of its channel's inputs.
    low, high = y.flatten(2).amin(-1), y.flatten(2).amax(-1)
    assert bool((out.flatten(2).amin(-1) >= low - 1e-9).all())
    assert bool((out.flatten(2).amax(-1) <= high + 1e-9).all())


def test_propagation_of_constant_maps_and_of_zero_steps():
    a = _random_affinity(2, 6, 0)
    y = torch.full((2, 3, 2, 3), 0.7)
    torch.testing.assert_close(propagate(a, y, 3), y)
    z = torch.randn(2, 3, 2, 3)
    assert torch.equal(propagate(a, z, 0), z)


def test_propagation_mixes_towards_neighbours():
    a = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    y = torch.tensor([[[[1.0, 0.0, 4.0]]]])
    torch.testing.assert_close(propagate(a, y, 2), torch.tensor([[[[0.25, 0.0, 4.0]]]]))


def test_propagation_gradients_reach_affinity_and_maps():
    a = _random_affinity(1, 4, 3, torch.float64).requires_grad_(True)
    y = torch.randn(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a_, y_: propagate(a_, y_, 2), (a, y))


@pytest.mark.parametrize(
    "affinity, maps, steps, match",
    [
        (torch.eye(4)[None], torch.zeros(1, 1, 2, 3), 1, r"affinity must be \(1, 6, 6\)"),
        (torch.eye(4).expand(2, 4, 4), torch.zeros(1, 1, 2, 2), 1, r"affinity must be"),
        (torch.eye(4)[None], torch.zeros(1, 2, 2), 1, "maps must be 4-D"),
        (torch.eye(4)[None], torch.zeros(1, 1, 2, 2), -1, "steps"),
        (torch.eye(4)[None], torch.zeros(1, 1, 2, 2), 1.0, "steps"),
        (torch.eye(4)[None], torch.zeros(1, 1, 2, 2), True, "steps"),
        (torch.eye(4), torch.zeros(1, 1, 2, 2), 1, "affinity must be 3-D"),
    ],
)
def test_propagation_rejects_bad_input(affinity, maps, steps, match):
    with pytest.raises(ValueError, match=match):
        propagate(affinity, maps, steps)

"""Windowed dense-energy (CRF) regulariser: hand-made cases, a dense float64 oracle, the
relation to the CoSA release's energy, masks and gate, errors, and hypothesis properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wsss_blocks.losses.energy import dense_energy_loss, energy_gate

seeds = st.integers(0, 2**31 - 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- the oracle: explicit pairwise distances, O((HW)²) --------------------------------


def _pairwise(images, sigma_rgb, sigma_xy, radius, include_self):
    """(B, HW, HW) kernel W_ij on the window |dy|, |dx| <= r (float64), diagonal per flag."""
    b, d, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], 1).double()  # (HW, 2)
    dpos = pos[:, None, :] - pos[None, :, :]
    window = (dpos.abs() <= radius).all(-1)
    if not include_self:
        window &= ~torch.eye(h * w, dtype=torch.bool)
    col = 255.0 * images.double().reshape(b, d, h * w).transpose(1, 2)  # (B, HW, D)
    dcol = ((col[:, :, None, :] - col[:, None, :, :]) ** 2).sum(-1)
    kern = torch.exp(-(dpos**2).sum(-1) / (2 * sigma_xy**2) - dcol / (2 * sigma_rgb**2))
    return kern * window


def _reference(
    probs,
    images,
    valid=None,
    gate=None,
    sigma_rgb=15.0,
    sigma_xy=50.0,
    radius=5,
    include_self=False,
    form="phi",
):
    """E = (1/|V|) Σ_i g_i v_i Σ_j v_j W_ij φ(S_i, S_j), all pairs written out."""
    b, k, h, w = probs.shape
    s = probs.double().reshape(b, k, h * w).transpose(1, 2)  # (B, HW, K)
    v = (
        torch.ones(b, h * w, dtype=torch.float64)
        if valid is None
        else valid.reshape(b, -1).double()
    )
    g = torch.ones(b, h * w, dtype=torch.float64) if gate is None else gate.reshape(b, -1).double()
    kern = _pairwise(images, sigma_rgb, sigma_xy, radius, include_self)
    kern = kern * v[:, :, None] * v[:, None, :]
    dot = s @ s.transpose(1, 2)
    if form == "phi":  # ½ Σ_k [S_i (1 − S_j) + S_j (1 − S_i)]
        cross = s @ (1 - s).transpose(1, 2)
        phi = 0.5 * (cross + cross.transpose(1, 2))
    elif form == "potts":  # 1 − S_i · S_j
        phi = 1 - dot
    else:  # "release": −S_i · S_j (dense-CRF energy of the release, window-restricted)
        phi = -dot
    energy = ((g * v)[:, :, None] * kern * phi).sum()
    return energy / v.sum().clamp_min(1)


def _random_case(seed, b=2, k=3, h=5, w=6, masks=True, dtype=torch.float64):
    g = _gen(seed)
    logits = torch.randn(b, k, h, w, generator=g, dtype=dtype) * 2
    images = torch.rand(b, 3, h, w, generator=g, dtype=dtype)
    valid = torch.rand(b, h, w, generator=g) > 0.25 if masks else None
    gate = torch.rand(b, h, w, generator=g, dtype=dtype) if masks else None
    return logits, images, valid, gate


def _one_hot(labels, k):
    return torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2).float()


# ---- hand-made cases --------------------------------------------------------------------


@pytest.mark.parametrize("cls", [0, 2])
def test_zero_on_constant_one_hot_prediction(cls):
    _, images, valid, gate = _random_case(1, dtype=torch.float32)
    probs = _one_hot(torch.full((2, 5, 6), cls), 3).requires_grad_()
    for v, g in [(None, None), (valid, gate)]:
        loss = dense_energy_loss(probs, images, v, g, radius=2)
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert torch.isfinite(probs.grad).all()


def test_constant_soft_prediction_costs_its_gini_impurity():
    """On a flat image with a flat spatial kernel every pair has W = 1 and φ = 1 − Σ S²."""
    probs = torch.tensor([0.5, 0.3, 0.2]).reshape(1, 3, 1, 1).expand(1, 3, 4, 4)
    images = torch.full((1, 3, 4, 4), 0.3)
    loss = dense_energy_loss(probs, images, sigma_xy=1e9, radius=1)
    neighbours = (3 * 4 - 2) ** 2 - 16  # Σ_i |3×3 window ∩ image| − 1 on a 4×4 grid
    expected = (1 - (0.25 + 0.09 + 0.04)) * neighbours / 16
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_uniform_region_split_in_two_is_penalised_unless_a_colour_edge_explains_it():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[..., 4:] = 1
    probs = _one_hot(labels, 2)
    flat = torch.full((1, 3, 8, 8), 0.4)
    edge = flat.clone()
    edge[:, :, :, 4:] = 0.6  # 51 grey levels apart: W ≈ exp(−3·51²/450) ≈ 3e-8
    on_flat = dense_energy_loss(probs, flat, radius=2)
    on_edge = dense_energy_loss(probs, edge, radius=2)
    assert on_flat > 0.5
    assert on_edge < 1e-6 * on_flat
    # an edge elsewhere does not explain the split: energy as high as on the flat image
    wrong = flat.clone()
    wrong[:, :, 4:, :] = 0.6
    assert dense_energy_loss(probs, wrong, radius=2) > 0.4 * on_flat


def test_energy_grows_with_the_boundary_of_the_split_region():
    images = torch.full((1, 3, 16, 16), 0.5)
    values = []
    for side in (2, 4, 6, 8, 10):
        labels = torch.zeros(1, 16, 16, dtype=torch.long)
        labels[:, 3 : 3 + side, 3 : 3 + side] = 1
        values.append(float(dense_energy_loss(_one_hot(labels, 2), images, radius=2)))
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values
    # a straight boundary of the same length costs what a square of equal perimeter does
    stripes = []
    for n in (1, 2, 3):
        labels = torch.zeros(1, 16, 16, dtype=torch.long)
        for i in range(n):
            labels[:, :, 4 * i + 2 : 4 * i + 4] = 1
        stripes.append(float(dense_energy_loss(_one_hot(labels, 2), images, radius=1)))
    assert stripes[1] == pytest.approx(2 * stripes[0], rel=1e-5)
    assert stripes[2] == pytest.approx(3 * stripes[0], rel=1e-5)


def test_padding_outside_valid_changes_nothing():
    logits, images, _, gate = _random_case(3, b=2, h=7, w=9, dtype=torch.float32)
    probs = logits.softmax(1)
    valid = torch.zeros(2, 7, 9, dtype=torch.bool)
    valid[:, 1:6, 2:8] = True
    other_probs = torch.where(valid[:, None], probs, torch.rand_like(probs))
    other_images = torch.where(valid[:, None], images, torch.rand_like(images))
    other_gate = torch.where(valid, gate, torch.rand_like(gate))
    p1, p2 = probs.clone().requires_grad_(), other_probs.clone().requires_grad_()
    a = dense_energy_loss(p1, images, valid, gate, radius=2)
    b = dense_energy_loss(p2, other_images, valid, other_gate, radius=2)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(p1.grad, p2.grad)
    assert (p1.grad[~valid[:, None].expand_as(p1)] == 0).all()
    # ... and equals the loss of the valid crop alone, with |V| as the denominator
    crop = dense_energy_loss(
        probs[:, :, 1:6, 2:8], images[:, :, 1:6, 2:8], None, gate[:, 1:6, 2:8], radius=2
    )
    torch.testing.assert_close(a, crop)


def test_border_pairs_create_no_energy():
    """Zero padding at the image border must not act as a neighbour of another class."""
    probs = _one_hot(torch.ones(1, 4, 4, dtype=torch.long), 2)  # class 1 (zero channel 0)
    images = torch.zeros(1, 3, 4, 4)  # black, like zero padding
    assert float(dense_energy_loss(probs, images, radius=3)) == 0.0


def test_gate_scales_centre_contributions_and_gets_no_gradient():
    logits, images, valid, _ = _random_case(4, dtype=torch.float32)
    probs = logits.softmax(1)
    full = dense_energy_loss(probs, images, valid, radius=2)
    half = dense_energy_loss(probs, images, valid, torch.full((2, 5, 6), 0.5), radius=2)
    torch.testing.assert_close(half, 0.5 * full)
    zero = dense_energy_loss(probs, images, valid, torch.zeros(2, 5, 6), radius=2)
    assert float(zero) == 0.0
    # gating a single centre: only its own window row of the sum changes
    gate = torch.ones(2, 5, 6)
    gate[0, 2, 3] = 0.0
    torch.testing.assert_close(
        dense_energy_loss(probs, images, valid, gate, radius=2),
        _reference(probs, images, valid, gate, radius=2).float(),
    )
    gate = torch.rand(2, 5, 6).requires_grad_()
    img = images.clone().requires_grad_()
    p = probs.clone().requires_grad_()
    dense_energy_loss(p, img, valid, gate, radius=2).backward()
    assert gate.grad is None and img.grad is None and p.grad is not None


@pytest.mark.parametrize("radius", [1, 2, 4, 9])
@pytest.mark.parametrize("include_self", [False, True])
@pytest.mark.parametrize("masks", [False, True])
def test_matches_dense_reference_values_and_gradients(radius, include_self, masks):
    logits, images, valid, gate = _random_case(radius + 10 * masks, masks=masks)
    probs = logits.softmax(1).detach().requires_grad_()
    kw = dict(sigma_rgb=40.0, sigma_xy=2.5, radius=radius, include_self=include_self)
    ours = dense_energy_loss(probs, images, valid, gate, **kw)
    ref_probs = probs.detach().clone().requires_grad_()
    ref = _reference(ref_probs, images, valid, gate, **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(probs.grad, ref_probs.grad, rtol=1e-10, atol=1e-12)


def test_matches_reference_off_the_simplex():
    """Any probs in [0, 1] (e.g. per-class sigmoids): φ keeps its pairwise meaning."""
    g = _gen(7)
    probs = torch.rand(2, 4, 5, 5, generator=g, dtype=torch.float64).requires_grad_()
    images = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64)
    ours = dense_energy_loss(probs, images, radius=2, sigma_xy=3.0)
    ref_probs = probs.detach().clone().requires_grad_()
    ref = _reference(ref_probs, images, radius=2, sigma_xy=3.0)
    torch.testing.assert_close(ours, ref)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(probs.grad, ref_probs.grad)


def test_float32_matches_float64_reference():
    logits, images, valid, gate = _random_case(5, b=2, k=4, h=9, w=8)
    probs = logits.softmax(1)
    ours = dense_energy_loss(probs.float(), images.float(), valid, gate.float(), radius=3)
    assert ours.dtype == torch.float32
    ref = _reference(probs, images, valid, gate, radius=3)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)


def test_half_precision_input_is_computed_in_float32():
    logits, images, valid, gate = _random_case(6, dtype=torch.float32)
    probs = logits.softmax(1)
    half = probs.half().requires_grad_()
    loss = dense_energy_loss(half, images.half(), valid, gate.half(), radius=2)
    assert loss.dtype == torch.float32
    ref = _reference(half.detach(), images.half(), valid, gate.half(), radius=2)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert half.grad.dtype == torch.float16 and torch.isfinite(half.grad).all()


def test_gradcheck_float64():
    logits, images, valid, gate = _random_case(8, b=2, k=3, h=4, w=5)
    probs = logits.softmax(1).detach().requires_grad_()
    for include_self in (False, True):
        assert torch.autograd.gradcheck(
            lambda p, s=include_self: dense_energy_loss(
                p, images, valid, gate, sigma_xy=2.0, radius=2, include_self=s
            ),
            (probs,),
        )


def test_equals_potts_on_the_simplex_with_the_same_logit_gradient():
    logits, images, valid, gate = _random_case(9)
    logits.requires_grad_()
    ours = dense_energy_loss(logits.softmax(1), images, valid, gate, radius=2)
    (g_ours,) = torch.autograd.grad(ours, logits)
    potts = _reference(logits.softmax(1), images, valid, gate, radius=2, form="potts")
    (g_potts,) = torch.autograd.grad(potts, logits)
    torch.testing.assert_close(ours, potts)
    torch.testing.assert_close(g_ours, g_potts)


def test_gradient_is_the_release_energys_inside_the_window():
    """With the self pair, |V| · ∇E equals ∇ of −Σ_i g_i S_i · Σ_{j in window} W_ij S_j."""
    logits, images, valid, gate = _random_case(11)
    logits.requires_grad_()
    ours = dense_energy_loss(logits.softmax(1), images, valid, gate, radius=2, include_self=True)
    (g_ours,) = torch.autograd.grad(ours, logits)
    release = (
        _reference(
            logits.softmax(1), images, valid, gate, radius=2, include_self=True, form="release"
        )
        * valid.sum()
    )
    (g_release,) = torch.autograd.grad(release, logits)
    torch.testing.assert_close(g_ours * valid.sum(), g_release)


def test_empty_valid_region_gives_zero_loss_and_zero_gradient():
    logits, images, _, gate = _random_case(12, dtype=torch.float32)
    probs = logits.softmax(1).requires_grad_()
    loss = dense_energy_loss(probs, images, torch.zeros(2, 5, 6, dtype=torch.bool), gate)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(probs.grad, torch.zeros_like(probs))


def test_window_larger_than_image_and_single_pixel():
    logits, images, _, _ = _random_case(13, b=1, h=2, w=3)
    probs = logits.softmax(1)
    torch.testing.assert_close(
        dense_energy_loss(probs, images, radius=7), _reference(probs, images, radius=7)
    )
    one = dense_energy_loss(probs[..., :1, :1], images[..., :1, :1], radius=3)
    assert float(one) == 0.0


def test_no_gradient_graph_when_probs_need_none():
    logits, images, _, _ = _random_case(14, dtype=torch.float32)
    loss = dense_energy_loss(logits.softmax(1), images, radius=1)
    assert not loss.requires_grad and math.isfinite(float(loss))


# ---- energy_gate ------------------------------------------------------------------------


def test_energy_gate_values_and_detach():
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    probs = logits.softmax(1)
    cpl = torch.randint(0, 3, (2, 4, 5))
    cpl[0, 0] = 255
    gate = energy_gate(probs, cpl)
    assert not gate.requires_grad and gate.shape == (2, 4, 5)
    expected = torch.where(cpl == 255, 1.0, 1.0 - probs.detach().amax(1))
    torch.testing.assert_close(gate, expected)
    assert (gate >= 0).all() and (gate <= 1).all()
    torch.testing.assert_close(
        energy_gate(probs, cpl.where(cpl != 255, 7), ignore_index=7), expected
    )
    # it feeds the loss directly
    images = torch.rand(2, 3, 4, 5)
    assert math.isfinite(float(dense_energy_loss(probs, images, gate=gate, radius=1).detach()))


@pytest.mark.parametrize(
    ("probs", "cpl", "match"),
    [
        (torch.rand(2, 3, 4), torch.zeros(2, 3, 4, dtype=torch.long), "probs must be 4-D"),
        (torch.rand(1, 2, 3, 4) + 1, torch.zeros(1, 3, 4, dtype=torch.long), r"probs must lie"),
        (torch.rand(1, 2, 3, 4), torch.zeros(1, 3, 5, dtype=torch.long), "cpl must have shape"),
        (torch.rand(1, 2, 3, 4), torch.zeros(1, 3, 4), "cpl must be an integer"),
        (torch.rand(1, 2, 3, 4), torch.full((1, 3, 4), 2), "cpl values must lie"),
        (torch.rand(1, 0, 3, 4), torch.zeros(1, 3, 4, dtype=torch.long), "K >= 1"),
    ],
)
def test_energy_gate_errors(probs, cpl, match):
    with pytest.raises(ValueError, match=match):
        energy_gate(probs, cpl)


# ---- errors -----------------------------------------------------------------------------


def _ok():
    return dict(
        probs=torch.full((2, 3, 4, 5), 1 / 3),
        images=torch.rand(2, 3, 4, 5),
        valid=torch.ones(2, 4, 5, dtype=torch.bool),
        gate=torch.rand(2, 4, 5),
    )


def _with(**changes):
    kw = _ok()
    kw.update(changes)
    return kw


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (_with(probs=torch.rand(2, 3, 4)), r"probs must be 4-D \(B, K, H, W\), got shape \(2, 3"),
        (_with(probs=torch.ones(2, 3, 4, 5, dtype=torch.long)), "probs must be a floating"),
        (_with(probs=torch.full((2, 3, 4, 5), 1.5)), r"probs must lie in \[0.0, 1.0\]"),
        (_with(probs=torch.full((2, 3, 4, 5), -0.1)), r"probs must lie in \[0.0, 1.0\]"),
        (_with(probs=torch.full((2, 3, 4, 5), math.nan)), "probs must be finite"),
        (_with(probs=torch.rand(2, 0, 4, 5)), "probs must have K >= 1"),
        (_with(images=torch.rand(2, 4, 5)), r"images must be 4-D \(B, D, H, W\)"),
        (_with(images=torch.rand(3, 3, 4, 5)), "batch sizes differ"),
        (_with(images=torch.rand(2, 3, 5, 4)), r"images must have the spatial size \(4, 5\)"),
        (_with(images=torch.rand(2, 0, 4, 5)), "images must have D >= 1"),
        (_with(images=torch.full((2, 3, 4, 5), 255.0)), r"images must lie in \[0.0, 1.0\]"),
        (_with(images=torch.full((2, 3, 4, 5), math.inf)), "images must be finite"),
        (_with(images=torch.ones(2, 3, 4, 5, dtype=torch.uint8)), "images must be a floating"),
        (_with(valid=torch.ones(2, 4, 5)), "valid must be a bool mask"),
        (_with(valid=torch.ones(2, 5, 4, dtype=torch.bool)), r"valid must have shape \(2, 4, 5\)"),
        (_with(valid=torch.ones(2, 1, 4, 5, dtype=torch.bool)), r"valid must be 3-D \(B, H, W\)"),
        (_with(gate=torch.rand(1, 4, 5)), r"gate must have shape \(2, 4, 5\)"),
        (_with(gate=torch.full((2, 4, 5), 1.2)), r"gate must lie in \[0.0, 1.0\]"),
        (_with(gate=torch.full((2, 4, 5), math.nan)), "gate must be finite"),
        (_with(gate=torch.ones(2, 4, 5, dtype=torch.long)), "gate must be a floating"),
        (_with(sigma_rgb=0.0), "sigma_rgb must be a finite number > 0"),
        (_with(sigma_rgb=-15.0), "sigma_rgb must be a finite number > 0"),
        (_with(sigma_xy=0), "sigma_xy must be a finite number > 0"),
        (_with(sigma_xy=math.inf), "sigma_xy must be a finite number > 0"),
        (_with(radius=0), "radius must be an integer >= 1, got 0"),
        (_with(radius=2.0), "radius must be an integer >= 1, got 2.0"),
        (_with(radius=True), "radius must be an integer >= 1, got True"),
    ],
)
def test_bad_input_raises_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dense_energy_loss(**kwargs)


# ---- hypothesis properties ----------------------------------------------------------------


@st.composite
def _cases(draw):
    seed = draw(seeds)
    b, k = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    g = _gen(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e3]))
    if draw(st.booleans()):
        probs = (torch.randn(b, k, h, w, generator=g) * scale).softmax(1)
    else:  # any values in [0, 1], exact 0 and 1 included
        probs = torch.rand(b, k, h, w, generator=g).round_(decimals=draw(st.integers(0, 3)))
    images = torch.rand(b, draw(st.sampled_from([1, 3])), h, w, generator=g)
    if draw(st.booleans()):
        images = images.round_()  # flat regions and hard edges
    frac = draw(st.floats(0.0, 1.0))
    valid = torch.rand(b, h, w, generator=g) < frac if draw(st.booleans()) else None
    gate = torch.rand(b, h, w, generator=g) if draw(st.booleans()) else None
    kw = dict(
        sigma_rgb=draw(st.sampled_from([1e-3, 15.0, 1e4])),
        sigma_xy=draw(st.sampled_from([0.5, 50.0, 1e6])),
        radius=draw(st.integers(1, 4)),
        include_self=draw(st.booleans()),
    )
    return probs, images, valid, gate, kw


@given(case=_cases())
def test_loss_is_finite_and_nonnegative_with_finite_gradient(case):
    probs, images, valid, gate, kw = case
    leaf = probs.clone().requires_grad_()
    loss = dense_energy_loss(leaf, images, valid, gate, **kw)
    value = float(loss.detach())
    assert loss.dim() == 0 and math.isfinite(value) and value >= 0
    loss.backward()
    assert torch.isfinite(leaf.grad).all()
    if valid is not None and not valid.any():
        assert value == 0.0 and torch.equal(leaf.grad, torch.zeros_like(leaf.grad))


@given(case=_cases(), perm_seed=seeds)
def test_loss_is_invariant_to_permuting_classes(case, perm_seed):
    probs, images, valid, gate, kw = case
    perm = torch.randperm(probs.shape[1], generator=_gen(perm_seed))
    a = dense_energy_loss(probs, images, valid, gate, **kw)
    b = dense_energy_loss(probs[:, perm], images, valid, gate, **kw)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@given(case=_cases())
def test_matches_dense_reference_on_random_cases(case):
    probs, images, valid, gate, kw = case
    torch.testing.assert_close(
        dense_energy_loss(
            probs.double(), images.double(), valid, None if gate is None else gate.double(), **kw
        ),
        _reference(probs, images, valid, gate, **kw),
    )


# ---- CUDA twin ----------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    logits, images, valid, gate = _random_case(15, b=2, k=5, h=12, w=10, dtype=torch.float32)
    probs = logits.softmax(1)
    p_cpu, p_gpu = probs.clone().requires_grad_(), probs.cuda().requires_grad_()
    cpu = dense_energy_loss(p_cpu, images, valid, gate, radius=3)
    gpu = dense_energy_loss(p_gpu, images.cuda(), valid.cuda(), gate.cuda(), radius=3)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
    cpu.backward()
    gpu.backward()
    torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="images must be on"):
        dense_energy_loss(p_gpu, images, valid.cuda(), gate.cuda())

"""The pure-PyTorch CSC reference (CoSA Eqs. 9–10) and the public loss's input checks."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wsss_blocks.losses.contrastive import contrastive_separation_loss
from wsss_blocks.ops.reference import contrastive_separation_loss_reference, normalize_rows

TAU = 0.1


def brute_force(features: torch.Tensor, labels: torch.Tensor, tau: float) -> float:
    """Eq. (9) literally: loop over anchors and positives, the paper's −log ratio form."""
    x = normalize_rows(features.double()).tolist()
    y = labels.tolist()
    n = len(y)

    def sim(i, j):
        return sum(a * b for a, b in zip(x[i], x[j], strict=True)) / tau

    losses = []
    for i in range(n):
        pos = [j for j in range(n) if j != i and y[j] == y[i]]
        neg = [j for j in range(n) if y[j] != y[i]]
        if not pos:
            continue
        if not neg:
            losses.append(0.0)
            continue
        neg_sum = sum(math.exp(sim(i, k)) for k in neg)
        terms = [-math.log(math.exp(sim(i, p)) / (math.exp(sim(i, p)) + neg_sum)) for p in pos]
        losses.append(sum(terms) / len(terms))
    return sum(losses) / len(losses) if losses else 0.0


@st.composite
def csc_inputs(draw, max_n=24, max_d=6, max_labels=5):
    n = draw(st.integers(0, max_n))
    d = draw(st.integers(1, max_d))
    k = draw(st.integers(1, max_labels))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if n and draw(st.booleans()):  # degenerate rows: zero vectors and duplicates
        x[0] = 0.0
        x[n // 2] = x[-1]
    y = torch.randint(0, k, (n,), generator=gen)
    return x, y


def test_hand_computed_case():
    # x0 = (1, 0), x1 ∝ (1, 0.1), x2 = (0, 1); τ = 1. Anchor 2 has no positive.
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    c = 1.0 / math.sqrt(1.01)  # cos(x0, x1)
    s12 = 0.1 / math.sqrt(1.01)  # cos(x1, x2)
    ell0 = math.log1p(math.exp(0.0 - c))  # ν0 = s02 = 0
    ell1 = math.log1p(math.exp(s12 - c))  # ν1 = s12
    expected = (ell0 + ell1) / 2
    got = contrastive_separation_loss_reference(x, y, tau=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(csc_inputs(), st.sampled_from([0.05, 0.1, 0.5, 1.0]))
def test_matches_brute_force_loop(inp, tau):
    x, y = inp
    got = contrastive_separation_loss(x, y, tau=tau, impl="reference")
    assert got.item() == pytest.approx(brute_force(x, y, tau), rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(csc_inputs())
def test_finite_nonnegative_loss_and_grads(inp):
    x, y = inp
    x = x.float().requires_grad_()
    loss = contrastive_separation_loss(x, y, tau=TAU, impl="reference")
    loss.backward()
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert torch.isfinite(loss) and loss.item() >= 0.0
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    "labels",
    [[], [3], [2, 2, 2, 2], [0, 1, 2, 3], [5, 5, 7]],
    ids=["N=0", "N=1", "single-label", "all-different", "one-pair"],
)
def test_degenerate_label_sets(labels):
    y = torch.tensor(labels, dtype=torch.int64)
    x = torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(0)).requires_grad_()
    loss = contrastive_separation_loss(x, y, tau=TAU, impl="reference")
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert loss.item() == pytest.approx(brute_force(x.detach(), y, TAU), abs=1e-6)
    if labels != [5, 5, 7]:  # no anchor with both a positive and a negative: L = 0
        assert loss.item() == 0.0 and (x.grad == 0).all()
    else:
        assert loss.item() > 0.0


@settings(max_examples=30, deadline=None)
@given(csc_inputs(), st.integers(0, 2**31 - 1))
def test_permutation_invariance(inp, seed):
    x, y = inp
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    a = contrastive_separation_loss(x, y, tau=TAU, impl="reference")
    b = contrastive_separation_loss(x[perm], y[perm], tau=TAU, impl="reference")
    assert a.item() == pytest.approx(b.item(), rel=1e-10, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(csc_inputs(), st.floats(1e-3, 1e3))
def test_scale_invariance(inp, scale):
    x, y = inp
    a = contrastive_separation_loss(x, y, tau=TAU, impl="reference")
    b = contrastive_separation_loss(x * scale, y, tau=TAU, impl="reference")
    assert a.item() == pytest.approx(b.item(), rel=1e-9, abs=1e-12)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 0])
    assert torch.autograd.gradcheck(
        lambda t: contrastive_separation_loss_reference(t, y, 0.5), (x,)
    )


def test_zero_rows_have_zero_gradient():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.2], [0.3, 1.0], [0.9, 0.1]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        xx = x.detach().to(dtype).requires_grad_()
        contrastive_separation_loss(xx, y, tau=TAU, impl="reference").backward()
        assert torch.isfinite(xx.grad).all() and (xx.grad[0] == 0).all()
        assert xx.grad[1:].abs().sum() > 0


def test_dtype_follows_features():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    ref = contrastive_separation_loss(x.double(), y, tau=TAU, impl="reference")
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        loss = contrastive_separation_loss(x.to(dtype), y, tau=TAU, impl="reference")
        assert loss.dtype == dtype
        assert loss.double().item() == pytest.approx(ref.item(), rel=2e-2)


def test_n_zero_is_connected_zero():
    x = torch.zeros(0, 5, requires_grad=True)
    loss = contrastive_separation_loss(x, torch.zeros(0, dtype=torch.int64))
    assert loss.dim() == 0 and loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert x.grad.shape == (0, 5)


@pytest.mark.parametrize(
    "features, labels, tau, match",
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.int64), 0.1, r"features .*\(4,\)"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.int64), 0.1, r"\(4, 2\).*\(3,\)"),
        (torch.zeros(4, 2), torch.zeros(4, 1, dtype=torch.int64), 0.1, r"labels .*\(4, 1\)"),
        (torch.zeros(4, 2), torch.zeros(4), 0.1, r"labels .*float32"),
        (
            torch.zeros(4, 2, dtype=torch.int64),
            torch.zeros(4, dtype=torch.int64),
            0.1,
            r"features .*int64",
        ),
        (torch.zeros(4, 0), torch.zeros(4, dtype=torch.int64), 0.1, r"features .*\(4, 0\)"),
        (torch.tensor([[0.0, float("nan")]]), torch.zeros(1, dtype=torch.int64), 0.1, "finite"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), 0.0, "tau"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), -1.0, "tau"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), float("inf"), "tau"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), float("nan"), "tau"),
    ],
)
def test_invalid_inputs_raise(features, labels, tau, match):
    with pytest.raises(ValueError, match=match):
        contrastive_separation_loss(features, labels, tau=tau)


def test_unknown_impl_raises():
    with pytest.raises(ValueError, match="impl"):
        contrastive_separation_loss(
            torch.zeros(2, 2), torch.zeros(2, dtype=torch.int64), impl="fast"
        )


def test_rows_labelled_255_are_left_out_as_if_absent():
    from wsss_blocks import contrastive_separation_loss

    torch.manual_seed(0)
    x = torch.randn(10, 4)
    y = torch.tensor([0, 1, 255, 0, 1, 2, 255, 2, 0, 1])
    keep = y != 255
    loss = contrastive_separation_loss(x, y, 0.5, impl="reference")
    expected = contrastive_separation_loss(x[keep], y[keep], 0.5, impl="reference")
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    as_a_class = contrastive_separation_loss(x, y, 0.5, impl="reference", ignore_index=None)
    assert not torch.equal(loss, as_a_class)  # 255 counted as a class gives another loss
    torch._dynamo.reset()  # (fullgraph reports the ValueError inside its own exception)
    with pytest.raises((ValueError, torch._dynamo.exc.Unsupported),
                       match="ignore_index must be None inside torch.compile"):  # fmt: skip
        torch.compile(lambda t: contrastive_separation_loss(t, y, 0.5), fullgraph=True,
                      backend="eager")(x)  # fmt: skip

"""The chunked PyTorch CSC of benchmarks/chunked_csc.py (the expert baseline the kernel is
benchmarked against) equals the dense reference in value and gradient (float64)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.chunked_csc import _block_loss, chunked_csc_loss, compiled_block_fn
from wsss_blocks.ops import contrastive_separation_loss_reference

TAU = 0.1


def _value_and_grad(fn, x, y, **kwargs):
    x = x.detach().clone().requires_grad_()
    loss = fn(x, y, TAU, **kwargs)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def _random_labels(n, k, seed):
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


# (N, D, labels, block rows): random label sets, single-member classes, one class only,
# all classes singletons, blocks that do not divide N, B = 1 and B > N.
CASES = {
    "random": (100, 7, _random_labels(100, 5, 1), 16),
    "random-wide": (64, 33, _random_labels(64, 3, 2), 64),
    "block-of-one": (13, 4, _random_labels(13, 3, 3), 1),
    "block-larger-than-n": (9, 3, _random_labels(9, 2, 4), 512),
    "singleton-classes": (40, 5, torch.cat([_random_labels(36, 3, 5), torch.arange(7, 11)]), 7),
    "one-class": (20, 4, torch.zeros(20, dtype=torch.long), 6),
    "one-class-plus-singleton": (21, 4, torch.tensor([0] * 20 + [1]), 8),
    "all-singletons": (12, 4, torch.arange(12), 5),
    "one-anchor": (1, 3, torch.tensor([2]), 4),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_reference_float64(case):
    n, d, y, block = case
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n * d), dtype=torch.float64)
    if n > 4:
        x[3] = 0.0  # an all-zero row: cosine 0, zero gradient
        x[4] = x[0]  # a duplicate row
    ref, ref_grad = _value_and_grad(contrastive_separation_loss_reference, x, y)
    got, grad = _value_and_grad(chunked_csc_loss, x, y, block_rows=block)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    if n > 4:
        assert torch.all(grad[3] == 0)


def test_degenerate_label_sets_give_zero():
    """No positive anywhere (all singletons) or no negative anywhere (one class): loss 0."""
    x = torch.randn(10, 3, dtype=torch.float64)
    for y in (torch.arange(10), torch.zeros(10, dtype=torch.long)):
        loss, grad = _value_and_grad(chunked_csc_loss, x, y, block_rows=4)
        assert loss == 0 and torch.all(grad == 0)


def test_float32_matches_float64_reference():
    y = _random_labels(300, 21, 0)
    x = torch.randn(300, 21, generator=torch.Generator().manual_seed(0))
    ref, ref_grad = _value_and_grad(contrastive_separation_loss_reference, x.double(), y)
    got, grad = _value_and_grad(chunked_csc_loss, x, y, block_rows=128)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=0)
    assert (grad.double() - ref_grad).abs().max() <= 1e-5 * ref_grad.abs().max()


def test_backward_recomputes_the_blocks():
    """Each block runs twice (forward, then again in the backward), and the graph keeps no
    (B, N) tensor of it: what the block saves lives only inside the checkpoint."""
    n, block = 256, 32
    x = torch.randn(n, 8, requires_grad=True)
    y = _random_labels(n, 4, 0)
    calls, shapes = [], []

    def counted_block(*args):
        calls.append(1)
        return _block_loss(*args)

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = chunked_csc_loss(x, y, TAU, block_rows=block, block_fn=counted_block)
    assert len(calls) == n // block
    loss.backward()
    assert len(calls) == 2 * (n // block)
    assert (block, n) not in shapes
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_blocks_match_reference(backend):
    torch._dynamo.reset()
    y = _random_labels(96, 4, 0)
    x = torch.randn(96, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    block_fn = compiled_block_fn(backend=backend, fullgraph=True)
    ref, ref_grad = _value_and_grad(contrastive_separation_loss_reference, x, y)
    got, grad = _value_and_grad(chunked_csc_loss, x, y, block_rows=32, block_fn=block_fn)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)

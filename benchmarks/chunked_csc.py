"""Chunked pure-PyTorch CSC loss: what an expert would write instead of the fused kernel.

Same maths as :func:`wsss_blocks.ops.contrastive_separation_loss_reference` (CoSA Eqs.
9–10), but the anchors are processed in row blocks of B rows: each block forms its (B, N)
similarity rows, the log-sum-exp over its negatives and its positive softplus terms, and
adds its anchors' ℓ_i to the total. Each block runs under
``torch.utils.checkpoint.checkpoint(use_reentrant=False)``, so the backward recomputes the
block's (B, N) matrices instead of keeping them: memory O(B·N) instead of the reference's
several N×N buffers. ``block_fn=compiled_block_fn()`` runs the same loop with the block
function under ``torch.compile`` (TorchInductor). Benchmark baselines only
(bench_csc_chunked.py, tests/benchmarks/); not part of the library.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from wsss_blocks.ops import normalize_rows

BLOCK_ELEMENTS = 2**21
"""Default block size: B = BLOCK_ELEMENTS // N anchors, so each (B, N) buffer is 8 MiB in
float32 (B = 512 at N = 4,096, 128 at N = 16,384). At N = 4,096, D = 32 (2 threads, CPU
time) B = 256, 512 and 1,024 took the same within 5 %, B = 2,048 2.9× as long; a fixed
B = 512 at N = 16,384 makes 32 MiB buffers, which glibc maps fresh for every allocation
(one call: 8 M page faults, 25 s of system time)."""


def block_rows_for(n: int) -> int:
    """Default anchors per block for N anchors: ``BLOCK_ELEMENTS // N``, at least 1."""
    return max(1, BLOCK_ELEMENTS // max(n, 1))


def _block_loss(
    rows: torch.Tensor,
    row_labels: torch.Tensor,
    row_index: torch.Tensor,
    row_weight: torch.Tensor,
    row_has_neg: torch.Tensor,
    x: torch.Tensor,
    labels: torch.Tensor,
    col_index: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """Σ_i w_i ℓ_i over the block's anchors, ℓ_i exactly as the reference computes it.

    ``row_weight`` is 1/P_i for anchors with a positive and a negative, else 0 (ℓ_i = 0
    there); rows without negatives get the reference's finite dummy ν (log-sum-exp of
    zeros), so that values and gradients stay finite and identical.
    """
    s = (rows @ x.T) / tau  # (B, N) rows of s_ij
    same = row_labels[:, None] == labels[None, :]
    pos = same & (row_index[:, None] != col_index[None, :])
    s_neg = s.masked_fill(same, float("-inf"))
    s_neg = torch.where(row_has_neg[:, None], s_neg, torch.zeros_like(s))
    nu = torch.logsumexp(s_neg, dim=1)
    z = nu[:, None] - s
    terms = torch.where(pos, torch.logaddexp(z, torch.zeros_like(z)), torch.zeros_like(s))
    return (terms.sum(dim=1) * row_weight).sum()


def _row_weights(labels: torch.Tensor, n: int, dtype: torch.dtype):
    """Per anchor 1/P_i (0 where ℓ_i = 0), whether it has a negative, and |A|, from the
    label counts (O(N), nothing N×N)."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    n_same = counts[inverse]  # self included
    n_pos = n_same - 1
    in_a = n_pos > 0
    has_neg = n_same < n
    weight = torch.where(in_a & has_neg, 1.0 / n_pos.clamp_min(1).to(dtype), 0.0)
    return weight.to(dtype), has_neg, in_a.sum().clamp_min(1).to(dtype)


def chunked_csc_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    tau: float,
    *,
    block_rows: int | None = None,
    block_fn=_block_loss,
    max_blocks: int | None = None,
) -> torch.Tensor:
    """CSC loss in row blocks of ``block_rows`` anchors, each block checkpointed.

    Args:
        features: (N, D) float features; rows are L2-normalised once (float32, float64 for
            float64 input), as the reference does.
        labels: (N,) integer labels (no ignore value: drop such rows before).
        tau: temperature τ > 0.
        block_rows: B, anchors per block (default :func:`block_rows_for`); peak memory
            grows as B·N.
        block_fn: the per-block function (``_block_loss`` or a compiled copy of it).
        max_blocks: only the first this many blocks (to compile ``block_fn`` for a shape
            cheaply; the loss is then partial). None: all.
    Returns:
        0-d loss in ``features.dtype``, equal to the reference up to rounding.
    Example:
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
        >>> chunked_csc_loss(x, torch.tensor([0, 0, 1]), tau=1.0, block_rows=2)
        tensor(0.3285)
    """
    n = features.shape[0]
    x = normalize_rows(features)
    if n == 0:
        return features.sum() * 0.0
    block_rows = block_rows or block_rows_for(n)
    weight, has_neg, num_anchors = _row_weights(labels, n, x.dtype)
    index = torch.arange(n, device=features.device)
    total = x.new_zeros(())
    stop = n if max_blocks is None else min(n, max_blocks * block_rows)
    for start in range(0, stop, block_rows):
        sl = slice(start, min(start + block_rows, n))
        total = total + checkpoint(
            block_fn, x[sl], labels[sl], index[sl], weight[sl], has_neg[sl], x, labels, index,
            tau, use_reentrant=False,
        )  # fmt: skip
    return (total / num_anchors).to(features.dtype)


def compiled_block_fn(**compile_kwargs):
    """``torch.compile`` of the per-block function, to pass as ``block_fn``. The loop over
    blocks stays in Python, so every block of one shape reuses one compiled graph (a last,
    shorter block compiles once more unless ``dynamic=True``)."""
    return torch.compile(_block_loss, **compile_kwargs)

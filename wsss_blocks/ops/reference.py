"""Pure-PyTorch reference of the contrastive separation (CSC) loss.

It materialises the N×N similarity matrix, so it is the oracle of the tests and the
fallback when the compiled operator is missing, not the fast path: memory grows as N².
"""

from __future__ import annotations

import torch

NORM_EPS = 1e-12
"""Rows whose L2 norm is at most this are treated as zero vectors (cosine 0 with every row,
zero gradient), so an all-zero CAM vector (a background pixel after ReLU) gives no NaN."""


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the CSC loss accumulates in: float64 for float64 input, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def normalize_rows(features: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """L2-normalise the rows of ``features`` in the accumulation dtype.

    .. math::
        \\hat x_i = x_i / \\lVert x_i \\rVert \\;\\text{if}\\;
        \\lVert x_i \\rVert > \\epsilon, \\;\\text{else}\\; 0

    Unlike ``F.normalize`` (which divides by ``max(‖x‖, eps)`` and so returns a gradient of
    size 1/eps for an all-zero row), rows at or below ``eps`` map to the zero vector with a
    zero gradient; that keeps fp16 gradients finite for all-zero CAM vectors.

    Args:
        features: (N, D) float tensor, any floating dtype.
        eps: norm threshold, default :data:`NORM_EPS` = 1e-12.
    Returns:
        (N, D) tensor in float32 (float64 for float64 input) with unit or zero rows.
    Example:
        >>> normalize_rows(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        tensor([[0.6000, 0.8000],
                [0.0000, 0.0000]])
    """
    x = features.to(accumulation_dtype(features.dtype))
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    big = norm > eps
    # Divide by 1 where the row is (near) zero so neither forward nor backward meets 0/0.
    inv = torch.where(big, 1.0 / torch.where(big, norm, torch.ones_like(norm)), 0.0)
    return x * inv


def contrastive_separation_loss_reference(
    features: torch.Tensor,
    labels: torch.Tensor,
    tau: float,
    *,
    compute_dtype: torch.dtype | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Contrastive separation loss (CSC) of CoSA, computed densely (N×N) in PyTorch.

    .. math::
        s_{ij} = \\cos(x_i, x_j)/\\tau,\\quad
        \\nu_i = \\log\\sum_{n \\in R^-_i} e^{s_{in}},\\quad
        \\ell_i = \\frac{1}{|R^+_i|}\\sum_{p \\in R^+_i} \\operatorname{softplus}(\\nu_i - s_{ip}),
        \\quad L = \\frac{1}{|A|}\\sum_{i \\in A} \\ell_i

    with R⁺ᵢ the other anchors of label yᵢ, R⁻ᵢ the anchors of another label and A the
    anchors with at least one positive. softplus(νᵢ − s_ip) equals
    −log(e^{s_ip} / (e^{s_ip} + Σₙ e^{s_in})), the paper's form. An anchor without negatives
    has ℓᵢ = 0 (νᵢ = −∞); with no anchor in A the loss is 0 with zero gradient.

    This is the oracle and fallback: it stores several N×N matrices. Inputs are assumed
    valid; :func:`wsss_blocks.losses.contrastive.contrastive_separation_loss` checks them.

    Args:
        features: (N, D) float features (for CoSA the ON's CAM vectors, D = C foreground
            classes); rows are L2-normalised here with :func:`normalize_rows`.
        labels: (N,) integer anchor labels (CPL of the early-layer CAM for CoSA).
        tau: temperature τ > 0.
        compute_dtype: dtype of the arithmetic; default float32, or float64 for float64
            features. Tests pass float16/bfloat16 to get a plain low-precision baseline.
        normalize: L2-normalise rows first (default). False takes the rows as given, i.e.
            s_ij = x_i·x_j/τ: the math of the compiled op ``wsss_blocks::csc_forward``,
            which receives rows normalised by the caller.
    Returns:
        0-d loss, ≥ 0, in ``features.dtype``.
    Example:
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
        >>> y = torch.tensor([0, 0, 1])
        >>> contrastive_separation_loss_reference(x, y, tau=1.0)
        tensor(0.3285)

    Reference:
        Yang et al., CoSA, ECCV 2024, Eqs. (9)–(10).
    """
    dtype = compute_dtype or accumulation_dtype(features.dtype)
    n = features.shape[0]
    x = (normalize_rows(features) if normalize else features).to(dtype)
    s = (x @ x.T) / tau  # s_ij, (N, N)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    pos = same & ~eye
    neg = ~same
    has_neg = neg.any(dim=1)
    n_pos = pos.sum(dim=1)
    # ν_i over negatives; rows without negatives get a finite dummy (their ℓ_i is set to 0
    # below) so that logsumexp's backward never sees −∞ − (−∞).
    s_neg = s.masked_fill(~neg, float("-inf"))
    s_neg = torch.where(has_neg[:, None], s_neg, torch.zeros_like(s))
    nu = torch.logsumexp(s_neg, dim=1)
    # Exact softplus (F.softplus switches to the identity above 20, off by e^-20).
    z = nu[:, None] - s
    terms = torch.where(pos, torch.logaddexp(z, torch.zeros_like(z)), torch.zeros_like(s))
    ell = terms.sum(dim=1) / n_pos.clamp_min(1).to(dtype)
    ell = torch.where(has_neg, ell, torch.zeros_like(ell))
    in_a = n_pos > 0
    loss = torch.where(in_a, ell, torch.zeros_like(ell)).sum() / in_a.sum().clamp_min(1).to(dtype)
    return loss.to(features.dtype)

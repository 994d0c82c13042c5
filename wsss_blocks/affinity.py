"""Pixel affinities: non-local affinity, cross-task fusion and propagation (AuxSegNet).

An affinity matrix A of a feature map with N = h·w positions is (B, N, N) and
row-stochastic: row i holds how much position i draws from every position j, and sums
to 1. Refining a map Y by A (Y ← A·Y) replaces each position's value by a convex
combination of all positions' values, so probabilities stay probabilities and
normalised CAMs stay in [0, 1].

Reference:
    Xu et al., "Leveraging Auxiliary Tasks with Affinity Learning for Weakly Supervised
    Semantic Segmentation" (AuxSegNet), ICCV 2021, Sec. 3.2; Wang et al., "Non-local
    Neural Networks", CVPR 2018 (the embedded-Gaussian affinity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from ._checks import (
    check_finite,
    check_float,
    check_image_batch,
    check_int,
    check_ndim,
    check_nonnegative,
    check_positive,
    reads_values,
)


def _check_affinity(affinity: torch.Tensor, name: str = "affinity") -> None:
    check_ndim(name, affinity, 3, "(B, N, N)")
    check_float(name, affinity)
    check_finite(name, affinity)
    if affinity.shape[1] != affinity.shape[2]:
        raise ValueError(f"{name} must be square (B, N, N), got shape {tuple(affinity.shape)}")


def nonlocal_affinity(theta: torch.Tensor, phi: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Row-stochastic affinity from two embeddings: softmax over positions of θᵀφ.

    .. math:: A_{ij} = \\frac{\\exp(s\\,\\theta_i^\\top \\phi_j)}
              {\\sum_k \\exp(s\\,\\theta_i^\\top \\phi_k)}

    Args:
        theta: θ(f), (B, D', h, w) float, the query embedding.
        phi: φ(f), (B, D', h, w) float, the key embedding (same shape as ``theta``).
        scale: s > 0 multiplying the dot products (a temperature 1/s). The
            embedded-Gaussian non-local block uses 1; 1/√D' keeps the softmax from
            saturating when D' is large.
    Returns:
        (B, N, N) float, N = h·w positions in row-major order; every row is ≥ 0 and sums
        to 1.
    Raises:
        ValueError: if the inputs are not 4-D float tensors of one shape, are not
            finite, or ``scale`` is not a finite number > 0.
    Example:
        >>> f = torch.tensor([[[[1.0, -1.0]]]])  # (1, 1, 1, 2): two positions
        >>> nonlocal_affinity(f, f, scale=2.0).round(decimals=4)
        tensor([[[0.9820, 0.0180],
                 [0.0180, 0.9820]]])

    Reference:
        Wang et al., Non-local Neural Networks, CVPR 2018, Eq. (3);
        Xu et al., AuxSegNet, ICCV 2021, Sec. 3.2 (task-specific affinities).
    """
    check_ndim("theta", theta, 4, "(B, D', h, w)")
    check_ndim("phi", phi, 4, "(B, D', h, w)")
    if theta.shape != phi.shape:
        raise ValueError(
            f"theta and phi must have one shape, got {tuple(theta.shape)} and {tuple(phi.shape)}"
        )
    check_float("theta", theta)
    check_float("phi", phi)
    check_finite("theta", theta)
    check_finite("phi", phi)
    check_positive("scale", scale)
    q = theta.flatten(2).transpose(1, 2)  # (B, N, D')
    k = phi.flatten(2)  # (B, D', N)
    return torch.softmax(torch.bmm(q, k) * scale, dim=-1)


class NonLocalAffinity(nn.Module):
    """Learned non-local affinity of one task's feature map: A = softmax(θ(f)ᵀφ(f)).

    θ and φ are 1×1 convolutions D → D' (with bias, as in the non-local block). Rows of
    the result sum to 1 (see :func:`nonlocal_affinity`).

    Args:
        in_channels: D, channels of the task feature map f, ≥ 1.
        key_channels: D', channels of the θ/φ embeddings, ≥ 1 (default: D).
        scale: multiplier of θᵀφ; None (default) uses 1/√D' (scaled dot product);
            AuxSegNet's embedded-Gaussian block uses 1.
    Raises:
        ValueError: on a size < 1 or a ``scale`` that is not a finite number > 0.
    Example:
        >>> aff = NonLocalAffinity(8, key_channels=4)
        >>> a = aff(torch.randn(2, 8, 3, 5))
        >>> tuple(a.shape), bool(torch.allclose(a.sum(-1), torch.ones(2, 15)))
        ((2, 15, 15), True)

    Reference:
        Xu et al., AuxSegNet, ICCV 2021, Sec. 3.2; Wang et al., Non-local Neural
        Networks, CVPR 2018.
    """

    def __init__(
        self, in_channels: int, key_channels: int | None = None, scale: float | None = None
    ):
        super().__init__()
        key_channels = in_channels if key_channels is None else key_channels
        for name, v in (("in_channels", in_channels), ("key_channels", key_channels)):
            check_int(name, v, 1)
        self.scale = 1.0 / math.sqrt(key_channels) if scale is None else scale
        check_positive("scale", self.scale)
        self.theta = nn.Conv2d(in_channels, key_channels, 1)
        self.phi = nn.Conv2d(in_channels, key_channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (B, D, h, w) float → (B, h·w, h·w) row-stochastic affinity."""
        check_image_batch("features", features, "(B, D, h, w)")
        return nonlocal_affinity(self.theta(features), self.phi(features), self.scale)


def fuse_affinities(affinities: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Convex combination of K task affinities: A = Σ_k w_k A_k.

    With weights ≥ 0 that sum to 1 and row-stochastic inputs, the result is again
    row-stochastic.

    Args:
        affinities: K ≥ 1 tensors, each (B, N, N) float, one per task.
        weights: (K,) or (B, K) float, ≥ 0, summing to 1 over K (per image for (B, K)).
    Returns:
        (B, N, N) float, the fused affinity.
    Raises:
        ValueError: on an empty sequence, shapes that differ, weights of the wrong
            shape, negative or not summing to 1 (tolerance 1e-4).
    Example:
        >>> a, b = torch.eye(2)[None], torch.full((1, 2, 2), 0.5)
        >>> fuse_affinities([a, b], torch.tensor([0.5, 0.5]))
        tensor([[[0.7500, 0.2500],
                 [0.2500, 0.7500]]])

    Reference:
        Xu et al., AuxSegNet, ICCV 2021, Sec. 3.2 (cross-task affinity).
    """
    if len(affinities) == 0:
        raise ValueError("affinities must hold at least one (B, N, N) tensor, got none")
    for k, a in enumerate(affinities):
        _check_affinity(a, f"affinities[{k}]")
        if a.shape != affinities[0].shape:
            raise ValueError(
                f"affinities[{k}] has shape {tuple(a.shape)}, "
                f"affinities[0] has {tuple(affinities[0].shape)}"
            )
    b, num = affinities[0].shape[0], len(affinities)
    check_float("weights", weights)
    if tuple(weights.shape) not in ((num,), (b, num)):
        raise ValueError(
            f"weights must have shape ({num},) or ({b}, {num}), got {tuple(weights.shape)}"
        )
    check_finite("weights", weights)
    check_nonnegative("weights", weights)
    if reads_values(weights) and float((weights.detach().sum(-1) - 1).abs().max()) > 1e-4:
        raise ValueError(f"weights must sum to 1, got {weights.tolist()}")
    w = weights.expand(b, num) if weights.dim() == 1 else weights
    stacked = torch.stack(list(affinities), dim=1)  # (B, K, N, N)
    return (stacked * w[:, :, None, None].to(stacked.dtype)).sum(1)


class CrossTaskAffinityFusion(nn.Module):
    """Fuses K task affinities with learned weights: A = Σ_k softmax(λ)_k A_k.

    The weights are a softmax over K learned logits λ (initialised to 0, i.e. equal
    weights), so they stay positive, sum to 1, and the fused affinity stays
    row-stochastic. AuxSegNet's official code predicts a weight per matrix entry with a
    small convolution over the stacked affinities; one weight per task keeps every row
    summing to 1 and is what this block learns.

    Args:
        num_tasks: K ≥ 1 (AuxSegNet: 2, segmentation and saliency).
    Raises:
        ValueError: if ``num_tasks`` < 1.
    Example:
        >>> fuse = CrossTaskAffinityFusion(2)
        >>> a = fuse(torch.eye(2)[None], torch.full((1, 2, 2), 0.5))
        >>> fuse.weights.tolist(), a[0, 0].tolist()
        ([0.5, 0.5], [0.75, 0.25])

    Reference:
        Xu et al., AuxSegNet, ICCV 2021, Sec. 3.2 (cross-task affinity learning).
    """

    def __init__(self, num_tasks: int = 2):
        super().__init__()
        check_int("num_tasks", num_tasks, 1)
        self.logits = nn.Parameter(torch.zeros(num_tasks))

    @property
    def weights(self) -> torch.Tensor:
        """(K,) task weights, softmax of the learned logits (positive, sum 1)."""
        return torch.softmax(self.logits, dim=0)

    def forward(self, *affinities: torch.Tensor) -> torch.Tensor:
        """K tensors (B, N, N), one per task → (B, N, N) fused affinity."""
        if len(affinities) != self.logits.numel():
            raise ValueError(f"expected {self.logits.numel()} affinities, got {len(affinities)}")
        return fuse_affinities(affinities, self.weights)


def propagate(affinity: torch.Tensor, maps: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """Refine maps by affinity propagation: Y ← A·Y, repeated ``steps`` times.

    .. math:: Y^{(t+1)}_{:, i} = \\sum_j A_{ij}\\, Y^{(t)}_{:, j}

    Differentiable in both ``affinity`` and ``maps``. With the identity affinity, or
    ``steps`` = 0, the maps come back unchanged. With a row-stochastic A each output
    value is a convex combination of input values, so the value range of every channel
    cannot grow.

    Args:
        affinity: A, (B, N, N) float, usually row-stochastic (not checked, so a learned
            or hand-made A works too), N = h·w.
        maps: Y, (B, K, h, w) float on the affinity's grid (any K: class logits, a
            saliency map, normalised CAMs).
        steps: number of propagation steps, an integer ≥ 0.
    Returns:
        (B, K, h, w) float, the refined maps.
    Raises:
        ValueError: on wrong ranks, h·w ≠ N, batch sizes that differ, or a bad
            ``steps``.
    Example:
        >>> a = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]])
        >>> propagate(a, torch.tensor([[[[2.0, 0.0]]]]), steps=1)
        tensor([[[[1., 0.]]]])

    Reference:
        Xu et al., AuxSegNet, ICCV 2021, Sec. 3.2–3.3 (refining saliency, segmentation
        and CAMs with the cross-task affinity); Ahn & Kwak, AffinityNet, CVPR 2018
        (random-walk propagation).
    """
    _check_affinity(affinity)
    check_ndim("maps", maps, 4, "(B, K, h, w)")
    check_float("maps", maps)
    check_finite("maps", maps)
    b, k, h, w = maps.shape
    if affinity.shape[0] != b or affinity.shape[1] != h * w:
        raise ValueError(
            f"affinity must be ({b}, {h * w}, {h * w}) for maps of shape {tuple(maps.shape)}, "
            f"got {tuple(affinity.shape)}"
        )
    check_int("steps", steps, 0)
    y = maps.flatten(2).transpose(1, 2)  # (B, N, K)
    a = affinity.to(y.dtype)
    for _ in range(steps):
        y = torch.bmm(a, y)
    return y.transpose(1, 2).reshape(b, k, h, w)

"""Multi-label classification loss on image-level logits (CoSA Eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_finite, check_float, check_labels, check_ndim


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label soft-margin loss: mean binary cross-entropy over the C classes.

    .. math:: \\mathcal L_{cls} = -\\frac{1}{C}\\sum_c y_c \\log\\sigma(z_c)
              + (1 - y_c)\\log(1 - \\sigma(z_c)), \\text{ averaged over the batch}

    Args:
        logits: (B, C) float image logits (e.g. CoSA Eq. 1's W_fc·GMP(F), from
            :func:`wsss_blocks.pooled_logits`), C foreground classes.
        labels: (B, C) multi-hot image labels (0/1, any dtype).
    Returns:
        0-d loss, ≥ 0, in ``logits.dtype``; 0 for an empty batch.
    Raises:
        ValueError: on wrong rank, mismatched shapes, non-finite logits or labels that
            are not multi-hot.
    Example:
        >>> round(float(classification_loss(torch.zeros(1, 2), torch.tensor([[1, 0]]))), 4)
        0.6931

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (1).
    """
    check_ndim("logits", logits, 2, "(B, C)")
    check_float("logits", logits)
    check_finite("logits", logits)
    check_labels("labels", labels, logits.shape[1])
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels batch {labels.shape[0]} differs from logits batch {logits.shape[0]}"
        )
    if logits.numel() == 0:
        return logits.sum()  # an empty batch: 0, with a (zero) gradient
    return F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype))

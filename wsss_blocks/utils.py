"""Conventions and small helpers shared by every block: the label values and the resize."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import BACKGROUND_INDEX, IGNORE_INDEX, check_ndim

__all__ = ["BACKGROUND_INDEX", "IGNORE_INDEX", "upsample"]


def upsample(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a (B, K, h, w) float map to ``size`` = (H, W), align_corners=False
    (how CAMs, segmentation logits and images are resized throughout the library).

    Args:
        t: (B, K, h, w) floating tensor.
        size: (H, W), positive.
    Returns:
        (B, K, H, W), dtype and device of ``t``.
    Raises:
        ValueError: if ``t`` is not 4-D.
    Example:
        >>> upsample(torch.zeros(1, 2, 3, 4), (6, 8)).shape
        torch.Size([1, 2, 6, 8])
    """
    check_ndim("t", t, 4, "(B, K, h, w)")
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

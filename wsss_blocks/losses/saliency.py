"""The saliency loss of saliency-guided WSSS (AuxSegNet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_finite, check_float, check_ndim, check_unit_map

__all__ = ["saliency_loss"]


def saliency_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy of saliency logits against a soft saliency pseudo-label.

    .. math:: \\mathcal L_{sal} = \\frac{1}{|R|}\\sum_{x \\in R}
              \\mathrm{BCE}(\\sigma(z_x), s_x)

    R are the valid pixels; with none the loss is 0 (zero gradient), never NaN.

    Args:
        logits: z, (B, 1, H, W) float saliency logits (e.g. the saliency head).
        target: s, (B, H, W) float in [0, 1], the saliency pseudo-label (soft or 0/1).
        valid: optional (B, H, W) bool, False on pixels to skip (e.g. crop padding).
    Returns:
        0-d loss ≥ 0; 0 for an empty batch.
    Raises:
        ValueError: on wrong shapes, non-finite logits or targets outside [0, 1].
    Example:
        >>> round(float(saliency_loss(torch.zeros(1, 1, 1, 2), torch.tensor([[[1.0, 0.0]]]))), 4)
        0.6931

    Reference:
        Xu et al., AuxSegNet, ICCV 2021, Sec. 3.4 (saliency loss on the initial and
        the refined saliency prediction).
    """
    check_ndim("logits", logits, 4, "(B, 1, H, W)")
    check_float("logits", logits)
    check_finite("logits", logits)
    b, c, h, w = logits.shape
    if c != 1:
        raise ValueError(f"logits must have 1 channel, got shape {tuple(logits.shape)}")
    check_unit_map("target", target, "(B, H, W)")
    if tuple(target.shape) != (b, h, w):
        raise ValueError(f"target must have shape {(b, h, w)}, got {tuple(target.shape)}")
    bce = F.binary_cross_entropy_with_logits(
        logits[:, 0], target.detach().to(logits.dtype), reduction="none"
    )
    if valid is None:
        return bce.mean() if bce.numel() else bce.sum()  # an empty batch: 0
    if tuple(valid.shape) != (b, h, w) or valid.dtype != torch.bool:
        raise ValueError(
            f"valid must be a bool tensor of shape {(b, h, w)}, "
            f"got {valid.dtype} {tuple(valid.shape)}"
        )
    return (bce * valid).sum() / valid.sum().clamp_min(1)

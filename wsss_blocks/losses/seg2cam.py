"""Seg2CAM loss: CAMs trained on segmentation pseudo-labels (CoSA Eq. 8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_finite, check_float, check_ndim, check_range


def seg2cam_loss(
    cam_logits: torch.Tensor, spl: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy between raw CAM logits and the SPL of each foreground class.

    .. math:: \\mathcal L_{s2c} = \\frac{1}{C\\,h\\,w}\\sum_{c=1}^{C}\\sum_{x,y}
              \\mathrm{BCE}(\\sigma(M^c_{x,y}), \\hat Y^{SPL,c}_{x,y})

    The logit is the raw 1×1-classifier CAM (before ReLU/normalisation), so the
    gradient reaches both the feature map F and the classifier weights (the paper's
    ablation finds guiding F matters most). The SPL is a target and is detached.

    Args:
        cam_logits: M, (B, C, h, w) float raw CAM of the ON, C foreground classes.
        spl: (B, C+1, h, w) float in [0, 1] from :func:`wsss_blocks.seg_to_spl`
            (channel 0 = background, not used here).
        valid: optional (B, h, w) bool, False where the SPL has no image under it (the
            padding of a crop, which plays the role of CPL's ignore 255); those pixels
            are left out of the mean. If none is valid the loss is 0 with zero gradient.
    Returns:
        0-d loss ≥ 0 (mean over batch, classes and valid pixels); 0 for an empty batch.
    Raises:
        ValueError: on wrong ranks, mismatched shapes, non-finite logits, SPL values
            outside [0, 1], or a ``valid`` that is not a (B, h, w) bool mask.
    Example:
        >>> cam = torch.zeros(1, 1, 1, 1)
        >>> spl = torch.tensor([[[[0.0]], [[1.0]]]])
        >>> round(float(seg2cam_loss(cam, spl)), 4)
        0.6931

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (8).
    """
    check_ndim("cam_logits", cam_logits, 4, "(B, C, h, w)")
    check_float("cam_logits", cam_logits)
    check_finite("cam_logits", cam_logits)
    check_ndim("spl", spl, 4, "(B, C+1, h, w)")
    b, c, h, w = cam_logits.shape
    if tuple(spl.shape) != (b, c + 1, h, w):
        raise ValueError(f"spl must have shape {(b, c + 1, h, w)}, got {tuple(spl.shape)}")
    check_float("spl", spl)
    check_range("spl", spl, 0.0, 1.0)
    target = spl[:, 1:].detach().to(cam_logits.dtype)
    if valid is None:
        if cam_logits.numel() == 0:
            return cam_logits.sum()  # an empty batch: 0, with a (zero) gradient
        return F.binary_cross_entropy_with_logits(cam_logits, target)
    if tuple(valid.shape) != (b, h, w) or valid.dtype != torch.bool:
        raise ValueError(
            f"valid must be a bool mask of shape {(b, h, w)}, got {valid.dtype} "
            f"{tuple(valid.shape)}"
        )
    bce = F.binary_cross_entropy_with_logits(cam_logits, target, reduction="none")
    return (bce * valid[:, None]).sum() / (valid.sum() * c).clamp_min(1)

"""RAW-weighted CAM2Seg loss: segmentation trained on CAM pseudo-labels (CoSA Eq. 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import (
    IGNORE_INDEX,
    check_finite,
    check_float,
    check_label_map,
    check_ndim,
    check_nonnegative,
)


def raw_cam2seg_loss(
    seg_logits: torch.Tensor,
    cpl: torch.Tensor,
    weights: torch.Tensor | None = None,
    balanced: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Reliability-weighted cross-entropy of segmentation logits against the CPL.

    .. math:: \\mathcal L_{c2s} = \\frac{1}{|R|}\\sum_{(x,y) \\in R} w_{x,y}\\,
              \\mathrm{CE}(S_{x,y}, \\hat Y^{CPL}_{x,y})

    R is the set of pixels whose CPL is not ``ignore_index`` (255). ``weights`` are the RAW weights
    (:func:`wsss_blocks.raw_weights`; detached here in any case); without them this is
    the plain CAM2Seg cross-entropy. If no pixel is valid the loss is 0 (with a zero
    gradient), never NaN.

    With ``balanced=True`` it is the official CoSA release's background/foreground
    balanced form: ½·(mean over background pixels R_bg) + ½·(mean over foreground
    pixels R_fg) of w·CE, counts pooled over the batch; a part with no pixel is 0 and
    the other keeps its weight ½ (as the release: it is not renormalised).

    Args:
        seg_logits: S, (B, C+1, H, W) float logits from the ON, channel 0 background.
        cpl: (B, H, W) integer labels in [0, C] or ``ignore_index``.
        weights: optional (B, H, W) float weights ≥ 0, finite.
        balanced: average background and foreground pixels separately, then halve
            their sum (the release's ``seg_loss``); default the plain mean over R.
        ignore_index: the label of pixels without a pseudo-label (default 255), outside
            [0, C].
    Returns:
        0-d loss ≥ 0.
    Raises:
        ValueError: on wrong ranks, mismatched shapes, labels out of range, non-finite
            logits or weights, or negative weights.
    Example:
        >>> s = torch.zeros(1, 2, 1, 2)
        >>> round(float(raw_cam2seg_loss(s, torch.tensor([[[0, 255]]]))), 4)
        0.6931

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (5) (reliability read as 1/P, see
        :func:`wsss_blocks.raw_weights`); ``balanced``: the official release's L_c2s
        (pinned by a hand case in tests/blocks/test_raw_loss.py).
    """
    check_ndim("seg_logits", seg_logits, 4, "(B, C+1, H, W)")
    check_float("seg_logits", seg_logits)
    check_finite("seg_logits", seg_logits)
    check_ndim("cpl", cpl, 3, "(B, H, W)")
    expected = (seg_logits.shape[0], *seg_logits.shape[2:])
    if tuple(cpl.shape) != expected:
        raise ValueError(f"cpl must have shape {expected}, got {tuple(cpl.shape)}")
    if 0 <= ignore_index < seg_logits.shape[1]:
        raise ValueError(f"ignore_index must lie outside the classes [0, "
                         f"{seg_logits.shape[1] - 1}], got {ignore_index}")  # fmt: skip
    check_label_map("cpl", cpl, seg_logits.shape[1], ignore_index)
    cpl = cpl.long()  # uint8/int32 masks are fine as input; cross_entropy needs int64
    ce = F.cross_entropy(seg_logits, cpl, ignore_index=ignore_index, reduction="none")
    valid = cpl != ignore_index
    if weights is not None:
        if tuple(weights.shape) != tuple(cpl.shape):
            raise ValueError(
                f"weights must have shape {tuple(cpl.shape)}, got {tuple(weights.shape)}"
            )
        check_float("weights", weights)
        check_finite("weights", weights)
        check_nonnegative("weights", weights)
        ce = ce * weights.detach().to(ce.dtype)
    if not balanced:
        return _masked_mean(ce, valid)
    background = cpl == 0
    return 0.5 * _masked_mean(ce, background) + 0.5 * _masked_mean(ce, valid & ~background)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; 0 (with zero gradient) where nothing is."""
    return (values * mask).sum() / mask.sum().clamp_min(1)

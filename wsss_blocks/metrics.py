"""Semantic segmentation metrics: confusion-matrix mIoU (VOC convention)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import (
    IGNORE_INDEX,
    check_finite,
    check_float,
    check_label_map,
    check_labels,
    check_ndim,
)

MIOU_AVERAGES = ("present", "gt")
"""The class sets :class:`MeanIoU` can average over: GT ∪ prediction, or GT only."""


@dataclass(frozen=True)
class IoUResult:
    """What :meth:`MeanIoU.compute` returns.

    Attributes:
        miou: mean IoU in [0, 1] over the classes ``average`` selects; nan if none.
        iou: K per-class IoUs in [0, 1], nan for a class in neither target nor prediction.
        pixel_accuracy: fraction of non-ignored pixels predicted right, in [0, 1]; nan if
            none.
        confusion: (K, K) int64 confusion matrix, rows = ground truth, columns = prediction.
        average: the rule of ``miou``, ``"present"`` or ``"gt"`` (see :class:`MeanIoU`).
    """

    miou: float
    iou: list[float]
    pixel_accuracy: float
    confusion: torch.Tensor
    average: str


class MeanIoU:
    """Accumulates a confusion matrix over a whole split and reports (m)IoU.

    IoU_c = TP_c / (TP_c + FP_c + FN_c). Which classes the mIoU averages over is
    ``average``: ``"present"`` (default) the classes that occur in the ground truth or
    the predictions (a class only predicted counts with IoU 0; the mmsegmentation / VOC
    convention), ``"gt"`` the classes that occur in the ground truth only (the official
    CoSA release's rule, which drops a class that is only ever predicted). The two agree
    whenever every predicted class also occurs in the ground truth; label which one a
    printed number uses. Pixels whose target is 255 are ignored. The result is the
    honest, unmasked mIoU; for the tag-masked variant the official CoSA code reports,
    mask the logits with :func:`mask_absent_classes` before the argmax and label the
    number as such.

    Args:
        num_classes: K classes *including* background (e.g. 21 for VOC), ≥ 1.
        ignore_index: target value to skip (default 255).
        average: ``"present"`` or ``"gt"``, the classes the mIoU averages over (above).
    Raises:
        ValueError: if ``num_classes`` < 1 or ``average`` is unknown.
    Example:
        >>> m = MeanIoU(2)
        >>> m.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]))
        >>> m.compute().miou
        0.5

    Reference:
        Everingham et al., PASCAL VOC, IJCV 2010 (the confusion-matrix mIoU);
        CoSA official release (``average="gt"``; pinned in tests/blocks/test_metrics.py).
    """

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, average: str = "present"
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if average not in MIOU_AVERAGES:
            raise ValueError(f"average must be one of {MIOU_AVERAGES}, got {average!r}")
        self.average = average
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        """Clear the accumulated confusion matrix."""
        self.confusion.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            pred: predicted class indices, integer, any shape, values in [0, K).
            target: ground truth of the same shape, values in [0, K) or ``ignore_index``.
        Raises:
            ValueError: on shape mismatch, float input, meta tensors or values out of range.
        """
        if "meta" in (pred.device.type, target.device.type):
            raise ValueError("pred and target must hold values (a metric counts them), "
                             "got meta tensors")  # fmt: skip
        if pred.shape != target.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}"
            )
        check_label_map("target", target, self.num_classes, self.ignore_index)
        check_label_map("pred", pred, self.num_classes, self.ignore_index)
        if bool((pred == self.ignore_index).any()):
            raise ValueError(
                f"pred must lie in [0, {self.num_classes - 1}], got {self.ignore_index}"
            )
        keep = target != self.ignore_index
        idx = target[keep].long().cpu() * self.num_classes + pred[keep].long().cpu()
        self.confusion += torch.bincount(idx, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def compute(self) -> IoUResult:
        """The mIoU, per-class IoU, pixel accuracy and confusion matrix so far."""
        conf = self.confusion.double()
        tp = conf.diag()
        union = conf.sum(0) + conf.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
        seen = ~torch.isnan(iou) if self.average == "present" else conf.sum(1) > 0
        total = conf.sum()
        return IoUResult(
            miou=float(iou[seen].mean()) if bool(seen.any()) else float("nan"),
            iou=iou.tolist(),
            pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
            confusion=self.confusion.clone(),
            average=self.average,
        )


def mask_absent_classes(seg_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Set the logits of foreground classes absent from the image labels to −inf.

    This is the "tag-masked" evaluation of the official CoSA code: it uses ground-truth
    image tags at test time, so numbers computed with it must be labelled as such.

    Args:
        seg_logits: (B, C+1, H, W) float logits, channel 0 background (always kept).
        labels: (B, C) multi-hot image tags.
    Returns:
        A new tensor like ``seg_logits``.
    Raises:
        ValueError: on wrong ranks or mismatched batch/class counts.
    Example:
        >>> s = torch.tensor([[[[0.0]], [[2.0]], [[1.0]]]])
        >>> mask_absent_classes(s, torch.tensor([[0, 1]])).argmax(1)
        tensor([[[2]]])
    """
    check_ndim("seg_logits", seg_logits, 4, "(B, C+1, H, W)")
    check_float("seg_logits", seg_logits)
    check_finite("seg_logits", seg_logits)  # (a NaN would win no argmax and lose none)
    check_labels("labels", labels, seg_logits.shape[1] - 1)
    if labels.shape[0] != seg_logits.shape[0]:
        raise ValueError(
            f"labels batch {labels.shape[0]} differs from seg_logits batch {seg_logits.shape[0]}"
        )
    keep = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1).bool()
    return seg_logits.masked_fill(~keep[:, :, None, None], float("-inf"))

"""Segmentation mIoU of a network over a data set: whole images or a sliding window,
the release's multi-scale + flip rule, honest and (labelled) tag-masked."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence

import torch

from ..metrics import MeanIoU, mask_absent_classes
from ..multiscale import multiscale_seg
from .distributed import sum_over_ranks_

SegFn = Callable[[torch.Tensor], torch.Tensor]


def _starts(size: int, window: int, stride: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return starts + [size - window]


def sliding_window_seg(
    seg_fn: SegFn,
    images: torch.Tensor,
    window: int,
    stride: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> torch.Tensor:
    """Segmentation logits of large images from overlapping ``window`` × ``window``
    crops (``stride`` apart, the last one flush with the border), each by
    :func:`~wsss_blocks.multiscale_seg` at the crop's size; overlaps are averaged.

    Args:
        seg_fn: (B, 3, h, w) float → (B, K, h', w') logits.
        images: (B, 3, H, W) float images.
        window, stride: crop side and step in pixels, 1 <= stride <= window.
        scales, flip: the multi-scale + flip rule inside each crop.
    Returns:
        (B, K, H, W) float32 logits.
    Raises:
        ValueError: if ``window`` or ``stride`` is out of range.
    """
    if not (isinstance(window, int) and isinstance(stride, int) and 1 <= stride <= window):
        raise ValueError(f"need integers 1 <= stride <= window, got window={window}, "
                         f"stride={stride}")  # fmt: skip
    h, w = images.shape[-2:]
    total = count = None
    for y in _starts(h, window, stride):
        for x in _starts(w, window, stride):
            crop = images[..., y : y + window, x : x + window]
            logits = multiscale_seg(seg_fn, crop, scales, flip, tuple(crop.shape[-2:]))
            if total is None:
                total = logits.new_zeros(*logits.shape[:2], h, w)
                count = logits.new_zeros(1, 1, h, w)
            total[..., y : y + crop.shape[-2], x : x + crop.shape[-1]] += logits
            count[..., y : y + crop.shape[-2], x : x + crop.shape[-1]] += 1
    return total / count


@torch.no_grad()
def evaluate_segmentation(
    seg_fn: SegFn,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    num_classes: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    tag_masked: bool = False,
    average: str = "present",
    window: int | None = None,
    autocast=None,
    reduce_over_ranks: bool = False,
) -> tuple[dict, dict | None]:
    """Segmentation mIoU of ``seg_fn`` over ``batches``.

    Each image is segmented whole at its own size (multi-scale + flip by
    :func:`~wsss_blocks.multiscale_seg`, the CoSA release's rule) or, where a side
    exceeds ``window``, by :func:`sliding_window_seg` with a stride of 2/3 window.

    Args:
        seg_fn: (B, 3, H, W) float in [0, 1] → (B, K, h, w) logits, K = num_classes.
        batches: ``(images, masks, labels)`` as :func:`~wsss_blocks.training.eval_batches`
            yields: (B, 3, H, W) float, (B, H, W) int64 with 255 ignored, (B, C) float.
        num_classes: K = C + 1 with background.
        scales, flip: test-time scales and flips.
        tag_masked: also score with the classes absent from the GT tags masked out (a
            diagnostic that uses the labels; report it labelled).
        average: the :class:`~wsss_blocks.MeanIoU` class set (``"present"`` or ``"gt"``).
        window: sliding-window side in pixels, or None for whole images.
        autocast: a callable returning the autocast context, or None.
        reduce_over_ranks: ``batches`` are this rank's shard of a distributed
            evaluation (``eval_batches(..., rank, world_size)``): the confusion
            matrices are summed over ranks before the mIoU, so every rank returns the
            result of the whole split.
    Returns:
        ``(honest, masked)``: :class:`~wsss_blocks.IoUResult` of each (``miou`` and
        per-class ``iou`` in [0, 1], background first); ``masked`` is None unless
        ``tag_masked``.
    """
    honest = MeanIoU(num_classes, average=average)
    masked = MeanIoU(num_classes, average=average) if tag_masked else None
    for images, masks, labels in batches:
        size = tuple(images.shape[-2:])
        with autocast() if autocast is not None else contextlib.nullcontext():
            if window is not None and max(size) > window:
                seg = sliding_window_seg(seg_fn, images, window, max(1, 2 * window // 3),
                                         scales, flip)  # fmt: skip
            else:
                seg = multiscale_seg(seg_fn, images, scales, flip, size)
        honest.update(seg.argmax(1), masks)
        if masked is not None:
            masked.update(mask_absent_classes(seg, labels).argmax(1), masks)
    if reduce_over_ranks:
        for meter in (honest, masked) if masked is not None else (honest,):
            sum_over_ranks_(meter.confusion)
    return honest.compute(), masked.compute() if masked is not None else None


def format_iou_table(iou: Sequence[float], class_names: Sequence[str], columns: int = 4) -> str:
    """Per-class IoU as a text table: ``background`` then ``class_names``, IoU in %,
    ``columns`` entries per line; NaN (class absent everywhere) shows as ``–``.

    Raises:
        ValueError: if ``iou`` does not have len(class_names) + 1 entries.
    """
    names = ["background", *class_names]
    if len(iou) != len(names):
        raise ValueError(f"iou has {len(iou)} entries, expected {len(names)} "
                         "(background + class_names)")  # fmt: skip
    width = max(len(n) for n in names)
    cells = [
        f"{n:<{width}} {'–' if v != v else f'{100 * v:.1f}':>5}"
        for n, v in zip(names, iou, strict=True)
    ]
    return "\n".join("   ".join(cells[i : i + columns]) for i in range(0, len(cells), columns))

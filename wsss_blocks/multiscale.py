"""Multi-scale + flip inference: CAMs for pseudo-labels and segmentation logits.

Both follow the official CoSA release's order, per scale s: resize the images to
(int(s·H), int(s·W)), run them and their mirror images in one batch, resize each raw
map to the output size, join the mirrored map (mirrored back) with its original, and
add the scales up. They differ in how the mirrored map joins (max for CAMs, sum for
logits) and in the ReLU CAMs get after the join.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ._checks import check_finite, check_float, check_ndim, check_positive
from .utils import upsample

MapFn = Callable[[torch.Tensor], torch.Tensor]


def _multiscale(
    map_fn: MapFn,
    fn_name: str,
    images: torch.Tensor,
    scales: Sequence[float],
    flip: bool,
    size: tuple[int, int] | None,
    transform: Callable[[torch.Tensor], torch.Tensor],
    merge_flip: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The loop both public functions share; ``fn_name`` names ``map_fn`` in errors."""
    check_ndim("images", images, 4, "(B, 3, H, W)")
    check_float("images", images)
    check_finite("images", images)
    if size is not None and (len(size) != 2 or any(int(v) != v or v < 1 for v in size)):
        raise ValueError(f"size must be two positive integers (h, w), got {size!r}")
    if len(scales) == 0:
        raise ValueError("scales must hold at least one scale, got an empty sequence")
    for s in scales:
        check_positive("scales", s)
    h, w = images.shape[-2:]
    total = None
    for s in scales:
        scaled = (int(s * h), int(s * w))  # truncated, as the release sizes its inputs
        if min(scaled) < 1:
            raise ValueError(f"scales: {s} shrinks a {h}x{w} image to {scaled}")
        x = images
        if s != 1:
            x = upsample(images, scaled)
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        maps = map_fn(batch)
        if maps.ndim != 4 or maps.shape[0] != batch.shape[0]:
            raise ValueError(
                f"{fn_name} must return (B, C, h, w) with B = {batch.shape[0]}, "
                f"got {tuple(maps.shape)}"
            )
        if size is None:
            size = tuple(maps.shape[-2:])
        # Raw maps are resized before the flip join and the ReLU (the release's order).
        maps = upsample(maps.float(), size)
        if flip:
            maps = merge_flip(maps[: len(x)], maps[len(x) :].flip(-1))
        maps = transform(maps)
        total = maps if total is None else total + maps
    return total


def multiscale_cam(
    cam_fn: MapFn,
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Multi-scale, flip-augmented CAM for pseudo-labels, as the official CoSA release
    makes the AN's CAMs: flips combined by max, scales by sum.

    For each scale s the images are resized to (int(s·H), int(s·W)) (bilinear), and
    ``cam_fn`` gives raw CAM logits for them and, with ``flip``, for their mirror images
    (in the same batch). Each raw CAM is resized to ``size`` (bilinear), the mirrored one
    is mirrored back and joined by element-wise max, then a ReLU is applied; the scales'
    maps are summed. The order matters: resizing the raw CAM before the ReLU differs
    from resizing ReLU(CAM) near zero crossings. With ``scales=(1.0,)`` and no flip this
    is ``ReLU(cam_fn(images) resized to size)``. Apply :func:`normalize_cam` to the
    result for pseudo-labels (the release's min–max step). Does not disable gradients:
    wrap it in ``torch.no_grad()`` for a teacher.

    Args:
        cam_fn: maps a (B', 3, H', W') float batch to raw CAM logits (B', C, h', w').
        images: (B, 3, H, W) float image batch, as ``cam_fn`` expects it.
        scales: input scale factors, each > 0 (official release: 1.0, 0.5, 1.5).
        flip: also use the horizontally flipped images.
        size: output (h, w); default: the CAM size at the first scale.
    Returns:
        (B, C, h, w) float32, ≥ 0 (a sum over scales, not normalised).
    Raises:
        ValueError: if ``images`` is not a finite 4-D float tensor, ``size`` is not two
            positive integers, ``scales`` is empty, holds a value ≤ 0 or non-finite or one
            that shrinks the images below one pixel, or ``cam_fn`` returns something
            other than a 4-D map per image.
    Example:
        >>> conv = torch.nn.Conv2d(3, 2, 1)
        >>> multiscale_cam(conv, torch.rand(1, 3, 8, 8), (1.0, 0.5), flip=True).shape
        torch.Size([1, 2, 8, 8])

    Reference:
        Yang et al., CoSA, ECCV 2024, official release (``multi_scale_camseg``; the
        order is pinned against an explicit loop in tests/blocks/test_multiscale.py);
        docs/fidelity.md.
    """
    return _multiscale(cam_fn, "cam_fn", images, scales, flip, size, F.relu, torch.maximum)


def multiscale_seg(
    seg_fn: MapFn,
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Multi-scale, flip-augmented segmentation logits for inference: the images are
    resized to (int(s·H), int(s·W)) per scale s, and the logits of each scale and of the
    mirrored images (mirrored back) are resized to ``size`` and summed, the test-time
    rule of the official CoSA release (and its ToCo base), which also makes its SPLs
    this way. Take ``argmax(1)`` for the prediction.

    With ``scales=(1.0,)`` and no flip this is ``seg_fn(images)`` resized to ``size``.
    Does not disable gradients: wrap it in ``torch.no_grad()`` for evaluation.

    Args:
        seg_fn: maps a (B', 3, H', W') float batch to segmentation logits
            (B', K, h', w'), K classes with background 0.
        images: (B, 3, H, W) float image batch, as ``seg_fn`` expects it.
        scales: input scale factors, each > 0 (official release: 1.0, 0.5, 1.5).
        flip: also use the horizontally flipped images.
        size: output (h, w), usually the image's; default: the map size at the first
            scale.
    Returns:
        (B, K, h, w) float32 summed logits (any real values; not normalised).
    Raises:
        ValueError: if ``images`` is not a finite 4-D float tensor, ``size`` is not two
            positive integers, ``scales`` is empty, holds a value ≤ 0 or non-finite or one
            that shrinks the images below one pixel, or ``seg_fn`` returns something
            other than a 4-D map per image.
    Example:
        >>> conv = torch.nn.Conv2d(3, 4, 1)
        >>> multiscale_seg(conv, torch.rand(2, 3, 8, 8), (1.0, 1.5), True, (16, 16)).shape
        torch.Size([2, 4, 16, 16])

    Reference:
        Yang et al., CoSA, ECCV 2024, official release (multi-scale inference);
        docs/fidelity.md.
    """
    return _multiscale(seg_fn, "seg_fn", images, scales, flip, size, lambda m: m, torch.add)

"""Multi-scale + flip inference: CAMs for pseudo-labels and segmentation logits.

Both run a map function on the images resized by each scale (and on their mirror
images, in the same batch), bring each map to one size and add the scales up; they
differ in how a map is taken (ReLU for CAMs, raw logits for segmentation) and how the
mirrored map joins its original (max for CAMs, sum for logits), as in the official CoSA
release.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ._checks import check_finite, check_float, check_ndim, check_positive

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
    total = None
    for s in scales:
        x = (
            images
            if s == 1
            else F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=False)
        )
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        maps = map_fn(batch)
        if maps.ndim != 4 or maps.shape[0] != batch.shape[0]:
            raise ValueError(
                f"{fn_name} must return (B, C, h, w) with B = {batch.shape[0]}, "
                f"got {tuple(maps.shape)}"
            )
        maps = transform(maps.float())
        if flip:
            maps = merge_flip(maps[: len(x)], maps[len(x) :].flip(-1))
        if size is None:
            size = tuple(maps.shape[-2:])
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
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

    For each scale s the images are resized by s (bilinear), ``cam_fn`` gives raw CAM
    logits and a ReLU is applied; with ``flip`` the CAM of the mirrored images (run in
    the same batch) is mirrored back and combined by element-wise max. Each scale's map
    is resized to ``size`` and the maps are summed. With ``scales=(1.0,)`` and no flip
    this is ``ReLU(cam_fn(images))`` resized to ``size``. Apply :func:`normalize_cam`
    to the result for pseudo-labels. Does not disable gradients: wrap it in
    ``torch.no_grad()`` for a teacher.

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
            positive integers, ``scales`` is empty or holds a value ≤ 0 or non-finite, or
            ``cam_fn`` returns something other than a 4-D map per image.
    Example:
        >>> conv = torch.nn.Conv2d(3, 2, 1)
        >>> multiscale_cam(conv, torch.rand(1, 3, 8, 8), (1.0, 0.5), flip=True).shape
        torch.Size([1, 2, 8, 8])

    Reference:
        Yang et al., CoSA, ECCV 2024, official release (multi-scale CAM inference);
        design/method.md "CAM normalisation".
    """
    return _multiscale(cam_fn, "cam_fn", images, scales, flip, size, F.relu, torch.maximum)


def multiscale_seg(
    seg_fn: MapFn,
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Multi-scale, flip-augmented segmentation logits for inference: the logits of
    each scale and of the mirrored images (mirrored back) are resized to ``size`` and
    summed, the test-time rule of the official CoSA release (and its ToCo base). Take
    ``argmax(1)`` for the prediction.

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
            positive integers, ``scales`` is empty or holds a value ≤ 0 or non-finite, or
            ``seg_fn`` returns something other than a 4-D map per image.
    Example:
        >>> conv = torch.nn.Conv2d(3, 4, 1)
        >>> multiscale_seg(conv, torch.rand(2, 3, 8, 8), (1.0, 1.5), True, (16, 16)).shape
        torch.Size([2, 4, 16, 16])

    Reference:
        Yang et al., CoSA, ECCV 2024, official release (multi-scale inference);
        design/method.md "Evaluation".
    """
    return _multiscale(seg_fn, "seg_fn", images, scales, flip, size, lambda m: m, torch.add)

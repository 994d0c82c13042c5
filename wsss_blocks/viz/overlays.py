"""Side-by-side overlays for inspecting a WSSS run: image | CAM | CPL | prediction | GT."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .._checks import IGNORE_INDEX, check_label_map, check_ndim


def label_palette(num_classes: int) -> np.ndarray:
    """PASCAL-VOC-style colour palette: (256, 3) uint8, row k = colour of label k.

    Label 0 (background) is black and 255 (ignore) is white.

    Args:
        num_classes: classes including background, 1..255.
    Raises:
        ValueError: if ``num_classes`` is outside 1..255.
    """
    if not 1 <= num_classes <= 255:
        raise ValueError(f"num_classes must lie in 1..255, got {num_classes}")
    palette = np.zeros((256, 3), dtype=np.uint8)
    for k in range(256):
        c, r, g, b = k, 0, 0, 0
        for j in range(8):  # the VOC bit-interleaving scheme
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[k] = (r, g, b)
    palette[IGNORE_INDEX] = (255, 255, 255)
    return palette


def colorize_labels(labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(H, W) integer label map (0..K-1 or 255) → (H, W, 3) uint8 RGB image."""
    check_ndim("labels", labels, 2, "(H, W)")
    check_label_map("labels", labels, num_classes)
    return label_palette(num_classes)[labels.cpu().numpy().astype(np.int64)]


def _heatmap(cam: torch.Tensor) -> np.ndarray:
    """(H, W) float in [0, 1] → (H, W, 3) uint8 'jet' heat map."""
    from matplotlib import colormaps

    rgba = colormaps["jet"](cam.float().clamp(0, 1).cpu().numpy())
    return (rgba[..., :3] * 255).astype(np.uint8)


def save_overlay_grid(
    path: str | os.PathLike,
    images: torch.Tensor,
    cams: torch.Tensor,
    panels: dict[str, torch.Tensor],
    num_classes: int,
    cam_alpha: float = 0.5,
) -> Path:
    """Write one PNG with a row per image: image | CAM over image | one panel per label map.

    Args:
        path: output file (.png); parent folders are created.
        images: (B, 3, H, W) float in [0, 1].
        cams: (B, H, W) float in [0, 1], e.g. the max over present classes of the
            normalised CAM, already resized to H × W.
        panels: ordered name → (B, H, W) integer label maps (0..K-1 or 255), for
            example ``{"CPL": cpl, "prediction": pred, "GT": mask}``.
        num_classes: K, classes including background (for the palette).
        cam_alpha: opacity of the heat map over the image, in [0, 1].
    Returns:
        The path written.
    Raises:
        ValueError: on wrong ranks or sizes that differ from ``images``.
    """
    from PIL import Image, ImageDraw

    check_ndim("images", images, 4, "(B, 3, H, W)")
    check_ndim("cams", cams, 3, "(B, H, W)")
    b, _, h, w = images.shape
    for name, t in [("cams", cams), *panels.items()]:
        if tuple(t.shape) != (b, h, w):
            raise ValueError(f"{name} must have shape {(b, h, w)}, got {tuple(t.shape)}")
    rows = []
    for i in range(b):
        img = (images[i].permute(1, 2, 0).float().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        heat = (img * (1 - cam_alpha) + _heatmap(cams[i]) * cam_alpha).astype(np.uint8)
        tiles = [img, heat] + [colorize_labels(p[i], num_classes) for p in panels.values()]
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    header_h = 14
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + header_h), "white")
    canvas.paste(Image.fromarray(grid), (0, header_h))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(["image", "CAM", *panels]):
        draw.text((k * w + 2, 1), name, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path

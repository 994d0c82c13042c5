"""Side-by-side overlays for inspecting a WSSS run: image | CAM | CPL | prediction | GT."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .._checks import IGNORE_INDEX, check_label_map, check_ndim
from ..data.voc import voc_palette


def label_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (:func:`~wsss_blocks.data.voc_palette`) for overlays:
    (256, 3) uint8, row k = colour of label k; 0 (background) is black and 255
    (ignore) white, so unlabelled pixels stand out against VOC's near-white ignore.

    Args:
        num_classes: classes including background, 1..255.
    Raises:
        ValueError: if ``num_classes`` is outside 1..255.
    """
    if not 1 <= num_classes <= 255:
        raise ValueError(f"num_classes must lie in 1..255, got {num_classes}")
    palette = voc_palette()
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
    class_names: list[str] | tuple[str, ...] | None = None,
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
        class_names: the K - 1 foreground names; a legend under the grid then names
            the colour of every label shown (background and ignore included).
    Returns:
        The path written.
    Raises:
        ValueError: on wrong ranks, sizes that differ from ``images``, or
            ``class_names`` without K - 1 entries.
    """
    from PIL import Image, ImageDraw

    check_ndim("images", images, 4, "(B, 3, H, W)")
    check_ndim("cams", cams, 3, "(B, H, W)")
    b, _, h, w = images.shape
    for name, t in [("cams", cams), *panels.items()]:
        if tuple(t.shape) != (b, h, w):
            raise ValueError(f"{name} must have shape {(b, h, w)}, got {tuple(t.shape)}")
    if class_names is not None and len(class_names) != num_classes - 1:
        raise ValueError(f"class_names must have num_classes - 1 = {num_classes - 1} "
                         f"entries, got {len(class_names)}")  # fmt: skip
    rows = []
    for i in range(b):
        img = (images[i].permute(1, 2, 0).float().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        heat = (img * (1 - cam_alpha) + _heatmap(cams[i]) * cam_alpha).astype(np.uint8)
        tiles = [img, heat] + [colorize_labels(p[i], num_classes) for p in panels.values()]
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    header_h = 14
    shown = sorted({int(v) for p in panels.values() for v in p.unique().tolist()})
    names = ["background", *class_names, "ignore"] if class_names is not None else []
    legend = [(v, names[v] if v < num_classes else names[-1]) for v in shown] if names else []
    per_line = max(1, grid.shape[1] // 110)
    legend_h = 14 * ((len(legend) + per_line - 1) // per_line) + 2 if legend else 0
    size = (grid.shape[1], grid.shape[0] + header_h + legend_h)
    canvas = Image.new("RGB", size, "white")
    canvas.paste(Image.fromarray(grid), (0, header_h))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(["image", "CAM", *panels]):
        draw.text((k * w + 2, 1), name, fill="black")
    palette = label_palette(num_classes)
    for j, (value, name) in enumerate(legend):  # colour swatch + class name
        x, y = (j % per_line) * 110 + 2, header_h + grid.shape[0] + 2 + 14 * (j // per_line)
        draw.rectangle([x, y + 1, x + 10, y + 11], fill=tuple(int(c) for c in palette[value]),
                       outline="black")  # fmt: skip
        draw.text((x + 14, y), name, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path

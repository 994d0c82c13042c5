"""Figures: CAM / pseudo-label / prediction overlays and threshold diagnostics."""

from .overlays import colorize_labels, label_palette, save_overlay_grid

__all__ = ["colorize_labels", "label_palette", "save_overlay_grid"]

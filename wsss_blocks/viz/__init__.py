"""Figures: CAM / pseudo-label / prediction overlays and threshold diagnostics."""

from .overlays import colorize_labels, label_palette, save_overlay_grid
from .threshold import plot_threshold_diagnostics

__all__ = [
    "colorize_labels",
    "label_palette",
    "plot_threshold_diagnostics",
    "save_overlay_grid",
]

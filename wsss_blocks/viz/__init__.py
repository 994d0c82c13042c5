"""Figures: CAM / pseudo-label / prediction overlays, threshold diagnostics, training curves."""

from .curves import plot_training_curves
from .diagnostics import plot_pseudo_label_diagnostics
from .overlays import colorize_labels, label_palette, save_overlay_grid
from .threshold import plot_threshold_diagnostics

__all__ = [
    "colorize_labels",
    "label_palette",
    "plot_pseudo_label_diagnostics",
    "plot_threshold_diagnostics",
    "plot_training_curves",
    "save_overlay_grid",
]

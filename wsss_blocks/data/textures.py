"""Background texture photos that scikit-image ships inside its wheel (no download).

Gray photos get a fixed tint each so that backgrounds differ in colour as well as in
pattern; the tint is part of the texture, not random.
"""

from __future__ import annotations

import functools

import numpy as np

TEXTURE_NAMES: tuple[str, ...] = (
    "grass",
    "gravel",
    "brick",
    "moon",
    "coins",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "chelsea",
    "astronaut",
)
"""The background photos, index = texture id (all load offline from ``skimage.data``)."""

# RGB tint for the gray photos (multiplied in); colour photos keep their colours.
_GRAY_TINTS = {
    "grass": (0.55, 0.85, 0.35),
    "gravel": (0.85, 0.80, 0.70),
    "brick": (0.95, 0.55, 0.45),
    "moon": (0.80, 0.82, 0.90),
    "coins": (0.90, 0.85, 0.60),
}


def load_texture(name: str) -> np.ndarray:
    """Load one texture photo as float32 RGB in [0, 1].

    Args:
        name: one of :data:`TEXTURE_NAMES`.
    Returns:
        (h, w, 3) float32 array, values in [0, 1].
    Raises:
        ValueError: if ``name`` is not in :data:`TEXTURE_NAMES`.

    Example:
        >>> load_texture("grass").shape
        (512, 512, 3)
    """
    if name not in TEXTURE_NAMES:
        raise ValueError(f"name must be one of {TEXTURE_NAMES}, got {name!r}")
    return _load_cached(name).copy()


@functools.cache
def _load_cached(name: str) -> np.ndarray:
    """Decoded texture, read-only (decoding all ten photos takes about a second)."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
    if img.ndim == 2:
        img = img[..., None] * np.asarray(_GRAY_TINTS.get(name, (1.0, 1.0, 1.0)), np.float32)
    img = np.ascontiguousarray(img[..., :3])
    img.flags.writeable = False
    return img

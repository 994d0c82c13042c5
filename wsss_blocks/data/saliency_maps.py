"""Saliency maps on disk: folders of per-image maps (a detector's output) and the cache of
the classical estimators' maps for a whole image set."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._cache import cache_dir, cache_key, load_npz, save_npz_atomic
from .._checks import check_ndim, check_unit_map
from ..saliency import SALIENCY_METHODS, estimate_saliency

__all__ = [
    "SALIENCY_CACHE_VERSION",
    "cached_saliency",
    "load_saliency_maps",
    "saliency_cache_dir",
    "save_saliency_maps",
]

SALIENCY_CACHE_VERSION = 2
"""Bumped whenever an estimator's output changes; part of the cache key."""


def load_saliency_maps(
    directory: str | os.PathLike,
    names: Sequence[str],
    size: tuple[int, int] | None = None,
    extensions: Sequence[str] = (".png", ".jpg", ".jpeg", ".bmp"),
) -> torch.Tensor:
    """Read precomputed saliency maps (e.g. DSS outputs): one grayscale image per name.

    The file of ``name`` is ``directory/name + ext`` for the first extension that
    exists. 8-bit values map to [0, 1] by /255; 16-bit PNGs by /65535.

    Args:
        directory: folder holding the maps.
        names: N file stems, in the order wanted (e.g. the image ids of a split).
        size: optional (H, W) to resize every map to (bilinear, antialiased); without
            it all maps must share one size.
        extensions: file extensions tried in order.
    Returns:
        (N, H, W) float32 in [0, 1].
    Raises:
        FileNotFoundError: naming the first map that is missing.
        ValueError: if the maps differ in size and no ``size`` is given.
    """
    from PIL import Image

    directory = Path(directory)
    maps = []
    for name in names:
        path = next(
            (directory / f"{name}{e}" for e in extensions if (directory / f"{name}{e}").is_file()),
            None,
        )
        if path is None:
            raise FileNotFoundError(
                f"no saliency map for {name!r} in {directory} (tried {', '.join(extensions)})"
            )
        with Image.open(path) as im:
            arr = np.asarray(im.convert("I;16") if im.mode in ("I", "I;16") else im.convert("L"))
        scale = 65535.0 if arr.dtype == np.uint16 else 255.0
        t = torch.from_numpy(arr.astype(np.float32) / scale)
        if size is not None and tuple(t.shape) != tuple(size):
            t = F.interpolate(t[None, None], size=size, mode="bilinear", antialias=True,
                              align_corners=False)[0, 0].clamp(0.0, 1.0)  # fmt: skip
        maps.append(t)
    if not maps:
        return torch.zeros(0, *(size or (0, 0)))
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) > 1:
        raise ValueError(f"saliency maps differ in size {sorted(shapes)}; pass size=(H, W)")
    return torch.stack(maps)


def save_saliency_maps(
    directory: str | os.PathLike, saliency: torch.Tensor, names: Sequence[str]
) -> list[Path]:
    """Write saliency maps as 8-bit grayscale PNGs ``directory/<name>.png``.

    Args:
        directory: output folder (created).
        saliency: (N, H, W) float in [0, 1].
        names: N file stems.
    Returns:
        The paths written.
    Raises:
        ValueError: on a bad ``saliency`` or a ``names`` of another length.
    """
    from PIL import Image

    check_unit_map("saliency", saliency, "(N, H, W)")
    if len(names) != saliency.shape[0]:
        raise ValueError(f"names has {len(names)} entries for {saliency.shape[0]} maps")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    u8 = (saliency.detach().cpu() * 255 + 0.5).to(torch.uint8).numpy()
    paths = []
    for name, m in zip(names, u8, strict=True):
        Image.fromarray(m, mode="L").save(directory / f"{name}.png")
        paths.append(directory / f"{name}.png")
    return paths


def saliency_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Folder of the saliency cache: ``root``, else ``$WSSS_BLOCKS_CACHE/saliency``, else
    ``~/.cache/wsss_blocks/saliency`` (not created here)."""
    return cache_dir("saliency", root)


def cached_saliency(
    images: torch.Tensor,
    method: str = "border_prior",
    root: str | os.PathLike | None = None,
    **kwargs,
) -> tuple[torch.Tensor, Path]:
    """Classical saliency of a whole image set, computed once and cached on disk.

    The maps are a fixed input of training, like a detector's saliency maps: the first
    call computes them with :func:`~wsss_blocks.saliency.estimate_saliency` and stores
    them as uint8 (like 8-bit PNG maps); later calls read the file. The key hashes the
    image bytes, the method and its parameters, so other data or settings never hit a
    stale file.

    Args:
        images: (N, 3, H, W) uint8 or float in [0, 1], the images of the split.
        method: one of :data:`~wsss_blocks.saliency.SALIENCY_METHODS`.
        root: cache folder (default :func:`saliency_cache_dir`).
        **kwargs: estimator parameters (part of the key).
    Returns:
        ``(saliency, path)``: (N, H, W) float32 in [0, 1] with steps of 1/255, and the
        cache file.
    Raises:
        ValueError: as :func:`~wsss_blocks.saliency.estimate_saliency`.
        ImportError: as :func:`~wsss_blocks.saliency.estimate_saliency`.
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(f"method must be one of {SALIENCY_METHODS}, got {method!r}")
    check_ndim("images", images, 4, "(N, 3, H, W)")
    params = {"method": method, "version": SALIENCY_CACHE_VERSION, **kwargs}
    key = cache_key(
        params,
        str((tuple(images.shape), str(images.dtype))).encode(),
        images.detach().cpu().contiguous().numpy().tobytes(),
    )
    path = saliency_cache_dir(root) / f"{method}_{key}.npz"
    cached = load_npz(path)  # None: missing or unreadable (then recomputed and overwritten)
    if cached is not None and "saliency" in cached:
        return torch.from_numpy(cached["saliency"].astype(np.float32) / 255.0), path
    u8 = (estimate_saliency(images, method, **kwargs) * 255 + 0.5).to(torch.uint8).numpy()
    save_npz_atomic(path, {"saliency": u8})
    return torch.from_numpy(u8.astype(np.float32) / 255.0), path

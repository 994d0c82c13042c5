"""MF-Seg: multi-object Fashion-MNIST pasted on real texture photos.

The bundled default data set of wsss-blocks. Every sample is a canvas (default 96×96
RGB) cut from a texture photo, with 1..K Fashion-MNIST objects pasted at random scale
and position, each tinted a random colour. Later objects occlude earlier ones. It is
built deterministically from a seed out of data that ships offline (Fashion-MNIST from
the Debian package ``dataset-fashion-mnist``, textures from scikit-image) and cached
on disk, keyed by its parameters.

Co-occurrence (the coexistence problem of CoSA, Yang et al., ECCV 2024, Sec. 3.4): with
probability ``cooccurrence`` the background is the texture tied to the class of the top
object (e.g. 'Sandal' on grass), otherwise a uniformly drawn texture. CAMs of a class
then tend to spread onto its texture, which contrastive separation (CSC) targets.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .._cache import cache_dir, cache_key, load_npz, save_npz_atomic
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .textures import TEXTURE_NAMES, _load_cached

GENERATOR_VERSION = 1
"""Bumped whenever the generator's output changes; part of the cache key."""

PREFERRED_TEXTURE: dict[str, str] = {
    "T-shirt/top": "brick",
    "Trouser": "gravel",
    "Pullover": "chelsea",
    "Dress": "astronaut",
    "Coat": "moon",
    "Sandal": "grass",
    "Shirt": "immunohistochemistry",
    "Sneaker": "coins",
    "Bag": "coffee",
    "Ankle boot": "hubble_deep_field",
}
"""The texture each class is tied to when co-occurrence is on (a bijection)."""

PREFERRED_TEXTURE_IDS: tuple[int, ...] = tuple(
    TEXTURE_NAMES.index(PREFERRED_TEXTURE[c]) for c in FASHION_MNIST_CLASSES
)
"""Per class (foreground index - 1), the index into TEXTURE_NAMES of its tied texture."""
_PREFERRED = np.array(PREFERRED_TEXTURE_IDS)
# Texture photos are resized so their shorter side is one of these multiples of the
# canvas side before a canvas-sized crop is cut: coarse to fine views of the pattern.
_TEXTURE_ZOOMS = (1.5, 2.5, 4.0)
# Object colour = tint * (floor + (1 - floor) * intensity): dark garments stay visible.
_OBJECT_FLOOR = 0.25

MFSEG_LARGE: dict[str, Any] = {"num_train": 20000, "num_val": 2000}
"""Sizes of the larger configuration for more serious runs (pass as ``**MFSEG_LARGE``)."""


def _check_params(p: dict[str, Any]) -> None:
    def bad(name: str, why: str) -> None:
        raise ValueError(f"{name} {why}, got {p[name]!r}")

    for name in ("num_samples", "image_size", "min_objects", "max_objects"):
        if not isinstance(p[name], (int, np.integer)) or isinstance(p[name], bool) or p[name] < 1:
            bad(name, "must be an integer >= 1")
    if p["image_size"] < 16:
        bad("image_size", "must be >= 16")
    if p["max_objects"] < p["min_objects"]:
        bad("max_objects", f"must be >= min_objects ({p['min_objects']})")
    if p["max_objects"] > 64:
        bad("max_objects", "must be <= 64")
    lo, hi = p["scale_range"]
    if not (0.0 < lo <= hi <= 1.0):
        bad("scale_range", "must be (low, high) with 0 < low <= high <= 1")
    if round(lo * p["image_size"]) < 4:
        bad("scale_range", f"gives objects under 4 px on a {p['image_size']} px canvas")
    if not (0.0 <= p["cooccurrence"] <= 1.0):
        bad("cooccurrence", "must lie in [0, 1]")
    if not (0.0 <= p["texture_contrast"] <= 1.0):
        bad("texture_contrast", "must lie in [0, 1]")
    if not isinstance(p["min_visible"], (int, np.integer)) or p["min_visible"] < 1:
        bad("min_visible", "must be an integer >= 1")
    if not isinstance(p["threshold"], (int, np.integer)) or not (0 <= p["threshold"] <= 254):
        bad("threshold", "must be an integer in [0, 254] (Fashion-MNIST intensity)")
    if not isinstance(p["seed"], (int, np.integer)) or p["seed"] < 0:
        bad("seed", "must be an integer >= 0")


def _plain(value: Any) -> Any:
    """A parameter as a plain Python number (or tuple of floats) for the cache key."""
    if isinstance(value, tuple):
        return tuple(float(x) for x in value)
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def _resize(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, antialiased resize of (n, h, w[, 3]) float32 to (n, *size[, 3])."""
    t = torch.from_numpy(batch)
    rgb = t.dim() == 4
    t = t.permute(0, 3, 1, 2) if rgb else t[:, None]
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    out = out.permute(0, 2, 3, 1) if rgb else out[:, 0]
    return out.contiguous().numpy()


@functools.lru_cache(maxsize=4)
def _texture_levels(size: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """For each texture, read-only float32 (h, w, 3) resizes at the zoom levels.

    Cached: decoding and resizing the photos costs about a second.
    """
    out = []
    for name in TEXTURE_NAMES:
        tex = _load_cached(name)
        levels = []
        for zoom in _TEXTURE_ZOOMS:
            f = zoom * size / min(tex.shape[:2])
            hw = (max(size, round(tex.shape[0] * f)), max(size, round(tex.shape[1] * f)))
            level = _resize(tex[None].copy(), hw)[0]
            level.flags.writeable = False
            levels.append(level)
        out.append(tuple(levels))
    return tuple(out)


def _texture_pyramid(size: int, contrast: float) -> list[list[np.ndarray]]:
    """Texture levels with contrast applied: mean + contrast · (texture − mean), clipped."""
    pyramid = []
    for name, levels in zip(TEXTURE_NAMES, _texture_levels(size), strict=True):
        mean = _load_cached(name).reshape(-1, 3).mean(0)  # contrast 0 = flat mean colour
        pyramid.append([(mean + contrast * (lv - mean)).clip(0.0, 1.0) for lv in levels])
    return pyramid


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV → RGB, all inputs in [0, 1]; returns (..., 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0, 1)


def generate_mfseg(
    split: str = "train",
    num_samples: int = 4000,
    *,
    image_size: int = 96,
    min_objects: int = 1,
    max_objects: int = 3,
    scale_range: tuple[float, float] = (0.3, 0.6),
    cooccurrence: float = 0.8,
    texture_contrast: float = 1.0,
    min_visible: int = 20,
    threshold: int = 20,
    seed: int = 0,
    fashion_mnist_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Generate one MF-Seg split in memory (no cache; see :class:`MFSeg` for the cached API).

    Args:
        split: ``"train"`` (objects from the Fashion-MNIST train set) or ``"val"``
            (objects from the Fashion-MNIST test set).
        num_samples: N, number of images.
        image_size: canvas side in pixels (H = W).
        min_objects, max_objects: objects per image, drawn uniformly in this range.
        scale_range: (low, high), object side as a fraction of ``image_size``; the side
            in pixels is uniform over the integers round(low·H)..round(high·H).
        cooccurrence: p in [0, 1]; with probability p the background is the texture of
            :data:`PREFERRED_TEXTURE` for the top object's class, else uniform over all
            textures, so the tied texture appears with probability p + (1 - p) / T.
        texture_contrast: in [0, 1]; 1 keeps the photo, 0 flattens it to its mean colour.
        min_visible: an object with fewer visible pixels (after occlusion) is erased
            from image and mask and not labelled.
        threshold: Fashion-MNIST intensity (0..255) above which a pixel is object.
        seed: generator seed; train and val use independent streams of it.
        fashion_mnist_dir: folder with the idx files; default the Debian location.
    Returns:
        A dict of numpy arrays: ``images`` (N, 3, H, W) uint8; ``masks`` (N, H, W)
        uint8, 0 background and 1..10 = class + 1; ``labels`` (N, 10) uint8 multi-hot of
        visible classes; ``texture_ids`` (N,) int64 index into
        :data:`~wsss_blocks.data.textures.TEXTURE_NAMES`; ``primary_classes`` (N,) int64
        class of the top object (the one co-occurrence ties the texture to);
        ``num_objects`` (N,) int64 objects labelled.
    Raises:
        ValueError: on a bad argument (the message names it and the value received).
        FileNotFoundError: if Fashion-MNIST is not installed (says how to install it).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    params = dict(
        num_samples=num_samples, image_size=image_size, min_objects=min_objects,
        max_objects=max_objects, scale_range=tuple(scale_range), cooccurrence=cooccurrence,
        texture_contrast=texture_contrast, min_visible=min_visible, threshold=threshold,
        seed=seed,
    )  # fmt: skip
    _check_params(params)
    fm_images, fm_labels = load_fashion_mnist(
        "train" if split == "train" else "test", fashion_mnist_dir
    )
    pools = [np.flatnonzero(fm_labels == c) for c in range(len(FASHION_MNIST_CLASSES))]
    pyramid = _texture_pyramid(image_size, texture_contrast)

    n, k_max, s = num_samples, max_objects, image_size
    num_textures, num_classes = len(TEXTURE_NAMES), len(FASHION_MNIST_CLASSES)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, split == "val"])))
    # All random draws are made up front, with fixed shapes, so the output depends only
    # on the parameters (the per-sample loop below draws nothing).
    n_obj = rng.integers(min_objects, max_objects + 1, size=n)
    classes = rng.integers(0, num_classes, size=(n, k_max))
    pick = rng.random((n, k_max))
    lo, hi = round(scale_range[0] * s), round(scale_range[1] * s)
    sizes = rng.integers(lo, hi + 1, size=(n, k_max))
    pos = (rng.random((n, k_max, 2)) * (s - sizes + 1)[..., None]).astype(np.int64)
    obj_flip = rng.random((n, k_max)) < 0.5
    tints = _hsv_to_rgb(
        rng.random((n, k_max)), rng.uniform(0.5, 1.0, (n, k_max)), rng.uniform(0.7, 1.0, (n, k_max))
    ).astype(np.float32)
    tied = rng.random(n) < cooccurrence
    random_tex = rng.integers(0, num_textures, size=n)
    level = rng.integers(0, len(_TEXTURE_ZOOMS), size=n)
    crop_u = rng.random((n, 2))
    rot = rng.integers(0, 4, size=n)
    bg_flip = rng.random(n) < 0.5

    primary = classes[np.arange(n), n_obj - 1]  # the top object is never occluded
    texture_ids = np.where(tied, _PREFERRED[primary], random_tex)
    active = np.arange(k_max)[None, :] < n_obj[:, None]
    counts = np.array([len(p) for p in pools])
    instance = np.zeros((n, k_max), np.int64)
    for c in range(num_classes):
        sel = classes == c
        instance[sel] = pools[c][(pick[sel] * counts[c]).astype(np.int64)]

    # Resize objects in groups of equal size (one batched interpolate per size).
    patches: dict[tuple[int, int], np.ndarray] = {}
    for size in np.unique(sizes[active]):
        idx = np.argwhere(active & (sizes == size))
        objs = fm_images[instance[idx[:, 0], idx[:, 1]]].astype(np.float32) / 255.0
        objs = np.where(obj_flip[idx[:, 0], idx[:, 1]][:, None, None], objs[:, :, ::-1], objs)
        resized = _resize(np.ascontiguousarray(objs), (int(size), int(size)))
        for (i, k), patch in zip(map(tuple, idx), resized, strict=True):
            patches[(i, k)] = patch
    thr = threshold / 255.0

    images = np.empty((n, s, s, 3), np.uint8)
    masks = np.zeros((n, s, s), np.uint8)
    labels = np.zeros((n, num_classes), np.uint8)
    num_labelled = np.zeros(n, np.int64)
    idmap = np.empty((s, s), np.int8)
    for i in range(n):
        tex = pyramid[texture_ids[i]][level[i]]
        y0 = int(crop_u[i, 0] * (tex.shape[0] - s + 1))
        x0 = int(crop_u[i, 1] * (tex.shape[1] - s + 1))
        canvas = np.rot90(tex[y0 : y0 + s, x0 : x0 + s], rot[i])
        canvas = np.array(canvas[:, ::-1] if bg_flip[i] else canvas)
        # Paint object ids in order (later occludes earlier), then drop the ones left
        # with too few visible pixels, then composite only what stays.
        idmap.fill(-1)
        boxes = []
        for k in range(n_obj[i]):
            v = patches[(i, k)]
            y, x, sz = pos[i, k, 0], pos[i, k, 1], sizes[i, k]
            box = (slice(y, y + sz), slice(x, x + sz))
            idmap[box][v > thr] = k
            boxes.append((box, v))
        visible = np.bincount(idmap[idmap >= 0], minlength=n_obj[i])
        for k, (box, v) in enumerate(boxes):
            if visible[k] < min_visible:
                continue
            sel = idmap[box] == k
            colour = tints[i, k] * (_OBJECT_FLOOR + (1.0 - _OBJECT_FLOOR) * v[..., None])
            canvas[box][sel] = colour[sel]
            masks[i][box][sel] = classes[i, k] + 1
            labels[i, classes[i, k]] = 1
            num_labelled[i] += 1
        images[i] = (canvas * 255.0 + 0.5).astype(np.uint8)
    return {
        "images": np.ascontiguousarray(images.transpose(0, 3, 1, 2)),
        "masks": masks,
        "labels": labels,
        "texture_ids": texture_ids.astype(np.int64),
        "primary_classes": primary.astype(np.int64),
        "num_objects": num_labelled,
    }


def mfseg_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Folder of the MF-Seg cache.

    Args:
        root: explicit folder; else ``$WSSS_BLOCKS_CACHE/mfseg``; else
            ``~/.cache/wsss_blocks/mfseg``.
    Returns:
        The folder path (not created here).
    """
    return cache_dir("mfseg", root)


def mfseg_cache_key(split: str, params: dict[str, Any]) -> str:
    """Hex digest (16 chars) of the split, the generator version and the parameters."""
    return cache_key({"split": split, "version": GENERATOR_VERSION, **params})


class MFSeg(Dataset):
    """MF-Seg split as a map-style dataset (generated once, then read from the cache).

    Args:
        split: ``"train"`` or ``"val"``.
        root: cache folder; default ``$WSSS_BLOCKS_CACHE/mfseg`` or
            ``~/.cache/wsss_blocks/mfseg``. The file is ``<split>_<hash of params>.npz``.
        num_train, num_val: split sizes (only the one for ``split`` is used).
        image_size, min_objects, max_objects, scale_range, cooccurrence: see
            :func:`generate_mfseg`.
        texture_contrast, min_visible, threshold, seed, fashion_mnist_dir: see
            :func:`generate_mfseg`.
        cache: if False, generate in memory and touch no file.

    Each item is a dict: ``"image"`` (3, H, W) float32 in [0, 1]; ``"mask"`` (H, W)
    int64, 0 background, 1..10 = class + 1; ``"labels"`` (10,) float32 multi-hot
    (C = 10 foreground classes, background not counted); ``"index"`` int.

    Attributes:
        num_classes: C = 10 foreground classes.
        class_names: the 10 Fashion-MNIST names (no background entry).
        cache_path: the .npz path (None with ``cache=False``).
        cache_hit: True if the split was read from an existing cache file.
        texture_ids: (N,) int64 array, see :func:`generate_mfseg`.
        primary_classes: (N,) int64 array, see :func:`generate_mfseg`.

    Raises:
        ValueError: on a bad argument.
        FileNotFoundError: if Fashion-MNIST is missing.

    Example:
        >>> ds = MFSeg("val", num_val=4, image_size=32, scale_range=(0.4, 0.8), cache=False)
        >>> item = ds[0]
        >>> item["image"].shape, item["mask"].dtype, item["labels"].shape
        (torch.Size([3, 32, 32]), torch.int64, torch.Size([10]))
    """

    num_classes = len(FASHION_MNIST_CLASSES)
    class_names = FASHION_MNIST_CLASSES

    def __init__(
        self,
        split: str = "train",
        root: str | os.PathLike | None = None,
        *,
        num_train: int = 4000,
        num_val: int = 500,
        image_size: int = 96,
        min_objects: int = 1,
        max_objects: int = 3,
        scale_range: tuple[float, float] = (0.3, 0.6),
        cooccurrence: float = 0.8,
        texture_contrast: float = 1.0,
        min_visible: int = 20,
        threshold: int = 20,
        seed: int = 0,
        fashion_mnist_dir: str | os.PathLike | None = None,
        cache: bool = True,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        params = dict(
            num_samples=num_train if split == "train" else num_val, image_size=image_size,
            min_objects=min_objects, max_objects=max_objects, scale_range=tuple(scale_range),
            cooccurrence=float(cooccurrence), texture_contrast=float(texture_contrast),
            min_visible=min_visible, threshold=threshold, seed=seed,
        )  # fmt: skip
        _check_params(params)
        params = {k: _plain(v) for k, v in params.items()}  # numpy scalars hash as numbers
        self.split = split
        self.params = params
        self.cache_hit = False
        self.cache_path: Path | None = None
        arrays = None
        if cache:
            self.cache_path = (
                mfseg_cache_dir(root) / f"{split}_{mfseg_cache_key(split, params)}.npz"
            )
            arrays = load_npz(self.cache_path)  # None: missing or unreadable
            self.cache_hit = arrays is not None
        if arrays is None:
            arrays = generate_mfseg(split, fashion_mnist_dir=fashion_mnist_dir, **params)
            if self.cache_path is not None:
                save_npz_atomic(self.cache_path, arrays)
        self._images = torch.from_numpy(arrays["images"])
        self._masks = torch.from_numpy(arrays["masks"])
        self._labels = torch.from_numpy(arrays["labels"]).float()
        self.texture_ids = arrays["texture_ids"]
        self.primary_classes = arrays["primary_classes"]

    def __len__(self) -> int:
        return self._images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for MF-Seg {self.split} of {len(self)}")
        index = index % len(self)
        return {
            "image": self._images[index].float().div_(255.0),
            "mask": self._masks[index].long(),
            "labels": self._labels[index].clone(),
            "index": index,
        }

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The whole split at once, for fast in-memory training loops.

        Returns:
            ``(images, masks, labels)``: (N, 3, H, W) uint8 in [0, 255]; (N, H, W) uint8
            with 0 background and 1..10 classes (cast a batch with ``.long()``);
            (N, 10) float32 multi-hot. These share memory with the dataset: do not
            modify them in place.
        """
        return self._images, self._masks, self._labels

    def __repr__(self) -> str:
        return f"MFSeg(split={self.split!r}, N={len(self)}, params={self.params})"


__all__ = [
    "GENERATOR_VERSION",
    "MFSEG_LARGE",
    "MFSeg",
    "PREFERRED_TEXTURE",
    "PREFERRED_TEXTURE_IDS",
    "generate_mfseg",
    "mfseg_cache_dir",
    "mfseg_cache_key",
]

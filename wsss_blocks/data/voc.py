"""PASCAL VOC-format segmentation folders (VOC 2012 + SBD, and look-alikes such as COCO).

Standard WSSS layout (as in ToCo and CoSA)::

    VOCdevkit/VOC2012/
        JPEGImages/<name>.jpg
        SegmentationClass/<name>.png       palette PNG, values 0..20, 255 = ignore
        SegmentationClassAug/<name>.png    SBD-augmented masks (train_aug, 10,582 images)
        ImageSets/Segmentation/<split>.txt one name per line

Image-level labels are derived from the masks (classes present, excluding background 0
and ignore 255) and can be cached as ``cls_labels.npy`` ({name: (C,) array}, the
ToCo/CoSA format).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import IGNORE_INDEX

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
"""The 20 PASCAL VOC foreground class names; label value = index + 1 (0 = background)."""


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved RGB per label value).

    Args:
        num_colors: number of entries, at most 256.
    Returns:
        (num_colors, 3) uint8 array; row k is the colour of label k (0 black,
        1 = (128, 0, 0), ..., 255 = (224, 224, 192) for ignore).
    Raises:
        ValueError: if ``num_colors`` is not in [1, 256].

    Example:
        >>> voc_palette()[[0, 1, 15, 255]].tolist()
        [[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]
    """
    if not (isinstance(num_colors, int) and 1 <= num_colors <= 256):
        raise ValueError(f"num_colors must be an integer in [1, 256], got {num_colors!r}")
    labels = np.arange(num_colors)
    palette = np.zeros((num_colors, 3), np.int64)
    for shift in range(8):  # bit 3·j + c of the label sets bit (7 − shift) of channel c
        for c in range(3):
            palette[:, c] |= ((labels >> (3 * shift + c)) & 1) << (7 - shift)
    return palette.astype(np.uint8)


def read_label_png(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """Read a class-index mask (palette ``P`` or gray ``L`` PNG) and check its values.

    Args:
        path: PNG file.
        num_classes: C foreground classes; valid values are 0..C and 255.
    Returns:
        (H, W) uint8 array of label values.
    Raises:
        ValueError: if the PNG holds colours rather than indices (mode RGB etc.) or a
            value outside 0..C and 255.
    """
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(
                f"{path}: mask must be a palette (P) or gray (L) PNG of class indices, "
                f"got mode {img.mode}"
            )
        mask = np.array(img, dtype=np.uint8)
    bad = (mask > num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        raise ValueError(
            f"{path}: mask values must lie in [0, {num_classes}] or be {IGNORE_INDEX}, "
            f"got {int(mask[bad][0])}"
        )
    return mask


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Multi-hot image label of the classes present in a mask (0 and 255 excluded).

    Args:
        mask: (H, W) integer label map, values 0..C or 255.
        num_classes: C foreground classes.
    Returns:
        (C,) float32 multi-hot vector; entry c − 1 is 1 if value c occurs.

    Example:
        >>> labels_from_mask(np.array([[0, 2], [255, 2]]), 3).tolist()
        [0.0, 1.0, 0.0]
    """
    present = np.unique(mask)
    present = present[(present > 0) & (present <= num_classes)]
    out = np.zeros(num_classes, np.float32)
    out[present - 1] = 1.0
    return out


class SegmentationFolder(Dataset):
    """Images and class-index masks in two folders, named by a list.

    Args:
        image_dir: folder of RGB images ``<name><image_ext>``.
        mask_dir: folder of class-index PNGs ``<name><mask_ext>`` (0 background,
            1..C classes, 255 ignore).
        names: the sample names (file stems).
        num_classes: C foreground classes (background not counted).
        class_names: C names, optional.
        image_size: if given (int or (H, W)), images are resized bilinearly and masks
            by nearest neighbour to this size, so items can be batched.
        labels_cache: optional ``.npy`` path of a ToCo-style ``{name: (C,) array}``
            dict; read by :meth:`image_labels` if it exists, else written there.
        transform: optional callable applied to each item dict.

    Each item is a dict: ``"image"`` (3, H, W) float32 in [0, 1]; ``"mask"`` (H, W)
    int64 (0 background, 1..C, 255 ignore); ``"labels"`` (C,) float32 multi-hot of the
    classes in the mask; ``"index"`` int; ``"name"`` str.

    Raises:
        ValueError: on bad arguments, or (when an item is read) a mask that is not a
            class-index PNG or holds values outside 0..C and 255.
        FileNotFoundError: if a folder, or an item's file, is missing.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        mask_dir: str | os.PathLike,
        names: Sequence[str],
        num_classes: int,
        class_names: Sequence[str] | None = None,
        *,
        image_ext: str = ".jpg",
        mask_ext: str = ".png",
        image_size: int | tuple[int, int] | None = None,
        labels_cache: str | os.PathLike | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.image_dir, self.mask_dir = Path(image_dir), Path(mask_dir)
        for name, d in (("image_dir", self.image_dir), ("mask_dir", self.mask_dir)):
            if not d.is_dir():
                raise FileNotFoundError(f"{name} {d} is not a folder")
        if not (isinstance(num_classes, int) and 1 <= num_classes < IGNORE_INDEX):
            raise ValueError(f"num_classes must be an integer in [1, 254], got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names must hold num_classes={num_classes} names, got {len(class_names)}"
            )
        if image_size is not None:
            image_size = (image_size, image_size) if isinstance(image_size, int) else image_size
            if len(image_size) != 2 or not all(isinstance(s, int) and s >= 1 for s in image_size):
                raise ValueError(f"image_size must be an int or (H, W) >= 1, got {image_size!r}")
            image_size = tuple(image_size)
        self.names = list(names)
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names is not None else None
        self.image_ext, self.mask_ext = image_ext, mask_ext
        self.image_size = image_size
        self.labels_cache = Path(labels_cache) if labels_cache is not None else None
        self.transform = transform
        self._labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        name = self.names[index]
        with Image.open(self.image_dir / f"{name}{self.image_ext}") as img:
            image = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
        mask = torch.from_numpy(
            read_label_png(self.mask_dir / f"{name}{self.mask_ext}", self.num_classes)
        )
        if image.shape[1:] != mask.shape:
            raise ValueError(
                f"{name}: image {tuple(image.shape[1:])} and mask {tuple(mask.shape)} sizes differ"
            )
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        image, mask = self._read(index)
        if self._labels is not None:  # the image-level table (cls_labels.npy) once loaded
            labels = self._labels[index].clone()
        else:
            labels = torch.from_numpy(labels_from_mask(mask.numpy(), self.num_classes))
        image = image.float().div_(255.0)
        mask = mask.long()
        if self.image_size is not None and tuple(image.shape[1:]) != self.image_size:
            from torchvision.transforms.v2 import functional as TF

            image = TF.resize(image, list(self.image_size), antialias=True).clamp_(0.0, 1.0)
            mask = TF.resize(
                mask[None], list(self.image_size), interpolation=TF.InterpolationMode.NEAREST
            )[0]
        item = {
            "image": image,
            "mask": mask,
            "labels": labels,
            "index": index,
            "name": self.names[index],
        }
        return self.transform(item) if self.transform is not None else item

    def check_files(self) -> None:
        """Check, without decoding pixels, that every sample has its image and its mask
        and that their sizes agree (PNG/JPEG headers only: fast on 10k files).

        Raises:
            FileNotFoundError: naming the first missing image or mask file.
            ValueError: naming the first sample whose image and mask sizes differ.
        """
        from PIL import Image

        for name in self.names:
            paths = (self.image_dir / f"{name}{self.image_ext}",
                     self.mask_dir / f"{name}{self.mask_ext}")  # fmt: skip
            for path in paths:
                if not path.is_file():
                    raise FileNotFoundError(f"{path} not found (sample {name!r})")
            with Image.open(paths[0]) as img, Image.open(paths[1]) as mask:
                if img.size != mask.size:
                    raise ValueError(f"{paths[1]}: mask size {mask.size[::-1]} differs from "
                                     f"its image's {img.size[::-1]} (H, W)")  # fmt: skip

    def image_labels(self) -> torch.Tensor:
        """Image-level labels of every sample, derived from the masks.

        Read from ``labels_cache`` when it exists (ToCo's ``cls_labels.npy`` format),
        else computed by reading every mask once and, if ``labels_cache`` is set, saved
        there. Kept in memory afterwards.

        Returns:
            (N, C) float32 multi-hot tensor in the order of ``names``.
        Raises:
            KeyError: if the cache file lacks a name of this split.
        """
        if self._labels is None:
            if self.labels_cache is not None and self.labels_cache.is_file():
                table = np.load(self.labels_cache, allow_pickle=True).item()
                missing = [n for n in self.names if n not in table]
                if missing:
                    raise KeyError(f"{self.labels_cache} has no labels for {len(missing)} "
                                   f"names of this split, e.g. {missing[0]!r}")  # fmt: skip
                rows = [np.asarray(table[n], np.float32) for n in self.names]
            else:
                rows = [
                    labels_from_mask(
                        read_label_png(self.mask_dir / f"{n}{self.mask_ext}", self.num_classes),
                        self.num_classes,
                    )
                    for n in self.names
                ]
                if self.labels_cache is not None:
                    self.labels_cache.parent.mkdir(parents=True, exist_ok=True)
                    np.save(self.labels_cache, dict(zip(self.names, rows, strict=True)))
            self._labels = torch.from_numpy(np.stack(rows)).float().reshape(-1, self.num_classes)
        return self._labels


def read_split_list(path: str | os.PathLike) -> list[str]:
    """Names listed in a split file (one per line; blank lines skipped; first column only)."""
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


class VOCSegmentation(SegmentationFolder):
    """PASCAL VOC 2012 (+ SBD) segmentation split in the standard WSSS layout.

    Args:
        root: the ``VOC2012`` folder, or a ``VOCdevkit`` folder that contains it.
        split: name of a list in ``ImageSets/Segmentation/`` (``train``, ``val``,
            ``train_aug``, ...), unless ``split_file`` is given.
        split_file: explicit path of the list of names.
        mask_dir: folder name under ``root`` with the masks; default
            ``SegmentationClassAug`` if it exists, else ``SegmentationClass``.
        image_size, labels_cache, transform: see :class:`SegmentationFolder`.

    Items as in :class:`SegmentationFolder` with C = 20 (``class_names`` =
    :data:`VOC_CLASSES`).

    Raises:
        FileNotFoundError: if ``root``, the folders or the split list are missing.

    Example:
        >>> VOCSegmentation("/nonexistent/VOC2012", "val")
        Traceback (most recent call last):
        ...
        FileNotFoundError: VOC root /nonexistent/VOC2012 has no JPEGImages folder
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train_aug",
        *,
        split_file: str | os.PathLike | None = None,
        mask_dir: str | None = None,
        image_size: int | tuple[int, int] | None = None,
        labels_cache: str | os.PathLike | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        root = Path(root)
        if (root / "VOC2012").is_dir():
            root = root / "VOC2012"
        if not (root / "JPEGImages").is_dir():
            raise FileNotFoundError(f"VOC root {root} has no JPEGImages folder")
        if mask_dir is None:
            mask_dir = (
                "SegmentationClassAug"
                if (root / "SegmentationClassAug").is_dir()
                else "SegmentationClass"
            )
        if split_file is None:
            split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not Path(split_file).is_file():
            raise FileNotFoundError(f"split list {split_file} not found")
        self.root, self.split = root, split
        super().__init__(
            root / "JPEGImages",
            root / mask_dir,
            read_split_list(split_file),
            num_classes=len(VOC_CLASSES),
            class_names=VOC_CLASSES,
            image_size=image_size,
            labels_cache=labels_cache,
            transform=transform,
        )

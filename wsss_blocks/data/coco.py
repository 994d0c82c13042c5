"""COCO 2014 in the WSSS layout of the ToCo and CoSA releases, and a converter to it.

Layout (``root``)::

    train2014/<name>.jpg, val2014/<name>.jpg          the COCO images
    SegmentationClass/train2014/<name>.png             class-index masks: 0 background,
    SegmentationClass/val2014/<name>.png               1..80 classes, 255 ignore (crowd)
    train.txt, val.txt                                 optional name lists
    cls_labels_onehot.npy                              optional {name: (80,)} labels

:func:`coco_instances_to_masks` writes the masks (and the list) from the official
instance annotations (``instances_train2014.json``); it needs ``pycocotools``
(``pip install wsss-blocks[coco]``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import IGNORE_INDEX
from .voc import SegmentationFolder, read_split_list, voc_palette

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip
"""The 80 COCO object classes in category-id order; label value = index + 1."""


class COCOSegmentation(SegmentationFolder):
    """A COCO 2014 split in the ToCo/CoSA WSSS layout (see the module docstring).

    Args:
        root: the COCO folder.
        split: ``"train"`` or ``"val"`` (the 2014 splits).
        split_file: list of names; default ``root/<split>.txt`` if it exists, else
            every mask in ``SegmentationClass/<split>2014``.
        image_size, transform: see :class:`SegmentationFolder`.

    Image-level labels come from ``root/cls_labels_onehot.npy`` (the releases' file)
    when it exists, else from the masks, cached in ``root/cls_labels_<split>.npy``.
    Items as in :class:`SegmentationFolder` with C = 80.

    Raises:
        ValueError: if ``split`` is not train or val.
        FileNotFoundError: if a folder or the split list is missing, or a listed image
            has no mask.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        split_file: str | os.PathLike | None = None,
        image_size: int | tuple[int, int] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val' (COCO 2014), got {split!r}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"COCO root {root} is not a folder")
        mask_dir = root / "SegmentationClass" / f"{split}2014"
        if not mask_dir.is_dir():
            raise FileNotFoundError(
                f"COCO root {root} has no SegmentationClass/{split}2014 folder "
                "(convert the instance annotations with scripts/coco_to_wsss.py)"
            )
        if split_file is None and (root / f"{split}.txt").is_file():
            split_file = root / f"{split}.txt"
        if split_file is not None:
            if not Path(split_file).is_file():
                raise FileNotFoundError(f"split list {split_file} not found")
            names = read_split_list(split_file)
        else:
            names = sorted(p.stem for p in mask_dir.glob("*.png"))
        released = root / "cls_labels_onehot.npy"
        super().__init__(
            root / f"{split}2014",
            mask_dir,
            names,
            num_classes=len(COCO_CLASSES),
            class_names=COCO_CLASSES,
            image_size=image_size,
            labels_cache=released if released.is_file() else root / f"cls_labels_{split}.npy",
            transform=transform,
        )
        self.root, self.split = root, split


def coco_instances_to_masks(
    annotation_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str,
    progress: bool = True,
) -> list[str]:
    """Write the WSSS class-index masks of a COCO instance-annotation file.

    Each image's mask is 0 (background) where no object lies; object pixels get
    label = 1 + the rank of their category id among the file's categories (1..80 for
    COCO 2014); larger objects are painted first, so a smaller object on top keeps its
    label; crowd regions become 255 (ignore). Masks are palette PNGs
    ``out_dir/SegmentationClass/<split>2014/<name>.png`` (name = the image file stem),
    and the names are listed in ``out_dir/<split>.txt``.

    Args:
        annotation_file: an ``instances_<split>2014.json``.
        out_dir: the COCO root to write into.
        split: ``"train"`` or ``"val"``.
        progress: show a tqdm progress bar.
    Returns:
        The names written, in image-id order.
    Raises:
        ImportError: if pycocotools is not installed.
        ValueError: if ``split`` is bad or the file holds more than 254 categories.
        FileNotFoundError: if ``annotation_file`` is missing.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not Path(annotation_file).is_file():
        raise FileNotFoundError(f"annotation_file {annotation_file} not found")
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:
        raise ImportError("coco_instances_to_masks needs pycocotools: "
                          "pip install 'wsss-blocks[coco]'") from e  # fmt: skip
    from PIL import Image
    from tqdm import tqdm

    with open(annotation_file) as f:
        data = json.load(f)
    cat_ids = sorted(c["id"] for c in data["categories"])
    if len(cat_ids) >= IGNORE_INDEX:
        raise ValueError(f"{annotation_file}: {len(cat_ids)} categories do not fit in a PNG")
    label_of = {cid: k + 1 for k, cid in enumerate(cat_ids)}
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    mask_dir = Path(out_dir) / "SegmentationClass" / f"{split}2014"
    mask_dir.mkdir(parents=True, exist_ok=True)
    palette = voc_palette().reshape(-1).tolist()
    names = []
    images = sorted(data["images"], key=lambda im: im["id"])
    for im in tqdm(images, desc=f"COCO {split} masks", disable=not progress):
        h, w = im["height"], im["width"]
        mask = np.zeros((h, w), np.uint8)
        anns = sorted(by_image.get(im["id"], []), key=lambda a: -a["area"])
        for a in anns:
            seg = a["segmentation"]
            if isinstance(seg, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg["counts"], list):  # uncompressed RLE (crowds)
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            m = mask_utils.decode(rle).astype(bool)
            mask[m] = IGNORE_INDEX if a.get("iscrowd", 0) else label_of[a["category_id"]]
        name = Path(im["file_name"]).stem
        png = Image.fromarray(mask, mode="P")
        png.putpalette(palette)
        png.save(mask_dir / f"{name}.png")
        names.append(name)
    (Path(out_dir) / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return names

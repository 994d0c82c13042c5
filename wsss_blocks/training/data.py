"""Data of a training run: one builder for MF-Seg, PASCAL VOC, COCO and a generic
folder, batches for training (in memory or through a DataLoader) and for evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .._checks import IGNORE_INDEX
from ..data import (
    COCOSegmentation,
    MFSeg,
    RandomRescaleCrop,
    SegmentationFolder,
    VOCSegmentation,
    WeakStrongViews,
    read_split_list,
)

DATA_NAMES = ("mfseg", "voc", "coco", "folder")


@dataclass
class RunData:
    """The splits of a run: ``train`` (sampled for training), ``cpl`` (the train split
    without augmentation, where CPL quality is measured), ``val`` (segmentation mIoU);
    C foreground ``num_classes`` and their ``class_names``."""

    name: str
    train: Dataset
    cpl: Dataset
    val: Dataset
    num_classes: int
    class_names: tuple[str, ...]


def _need(d: dict, key: str) -> Any:
    if d.get(key) in (None, ""):
        raise ValueError(f"data.{key} must be set for data.name={d['name']!r}")
    return d[key]


def _folder(d: dict, split: str, transform) -> SegmentationFolder:
    """A generic folder: ``images/``, ``masks/``, ``<split>.txt``, ``classes.txt``."""
    root = Path(_need(d, "root"))
    names_file = root / "classes.txt"
    if not names_file.is_file():
        raise FileNotFoundError(f"{names_file} not found (one class name per line, no background)")
    classes = tuple(read_split_list(names_file))
    split_file = root / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"split list {split_file} not found")
    return SegmentationFolder(
        root / "images", root / "masks", read_split_list(split_file), len(classes), classes,
        image_ext=d.get("image_ext", ".jpg"), labels_cache=root / f"cls_labels_{split}.npy",
        transform=transform,
    )  # fmt: skip


def _disk_split(d: dict, split: str, transform=None) -> SegmentationFolder:
    if d["name"] == "voc":
        root = Path(_need(d, "root"))
        voc = root / "VOC2012" if (root / "VOC2012").is_dir() else root
        released = voc / "cls_labels.npy"  # ToCo/CoSA's labels of train_aug and val
        cache = released if released.is_file() else voc / f"cls_labels_{split}.npy"
        return VOCSegmentation(root, split, labels_cache=cache, transform=transform)
    if d["name"] == "coco":
        return COCOSegmentation(_need(d, "root"), split, transform=transform)
    return _folder(d, split, transform)


def build_data(cfg: dict) -> RunData:
    """The data sets the config's ``data`` section describes.

    ``data.name`` is one of :data:`DATA_NAMES`. MF-Seg uses its generator keys
    (``num_train``, ``image_size``, ..., ``texture_contrast``, 1.0 where absent); the
    others ``data.root`` and the split names ``train_split`` / ``cpl_split`` /
    ``val_split`` (VOC: train_aug / train / val; COCO: train / train / val). Disk
    splits are checked before training: every image has its mask of the same size, and
    the image-level labels are read: the release's ``cls_labels.npy`` /
    ``cls_labels_onehot.npy`` when present, else derived from the masks and cached
    beside them (``cls_labels_<split>.npy``); deriving them decodes
    every mask and checks its values, so the first run on a tree checks them all.

    Raises:
        ValueError: unknown ``data.name``, a missing key, an MF-Seg generator value out
            of range (naming it, e.g. ``texture_contrast`` outside [0, 1]), or bad mask
            values (naming the file).
        FileNotFoundError: a missing root, split list, image or mask (naming it).
    """
    d = cfg["data"]
    if d["name"] not in DATA_NAMES:
        raise ValueError(f"data.name must be one of {DATA_NAMES}, got {d['name']!r}")
    if d["name"] == "mfseg":
        common = dict(
            num_train=d["num_train"], num_val=d["num_val"], image_size=d["image_size"],
            max_objects=d["max_objects"], scale_range=tuple(d["scale_range"]),
            cooccurrence=d["cooccurrence"], seed=cfg["seed"],
            texture_contrast=d.get("texture_contrast", 1.0),  # absent: configs before the key
        )  # fmt: skip
        train, val = MFSeg("train", **common), MFSeg("val", **common)
        return RunData("mfseg", train, train, val, train.num_classes, train.class_names)
    crop = RandomRescaleCrop(d["crop_size"], tuple(d["view_scale"]))
    train = _disk_split(d, d["train_split"], crop)
    cpl = _disk_split(d, d["cpl_split"])
    val = _disk_split(d, d["val_split"])
    for split in (train, cpl, val):
        split.check_files()
        split.image_labels()
    return RunData(d["name"], train, cpl, val, train.num_classes, train.class_names)


class Batch(NamedTuple):
    """A training batch before the views: ``images`` (B, 3, H, W) float in [0, 1],
    ``masks`` (B, H, W) int64 (255 on crop padding), ``labels`` (B, C) float multi-hot,
    ``valid`` (B, H, W) bool (False on crop padding) or None when nothing is padded."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor | None


def sample_indices(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """``batch_size`` indices drawn uniformly with replacement (torch's global generator)
    from this rank's shard of ``range(n)``: the i with i mod world_size = rank.

    Returns:
        (batch_size,) int64 tensor.
    Raises:
        ValueError: ``rank`` outside [0, world_size), or a shard without samples.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    shard = (n - rank + world_size - 1) // world_size
    if shard < 1:
        raise ValueError(f"{n} samples leave rank {rank} of {world_size} without any")
    return torch.randint(0, shard, (batch_size,)) * world_size + rank


class TrainBatches:
    """Endless training batches on ``device``, and the weak/strong views of each.

    In-memory data (MF-Seg's ``tensors()``) is sampled with replacement by
    ``torch.randint`` from the global generator, the views doing rescale and crop on
    the batch. Disk data (items cropped by :class:`~wsss_blocks.data.RandomRescaleCrop`
    in the data set) comes through a shuffling DataLoader with ``num_workers`` workers
    and pinned memory on CUDA; the views then only flip, blur and add the strong op.

    Args:
        data: a data set with ``tensors()`` or dict items with a ``"valid"`` entry.
        batch_size: B.
        views: the :class:`~wsss_blocks.data.WeakStrongViews` of the run.
        device: where batches go.
        num_workers: DataLoader workers (disk data).
        seed: seeds the DataLoader's shuffling.
        rank, world_size: this process's shard of a distributed run. Rank r draws
            only samples i with i mod world_size = r (in memory), or its share of
            each epoch from a :class:`~torch.utils.data.DistributedSampler` shuffled
            by ``seed`` and the epoch (disk); its workers' crops are seeded by
            ``seed + rank``. ``batch_size`` is per process.
    Raises:
        ValueError: a disk split with fewer than ``batch_size`` samples per process, or
            ``rank`` outside [0, world_size).
    """

    def __init__(self, data: Dataset, batch_size: int, views: WeakStrongViews,
                 device: torch.device, num_workers: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:  # fmt: skip
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.data, self.batch_size, self.views, self.device = data, batch_size, views, device
        self.rank, self.world_size = rank, world_size
        self.in_memory = hasattr(data, "tensors")
        self.epoch = 0
        if not self.in_memory:
            if len(data) // world_size < batch_size:
                raise ValueError(f"train split has {len(data)} images, fewer than "
                                 f"train.batch_size={batch_size} per process "
                                 f"(x {world_size} processes)")  # fmt: skip
            self.sampler = None
            if world_size > 1:
                self.sampler = DistributedSampler(data, world_size, rank, shuffle=True,
                                                  seed=seed, drop_last=True)  # fmt: skip
            self.loader = DataLoader(
                data, batch_size, shuffle=self.sampler is None, sampler=self.sampler,
                drop_last=True, num_workers=num_workers, pin_memory=device.type == "cuda",
                persistent_workers=num_workers > 0,
                generator=torch.Generator().manual_seed(seed + rank),
            )  # fmt: skip
            self._it: Iterator | None = None

    def next(self) -> Batch:
        """The next batch (disk data: a new epoch begins where the last one ended)."""
        if self.in_memory:
            images, masks, labels = self.data.tensors()
            idx = sample_indices(len(self.data), self.batch_size, self.rank, self.world_size)
            to = dict(device=self.device, non_blocking=True)
            return Batch(images[idx].to(**to).float() / 255, masks[idx].to(**to).long(),
                         labels[idx].to(**to), None)  # fmt: skip
        if self._it is None:
            self._it = self._epoch()
        try:
            item = next(self._it)
        except StopIteration:
            self.epoch += 1
            self._it = self._epoch()
            item = next(self._it)
        to = dict(device=self.device, non_blocking=True)
        return Batch(item["image"].to(**to), item["mask"].to(**to), item["labels"].to(**to),
                     item["valid"].to(**to))  # fmt: skip

    def _epoch(self) -> Iterator:
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)  # a new shuffle per epoch, equal on all ranks
        return iter(self.loader)

    def views_of(self, batch: Batch):
        """``(x_weak, x_strong, mask, valid)`` of a batch: two (B, 3, h, w) float views
        with shared geometry, the mask (255 on padding) and validity (False on padding),
        both following the views' flips."""
        if batch.valid is None:
            return tuple(self.views(batch.images, batch.masks))
        # the crop's padding rides in the mask (+256) through the views' flips
        packed = batch.masks + 256 * (~batch.valid).long()
        xw, xs, packed, inside = self.views(batch.images, packed)
        valid = (packed < 256) & inside
        return xw, xs, torch.where(valid, packed, torch.full_like(packed, IGNORE_INDEX)), valid


def eval_batches(data: Dataset, batch_size: int, limit: int | None = None,
                 num_workers: int = 0, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1, with_index: bool = False):  # fmt: skip
    """Yield ``(images, masks, labels)`` of the first ``limit`` (default all) samples in
    order, without augmentation: (B, 3, H, W) float in [0, 1], (B, H, W) int64, (B, C)
    float, on ``device``. In-memory data comes in batches of ``batch_size``; disk images
    (sizes differ) one at a time through a DataLoader with ``num_workers``. With
    ``world_size`` > 1 only this ``rank``'s shard (samples rank, rank + world_size, ...)
    is yielded, so the shards of all ranks cover the samples once. ``with_index`` adds
    the samples' (B,) int64 indices in ``data`` as a fourth item.

    Raises:
        ValueError: ``rank`` outside [0, world_size).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    n = len(data) if limit is None else min(limit, len(data))
    shard = range(rank, n, world_size)
    if hasattr(data, "tensors"):
        images, masks, labels = data.tensors()
        for i in range(0, len(shard), batch_size):
            idx = shard[i : i + batch_size]
            if world_size == 1:  # a slice: no copy
                idx = slice(idx.start, idx.stop)
            else:
                idx = torch.tensor(idx)
            batch = (images[idx].to(device).float() / 255, masks[idx].to(device).long(),
                     labels[idx].to(device))  # fmt: skip
            yield (*batch, torch.tensor(shard[i : i + batch_size])) if with_index else batch
        return
    loader = DataLoader(Subset(data, shard), batch_size=1, num_workers=num_workers)
    for j, item in enumerate(loader):
        batch = item["image"].to(device), item["mask"].to(device), item["labels"].to(device)
        yield (*batch, torch.tensor([shard[j]])) if with_index else batch


def overlay_batch(data: Dataset, k: int, size: tuple[int, int], device="cpu"):
    """The first ``k`` samples as one batch at ``size`` (images bilinear, masks nearest),
    for overlay figures: ``(images, masks, labels)`` as :func:`eval_batches` gives."""
    xs, ms, ls = [], [], []
    for x, m, lab in eval_batches(data, k, k, device=device):
        if x.shape[-2:] != tuple(size):
            x = F.interpolate(x, size, mode="bilinear", align_corners=False).clamp_(0, 1)
            m = F.interpolate(m[:, None].float(), size, mode="nearest")[:, 0].long()
        xs.append(x), ms.append(m), ls.append(lab)
    return torch.cat(xs), torch.cat(ms), torch.cat(ls)

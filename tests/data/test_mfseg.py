import numpy as np
import pytest
import torch

from wsss_blocks.data import (
    FASHION_MNIST_CLASSES,
    PREFERRED_TEXTURE,
    TEXTURE_NAMES,
    MFSeg,
    generate_mfseg,
)

SMALL = dict(image_size=32, scale_range=(0.4, 0.8), min_visible=8)


def _gen(fmnist, n=40, split="train", **kw):
    return generate_mfseg(split, n, fashion_mnist_dir=fmnist, **{**SMALL, **kw})


def test_same_params_same_arrays_and_seed_changes_them(fake_fmnist):
    a, b = _gen(fake_fmnist, seed=3), _gen(fake_fmnist, seed=3)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = _gen(fake_fmnist, seed=4)
    assert not np.array_equal(a["images"], c["images"])
    assert not np.array_equal(a["masks"], c["masks"])


def test_train_and_val_differ(fake_fmnist):
    a, b = _gen(fake_fmnist), _gen(fake_fmnist, split="val")
    assert not np.array_equal(a["images"], b["images"])


def test_shapes_dtypes_and_mask_range(fake_fmnist):
    d = _gen(fake_fmnist, n=30, max_objects=4)
    assert d["images"].shape == (30, 3, 32, 32) and d["images"].dtype == np.uint8
    assert d["masks"].shape == (30, 32, 32) and d["masks"].dtype == np.uint8
    assert d["labels"].shape == (30, 10)
    assert d["masks"].max() <= 10
    assert (d["num_objects"] >= 1).all() and (d["num_objects"] <= 4).all()
    assert (d["masks"] > 0).any() and (d["masks"] == 0).any()


def test_labels_are_the_classes_visible_in_the_mask(fake_fmnist):
    d = _gen(fake_fmnist, n=60, max_objects=4, scale_range=(0.6, 0.9))  # much occlusion
    for mask, lab in zip(d["masks"], d["labels"], strict=True):
        visible = set(np.unique(mask[mask > 0]) - 1)
        assert visible == set(np.flatnonzero(lab))


def test_every_labelled_class_has_min_visible_pixels(fake_fmnist):
    d = _gen(fake_fmnist, n=60, max_objects=4, scale_range=(0.6, 0.9), min_visible=30)
    for mask in d["masks"]:
        counts = np.bincount(mask.ravel(), minlength=11)[1:]
        assert ((counts == 0) | (counts >= 30)).all()


def test_flat_background_with_zero_texture_contrast(fake_fmnist):
    d = _gen(fake_fmnist, n=10, texture_contrast=0.0)
    for img, mask in zip(d["images"], d["masks"], strict=True):
        bg = img[:, mask == 0]
        assert (bg.max(1).astype(int) - bg.min(1) <= 1).all()  # one colour (uint8 rounding)
    d = _gen(fake_fmnist, n=10, texture_contrast=1.0)
    assert any(img[:, m == 0].std() > 5 for img, m in zip(d["images"], d["masks"], strict=True))


@pytest.mark.parametrize("p", [0.0, 0.8])
def test_cooccurrence_rate(fake_fmnist, p):
    n = 1500
    d = _gen(fake_fmnist, n=n, image_size=16, scale_range=(0.5, 0.8), min_visible=4, cooccurrence=p)
    tied = np.array([TEXTURE_NAMES.index(PREFERRED_TEXTURE[c]) for c in FASHION_MNIST_CLASSES])
    rate = (d["texture_ids"] == tied[d["primary_classes"]]).mean()
    expected = p + (1 - p) / len(TEXTURE_NAMES)
    assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_dataset_items_and_tensors(fake_fmnist, tmp_path):
    ds = MFSeg("val", tmp_path, num_val=12, fashion_mnist_dir=fake_fmnist, **SMALL)
    assert len(ds) == 12 and ds.num_classes == 10 and len(ds.class_names) == 10
    item = ds[-1]
    assert item["index"] == 11
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].dtype == torch.int64 and item["labels"].dtype == torch.float32
    images, masks, labels = ds.tensors()
    assert images.dtype == torch.uint8 and images.shape == (12, 3, 32, 32)
    assert torch.equal(masks[11].long(), item["mask"])
    assert torch.equal(labels[11], item["labels"])
    assert torch.allclose(images[11].float() / 255, item["image"])
    with pytest.raises(IndexError):
        ds[12]


def test_cache_written_once_and_reused(fake_fmnist, tmp_path):
    kw = dict(num_train=16, fashion_mnist_dir=fake_fmnist, seed=5, **SMALL)
    first = MFSeg("train", tmp_path, **kw)
    assert not first.cache_hit and first.cache_path.is_file()
    assert first.cache_path.parent == tmp_path
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary file
    mtime = first.cache_path.stat().st_mtime_ns
    second = MFSeg("train", tmp_path, **kw)
    assert second.cache_hit and second.cache_path == first.cache_path
    assert second.cache_path.stat().st_mtime_ns == mtime
    for a, b in zip(first.tensors(), second.tensors(), strict=True):
        assert torch.equal(a, b)
    other = MFSeg("train", tmp_path, **{**kw, "seed": 6})
    assert other.cache_path != first.cache_path and not other.cache_hit
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_cache_dir_from_environment(fake_fmnist, tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(tmp_path))
    ds = MFSeg("val", num_val=4, fashion_mnist_dir=fake_fmnist, **SMALL)
    assert ds.cache_path.parent == tmp_path / "mfseg"


def test_corrupt_cache_is_regenerated(fake_fmnist, tmp_path):
    kw = dict(num_val=8, fashion_mnist_dir=fake_fmnist, **SMALL)
    good = MFSeg("val", tmp_path, **kw)
    good.cache_path.write_bytes(b"not an npz")
    again = MFSeg("val", tmp_path, **kw)
    assert not again.cache_hit
    assert torch.equal(again.tensors()[0], good.tensors()[0])
    assert MFSeg("val", tmp_path, **kw).cache_hit


def test_no_cache_writes_nothing(fake_fmnist, tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(tmp_path))
    ds = MFSeg("val", num_val=4, fashion_mnist_dir=fake_fmnist, cache=False, **SMALL)
    assert ds.cache_path is None and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(split="test"), "split"),
        (dict(num_train=0), "num_samples"),
        (dict(image_size=8), "image_size"),
        (dict(min_objects=3, max_objects=2), "max_objects"),
        (dict(max_objects=65), "max_objects"),
        (dict(scale_range=(0.5, 0.4)), "scale_range"),
        (dict(scale_range=(0.01, 0.5)), "scale_range"),
        (dict(cooccurrence=1.5), "cooccurrence"),
        (dict(texture_contrast=-0.1), "texture_contrast"),
        (dict(min_visible=0), "min_visible"),
        (dict(threshold=255), "threshold"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments_raise(tmp_path, kw, name):
    kw = {"split": "train", **kw}
    with pytest.raises(ValueError, match=name):
        MFSeg(root=tmp_path, cache=False, **kw)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        MFSeg("val", num_val=2, fashion_mnist_dir=tmp_path, cache=False, **SMALL)


def test_numpy_scalars_hash_like_python_numbers(fake_fmnist, tmp_path):
    kw = dict(num_val=4, fashion_mnist_dir=fake_fmnist, **SMALL)
    a = MFSeg("val", tmp_path, seed=2, cooccurrence=0.5, **kw)
    b = MFSeg("val", tmp_path, seed=np.int64(2), cooccurrence=np.float32(0.5), **kw)
    assert b.cache_hit and a.cache_path == b.cache_path


def test_mask_marks_exactly_the_object_pixels(fake_fmnist):
    # With a flat background, pixels of the background colour must be the mask's zeros.
    d = _gen(fake_fmnist, n=20, texture_contrast=0.0, max_objects=3)
    agree = []
    for img, mask in zip(d["images"].astype(int), d["masks"], strict=True):
        bg_colour = img[:, mask == 0][:, :1]
        is_bg = (np.abs(img.reshape(3, -1) - bg_colour).max(0) <= 1).reshape(mask.shape)
        agree.append((is_bg == (mask == 0)).mean())
    assert min(agree) > 0.995

import gzip

import numpy as np
import pytest

from wsss_blocks.data import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    read_idx,
)


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_round_trip(tmp_path, name, idx_writer):
    a = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    idx_writer(tmp_path / name, a)
    np.testing.assert_array_equal(read_idx(tmp_path / name), a)


def test_read_idx_rejects_bad_header_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))  # says 5 items, holds 2
    with pytest.raises(ValueError, match="payload"):
        read_idx(tmp_path / "short.gz")


def test_load_fake_split(fake_fmnist):
    images, labels = load_fashion_mnist("test", fake_fmnist)
    assert images.shape == (100, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))


def test_plain_files_are_found(tmp_path, idx_writer):
    idx_writer(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    idx_writer(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 4], np.uint8))
    assert load_fashion_mnist("test", tmp_path)[1].tolist() == [3, 4]


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist("train", tmp_path)


def test_mismatched_counts_raise(tmp_path, idx_writer):
    idx_writer(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    idx_writer(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="disagree"):
        load_fashion_mnist("test", tmp_path)


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("val")


@pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [1000] * 10
    assert len(FASHION_MNIST_CLASSES) == 10

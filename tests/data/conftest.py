"""Fixtures for the data tests: a tiny synthetic Fashion-MNIST in idx format."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in idx format (gzipped if the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def _fake_split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Filled rectangles of random size/brightness: every image has a clear object.
    labels = np.arange(n) % 10
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        h, w = rng.integers(10, 26, size=2)
        y, x = rng.integers(0, 28 - h + 1), rng.integers(0, 28 - w + 1)
        images[i, y : y + h, x : x + w] = rng.integers(80, 256)
    return images, labels.astype(np.uint8)


@pytest.fixture(scope="session")
def idx_writer():
    """The :func:`write_idx` helper, as a fixture (conftest modules are not importable)."""
    return write_idx


@pytest.fixture(scope="session")
def fake_fmnist(tmp_path_factory) -> Path:
    """A folder with the four idx files (gzipped): 200 train and 100 test images."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 100)):
        images, labels = _fake_split(n, rng)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root

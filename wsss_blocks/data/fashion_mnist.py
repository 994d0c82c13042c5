"""Fashion-MNIST reader (idx format, gzipped or plain).

Fashion-MNIST (Xiao et al., 2017; MIT licence) holds 70,000 real 28×28 grayscale
product photos in 10 classes. The Debian package ``dataset-fashion-mnist`` installs it
under ``/usr/share/datasets/fashion-mnist/``; any directory holding the four standard
idx files works as well.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""The 10 Fashion-MNIST class names, index = label."""

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` puts the idx files."""

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# idx type codes (LeCun's format): 0x08 = unsigned byte is the only one Fashion-MNIST uses.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one idx file (``.gz`` or plain) into a numpy array.

    Args:
        path: file path; a name ending in ``.gz`` is decompressed.
    Returns:
        An array with the dimensions stored in the header, e.g. (N, 28, 28) uint8
        for images or (N,) uint8 for labels.
    Raises:
        ValueError: if the header is not a valid idx header or the payload size does
            not match it.

    Example:
        >>> import tempfile, numpy as np
        >>> raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])  # 1-D uint8, 3 items
        >>> with tempfile.NamedTemporaryFile(suffix="-idx1-ubyte", delete=False) as f:
        ...     _ = f.write(raw)
        >>> read_idx(f.name).tolist()
        [7, 8, 9]
        >>> import os; os.remove(f.name)
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (header bytes {list(data[:4])})")
    ndim = data[3]
    header_len = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header_len != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes), "
            f"but the payload holds {len(data) - header_len} bytes"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header_len)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _find(directory: Path, stem: str) -> Path | None:
    for name in (
        stem + ".gz",
        stem,
        stem.replace("-idx", ".idx") + ".gz",
        stem.replace("-idx", ".idx"),
    ):
        if (directory / name).is_file():
            return directory / name
    return None


def load_fashion_mnist(
    split: str = "train", directory: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one Fashion-MNIST split.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        directory: folder holding the idx files (``train-images-idx3-ubyte[.gz]``,
            ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``); default
            ``/usr/share/datasets/fashion-mnist``.
    Returns:
        ``(images, labels)``: (N, 28, 28) uint8 in [0, 255] and (N,) int64 in [0, 9].
    Raises:
        ValueError: if ``split`` is unknown or the files disagree on N.
        FileNotFoundError: if the files are missing; the message says how to install
            them (``apt-get install dataset-fashion-mnist``).
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = Path(directory) if directory is not None else DEFAULT_FASHION_MNIST_DIR
    paths = [_find(directory, stem) for stem in _FILES[split]]
    if any(p is None for p in paths):
        missing = [s for s, p in zip(_FILES[split], paths, strict=True) if p is None]
        raise FileNotFoundError(
            f"Fashion-MNIST idx files {missing} (optionally .gz) not found in {directory}. "
            "On Debian/Ubuntu install them with `apt-get update && apt-get install -y "
            "dataset-fashion-mnist` (files go to /usr/share/datasets/fashion-mnist/), or pass "
            "fashion_mnist_dir= a folder holding the four standard idx files."
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Fashion-MNIST {split} files disagree: images {images.shape}, labels {labels.shape}"
        )
    return images.astype(np.uint8), labels.astype(np.int64)

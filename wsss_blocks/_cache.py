"""The on-disk cache shared by the generated data sets and the saliency maps.

Files are ``.npz`` archives under ``$WSSS_BLOCKS_CACHE/<kind>`` (default
``~/.cache/wsss_blocks/<kind>``), named by a hash of everything that determines their
content, written atomically (a reader never sees half a file) and recomputed when
unreadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir(kind: str, root: str | os.PathLike | None = None) -> Path:
    """Folder of one kind of cached file: ``root`` if given, else
    ``$WSSS_BLOCKS_CACHE/<kind>``, else ``~/.cache/wsss_blocks/<kind>`` (not created)."""
    if root is not None:
        return Path(root)
    env = os.environ.get("WSSS_BLOCKS_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "wsss_blocks") / kind


def cache_key(params: dict[str, Any], *blobs: bytes) -> str:
    """16 hex characters of SHA-256 over ``params`` (as sorted JSON; tuples as lists) and
    any raw ``blobs`` (e.g. the input images' bytes)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=list).encode())
    for blob in blobs:
        digest.update(blob)
    return digest.hexdigest()[:16]


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of ``path``; None if it is missing or unreadable (then recompute it)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return {key: z[key] for key in z.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)  # atomic on POSIX
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

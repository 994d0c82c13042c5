"""Lazy, failure-tolerant loading of the compiled kernels ``wsss_blocks._C``.

``import wsss_blocks`` never loads the library: the first CSC call does, so a missing or
broken build costs one warning and the pure-PyTorch fallback, never an import error. The
op schemas, fake kernels and autograd live in :mod:`wsss_blocks.ops.contrastive` and exist
without the library; loading it only adds the CPU (and CUDA) kernels.
Set ``WSSS_BLOCKS_NO_EXTENSION=1`` to force the fallback.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

_STATE: dict = {"tried": False, "module": None, "error": None}

_HOW_TO_BUILD = (
    "From a source checkout: `pip install --no-build-isolation -e .`; from PyPI, build "
    "against your installed torch: `pip install --no-build-isolation --no-binary "
    "wsss-blocks --force-reinstall --no-deps wsss-blocks` (FORCE_CUDA=1 for the CUDA kernel)"
)
"""How a user gets the compiled kernels; named by every message about a missing build."""


def load_extension() -> ModuleType | None:
    """Import ``wsss_blocks._C`` once; None if it is unavailable or disabled.

    Returns:
        The extension module, whose ``kernel_devices`` attribute is a comma-separated list
        of the device types it has kernels for (``"cpu"`` or ``"cpu,cuda"``), or None.
    Warns:
        RuntimeWarning: once, on the first failure, naming the cause and how to build.
    """
    if _STATE["tried"]:
        return _STATE["module"]
    _STATE["tried"] = True
    try:
        if os.environ.get("WSSS_BLOCKS_NO_EXTENSION", "0") == "1":
            raise ImportError("disabled by WSSS_BLOCKS_NO_EXTENSION=1")
        extension = importlib.import_module("wsss_blocks._C")  # deliberately lazy
    except (ImportError, OSError, RuntimeError) as err:  # RuntimeError: a stale build
        _STATE["error"] = f"{type(err).__name__}: {err}"
        warnings.warn(
            "wsss_blocks: the compiled CSC kernels (wsss_blocks._C) are not available "
            f"({_STATE['error']}); contrastive_separation_loss falls back to the pure-PyTorch "
            f"reference, which needs O(N^2) memory. {_HOW_TO_BUILD}.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    _STATE["module"] = extension
    return extension


def extension_error() -> str | None:
    """Why the extension failed to load (None if it loaded or was not tried yet)."""
    return _STATE["error"]


def how_to_build() -> str:
    """The one-line instruction for building the compiled kernels."""
    return _HOW_TO_BUILD

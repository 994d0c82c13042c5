"""Lazy, failure-tolerant loading of the compiled extension ``wsss_blocks._C``.

``import wsss_blocks`` never imports the extension: the first CSC call does, so a missing
or broken build costs one warning and the pure-PyTorch fallback, never an import error.
Set ``WSSS_BLOCKS_NO_EXTENSION=1`` to force the fallback (used by tests).
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

_STATE: dict = {"tried": False, "module": None, "error": None}


def load_extension() -> ModuleType | None:
    """Import ``wsss_blocks._C`` once and register its Python side; None if unavailable.

    The first failure emits one :class:`RuntimeWarning` naming the cause; later calls are
    silent and return the cached result.
    """
    if _STATE["tried"]:
        return _STATE["module"]
    _STATE["tried"] = True
    try:
        if os.environ.get("WSSS_BLOCKS_NO_EXTENSION", "0") == "1":
            raise ImportError("disabled by WSSS_BLOCKS_NO_EXTENSION=1")
        from wsss_blocks import _C  # noqa: PLC0415 - deliberately lazy
    except (ImportError, OSError) as err:
        _STATE["error"] = f"{type(err).__name__}: {err}"
        warnings.warn(
            "wsss_blocks: the compiled CSC operator (wsss_blocks._C) is not available "
            f"({_STATE['error']}); contrastive_separation_loss falls back to the pure-PyTorch "
            "reference, which needs O(N^2) memory. Build it with "
            "`pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    from wsss_blocks.ops import contrastive  # noqa: PLC0415 - registers fake/autograd

    contrastive.register_python_side()
    _STATE["module"] = _C
    return _C


def extension_error() -> str | None:
    """Why the extension failed to load (None if it loaded or was not tried yet)."""
    return _STATE["error"]

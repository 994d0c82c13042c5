"""Input validation shared by every block.

Each helper raises :class:`ValueError` whose message names the argument and shows
what was received, so a user sees at once which tensor is wrong and how.
Nothing here clamps or repairs input.

Checks of shape, rank and dtype are always on. Checks that read tensor values (finite,
in range, label values) make the host wait for the device, so a CUDA training loop
can switch them off with :func:`set_data_checks` (or ``WSSS_BLOCKS_DATA_CHECKS=0`` in
the environment), in the manner of kornia's ``KORNIA_CHECKS``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch

IGNORE_INDEX = 255
"""Label value that marks pixels excluded from losses and metrics."""

BACKGROUND_INDEX = 0
"""Label value of the background class in segmentation labels (classes are 1..C)."""

_DATA_CHECKS = os.environ.get("WSSS_BLOCKS_DATA_CHECKS", "1") != "0"


def set_data_checks(enabled: bool) -> bool:
    """Switch the library's data-dependent input checks on or off, for every block.

    With them off, blocks no longer verify that tensors are finite, lie in their range
    or hold valid label values (each such check reads values, which makes the host wait
    for a GPU); shape, rank and dtype are still checked. Bad values then give wrong
    results instead of a ValueError: switch off only inputs you trust, e.g. in a tested
    CUDA training loop. The default is on (``WSSS_BLOCKS_DATA_CHECKS=0`` starts off).

    Args:
        enabled: True to check values, False to skip those checks.
    Returns:
        The previous setting, so a caller can restore it.
    Raises:
        TypeError: if ``enabled`` is not a bool.
    """
    global _DATA_CHECKS
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    previous, _DATA_CHECKS = _DATA_CHECKS, enabled
    return previous


@contextlib.contextmanager
def inputs_checked() -> Iterator[None]:
    """Within the block the data checks are off: a module that has checked its input
    runs its sub-modules on derived tensors without checking their values again."""
    global _DATA_CHECKS
    previous, _DATA_CHECKS = _DATA_CHECKS, False
    try:
        yield
    finally:
        _DATA_CHECKS = previous


def data_checks_enabled() -> bool:
    """Whether the data-dependent input checks are on (see :func:`set_data_checks`)."""
    return _DATA_CHECKS


def reads_values(t: torch.Tensor) -> bool:
    """Whether a data-dependent check should read ``t``: checks are on and ``t`` has
    values to read (not empty, not on the meta device, where only shapes exist)."""
    return _DATA_CHECKS and t.numel() > 0 and t.device.type != "meta"


def check_tensor(name: str, value: object) -> torch.Tensor:
    """Raise unless ``value`` is a tensor; return it."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_ndim(name: str, t: torch.Tensor, ndim: int, layout: str) -> None:
    """Raise unless ``t`` has ``ndim`` dimensions; ``layout`` names them, e.g. "(B, C, h, w)"."""
    check_tensor(name, t)
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(t.shape)}")


def check_float(name: str, t: torch.Tensor) -> None:
    """Raise unless ``t`` has a floating dtype."""
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise if ``t`` holds NaN or ±inf (this synchronises with the device); skipped
    when data checks are off."""
    if not (t.is_floating_point() and reads_values(t)):
        return
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"{name} must be finite, but it contains NaN or inf")


def check_image_batch(name: str, t: torch.Tensor, layout: str = "(B, 3, H, W)") -> None:
    """Raise unless ``t`` is a 4-D floating, finite tensor (the input of a network):
    uint8 images get a hint to convert them; finiteness is a data check."""
    check_ndim(name, t, 4, layout)
    if t.dtype == torch.uint8:
        raise ValueError(f"{name} must be a floating-point tensor, got uint8 images; convert "
                         f"them first, e.g. {name}.float() / 255")  # fmt: skip
    check_float(name, t)
    check_finite(name, t)


def check_range(name: str, t: torch.Tensor, low: float, high: float) -> None:
    """Raise unless every value of ``t`` lies in ``[low, high]`` (and is finite);
    skipped when data checks are off."""
    if not reads_values(t):
        return
    check_finite(name, t)
    lo, hi = float(t.detach().min()), float(t.detach().max())
    if lo < low or hi > high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got values in [{lo:.4g}, {hi:.4g}]")


def check_same_batch(names: Sequence[str], *tensors: torch.Tensor) -> None:
    """Raise unless all tensors share their first (batch) dimension."""
    sizes = [t.shape[0] for t in tensors]
    if len(set(sizes)) > 1:
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(names, tensors, strict=False))
        raise ValueError(f"batch sizes differ: {shapes}")


def check_labels(name: str, labels: torch.Tensor, num_classes: int) -> None:
    """Raise unless ``labels`` is a (B, C) multi-hot tensor of 0/1 with C = ``num_classes``."""
    check_ndim(name, labels, 2, "(B, C) multi-hot image labels")
    if labels.shape[1] != num_classes:
        raise ValueError(
            f"{name} must have {num_classes} classes in dim 1, got shape {tuple(labels.shape)}"
        )
    if reads_values(labels) and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"{name} must be multi-hot (only 0 and 1), got other values")


def check_label_map(
    name: str, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> None:
    """Raise unless ``target`` is integer with values in [0, num_classes) or ``ignore_index``."""
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {target.dtype}")
    if reads_values(target):
        bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
        if bool(bad.any()):
            v = int(target[bad][0])
            raise ValueError(
                f"{name} values must lie in [0, {num_classes - 1}] or be {ignore_index}, got {v}"
            )


def check_nonnegative(name: str, t: torch.Tensor, strict: bool = False) -> None:
    """Raise unless every value of ``t`` is >= 0 (> 0 with ``strict``); skipped when
    data checks are off."""
    if reads_values(t):
        low = float(t.detach().min())
        if low < 0 or (strict and low == 0):
            raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'} everywhere, "
                             f"got a value {low:.4g}")  # fmt: skip


def check_positive(name: str, value: float) -> None:
    """Raise unless ``value`` is a finite number > 0."""
    if not (isinstance(value, (int, float)) and value > 0 and value < float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_open_unit(name: str, value: float | torch.Tensor) -> None:
    """Raise unless ``value`` (a number or a 0-d tensor) lies strictly inside (0, 1); a
    tensor's value is not read when data checks are off."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a number or a 1-element tensor, got shape {tuple(value.shape)}"
            )
        if not reads_values(value):
            return
        value = float(value.detach())
    v = value
    if not (isinstance(v, (int, float)) and 0.0 < v < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {v!r}")


def check_int(name: str, value: object, minimum: int) -> None:
    """Raise unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_interval(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    left_open: bool = False,
    right_open: bool = False,
) -> None:
    """Raise unless ``value`` is a number (not a bool) in the interval from ``low`` to
    ``high``, each end closed unless ``left_open`` / ``right_open``."""
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (low < value if left_open else low <= value)
        and (value < high if right_open else value <= high)
    )
    if not ok:
        brackets = ("(" if left_open else "[", ")" if right_open else "]")
        raise ValueError(
            f"{name} must lie in {brackets[0]}{low}, {high}{brackets[1]}, got {value!r}"
        )


def check_unit_map(name: str, t: torch.Tensor, layout: str) -> None:
    """Raise unless ``t`` is a 3-D float map (``layout``, e.g. "(B, H, W)") in [0, 1]."""
    check_ndim(name, t, 3, layout)
    check_float(name, t)
    check_range(name, t, 0.0, 1.0)

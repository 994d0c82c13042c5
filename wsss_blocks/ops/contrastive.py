"""Python face of the fused CSC operator: schemas, fake kernels, autograd and dispatch.

The schemas are defined here, so the ops, their fake (meta) kernels and their autograd
formula exist whether or not the compiled library is present; ``wsss_blocks._C``
(csrc/, loaded lazily by :mod:`wsss_blocks.ops._extension`) adds the CPU and CUDA kernels:

- ``wsss_blocks::csc_forward(Tensor x, Tensor labels, float tau) -> (loss, nu, g, count)``
- ``wsss_blocks::_csc_backward(Tensor grad, Tensor x, Tensor labels, Tensor nu, Tensor g,
  Tensor count, float tau) -> Tensor`` (private, as torchvision names its backward ops)

where ``x`` holds L2-normalised rows; ``nu`` (ν, log-sum-exp over negatives), ``g`` (mean
sigmoid over positives) and ``count`` (positives per anchor) are the O(N) statistics the
recomputing backward needs. The op works under autograd, ``torch.compile`` and
``torch.library.opcheck``.
"""

from __future__ import annotations

import torch

from wsss_blocks.ops._extension import extension_error, how_to_build, load_extension
from wsss_blocks.ops.reference import accumulation_dtype, normalize_rows

MAX_KERNEL_DIM = 1024
"""Largest feature dimension D the compiled kernels accept."""

torch.library.define(
    "wsss_blocks::csc_forward",
    "(Tensor x, Tensor labels, float tau) -> (Tensor, Tensor, Tensor, Tensor)",
)
torch.library.define(
    "wsss_blocks::_csc_backward",
    "(Tensor grad, Tensor x, Tensor labels, Tensor nu, Tensor g, Tensor count, float tau)"
    " -> Tensor",
)


def _check_op_inputs(x: torch.Tensor, labels: torch.Tensor) -> None:
    """The shape contract the compiled kernels check, for the fake kernels (symbolic-safe)."""
    torch._check(x.dim() == 2, lambda: f"csc: features must be (N, D), got {tuple(x.shape)}")
    torch._check(
        1 <= x.shape[1] <= MAX_KERNEL_DIM,
        lambda: f"csc: features must have 1 <= D <= {MAX_KERNEL_DIM}, got {tuple(x.shape)}",
    )
    torch._check(
        labels.dim() == 1 and labels.shape[0] == x.shape[0],
        lambda: f"csc: labels must be (N,) with N = {x.shape[0]}, got {tuple(labels.shape)}",
    )


@torch.library.register_fake("wsss_blocks::csc_forward")
def _forward_fake(x, labels, tau):
    _check_op_inputs(x, labels)
    stat = x.new_empty((x.shape[0],), dtype=accumulation_dtype(x.dtype))
    return x.new_empty(()), stat, torch.empty_like(stat), torch.empty_like(stat)


@torch.library.register_fake("wsss_blocks::_csc_backward")
def _backward_fake(grad, x, labels, nu, g, count, tau):
    _check_op_inputs(x, labels)
    torch._check(grad.dim() == 0, lambda: f"csc: grad must be 0-d, got {tuple(grad.shape)}")
    for stat in (nu, g, count):
        torch._check(
            stat.shape == (x.shape[0],),
            lambda shape=tuple(stat.shape): f"csc: nu, g, count must be (N,), got {shape}",
        )
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, labels, tau = inputs
    _, nu, g, count = output
    ctx.save_for_backward(x, labels, nu, g, count)
    ctx.tau = tau


def _backward(ctx, grad_loss, _grad_nu, _grad_g, _grad_count):
    x, labels, nu, g, count = ctx.saved_tensors
    grad_x = torch.ops.wsss_blocks._csc_backward(grad_loss, x, labels, nu, g, count, ctx.tau)
    return grad_x, None, None


torch.library.register_autograd(
    "wsss_blocks::csc_forward", _backward, setup_context=_setup_context
)


@torch.compiler.assume_constant_result
def _kernel_devices() -> str:
    """Comma-separated device types with a compiled CSC kernel ("" if none).

    Cheap in eager mode; under ``torch.compile`` it runs at trace time and its result is a
    constant of the graph, so the dispatch below never breaks a graph.
    """
    ext = load_extension()
    return "" if ext is None else ext.kernel_devices


def csc_implementation(device: str | torch.device = "cpu") -> str:
    """Which CSC implementation ``impl="auto"`` uses on ``device``.

    Loads the extension on first use (one warning if it is missing).

    Args:
        device: a device or its name, e.g. ``"cpu"`` or ``"cuda:0"``.
    Returns:
        ``"kernel-cpu"``, ``"kernel-cuda"`` or ``"reference"``.
    Example:
        >>> csc_implementation("cpu") in ("kernel-cpu", "reference")
        True
    """
    device_type = torch.device(device).type
    if device_type in _kernel_devices().split(","):
        return f"kernel-{device_type}"
    return "reference"


def resolve_csc_impl(impl: str, features: torch.Tensor) -> str:
    """Map ``impl`` ("auto" | "kernel" | "reference") to "kernel" or "reference".

    Raises:
        ValueError: unknown ``impl``, or ``impl="kernel"`` with D > :data:`MAX_KERNEL_DIM`.
        RuntimeError: ``impl="kernel"`` but no compiled kernel exists for the device.
    """
    if impl not in ("auto", "kernel", "reference"):
        raise ValueError(f"impl must be 'auto', 'kernel' or 'reference', got {impl!r}")
    if impl == "reference":
        return "reference"
    dim_ok = features.shape[1] <= MAX_KERNEL_DIM
    available = csc_implementation(features.device) != "reference"
    if impl == "auto":
        return "kernel" if (available and dim_ok) else "reference"
    if not dim_ok:
        raise ValueError(
            f"impl='kernel' supports D <= {MAX_KERNEL_DIM}, got features of shape "
            f"{tuple(features.shape)}; use impl='reference' or 'auto'"
        )
    if not available:
        why = extension_error() or "the extension has no kernel for this device"
        raise RuntimeError(
            f"impl='kernel' requested for {features.device.type} tensors but the compiled "
            f"CSC operator is unavailable ({why}). {how_to_build()}."
        )
    return "kernel"


def contrastive_separation_loss_kernel(
    features: torch.Tensor, labels: torch.Tensor, tau: float
) -> torch.Tensor:
    """CSC loss through the fused operator (inputs assumed validated).

    Normalises rows in PyTorch (:func:`normalize_rows`, in float32/float64), sorts anchors by
    label so both kernel passes skip whole tiles, and calls ``wsss_blocks::csc_forward``.

    Args:
        features: (N, D) float features, N ≥ 1, 1 ≤ D ≤ 1024.
        labels: (N,) int64 labels on the same device.
        tau: temperature τ > 0.
    Returns:
        0-d loss in ``features.dtype``.
    Raises:
        RuntimeError: no compiled kernel for ``features``' device.
    """
    if features.device.type not in _kernel_devices().split(","):
        raise RuntimeError(
            f"no compiled CSC kernel for {features.device.type} tensors "
            f"({extension_error() or 'not built for this device'})"
        )
    x = normalize_rows(features)
    order = torch.argsort(labels, stable=True)
    loss, _, _, _ = torch.ops.wsss_blocks.csc_forward(x[order], labels[order], float(tau))
    return loss.to(features.dtype)

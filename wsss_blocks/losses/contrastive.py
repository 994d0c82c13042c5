"""Contrastive separation (CSC) loss of CoSA, Eqs. (9)–(10)."""

from __future__ import annotations

import torch

from wsss_blocks._checks import (
    IGNORE_INDEX,
    check_finite,
    check_float,
    check_ndim,
    check_positive,
)
from wsss_blocks.ops.contrastive import contrastive_separation_loss_kernel, resolve_csc_impl
from wsss_blocks.ops.reference import contrastive_separation_loss_reference


def _check_inputs(features: torch.Tensor, labels: torch.Tensor, tau: float) -> None:
    check_ndim("features", features, 2, "(N, D)")
    check_float("features", features)
    if features.shape[1] < 1:
        raise ValueError(f"features must have D >= 1 channels, got shape {tuple(features.shape)}")
    check_ndim("labels", labels, 1, "(N,)")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor (int64), got dtype {labels.dtype} "
            f"and shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != features.shape[0]:
        raise ValueError(
            "labels must have one entry per row of features: got features "
            f"{tuple(features.shape)} and labels {tuple(labels.shape)}"
        )
    if labels.device != features.device:
        raise ValueError(
            f"labels must be on features' device {features.device}, got {labels.device}"
        )
    check_positive("tau", tau)
    if not torch.compiler.is_compiling():  # a data-dependent check would break the graph
        check_finite("features", features)


def contrastive_separation_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    tau: float = 0.1,
    impl: str = "auto",
    ignore_index: int | None = IGNORE_INDEX,
) -> torch.Tensor:
    """Contrastive separation loss L_csc of CoSA over a set of anchors.

    .. math::
        s_{ij} = \\cos(x_i, x_j)/\\tau,\\qquad
        \\ell_i = \\frac{1}{|R^+_i|}\\sum_{p \\in R^+_i}
            -\\log\\frac{e^{s_{ip}}}{e^{s_{ip}} + \\sum_{n \\in R^-_i} e^{s_{in}}}
          = \\frac{1}{|R^+_i|}\\sum_{p \\in R^+_i}\\operatorname{softplus}(\\nu_i - s_{ip}),
        \\qquad \\nu_i = \\log\\sum_{n \\in R^-_i} e^{s_{in}}

    R⁺ᵢ are the other anchors with label yᵢ, R⁻ᵢ the anchors with another label. L is the
    mean of ℓᵢ over anchors with at least one positive. An anchor without negatives has
    ℓᵢ = 0; if no anchor has a positive (or N = 0) the loss is 0 with zero gradient.
    Rows are L2-normalised first; a row with norm ≤ 1e-12
    (:data:`wsss_blocks.ops.reference.NORM_EPS`, e.g. an all-zero CAM vector) counts as the
    zero vector: cosine 0 with every row, zero gradient, never NaN.

    Args:
        features: (N, D) float features of the N anchors, any floating dtype; for CoSA the
            online network's last-layer CAM vectors at anchor pixels (D = C foreground
            classes). Must be finite.
        labels: (N,) integer anchor labels (int64 preferred; any ids); for CoSA the CPL
            of the early-layer CAM at the anchors.
        tau: temperature τ, a finite number > 0. The paper gives none; 0.1 is our choice.
        impl: ``"auto"`` (the fused O(N)-memory kernel when compiled for the device and
            D ≤ 1024, else the reference), ``"kernel"`` (raise if unavailable) or
            ``"reference"`` (dense N×N PyTorch). See
            :func:`wsss_blocks.ops.csc_implementation`.
        ignore_index: rows labelled so (the library's ignore value 255) are left out,
            as if absent; None keeps every row. Selecting rows reads the labels (on
            CUDA a host synchronisation); pass None for labels without that value, and
            inside ``torch.compile``.
    Returns:
        0-d loss ≥ 0 in ``features.dtype`` (accumulated in float32, float64 for float64).
    Raises:
        ValueError: features not 2-D float with D ≥ 1, non-finite features, labels not 1-D
            integer, N mismatch, devices differ, tau ≤ 0 or non-finite, unknown impl, or
            impl="kernel" with D > 1024, ignore_index set inside torch.compile
            (messages show the shapes received). The
            finiteness check is skipped inside ``torch.compile`` (it needs the data).
        RuntimeError: impl="kernel" but the compiled operator is missing.
    Example:
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> y = torch.tensor([0, 0, 1, 1])
        >>> loss = contrastive_separation_loss(x, y, tau=1.0, impl="reference")
        >>> round(float(loss), 4)
        0.5978

    Reference:
        Yang et al., CoSA, ECCV 2024, Eqs. (9)–(10).
    """
    _check_inputs(features, labels, tau)
    if ignore_index is not None and features.device.type != "meta":
        if torch.compiler.is_compiling():
            raise ValueError("ignore_index must be None inside torch.compile: selecting "
                             "rows has a data-dependent shape; drop ignored rows before "
                             "the call")  # fmt: skip
        keep = labels != ignore_index
        features, labels = features[keep], labels[keep]
    if features.shape[0] == 0:
        return features.sum() * 0.0  # zero, still connected to the graph
    if resolve_csc_impl(impl, features) == "reference":
        return contrastive_separation_loss_reference(features, labels, tau)
    return contrastive_separation_loss_kernel(features, labels.long(), tau)

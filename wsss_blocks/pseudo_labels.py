"""Pseudo-labels and their reliability: CPL (Eq. 3), perplexity (Eq. 4), RAW weights
(Eq. 5) and SPL (Eq. 7) from CoSA (Yang et al., ECCV 2024), and the CAM + saliency
pseudo-label of AuxSegNet (Xu et al., ICCV 2021)."""

from __future__ import annotations

import torch

from ._checks import (
    IGNORE_INDEX,
    check_finite,
    check_float,
    check_labels,
    check_ndim,
    check_nonnegative,
    check_open_unit,
    check_positive,
    check_range,
    check_unit_map,
    reads_values,
)
from .utils import upsample


def _check_cam(cam: torch.Tensor, labels: torch.Tensor) -> None:
    check_ndim("cam", cam, 4, "(B, C, h, w)")
    check_float("cam", cam)
    check_range("cam", cam, 0.0, 1.0)
    check_labels("labels", labels, cam.shape[1])
    if labels.shape[0] != cam.shape[0]:
        raise ValueError(f"labels batch {labels.shape[0]} differs from cam batch {cam.shape[0]}")


def cam_confidence(cam: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel CAM confidence ν = max_c M^c over present classes, and the argmax class.

    Args:
        cam: normalised CAM, (B, C, h, w) float in [0, 1], C foreground classes.
        labels: (B, C) multi-hot image labels; absent classes are ignored.
    Returns:
        ``(nu, cls)``: ν (B, h, w) float in [0, 1] and the arg-max class (B, h, w) int64
        in 1..C (foreground indices, background = 0 is never returned).
    Raises:
        ValueError: on bad shapes, values outside [0, 1] or non-multi-hot labels.

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (3).
    """
    _check_cam(cam, labels)
    masked = cam * labels.to(cam.dtype)[:, :, None, None]
    nu, idx = masked.max(dim=1)
    return nu, idx + 1


def cam_to_cpl(cam: torch.Tensor, labels: torch.Tensor, threshold: float | torch.Tensor):
    """CAM pseudo-label (CPL) with one threshold ξ.

    .. math:: \\hat Y^{CPL}_{x,y} = \\begin{cases} \\arg\\max_c M'^c_{x,y} + 1 &
              \\nu_{x,y} \\ge \\xi \\\\ 0 & \\text{otherwise} \\end{cases}

    Args:
        cam: AN's normalised CAM M', (B, C, h, w) float in [0, 1].
        labels: (B, C) multi-hot image labels; only present classes can be assigned.
        threshold: ξ in (0, 1), a float or 0-d tensor (e.g. from the threshold searcher).
    Returns:
        (B, h, w) int64: 0 background, 1..C foreground classes.
    Raises:
        ValueError: on bad shapes/values, or ``threshold`` outside (0, 1).
    Example:
        >>> cam = torch.tensor([[[[0.9, 0.2]], [[0.1, 0.4]]]])
        >>> cam_to_cpl(cam, torch.tensor([[1.0, 1.0]]), 0.3)
        tensor([[[1, 2]]])

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (3).
    """
    check_open_unit("threshold", threshold)
    nu, cls = cam_confidence(cam, labels)
    return torch.where(nu >= threshold, cls, torch.zeros_like(cls))


def cam_to_cpl_dual(
    cam: torch.Tensor,
    labels: torch.Tensor,
    low: float | torch.Tensor = 0.25,
    high: float | torch.Tensor = 0.7,
) -> torch.Tensor:
    """CAM pseudo-label with two thresholds and an ignore band (official CoSA code).

    Foreground class where ν ≥ ``high``, background where ν < ``low``, 255 (ignore)
    in between.

    Args:
        cam: normalised CAM, (B, C, h, w) float in [0, 1].
        labels: (B, C) multi-hot image labels.
        low: lower threshold in (0, 1); official 0.25.
        high: upper threshold in (0, 1), ≥ ``low``; official 0.7.
    Returns:
        (B, h, w) int64 in {0, 1..C, 255}.
    Raises:
        ValueError: on bad shapes/values or ``low`` > ``high``.
    Example:
        >>> cam = torch.tensor([[[[0.9, 0.5, 0.1]]]])
        >>> cam_to_cpl_dual(cam, torch.tensor([[1.0]]), 0.25, 0.7)
        tensor([[[  1, 255,   0]]])

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (3); official release (bkg/fg thresholds).
    """
    check_open_unit("low", low)
    check_open_unit("high", high)
    if all(not isinstance(v, torch.Tensor) or reads_values(v) for v in (low, high)):
        if float(low) > float(high):
            raise ValueError(f"low must be <= high, got low={float(low)}, high={float(high)}")
    nu, cls = cam_confidence(cam, labels)
    cpl = torch.full_like(cls, IGNORE_INDEX)
    cpl = torch.where(nu >= high, cls, cpl)
    return torch.where(nu < low, torch.zeros_like(cls), cpl)


def perplexity(
    confidence: torch.Tensor,
    threshold: float | torch.Tensor,
    alpha: float = 0.8,
    beta: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Per-pixel CPL perplexity from the distance of ν to the threshold ξ.

    .. math:: d = \\begin{cases} (\\nu - \\xi) / (1 - \\xi) & \\nu \\ge \\xi \\\\
              (\\xi - \\nu) / \\xi & \\nu < \\xi \\end{cases}, \\qquad
              \\mathcal P = (-\\log(\\lambda_\\alpha \\max(d, \\epsilon)))^{\\lambda_\\beta}

    d is the normalised distance in [0, 1]. P grows without bound as d → 0, so d is
    floored at ``eps`` (default 1e-4, giving P ≤ −log(0.8e-4) ≈ 9.4 at λβ = 1). The
    minimum, at d = 1, is (−log λα)^λβ ≈ 0.223 for λα = 0.8.

    Args:
        confidence: ν, any shape, float in [0, 1] (e.g. from :func:`cam_confidence`).
        threshold: ξ in (0, 1), a float or 0-d tensor.
        alpha: λα in (0, 1): sets the minimum perplexity (CoSA: 0.8).
        beta: λβ > 0: sharpness (CoSA: 1).
        eps: floor of d, in (0, 1).
    Returns:
        Tensor of ``confidence``'s shape and dtype, values in [(−log λα)^λβ,
        (−log(λα·eps))^λβ].
    Raises:
        ValueError: if ``confidence`` is outside [0, 1] or not float, or a parameter is
            out of range.
    Example:
        >>> perplexity(torch.tensor([1.0, 0.0]), 0.5)
        tensor([0.2231, 0.2231])

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (4).
    """
    check_float("confidence", confidence)
    check_range("confidence", confidence, 0.0, 1.0)
    check_open_unit("threshold", threshold)
    check_open_unit("alpha", alpha)
    check_positive("beta", beta)
    check_open_unit("eps", eps)
    xi = torch.as_tensor(threshold, dtype=confidence.dtype, device=confidence.device)
    above = confidence >= xi
    d = torch.where(above, (confidence - xi) / (1 - xi), (xi - confidence) / xi)
    return (-torch.log(alpha * d.clamp_min(eps))) ** beta


def raw_weights(perplexity: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Reliability-based adaptive weights (RAW): normalised reliability 1/P.

    .. math:: w_{x,y} = \\frac{\\mathcal P_{x,y}^{-1}}
              {\\frac{1}{|R|}\\sum_{(i,j) \\in R} \\mathcal P_{i,j}^{-1}}

    Eq. (5) as printed reads as if the weight were proportional to P; the text
    ("normalised reliability as per-pixel weights") and Fig. 9 mean 1/P, which we
    follow: uncertain pixels (ν near ξ, high P) get small weights. The weights average
    to 1 over the valid pixels R of the whole batch and are returned detached.

    Args:
        perplexity: P, any shape, float, finite and > 0 (e.g. from :func:`perplexity`).
        valid: optional bool mask of the same shape; invalid pixels get weight 0 and
            are excluded from the mean. If nothing is valid all weights are 0.
    Returns:
        Detached weights, same shape and dtype as ``perplexity``, ≥ 0, mean over valid = 1.
    Raises:
        ValueError: if ``perplexity`` is not float, not finite, has values ≤ 0, or
            ``valid`` has another shape.
    Example:
        >>> raw_weights(torch.tensor([1.0, 3.0]))
        tensor([1.5000, 0.5000])

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (5) and Sec. 3.2 (RAW).
    """
    check_float("perplexity", perplexity)
    check_finite("perplexity", perplexity)
    check_nonnegative("perplexity", perplexity, strict=True)
    reliability = perplexity.detach().reciprocal()
    if valid is None:
        valid = torch.ones_like(reliability, dtype=torch.bool)
    elif valid.shape != perplexity.shape:
        raise ValueError(
            f"valid must have perplexity's shape {tuple(perplexity.shape)}, "
            f"got {tuple(valid.shape)}"
        )
    elif valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool mask, got dtype {valid.dtype}")
    reliability = reliability * valid
    count = valid.sum()
    mean = reliability.sum() / count.clamp_min(1)
    return torch.where(count > 0, reliability / mean.clamp_min(1e-12), reliability)


def seg_to_spl(
    seg_logits: torch.Tensor,
    labels: torch.Tensor,
    tau: float = 0.01,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Segmentation pseudo-label (SPL): sharpened softmax of the AN's segmentation logits.

    .. math:: \\hat Y^{SPL} = \\mathrm{softmax}(S' / \\tau), \\quad S'^c = -\\infty
              \\text{ for classes absent from the image label}

    Background (channel 0) is always kept. Classes absent from ``labels`` get exactly 0.

    Args:
        seg_logits: S', (B, C+1, h, w) float logits, channel 0 = background.
        labels: (B, C) multi-hot image labels (foreground classes only).
        tau: temperature τ > 0 (CoSA: 0.01).
        size: optional (h', w') to resize the logits to first (bilinear), e.g. the CAM
            grid, so SPL aligns with the CAM it supervises.
    Returns:
        (B, C+1, h, w) (or ``size``) float probabilities summing to 1 over channels,
        detached (SPL is a target).
    Raises:
        ValueError: on bad shapes, non-finite logits, mismatched batch/classes, τ ≤ 0.
    Example:
        >>> s = torch.tensor([[[[0.0]], [[1.0]], [[5.0]]]])
        >>> seg_to_spl(s, torch.tensor([[1.0, 0.0]])).flatten().round(decimals=4)
        tensor([0., 1., 0.])

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (7).
    """
    check_ndim("seg_logits", seg_logits, 4, "(B, C+1, h, w)")
    check_float("seg_logits", seg_logits)
    check_range("seg_logits", seg_logits, float("-inf"), float("inf"))
    check_labels("labels", labels, seg_logits.shape[1] - 1)
    if labels.shape[0] != seg_logits.shape[0]:
        raise ValueError(
            f"labels batch {labels.shape[0]} differs from seg_logits batch {seg_logits.shape[0]}"
        )
    check_positive("tau", tau)
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (h, w) with positive sides, got {size!r}")
    logits = seg_logits.detach()
    if size is not None:
        logits = upsample(logits, size)
    keep = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1).bool()
    logits = logits.masked_fill(~keep[:, :, None, None], float("-inf"))
    return torch.softmax(logits / tau, dim=1)


def fuse_cam_saliency(
    cam: torch.Tensor,
    labels: torch.Tensor,
    saliency: torch.Tensor,
    cam_threshold: float = 0.2,
    saliency_threshold: float = 0.3,
    background: str = "agree",
    single_class_fill: bool = False,
) -> torch.Tensor:
    """Segmentation pseudo-label from CAM classes and a saliency foreground.

    With ν = max over present classes of the CAM and s the saliency, per pixel:

    ===========  ===========  =============================
    ν ≥ t_cam    s ≥ t_sal    label
    ===========  ===========  =============================
    yes          yes          argmax class (1..C)
    no           no           0 (background)
    yes          no           255 (ignore: they disagree)
    no           yes          255 (ignore: they disagree)
    ===========  ===========  =============================

    with t_cam = ``cam_threshold`` and t_sal = ``saliency_threshold``. Two common
    variants of saliency-guided WSSS are options: ``background="saliency"`` makes every
    non-salient pixel background (row 3 becomes 0), and ``single_class_fill`` gives
    salient pixels of an image with exactly one present class that class (row 4 becomes
    the class), since no other class can claim them.

    Args:
        cam: normalised CAM, (B, C, h, w) float in [0, 1], C foreground classes (e.g.
            from :func:`wsss_blocks.normalize_cam`, optionally refined by
            :func:`wsss_blocks.affinity.propagate`).
        labels: (B, C) multi-hot image labels; absent classes are never assigned.
        saliency: (B, h, w) float in [0, 1] on the CAM's grid.
        cam_threshold: CAM foreground threshold in (0, 1) (AuxSegNet code: 0.2).
        saliency_threshold: saliency foreground threshold in (0, 1) (AuxSegNet code:
            0.06 for near-binary DSS maps; 0.3 suits the border-prior maps on MF-Seg).
        background: ``"agree"`` (background only where CAM and saliency agree; the
            AuxSegNet rule) or ``"saliency"`` (background wherever not salient).
        single_class_fill: if True, salient pixels of single-class images take that
            class whatever the CAM says.
    Returns:
        (B, h, w) int64 in {0, 1..C, 255}.
    Raises:
        ValueError: on bad shapes or values, or thresholds outside (0, 1).
    Example:
        >>> cam = torch.tensor([[[[0.9, 0.9, 0.1, 0.1]]]])
        >>> sal = torch.tensor([[[0.8, 0.1, 0.8, 0.1]]])
        >>> fuse_cam_saliency(cam, torch.tensor([[1.0]]), sal)
        tensor([[[  1, 255, 255,   0]]])

    Reference:
        Xu et al., AuxSegNet, ICCV 2021, Sec. 3.3 (pseudo-label updating; official
        code: foreground where CAM and saliency agree, ignore where they disagree).
    """
    check_open_unit("cam_threshold", cam_threshold)
    check_open_unit("saliency_threshold", saliency_threshold)
    if background not in ("agree", "saliency"):
        raise ValueError(f"background must be 'agree' or 'saliency', got {background!r}")
    nu, cls = cam_confidence(cam, labels)
    check_unit_map("saliency", saliency, "(B, h, w)")
    if saliency.shape != nu.shape:
        raise ValueError(
            f"saliency must have the CAM grid shape {tuple(nu.shape)}, got {tuple(saliency.shape)}"
        )
    cam_fg = nu >= cam_threshold
    salient = saliency >= saliency_threshold
    out = torch.full_like(cls, IGNORE_INDEX)
    out = torch.where(cam_fg & salient, cls, out)
    if single_class_fill:
        single = labels.sum(1) == 1
        only = (labels.argmax(1) + 1)[:, None, None].expand_as(cls)
        out = torch.where(single[:, None, None] & salient, only, out)
    bg = ~salient if background == "saliency" else ~cam_fg & ~salient
    return torch.where(bg, torch.zeros_like(cls), out)

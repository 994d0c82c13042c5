"""Pixel-adaptive refinement (PAR): CAMs pulled to the image's colour edges.

A CAM of a stride-8 (or stride-16) network is a blurred map at 1/8 of the image; its
thresholded pseudo-labels miss object boundaries. PAR propagates each map value to its
neighbours on dilated 3×3 rings, weighted by how alike the neighbours' colours are, for
a few iterations, so that labels spread inside a colour-uniform region and stop at its
edge. It has no parameters to learn.

With N the 8 neighbours of each of the dilations (N = 8·len(dilations)), the weight of
neighbour j of pixel i is

    a_ij = softmax_j(κ_ij^rgb) + w_pos · softmax_j(κ_ij^pos),
    κ_ij^rgb = −mean_c (|I_i^c − I_j^c| / (w_rgb · σ_i^c))²,
    κ_ij^pos = −(‖p_i − p_j‖ / (w_rgb · σ^pos))²,

with σ_i^c the standard deviation of channel c over the N neighbours of i and σ^pos
that of the N distances; then Y_i ← Σ_j a_ij Y_j, ``iterations`` times (the pixel
itself is not among its neighbours). Weights here are divided by their sum 1 + w_pos
so that a map stays in its range; the release leaves them at 1 + w_pos, which scales
every channel alike and so leaves its use, an argmax over a threshold channel and the
CAMs, unchanged (``tests/blocks/test_refine.py`` pins both).

Reference:
    Ru et al., "Learning Affinity from Attention: End-to-End Weakly-Supervised Semantic
    Segmentation with Transformers" (AFA), CVPR 2022, its PAR module; also used by ToCo
    (CVPR 2023) and offered by the official CoSA release (``usepar``, off in its
    configs), with dilations 1, 2, 4, 8, 12, 24, 10 iterations, w_rgb 0.3, w_pos 0.01,
    on images at half size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._checks import check_finite, check_float, check_int, check_ndim, check_positive

__all__ = ["PAR_DILATIONS", "par_offsets", "pixel_adaptive_refinement"]

PAR_DILATIONS = (1, 2, 4, 8, 12, 24)
"""The dilations of the official CoSA release's PAR (models/PAR.py)."""


def par_offsets(dilations: Sequence[int]) -> list[tuple[int, int]]:
    """The (dy, dx) of every neighbour: the 8 cells of a 3×3 ring at each dilation d
    (±d or 0 in each direction, the centre left out), dilation by dilation.

    Raises:
        ValueError: if ``dilations`` is empty or holds a value that is not an int ≥ 1.
    """
    if len(dilations) == 0:
        raise ValueError("dilations must hold at least one dilation, got an empty sequence")
    for d in dilations:
        check_int("dilations", d, 1)
    ring = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    return [(d * dy, d * dx) for d in dilations for dy, dx in ring]


def _shifted(x: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    """x (B, C, H, W) read at (y + dy, x + dx); ``x`` already replicate-padded by ``pad``."""
    h, w = x.shape[-2] - 2 * pad, x.shape[-1] - 2 * pad
    return x[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def _neighbour_weights(images: torch.Tensor, offsets, w_rgb: float, w_pos: float) -> torch.Tensor:
    """The (B, N, H, W) weights a_ij of the module docstring, each pixel's summing to 1."""
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    padded = F.pad(images, [pad] * 4, mode="replicate")
    neighbours = torch.stack([_shifted(padded, dy, dx, pad) for dy, dx in offsets], 2)
    diff = (neighbours - images[:, :, None]).abs()  # (B, 3, N, H, W)
    sigma = neighbours.std(dim=2, keepdim=True)
    kappa_rgb = -((diff / (sigma + 1e-8) / w_rgb) ** 2).mean(1)  # (B, N, H, W)
    dist = torch.tensor([math.hypot(dy, dx) for dy, dx in offsets], dtype=images.dtype,
                        device=images.device)  # fmt: skip
    kappa_pos = -((dist / (dist.std() + 1e-8) / w_rgb) ** 2)
    weights = kappa_rgb.softmax(1) + w_pos * kappa_pos.softmax(0)[None, :, None, None]
    return weights / (1.0 + w_pos)


def pixel_adaptive_refinement(
    images: torch.Tensor,
    maps: torch.Tensor,
    dilations: Sequence[int] = PAR_DILATIONS,
    iterations: int = 10,
    w_rgb: float = 0.3,
    w_pos: float = 0.01,
) -> torch.Tensor:
    """Refine class maps (CAMs, probabilities) by local colour affinities (PAR, AFA).

    Each iteration replaces every value by a weighted mean of its neighbours' values
    (module docstring), so a map in [0, 1] stays in [0, 1]: the result is clamped to
    the input's range, which only removes float rounding. Images are compared by their
    colour differences divided by the local standard deviation, so their scale (0–1
    or 0–255, normalised or not) does not matter. Computed in float32 or float64 (the
    dtype of ``maps``), without gradient tracking being needed (it runs on detached
    CAMs in the trainers, but is differentiable).

    Args:
        images: (B, 3, H, W) float, any colour scale; the image the maps belong to,
            at the maps' size (the release halves the image and resizes the CAM to it).
        maps: (B, K, H, W) float32/float64, finite, e.g. a normalised CAM in [0, 1].
        dilations: ring dilations in px, each an int ≥ 1 (default: the CoSA release's).
        iterations: propagation steps, int ≥ 0 (0 returns ``maps`` unchanged).
        w_rgb: temperature of the colour and position kernels, > 0 (the release: 0.3).
        w_pos: weight of the position kernel, ≥ 0 (the release: 0.01).
    Returns:
        (B, K, H, W) refined maps, dtype of ``maps``, within the input's value range.
    Raises:
        ValueError: if ``images`` or ``maps`` is not a 4-D float tensor, ``images`` has
            other than 3 channels, the batch or spatial sizes differ, a tensor holds NaN
            or inf, or a hyper-parameter is out of its range.

    Reference:
        Ru et al., AFA, CVPR 2022 (PAR); the CoSA release's ``models/PAR.py``.

    Example:
        >>> img = torch.zeros(1, 3, 8, 8); img[..., 4:] = 1.0  # two colour halves
        >>> cam = torch.zeros(1, 1, 8, 8); cam[..., 5] = 1.0    # one column lit
        >>> out = pixel_adaptive_refinement(img, cam, dilations=(1, 2), iterations=20)
        >>> bool(out[..., :4].max() < 0.01 < 0.1 < out[..., 4:].min())  # spreads right
        True
    """
    check_ndim("images", images, 4, "(B, 3, H, W)")
    check_ndim("maps", maps, 4, "(B, K, H, W)")
    check_float("images", images)
    check_float("maps", maps)
    if maps.dtype not in (torch.float32, torch.float64):
        raise ValueError("maps must be float32 or float64 (refine outside autocast), "
                         f"got {maps.dtype}")  # fmt: skip
    if images.shape[1] != 3:
        raise ValueError("images must have 3 colour channels (B, 3, H, W), "
                         f"got shape {tuple(images.shape)}")  # fmt: skip
    if images.shape[0] != maps.shape[0] or images.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and maps {tuple(maps.shape)} must share "
                         "batch and spatial size; resize the maps to the images first")  # fmt: skip
    check_finite("images", images)
    check_finite("maps", maps)
    check_int("iterations", iterations, 0)
    check_positive("w_rgb", w_rgb)
    if not w_pos >= 0:
        raise ValueError(f"w_pos must be >= 0, got {w_pos!r}")
    offsets = par_offsets(dilations)
    if iterations == 0 or maps.numel() == 0:
        return maps
    weights = _neighbour_weights(images.to(maps.dtype), offsets, w_rgb, w_pos)
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    low, high = maps.amin(), maps.amax()
    out = maps
    for _ in range(iterations):
        padded = F.pad(out, [pad] * 4, mode="replicate")
        out = torch.zeros_like(maps)
        for n, (dy, dx) in enumerate(offsets):
            out.addcmul_(weights[:, n : n + 1], _shifted(padded, dy, dx, pad))
    return out.clamp(low, high)  # a weighted mean: only rounding can leave the range

"""Weak and strong views of the same crop, batched (CoSA, Yang et al., ECCV 2024, Sec. 3.1).

The assignment network (teacher) sees the weak view T_w(x), the online network
(student) the strong view T_s(x). Both share one geometry (scale, flip, crop), so a
pseudo-label made on the weak view lines up pixel for pixel with the strong view; only
photometric operations differ.

Everything is batched with per-sample randomness: the geometry is one
``torch.nn.functional.grid_sample`` call with a per-sample scale/flip/offset grid, the
blur one grouped convolution, and the photometric ops (from
``torchvision.transforms.v2.functional``) one call per op type rather than per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .._checks import IGNORE_INDEX, check_ndim, check_range, check_same_batch, reads_values

RANDAUG_OPS: tuple[str, ...] = (
    "identity",
    "autocontrast",
    "equalize",
    "solarize",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "posterize",
)
"""The photometric RandAugment-style ops of the strong view (one is drawn per sample)."""

MAGNITUDE_MAPS: tuple[str, ...] = ("torchvision", "cosa-release")
"""How a magnitude m in [1, 9] sets an op's strength: torchvision's RandAugment ranges,
or the official CoSA release's (its ``dataloaders/randaug.py``); see
:func:`apply_randaug_op`."""


def _check_magnitude_map(magnitude_map: str) -> None:
    if magnitude_map not in MAGNITUDE_MAPS:
        raise ValueError(f"magnitude_map must be one of {MAGNITUDE_MAPS}, got {magnitude_map!r}")


def _release_strength(op: str, magnitude: torch.Tensor) -> torch.Tensor:
    """The CoSA release's op strength for integer magnitudes m (float tensor): the
    enhance factor 1.8·m/10 + 0.1, the solarize threshold min(⌊25.6·m⌋, 255)/255 on
    [0, 1], or the posterize bits 4 − ⌊0.4·m⌋."""
    m = magnitude.long()
    if op == "solarize":
        return torch.clamp(m * 256 // 10, max=255).float() / 255.0
    if op == "posterize":
        return (4 - m * 4 // 10).float()
    return 1.8 * m.float() / 10.0 + 0.1


def _to_float_images(images: torch.Tensor) -> torch.Tensor:
    check_ndim("images", images, 4, "(B, 3, H, W)")
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point, got dtype {images.dtype}")
    check_range("images", images, 0.0, 1.0)
    return images.float()


def _check_masks(masks: torch.Tensor, images: torch.Tensor) -> None:
    check_ndim("masks", masks, 3, "(B, H, W)")
    if masks.is_floating_point() or masks.dtype == torch.bool:
        raise ValueError(f"masks must be an integer tensor, got dtype {masks.dtype}")
    check_same_batch(("images", "masks"), images, masks)
    if masks.device != images.device:
        raise ValueError(f"masks are on {masks.device} but images on {images.device}")
    if masks.shape[1:] != images.shape[2:]:
        raise ValueError(
            f"masks (B, H, W) must match images (B, 3, H, W) in H, W, got masks "
            f"{tuple(masks.shape)} and images {tuple(images.shape)}"
        )


def apply_randaug_op(
    image: torch.Tensor,
    op: str,
    magnitude: int,
    sign: float = 1.0,
    magnitude_map: str = "torchvision",
) -> torch.Tensor:
    """Apply one RandAugment-style photometric op to a single image.

    ``magnitude_map="torchvision"``: m in [1, 9] maps to a strength f = m / 10: solarize
    threshold 1 − f; color / contrast / brightness / sharpness factor 1 + sign · 0.9 f;
    posterize to 8 − round(4 f) bits (torchvision's RandAugment ranges).
    ``magnitude_map="cosa-release"``: the official CoSA release's mapping: enhance factor
    0.18 m + 0.1 in [0.28, 1.72] whatever ``sign``; solarize threshold
    min(⌊25.6 m⌋, 255) / 255 (pixels at or above it are inverted); posterize to
    4 − ⌊0.4 m⌋ bits.

    Args:
        image: (3, H, W) or (B, 3, H, W) float in [0, 1].
        op: one of :data:`RANDAUG_OPS`.
        magnitude: integer in [1, 9].
        sign: +1 or −1, the direction of the enhancement factors (torchvision map).
        magnitude_map: one of :data:`MAGNITUDE_MAPS`.
    Returns:
        The image, same shape, float in [0, 1].
    Raises:
        ValueError: if ``op``, ``magnitude`` or ``magnitude_map`` is unknown / out of
            range.

    Example:
        >>> x = torch.full((3, 4, 4), 0.8)
        >>> round(apply_randaug_op(x, "solarize", 5)[0, 0, 0].item(), 4)  # 0.8 >= 0.5: inverted
        0.2
    """
    if not (isinstance(magnitude, int) and 1 <= magnitude <= 9):
        raise ValueError(f"magnitude must be an integer in [1, 9], got {magnitude!r}")
    _check_magnitude_map(magnitude_map)
    f = magnitude / 10.0
    factor = 1.0 + sign * 0.9 * f
    if magnitude_map == "cosa-release" and op in ("solarize", "posterize", *_BLEND_OPS):
        strength = float(_release_strength(op, torch.tensor(magnitude)))
        if op == "solarize":
            return TF.solarize(image, strength)
        if op == "posterize":
            return TF.posterize(image, int(strength))
        return _BLEND_OPS[op](image, strength)
    if op == "identity":
        return image
    if op == "autocontrast":
        return TF.autocontrast(image)
    if op == "equalize":
        return TF.equalize(image)
    if op == "solarize":
        return TF.solarize(image, 1.0 - f)
    if op == "color":
        return TF.adjust_saturation(image, factor)
    if op == "contrast":
        return TF.adjust_contrast(image, factor)
    if op == "brightness":
        return TF.adjust_brightness(image, factor)
    if op == "sharpness":
        return TF.adjust_sharpness(image, factor)
    if op == "posterize":
        return TF.posterize(image, 8 - round(4 * f))
    raise ValueError(f"op must be one of {RANDAUG_OPS}, got {op!r}")


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor drawn on the host → ``device`` without making the host wait: to CUDA
    through pinned memory with a non-blocking copy (a copy from pageable memory waits for
    the stream; ``tests/cuda`` runs a step under ``set_sync_debug_mode("error")``)."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def gaussian_blur_batch(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with a different σ per image, in one grouped convolution.

    torchvision's ``gaussian_blur`` takes one σ per call; a per-sample loop costs one
    call (and one thread barrier) per image, which dominates on busy 2-core machines.
    Kernels are separable, truncated at 2.5 σ_max (as torchvision's usual kernel size),
    normalised to sum 1, with reflect padding (as torchvision).

    Args:
        images: (B, D, H, W) float.
        sigmas: (B,) float, σ in pixels, > 0; on any device (their maximum sets the
            kernel size, so σ on the CPU spare a GPU synchronisation).
    Returns:
        (B, D, H, W) blurred images, same dtype.
    Raises:
        ValueError: if the shapes disagree or a σ is not positive.

    Example:
        >>> x = torch.zeros(2, 1, 21, 21); x[:, :, 10, 10] = 1.0  # a dot far from the border
        >>> y = gaussian_blur_batch(x, torch.tensor([0.5, 2.0]))
        >>> [round(float(v), 3) for v in y.sum(dim=(1, 2, 3))]  # mass is kept
        [1.0, 1.0]
        >>> bool(y[0, 0, 10, 10] > y[1, 0, 10, 10])  # the larger σ spreads more
        True
    """
    check_ndim("images", images, 4, "(B, D, H, W)")
    check_ndim("sigmas", sigmas, 1, "(B,)")
    check_same_batch(("images", "sigmas"), images, sigmas)
    if reads_values(sigmas) and not bool((sigmas > 0).all()):
        raise ValueError(f"sigmas must be > 0, got min {float(sigmas.min())}")
    b, d, h, w = images.shape
    if b == 0:
        return images.clone()
    # The kernel radius is a size, so σ_max is read; σ on the CPU (as the views draw
    # them) keeps that read off the GPU stream.
    r = min(math.ceil(2.5 * float(sigmas.max())), h - 1, w - 1)
    sigmas = _to_device(sigmas, images.device)
    t = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (t[None, :] / sigmas[:, None].to(images.dtype)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(d, dim=0)  # (B·D, 2r+1)
    x = F.pad(images.reshape(1, b * d, h, w), (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k[:, None, None, :], groups=b * d)
    x = F.conv2d(x, k[:, None, :, None], groups=b * d)
    return x.reshape(b, d, h, w)


# Ops that blend the image with a "degenerate" image: op(x, f) = clamp(f·x + (1 − f)·op(x, 0)),
# so one torchvision call with f = 0 serves a batch with a different f per image.
_BLEND_OPS = {
    "color": TF.adjust_saturation,
    "contrast": TF.adjust_contrast,
    "brightness": TF.adjust_brightness,
    "sharpness": TF.adjust_sharpness,
}


def _sharpness_degenerate(images: torch.Tensor) -> torch.Tensor:
    """``TF.adjust_sharpness(images, 0.0)`` for float images (B, C, H, W) in [0, 1], bit
    for bit: the interior smoothed by torchvision's 3×3 kernel (1s around a 5, over 13),
    the one-pixel border kept. Its kernel reaches the images' device without a host wait;
    torchvision builds it there from a list, a synchronising copy on CUDA."""
    c, h, w = images.shape[-3:]
    if images.numel() == 0 or h <= 2 or w <= 2:
        return images
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=images.dtype)
    kernel = _to_device(kernel, images.device).expand(c, 1, 3, 3)
    out = images.clone()
    inner = out[..., 1:-1, 1:-1]
    inner.add_(F.conv2d(images, kernel, groups=c).sub_(inner))  # torchvision's blend at 0
    return out.clamp_(0.0, 1.0)


def randaug_batch(
    images: torch.Tensor,
    ops: Sequence[str],
    magnitudes: torch.Tensor,
    signs: torch.Tensor,
    magnitude_map: str = "torchvision",
) -> torch.Tensor:
    """Apply a different RandAugment-style op to each image of a batch.

    Same result as :func:`apply_randaug_op` image by image, with one call per op
    rather than per image (torchvision's ops take one factor per call; blend-type ops
    are rebuilt from their degenerate image, see ``_BLEND_OPS``).

    Args:
        images: (B, 3, H, W) float in [0, 1].
        ops: B names from :data:`RANDAUG_OPS`.
        magnitudes: (B,) integers in [1, 9], on any device (they are read to group the
            posterize calls: on the CPU, as the views draw them, no GPU wait).
        signs: (B,) ±1, the direction of the enhancement factors, on magnitudes' device.
        magnitude_map: one of :data:`MAGNITUDE_MAPS` (see :func:`apply_randaug_op`).
    Returns:
        (B, 3, H, W) float in [0, 1].
    Raises:
        ValueError: on an unknown op or magnitude map, a magnitude outside [1, 9] or
            mismatched lengths.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> y = randaug_batch(x, ["identity", "brightness"], torch.tensor([5, 5]),
        ...                   torch.tensor([1.0, -1.0]))
        >>> torch.equal(y[0], x[0]), torch.allclose(y[1], x[1] * 0.55)
        (True, True)
    """
    b = images.shape[0]
    if not (len(ops) == b and magnitudes.shape == (b,) and signs.shape == (b,)):
        raise ValueError(
            f"ops, magnitudes and signs must each hold B={b} entries, got {len(ops)}, "
            f"{tuple(magnitudes.shape)} and {tuple(signs.shape)}"
        )
    if reads_values(magnitudes) and not bool(((magnitudes >= 1) & (magnitudes <= 9)).all()):
        raise ValueError(f"magnitudes must lie in [1, 9], got {magnitudes.tolist()}")
    unknown = set(ops) - set(RANDAUG_OPS)
    if unknown:
        raise ValueError(f"ops must come from {RANDAUG_OPS}, got {sorted(unknown)}")
    _check_magnitude_map(magnitude_map)
    release = magnitude_map == "cosa-release"
    dev, dtype = images.device, images.dtype
    out = images.clone()
    for op in set(ops) - {"identity"}:
        # Which images take the op is known on the host (``ops``); magnitudes and signs
        # stay where they are given (on the CPU, as the views draw them, nothing here
        # waits for a GPU) and only their per-image strengths go to the images' device.
        rows = [i for i, o in enumerate(ops) if o == op]
        idx = _to_device(torch.tensor(rows), dev)
        sel = torch.tensor(rows, device=magnitudes.device)
        sub, m = images[idx], magnitudes[sel]
        fi = _to_device(m.to(dtype) / 10.0, dev).view(-1, 1, 1, 1)
        if op in ("autocontrast", "equalize"):
            out[idx] = apply_randaug_op(sub, op, 1)
        elif op == "solarize":
            th = (
                _to_device(_release_strength(op, m).to(dtype), dev).view(-1, 1, 1, 1)
                if release
                else 1.0 - fi
            )
            out[idx] = torch.where(sub >= th, 1.0 - sub, sub)  # TF.solarize, per image
        elif op == "posterize":  # TF.posterize takes one bit count per call: group by it
            bits = _release_strength(op, m) if release else 8 - torch.round(4 * m / 10.0)
            bits = bits.long().tolist()  # a read of ``magnitudes``
            for nb in sorted(set(bits)):
                group = _to_device(
                    torch.tensor([r for r, k in zip(rows, bits, strict=True) if k == nb]), dev
                )
                out[group] = TF.posterize(images[group], nb)
        else:
            if release:
                factor = _to_device(_release_strength(op, m).to(dtype), dev).view(-1, 1, 1, 1)
            else:
                sign = _to_device(signs[sel].to(dtype), dev).view(-1, 1, 1, 1)
                factor = 1.0 + sign * 0.9 * fi
            degenerate = (
                _sharpness_degenerate(sub) if op == "sharpness" else _BLEND_OPS[op](sub, 0.0)
            )
            out[idx] = (factor * sub + (1.0 - factor) * degenerate).clamp_(0.0, 1.0)
    return out


def _check_crop_and_scale(crop_size, scale) -> tuple[int, int]:
    """``crop_size`` as (h, w) after checking it and the rescale range ``scale``."""
    crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if len(crop) != 2 or not all(isinstance(c, int) and c >= 1 for c in crop):
        raise ValueError(f"crop_size must be an int >= 1 or a pair of them, got {crop_size!r}")
    if not (len(scale) == 2 and 0.0 < scale[0] <= scale[1] < math.inf):
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
    return crop


class ViewPair(NamedTuple):
    """What :class:`WeakStrongViews` returns: two views with shared geometry.

    Attributes:
        weak: (B, 3, h_c, w_c) float32 in [0, 1], the weak view (rescale, crop, flip, blur).
        strong: (B, 3, h_c, w_c) float32 in [0, 1], the weak view plus RandAugment ops.
        masks: (B, h_c, w_c) int64 labels with 255 on padding, or None without masks.
        valid: (B, h_c, w_c) bool, True where the crop shows image rather than padding.
    """

    weak: torch.Tensor
    strong: torch.Tensor
    masks: torch.Tensor | None
    valid: torch.Tensor


class WeakStrongViews:
    """Batched weak / strong views with shared geometry, for teacher–student training.

    Weak view T_w: random scale s ~ U(scale), horizontal flip with ``flip_p``, a random
    ``crop_size`` crop at an integer offset of the scaled image (padded where the
    scaled image is smaller: image ``fill``, mask 255), then Gaussian blur with
    probability ``blur_p`` (σ ~ U(blur_sigma)). Strong view T_s: T_w followed by one op
    of ``ops`` with magnitude ~ U{magnitude}. All random per sample.

    Args:
        crop_size: output side (int) or (height, width).
        scale: (low, high) range of the random rescale factor, default (0.5, 2.0).
        flip_p: probability of a horizontal flip.
        blur_p: probability of blurring (both views; it is part of the weak view).
        blur_sigma: (low, high) range of the blur σ in pixels.
        ops: subset of :data:`RANDAUG_OPS` to draw from for the strong view.
        magnitude: (low, high) integer range in [1, 9] of the op magnitude.
        magnitude_map: how a magnitude sets an op's strength, one of
            :data:`MAGNITUDE_MAPS`: torchvision's RandAugment ranges (default) or the
            official CoSA release's (see :func:`apply_randaug_op`).
        fill: image value in padded pixels, in [0, 1].
        generator: optional CPU ``torch.Generator`` for reproducible draws (the
            inputs may live on any device; the drawn geometry is moved there).

    Call:
        ``views(images, masks=None)`` with images (B, 3, H, W) uint8 or float in [0, 1]
        and masks (B, H, W) integer (labels, 255 = ignore). Returns a :class:`ViewPair`
        ``(weak, strong, masks, valid)``: two (B, 3, h_c, w_c) float32 views in [0, 1],
        the (B, h_c, w_c) int64 masks with 255 on padding (None if ``masks`` is None),
        and the (B, h_c, w_c) bool validity, True where the crop shows image.

    Raises:
        ValueError: on bad arguments or inputs (names the argument and the value).

    Example:
        >>> views = WeakStrongViews(32, generator=torch.Generator().manual_seed(0))
        >>> out = views(torch.rand(2, 3, 48, 48), torch.zeros(2, 48, 48, dtype=torch.long))
        >>> tuple(out.weak.shape), tuple(out.strong.shape), tuple(out.masks.shape)
        ((2, 3, 32, 32), (2, 3, 32, 32), (2, 32, 32))
        >>> out.masks.dtype, out.valid.dtype
        (torch.int64, torch.bool)
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int],
        scale: tuple[float, float] = (0.5, 2.0),
        flip_p: float = 0.5,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        ops: Sequence[str] = RANDAUG_OPS,
        magnitude: tuple[int, int] = (1, 9),
        fill: float = 0.0,
        generator: torch.Generator | None = None,
        magnitude_map: str = "torchvision",
    ) -> None:
        crop = _check_crop_and_scale(crop_size, scale)
        for name, p in (("flip_p", flip_p), ("blur_p", blur_p), ("fill", fill)):
            if not (0.0 <= p <= 1.0):
                raise ValueError(f"{name} must lie in [0, 1], got {p!r}")
        if not (len(blur_sigma) == 2 and 0.0 < blur_sigma[0] <= blur_sigma[1] < math.inf):
            raise ValueError(
                f"blur_sigma must be (low, high) with 0 < low <= high, got {blur_sigma!r}"
            )
        ops = tuple(ops)
        if not ops or any(op not in RANDAUG_OPS for op in ops):
            raise ValueError(f"ops must be a non-empty subset of {RANDAUG_OPS}, got {ops!r}")
        if not (len(magnitude) == 2 and 1 <= magnitude[0] <= magnitude[1] <= 9):
            raise ValueError(
                f"magnitude must be (low, high) with 1 <= low <= high <= 9, got {magnitude!r}"
            )
        self.crop_size = crop
        self.scale = (float(scale[0]), float(scale[1]))
        self.flip_p, self.blur_p, self.fill = flip_p, blur_p, fill
        self.blur_sigma = blur_sigma
        self.ops = ops
        self.magnitude = (int(magnitude[0]), int(magnitude[1]))
        _check_magnitude_map(magnitude_map)
        self.magnitude_map = magnitude_map
        self.generator = generator

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    def _sample_grid(self, b: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """grid_sample grid (B, hc, wc, 2) and validity (B, hc, wc) for random geometry."""
        hc, wc = self.crop_size
        lo, hi = self.scale
        s = lo + (hi - lo) * self._rand(b)
        flip = self._rand(b) < self.flip_p

        def axis(size: int, out: int) -> tuple[torch.Tensor, torch.Tensor]:
            # Integer crop offset in the scaled image; negative / overshooting = padding.
            span = size * s - out
            zero = torch.zeros(b)
            low, high = torch.minimum(span, zero).ceil(), torch.maximum(span, zero).floor()
            off = low + torch.floor((high - low + 1.0) * self._rand(b)).clamp_(max=high - low)
            pos = torch.arange(out, dtype=torch.float32)[None, :] + off[:, None]
            src = (pos + 0.5) / s[:, None] - 0.5  # pixel centre in original coordinates
            valid = (src >= -0.5) & (src < size - 0.5)
            return (2.0 * src + 1.0) / size - 1.0, valid  # align_corners=False convention

        gy, vy = axis(h, hc)
        gx, vx = axis(w, wc)
        gx = torch.where(flip[:, None], -gx, gx)
        grid = torch.stack(
            (gx[:, None, :].expand(b, hc, wc), gy[:, :, None].expand(b, hc, wc)), dim=-1
        )
        return grid, vy[:, :, None] & vx[:, None, :]

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        do = self._rand(x.shape[0]) < self.blur_p
        lo, hi = self.blur_sigma
        sigmas = lo + (hi - lo) * self._rand(x.shape[0])
        if not bool(do.any()):
            return x
        idx = do.nonzero()[:, 0]  # on the CPU, where ``do`` is drawn; σ stay there too
        rows = _to_device(idx, x.device)
        return x.index_copy(0, rows, gaussian_blur_batch(x.index_select(0, rows), sigmas[idx]))

    def _photometric(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        op_idx = torch.randint(len(self.ops), (b,), generator=self.generator)
        mags = torch.randint(
            self.magnitude[0], self.magnitude[1] + 1, (b,), generator=self.generator
        )
        signs = torch.where(self._rand(b) < 0.5, -1.0, 1.0)
        ops = [self.ops[i] for i in op_idx.tolist()]
        return randaug_batch(x, ops, mags, signs, self.magnitude_map)

    def __call__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor | None = None,
    ) -> ViewPair:
        x = _to_float_images(images)
        if masks is not None:
            _check_masks(masks, images)
        b, _, h, w = x.shape
        grid, valid = self._sample_grid(b, h, w)  # drawn on the CPU (generator's device)
        grid, valid = _to_device(grid, x.device), _to_device(valid, x.device)
        # Border padding then an explicit fill keeps image and mask padding identical.
        xw = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        xw = torch.where(valid[:, None], xw, torch.full_like(xw, self.fill)).clamp_(0.0, 1.0)
        xw = self._blur(xw).clamp_(0.0, 1.0)  # a blur of [0, 1] can round 1 ulp past it
        xs = self._photometric(xw)
        mask_out = None
        if masks is not None:
            m = F.grid_sample(
                masks[:, None].float(), grid, mode="nearest", padding_mode="border",
                align_corners=False,
            )[:, 0].long()  # fmt: skip
            mask_out = torch.where(valid, m, torch.full_like(m, IGNORE_INDEX))
        return ViewPair(xw, xs, mask_out, valid)


class EvalView:
    """The evaluation path: no augmentation, only dtype conversion and checks.

    Call ``view(images, masks=None)`` with images (B, 3, H, W) uint8 or float in
    [0, 1], masks (B, H, W) integer; returns ``(images, masks)`` as float32 in [0, 1]
    and int64 (masks None if not given).

    Raises:
        ValueError: on inputs of the wrong shape or dtype.

    Example:
        >>> x, m = EvalView()(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 8, 8))
        Traceback (most recent call last):
        ...
        ValueError: masks must be an integer tensor, got dtype torch.float32
    """

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = _to_float_images(images)
        if masks is None:
            return x, None
        _check_masks(masks, images)
        return x, masks.long()


class RandomRescaleCrop:
    """Per-sample random rescale and crop, for data sets whose images differ in size.

    Modelled on the training geometry of the CoSA and ToCo releases (not pinned against
    their code by a test; their pad placement may differ): rescale by s ~ U(scale)
    (image bilinear with antialiasing, mask nearest), place the result at a random
    offset on a canvas at least ``crop_size`` large (image ``fill``, mask 255, where
    the image does not reach), and cut a random ``crop_size`` crop. Run it in the data
    set (``transform=``), so that DataLoader workers do it and batches have one size;
    :class:`WeakStrongViews` with ``scale=(1, 1)`` then adds flip, blur and the strong
    view on the batch (on the GPU where there is one).

    Args:
        crop_size: output side (int) or (height, width), each >= 1.
        scale: (low, high) range of the rescale factor, 0 < low <= high (release: 0.5, 2).
        fill: image value of padded pixels, in [0, 1].

    Call: ``transform(item)`` on a dict with ``"image"`` (3, H, W) float in [0, 1] and
    ``"mask"`` (H, W) int64; returns a new dict with both cropped to (h_c, w_c) and
    ``"valid"`` (h_c, w_c) bool, True where the crop shows image (False on padding);
    other entries are kept. Draws from torch's global generator (a worker's own seed).

    Raises:
        ValueError: on bad arguments, or an item without 3-channel image and mask of
            one size.

    Example:
        >>> t = RandomRescaleCrop(32, scale=(0.5, 0.5))
        >>> out = t({"image": torch.rand(3, 40, 48), "mask": torch.zeros(40, 48, dtype=torch.long)})
        >>> tuple(out["image"].shape), int(out["valid"].sum())   # a 20x24 image in a 32x32 crop
        ((3, 32, 32), 480)
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int],
        scale: tuple[float, float] = (0.5, 2.0),
        fill: float = 0.0,
    ) -> None:
        crop = _check_crop_and_scale(crop_size, scale)
        if not 0.0 <= fill <= 1.0:
            raise ValueError(f"fill must lie in [0, 1], got {fill!r}")
        self.crop_size, self.scale, self.fill = crop, (float(scale[0]), float(scale[1])), fill

    def __call__(self, item: dict) -> dict:
        image, mask = item["image"], item["mask"]
        if image.ndim != 3 or image.shape[0] != 3 or mask.shape != image.shape[1:]:
            raise ValueError(f"item needs image (3, H, W) and mask (H, W) of one size, got "
                             f"{tuple(image.shape)} and {tuple(mask.shape)}")  # fmt: skip
        lo, hi = self.scale
        s = lo + (hi - lo) * float(torch.rand(()))
        h, w = (max(1, round(v * s)) for v in image.shape[1:])
        if (h, w) != tuple(image.shape[1:]):
            image = TF.resize(image, [h, w], antialias=True).clamp_(0.0, 1.0)
            mask = TF.resize(mask[None], [h, w], interpolation=TF.InterpolationMode.NEAREST)[0]
        hc, wc = self.crop_size
        ch, cw = max(h, hc), max(w, wc)
        oy, ox = (int(torch.randint(0, n + 1, ())) for n in (ch - h, cw - w))
        canvas = torch.full((3, ch, cw), self.fill, dtype=image.dtype)
        canvas_mask = torch.full((ch, cw), IGNORE_INDEX, dtype=mask.dtype)
        valid = torch.zeros((ch, cw), dtype=torch.bool)
        canvas[:, oy : oy + h, ox : ox + w] = image
        canvas_mask[oy : oy + h, ox : ox + w] = mask
        valid[oy : oy + h, ox : ox + w] = True
        y, x = (int(torch.randint(0, n + 1, ())) for n in (ch - hc, cw - wc))
        return {
            **item,
            "image": canvas[:, y : y + hc, x : x + wc],
            "mask": canvas_mask[y : y + hc, x : x + wc],
            "valid": valid[y : y + hc, x : x + wc],
        }

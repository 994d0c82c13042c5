"""Saliency for WSSS: classical estimators, map folders, a cache, the saliency loss and
the CAM + saliency pseudo-label fusion of AuxSegNet.

Saliency-based WSSS methods (AuxSegNet, EPS, OAA, ...) take a class-agnostic saliency
map per training image as a fixed input; users usually bring a folder of maps from a
pretrained detector (e.g. DSS). To run with nothing downloaded, this module also
computes classical estimators on the fly and caches them once per image set:

* ``"border_prior"`` (default, pure PyTorch): Mahalanobis distance in CIE-Lab from the
  colour distribution of the image border (the boundary prior: the border is mostly
  background). On MF-Seg it separates objects from textured backgrounds far better
  than the spectral estimators (see ``examples/auxsegnet/measure_saliency.py``).
* ``"spectral_residual"`` and ``"fine_grained"``: OpenCV's contrib saliency module
  (``pip install opencv-contrib-python-headless``, imported only when used).

Saliency maps are (B, H, W) float in [0, 1] throughout; 1 = salient (foreground).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import (
    IGNORE_INDEX,
    check_finite,
    check_float,
    check_int,
    check_ndim,
    check_open_unit,
    check_positive,
    check_range,
)
from .pseudo_labels import cam_confidence

SALIENCY_METHODS = ("border_prior", "spectral_residual", "fine_grained")
"""Names accepted by :func:`estimate_saliency` and :func:`cached_saliency`."""

SALIENCY_CACHE_VERSION = 1
"""Bumped whenever an estimator's output changes; part of the cache key."""

# sRGB (D65) → XYZ, and the D65 white point (CIE 1931, 2°).
_RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883])


def _check_images(images: torch.Tensor) -> None:
    check_ndim("images", images, 4, "(B, 3, H, W)")
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels, got shape {tuple(images.shape)}")
    check_float("images", images)
    check_range("images", images, 0.0, 1.0)


def _check_saliency(name: str, saliency: torch.Tensor) -> None:
    check_ndim(name, saliency, 3, "(B, H, W)")
    check_float(name, saliency)
    check_range(name, saliency, 0.0, 1.0)


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB → CIE-Lab (D65), differentiable, on the input's device.

    Args:
        images: (B, 3, H, W) float sRGB in [0, 1].
    Returns:
        (B, 3, H, W) float: L in [0, 100], a and b roughly in [−128, 127].
    Raises:
        ValueError: if ``images`` is not (B, 3, H, W) float in [0, 1].
    Example:
        >>> lab = rgb_to_lab(torch.ones(1, 3, 1, 1)).flatten()  # white: L = 100, a = b = 0
        >>> round(float(lab[0]), 2), bool(lab[1:].abs().max() < 0.01)
        (100.0, True)

    Reference:
        CIE 1976 L*a*b*; IEC 61966-2-1 (sRGB transfer function).
    """
    _check_images(images)
    linear = torch.where(images > 0.04045, ((images + 0.055) / 1.055) ** 2.4, images / 12.92)
    m = _RGB_TO_XYZ.to(images)
    xyz = torch.einsum("ij,bjhw->bihw", m, linear) / _WHITE_D65.to(images)[None, :, None, None]
    eps = (6.0 / 29.0) ** 3
    f = torch.where(
        xyz > eps, xyz.clamp_min(eps) ** (1.0 / 3.0), xyz / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0
    )
    fx, fy, fz = f.unbind(1)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=1)


def _minmax(s: torch.Tensor, flat: float = 0.0) -> torch.Tensor:
    """Per-image min–max to [0, 1] of (B, H, W); a map whose range is ≤ ``flat`` becomes 0
    (so float rounding on a flat image is not blown up to a full-range map)."""
    low = s.amin(dim=(1, 2), keepdim=True)
    span = s.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > flat, (s - low) / span.clamp_min(1e-12), torch.zeros_like(s))


def border_prior_saliency(
    images: torch.Tensor, border: int = 4, regularization: float = 10.0
) -> torch.Tensor:
    """Boundary-prior saliency: Mahalanobis distance from the border's Lab colours.

    .. math:: s(x) = \\sqrt{(l_x - \\mu_b)^\\top (\\Sigma_b + \\rho I)^{-1} (l_x - \\mu_b)},
              \\quad \\hat s = \\frac{s - \\min s}{\\max s - \\min s}

    μ_b, Σ_b are the mean and covariance of the Lab colours l of the pixels within
    ``border`` px of the image edge (assumed mostly background); ρ regularises Σ_b so
    a flat border does not make every other colour infinitely salient.

    Args:
        images: (B, 3, H, W) float RGB in [0, 1].
        border: width of the border strip in pixels, 1 ≤ border ≤ min(H, W) / 2.
        regularization: ρ > 0, added to the covariance diagonal, in Lab units²
            (10 was best of {1, 10, 100} on MF-Seg).
    Returns:
        (B, H, W) float in [0, 1] per image (an image whose distances span less than
        1e-3, e.g. a flat one, gives all zeros).
    Raises:
        ValueError: on bad images, ``border`` or ``regularization``.
    Example:
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> x[..., 3:5, 3:5] = 1.0  # a white square on black
        >>> s = border_prior_saliency(x, border=2)
        >>> float(s[0, 4, 4]), float(s[0, 0, 0])
        (1.0, 0.0)

    Reference:
        Wei et al., "Geodesic Saliency Using Background Priors", ECCV 2012 (the
        boundary prior); Mahalanobis distance to the border colour model is our choice.
    """
    _check_images(images)
    h, w = images.shape[-2:]
    if not isinstance(border, int) or not 1 <= border <= min(h, w) // 2:
        raise ValueError(f"border must be an integer in [1, {min(h, w) // 2}], got {border!r}")
    check_positive("regularization", regularization)
    if images.device.type == "meta":  # shape inference: the per-image solve has no meta form
        return images.new_empty(images.shape[0], h, w, dtype=torch.float32)
    lab = rgb_to_lab(images.float())
    edge = torch.ones(h, w, dtype=torch.bool, device=images.device)
    edge[border:-border, border:-border] = False
    pix = lab[:, :, edge]  # (B, 3, M) border colours
    mu = pix.mean(-1, keepdim=True)
    centred = pix - mu
    cov = centred @ centred.transpose(1, 2) / max(pix.shape[-1] - 1, 1)
    cov = cov + regularization * torch.eye(3, dtype=cov.dtype, device=cov.device)
    d = lab.flatten(2) - mu  # (B, 3, H·W)
    m2 = (d * torch.linalg.solve(cov, d)).sum(1).clamp_min(0.0)
    # Distances under 1e-3 (in border standard deviations) are float noise: flat image.
    return _minmax(m2.sqrt().view(-1, h, w), flat=1e-3).to(images.dtype)


def opencv_saliency(images: torch.Tensor, method: str = "spectral_residual") -> torch.Tensor:
    """OpenCV contrib static saliency, per image, min–max normalised.

    Needs ``opencv-contrib-python-headless`` (imported only here). Runs on the CPU
    through numpy; the result comes back on the input's device.

    Args:
        images: (B, 3, H, W) float RGB in [0, 1].
        method: ``"spectral_residual"`` (Hou & Zhang, CVPR 2007) or ``"fine_grained"``
            (Montabone & Soto, IVC 2010).
    Returns:
        (B, H, W) float32 in [0, 1].
    Raises:
        ValueError: on bad images or an unknown ``method``.
        ImportError: if OpenCV's contrib saliency module is not installed.

    Reference:
        Hou & Zhang, "Saliency Detection: A Spectral Residual Approach", CVPR 2007;
        Montabone & Soto, "Human detection using a mobile platform and novel features
        derived from a visual saliency mechanism", Image Vis. Comput. 2010.
    """
    _check_images(images)
    factories = {
        "spectral_residual": "StaticSaliencySpectralResidual_create",
        "fine_grained": "StaticSaliencyFineGrained_create",
    }
    if method not in factories:
        raise ValueError(f"method must be one of {tuple(factories)}, got {method!r}")
    try:
        import cv2

        estimator = getattr(cv2.saliency, factories[method])()
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"saliency method {method!r} needs OpenCV's contrib module: "
            "pip install opencv-contrib-python-headless"
        ) from err
    bgr = (images.detach().flip(1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    maps = []
    for img in bgr:
        ok, s = estimator.computeSaliency(np.ascontiguousarray(img))
        if not ok:
            raise RuntimeError(f"OpenCV {method} saliency failed on an image of shape {img.shape}")
        maps.append(np.asarray(s, dtype=np.float32))
    out = torch.from_numpy(np.stack(maps)).to(images.device)
    return _minmax(out)


def estimate_saliency(
    images: torch.Tensor, method: str = "border_prior", batch_size: int = 256, **kwargs
) -> torch.Tensor:
    """Classical saliency of a batch (or a whole split), computed in chunks.

    Args:
        images: (N, 3, H, W) uint8 (0..255) or float in [0, 1] RGB.
        method: one of :data:`SALIENCY_METHODS`.
        batch_size: images per chunk, ≥ 1.
        **kwargs: passed to the border prior (``border``, ``regularization``); the
            OpenCV methods take none.
    Returns:
        (N, H, W) float32 in [0, 1].
    Raises:
        ValueError: on bad images, an unknown ``method``, or keyword arguments for an
            OpenCV method (naming them).
        ImportError: for the OpenCV methods when OpenCV's contrib module is missing.
    Example:
        >>> estimate_saliency(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)).shape
        torch.Size([2, 8, 8])
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(f"method must be one of {SALIENCY_METHODS}, got {method!r}")
    check_int("batch_size", batch_size, 1)
    check_ndim("images", images, 4, "(N, 3, H, W)")
    if kwargs and method != "border_prior":
        raise ValueError(f"method {method!r} takes no keyword arguments, got {sorted(kwargs)}")
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if method == "border_prior":
            out.append(border_prior_saliency(x, **kwargs))
        else:
            out.append(opencv_saliency(x, method))
    if not out:
        return torch.zeros(0, *images.shape[2:])
    return torch.cat(out).float()


# ----------------------------------------------------------------- folders and cache


def load_saliency_maps(
    directory: str | os.PathLike,
    names: Sequence[str],
    size: tuple[int, int] | None = None,
    extensions: Sequence[str] = (".png", ".jpg", ".jpeg", ".bmp"),
) -> torch.Tensor:
    """Read precomputed saliency maps (e.g. DSS outputs): one grayscale image per name.

    The file of ``name`` is ``directory/name + ext`` for the first extension that
    exists. 8-bit values map to [0, 1] by /255; 16-bit PNGs by /65535.

    Args:
        directory: folder holding the maps.
        names: N file stems, in the order wanted (e.g. the image ids of a split).
        size: optional (H, W) to resize every map to (bilinear, antialiased); without
            it all maps must share one size.
        extensions: file extensions tried in order.
    Returns:
        (N, H, W) float32 in [0, 1].
    Raises:
        FileNotFoundError: naming the first map that is missing.
        ValueError: if the maps differ in size and no ``size`` is given.
    """
    from PIL import Image

    directory = Path(directory)
    maps = []
    for name in names:
        path = next(
            (directory / f"{name}{e}" for e in extensions if (directory / f"{name}{e}").is_file()),
            None,
        )
        if path is None:
            raise FileNotFoundError(
                f"no saliency map for {name!r} in {directory} (tried {', '.join(extensions)})"
            )
        with Image.open(path) as im:
            arr = np.asarray(im.convert("I;16") if im.mode in ("I", "I;16") else im.convert("L"))
        scale = 65535.0 if arr.dtype == np.uint16 else 255.0
        t = torch.from_numpy(arr.astype(np.float32) / scale)
        if size is not None and tuple(t.shape) != tuple(size):
            t = F.interpolate(t[None, None], size=size, mode="bilinear", antialias=True,
                              align_corners=False)[0, 0].clamp(0.0, 1.0)  # fmt: skip
        maps.append(t)
    if not maps:
        return torch.zeros(0, *(size or (0, 0)))
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) > 1:
        raise ValueError(f"saliency maps differ in size {sorted(shapes)}; pass size=(H, W)")
    return torch.stack(maps)


def save_saliency_maps(
    directory: str | os.PathLike, saliency: torch.Tensor, names: Sequence[str]
) -> list[Path]:
    """Write saliency maps as 8-bit grayscale PNGs ``directory/<name>.png``.

    Args:
        directory: output folder (created).
        saliency: (N, H, W) float in [0, 1].
        names: N file stems.
    Returns:
        The paths written.
    Raises:
        ValueError: on a bad ``saliency`` or a ``names`` of another length.
    """
    from PIL import Image

    _check_saliency("saliency", saliency)
    if len(names) != saliency.shape[0]:
        raise ValueError(f"names has {len(names)} entries for {saliency.shape[0]} maps")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    u8 = (saliency.detach().cpu() * 255 + 0.5).to(torch.uint8).numpy()
    paths = []
    for name, m in zip(names, u8, strict=True):
        Image.fromarray(m, mode="L").save(directory / f"{name}.png")
        paths.append(directory / f"{name}.png")
    return paths


def saliency_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Folder of the saliency cache: ``root``, else ``$WSSS_BLOCKS_CACHE/saliency``, else
    ``~/.cache/wsss_blocks/saliency`` (not created here)."""
    if root is not None:
        return Path(root)
    env = os.environ.get("WSSS_BLOCKS_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "wsss_blocks") / "saliency"


def cached_saliency(
    images: torch.Tensor,
    method: str = "border_prior",
    root: str | os.PathLike | None = None,
    **kwargs,
) -> tuple[torch.Tensor, Path]:
    """Classical saliency of a whole image set, computed once and cached on disk.

    The maps are a fixed input of training, like a detector's saliency maps: the first
    call computes them with :func:`estimate_saliency` and stores them as uint8 (like
    8-bit PNG maps); later calls read the file. The key hashes the image bytes, the
    method and its parameters, so other data or settings never hit a stale file.

    Args:
        images: (N, 3, H, W) uint8 or float in [0, 1], the images of the split.
        method: one of :data:`SALIENCY_METHODS`.
        root: cache folder (default :func:`saliency_cache_dir`).
        **kwargs: estimator parameters (part of the key).
    Returns:
        ``(saliency, path)``: (N, H, W) float32 in [0, 1] with steps of 1/255, and the
        cache file.
    Raises:
        ValueError / ImportError: as :func:`estimate_saliency`.
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(f"method must be one of {SALIENCY_METHODS}, got {method!r}")
    check_ndim("images", images, 4, "(N, 3, H, W)")
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {"method": method, "version": SALIENCY_CACHE_VERSION, **kwargs}, sort_keys=True
        ).encode()
    )
    digest.update(str((tuple(images.shape), str(images.dtype))).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    path = saliency_cache_dir(root) / f"{method}_{digest.hexdigest()[:16]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return torch.from_numpy(z["saliency"].astype(np.float32) / 255.0), path
        except (OSError, ValueError, KeyError, EOFError):
            pass  # unreadable cache file: recompute and overwrite it
    u8 = (estimate_saliency(images, method, **kwargs) * 255 + 0.5).to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, saliency=u8)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return torch.from_numpy(u8.astype(np.float32) / 255.0), path


# ------------------------------------------------------------ loss and pseudo-labels


def saliency_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy of saliency logits against a soft saliency pseudo-label.

    .. math:: \\mathcal L_{sal} = \\frac{1}{|R|}\\sum_{x \\in R}
              \\mathrm{BCE}(\\sigma(z_x), s_x)

    R are the valid pixels; with none the loss is 0 (zero gradient), never NaN.

    Args:
        logits: z, (B, 1, H, W) float saliency logits (e.g. the saliency head).
        target: s, (B, H, W) float in [0, 1], the saliency pseudo-label (soft or 0/1).
        valid: optional (B, H, W) bool, False on pixels to skip (e.g. crop padding).
    Returns:
        0-d loss ≥ 0; 0 for an empty batch.
    Raises:
        ValueError: on wrong shapes, non-finite logits or targets outside [0, 1].
    Example:
        >>> round(float(saliency_loss(torch.zeros(1, 1, 1, 2), torch.tensor([[[1.0, 0.0]]]))), 4)
        0.6931

    Reference:
        Xu et al., AuxSegNet, ICCV 2021, Sec. 3.4 (saliency loss on the initial and
        the refined saliency prediction).
    """
    check_ndim("logits", logits, 4, "(B, 1, H, W)")
    check_float("logits", logits)
    check_finite("logits", logits)
    b, c, h, w = logits.shape
    if c != 1:
        raise ValueError(f"logits must have 1 channel, got shape {tuple(logits.shape)}")
    _check_saliency("target", target)
    if tuple(target.shape) != (b, h, w):
        raise ValueError(f"target must have shape {(b, h, w)}, got {tuple(target.shape)}")
    bce = F.binary_cross_entropy_with_logits(
        logits[:, 0], target.detach().to(logits.dtype), reduction="none"
    )
    if valid is None:
        return bce.mean() if bce.numel() else bce.sum()  # an empty batch: 0
    if tuple(valid.shape) != (b, h, w) or valid.dtype != torch.bool:
        raise ValueError(
            f"valid must be a bool tensor of shape {(b, h, w)}, "
            f"got {valid.dtype} {tuple(valid.shape)}"
        )
    return (bce * valid).sum() / valid.sum().clamp_min(1)


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
    _check_saliency("saliency", saliency)
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

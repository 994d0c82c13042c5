"""Classical saliency estimators for saliency-guided WSSS, computed with nothing downloaded.

Saliency-based WSSS methods (AuxSegNet, EPS, OAA, ...) take a class-agnostic saliency
map per training image as a fixed input; users usually bring a folder of maps from a
pretrained detector (e.g. DSS; :func:`wsss_blocks.data.load_saliency_maps`). These
estimators stand in for one:

* ``"border_prior"`` (default, pure PyTorch + kornia's Lab conversion): Mahalanobis
  distance in CIE-Lab from the colour distribution of the image border (the boundary
  prior: the border is mostly background). On MF-Seg it separates objects from textured
  backgrounds far better than the spectral estimators (see
  ``examples/auxsegnet/measure_saliency.py``).
* ``"spectral_residual"`` and ``"fine_grained"``: OpenCV's contrib saliency module
  (``pip install opencv-contrib-python-headless``, imported only when used).

Saliency maps are (B, H, W) float in [0, 1] throughout; 1 = salient (foreground). The
saliency loss is :func:`wsss_blocks.losses.saliency_loss`, the CAM + saliency pseudo-label
:func:`wsss_blocks.fuse_cam_saliency`, the on-disk cache
:func:`wsss_blocks.data.cached_saliency`.
"""

from __future__ import annotations

import numpy as np
import torch

from ._checks import check_image_batch, check_int, check_ndim, check_positive, check_range

__all__ = ["SALIENCY_METHODS", "border_prior_saliency", "estimate_saliency", "opencv_saliency"]

SALIENCY_METHODS = ("border_prior", "spectral_residual", "fine_grained")
"""Names accepted by :func:`estimate_saliency` and :func:`wsss_blocks.data.cached_saliency`."""


def _check_rgb_unit(images: torch.Tensor) -> None:
    """Raise unless ``images`` is a (B, 3, H, W) float RGB batch in [0, 1]."""
    check_image_batch("images", images)
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels, got shape {tuple(images.shape)}")
    check_range("images", images, 0.0, 1.0)


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
    _check_rgb_unit(images)
    h, w = images.shape[-2:]
    if not isinstance(border, int) or not 1 <= border <= min(h, w) // 2:
        raise ValueError(f"border must be an integer in [1, {min(h, w) // 2}], got {border!r}")
    check_positive("regularization", regularization)
    if images.device.type == "meta":  # shape inference: the per-image solve has no meta form
        return images.new_empty(images.shape[0], h, w, dtype=torch.float32)
    from kornia.color import rgb_to_lab  # sRGB (D65) → CIE-Lab: L in [0, 100]

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
    _check_rgb_unit(images)
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

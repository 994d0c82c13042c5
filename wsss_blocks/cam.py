"""Class activation maps (CAM) from any timm backbone, CNN or ViT.

The CAM of class c is the output of a bias-free 1×1 classifier W_fc applied to a
feature map F before pooling (Zhou et al., CVPR 2016). Image logits follow CoSA's
Eq. 1, Z = G·W_fcᵀ with G = Pooling(F): the *features* are pooled (global max, GMP,
or average, GAP), then classified. For GAP this equals the mean of the CAM (the
classifier is linear); for GMP it does not, so the max over the CAM is kept apart under
the name ``"cam-max"``. CoSA also reads an early-layer CAM M† from an intermediate
block with its own 1×1 classifier (CoSA, ECCV 2024, Sec. 3.4).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import (
    check_finite,
    check_float,
    check_image_batch,
    check_labels,
    check_ndim,
    check_positive,
    inputs_checked,
)

POOLINGS = ("gmp", "gap", "cam-max")
"""Image-logit poolings: ``"gmp"`` and ``"gap"`` pool the features (CoSA Eq. 1),
``"cam-max"`` takes the max over the CAM (not CoSA's Eq. 1)."""

CAM_POOLINGS = ("gap", "cam-max")
"""Poolings :func:`pool_cam` can do from the CAM alone."""


def pool_cam(cam: torch.Tensor, pooling: str) -> torch.Tensor:
    """Image-level class logits from a raw CAM by global pooling over its pixels.

    ``"gap"`` (mean over pixels) equals CoSA's Eq. 1 with average pooling, since the
    bias-free 1×1 classifier is linear. ``"cam-max"`` (max over pixels of the CAM) is
    *not* CoSA's GMP, which max-pools the features before the classifier; for that use
    :func:`pooled_logits` or :class:`CAMExtractor`.

    Args:
        cam: raw CAM logits, (B, C, h, w) float, C foreground classes, finite values.
        pooling: ``"gap"`` or ``"cam-max"`` (no default: the two differ in kind).
    Returns:
        (B, C) logits, same dtype as ``cam``.
    Raises:
        ValueError: if ``cam`` is not 4-D, float and finite, or ``pooling`` is not one
            of ``("gap", "cam-max")``; ``"gmp"`` is refused with a pointer to
            :func:`pooled_logits`, because it needs the features.
    Example:
        >>> cam = torch.tensor([[[[1.0, 3.0]]]])
        >>> pool_cam(cam, "cam-max"), pool_cam(cam, "gap")
        (tensor([[3.]]), tensor([[2.]]))

    Reference:
        Zhou et al., CAM, CVPR 2016 (GAP); Yang et al., CoSA, ECCV 2024, Eq. 1.
    """
    check_ndim("cam", cam, 4, "(B, C, h, w)")
    check_float("cam", cam)
    check_finite("cam", cam)
    if pooling == "cam-max":
        return cam.amax(dim=(2, 3))
    if pooling == "gap":
        return cam.mean(dim=(2, 3))
    if pooling == "gmp":
        raise ValueError(
            "pooling 'gmp' is not a pooling of the CAM: CoSA's GMP (Eq. 1) max-pools the "
            "features, then applies the classifier; use pooled_logits(features, "
            "classifier, 'gmp') or CAMExtractor(pooling='gmp'), or pooling='cam-max' "
            "for the max over the CAM"
        )
    raise ValueError(f"pooling must be one of {CAM_POOLINGS}, got {pooling!r}")


def _check_classifier(classifier: nn.Module, channels: int) -> None:
    """Raise unless ``classifier`` is a 1×1, stride-1, unpadded Conv2d on ``channels``."""
    if not isinstance(classifier, nn.Conv2d):
        raise ValueError(
            f"classifier must be a 1x1 nn.Conv2d (the CAM classifier W_fc), "
            f"got {type(classifier).__name__}"
        )
    k, s, p = classifier.kernel_size, classifier.stride, classifier.padding
    if tuple(k) != (1, 1) or tuple(s) != (1, 1) or p not in ((0, 0), "valid", "same"):
        raise ValueError(
            f"classifier must be 1x1 with stride 1 and no padding, got kernel_size={k}, "
            f"stride={s}, padding={p}"
        )
    if classifier.in_channels != channels:
        raise ValueError(
            f"features have {channels} channels but classifier expects {classifier.in_channels}"
        )


def pooled_logits(
    features: torch.Tensor, classifier: nn.Conv2d, pooling: str = "gmp"
) -> torch.Tensor:
    """Image-level class logits by CoSA's Eq. 1: pool the features, then classify.

    .. math:: Z = G\\,W_{fc}^\\top, \\qquad G = \\mathrm{Pooling}(F) \\in \\mathbb{R}^{B\\times D}

    ``"gmp"``: G = max of F over the h×w pixels, per channel (CoSA's choice);
    ``"gap"``: G = mean of F over the pixels, which equals the mean of the CAM
    W_fc·F. ``"cam-max"``: the max over the CAM W_fc·F instead, which is *not* Eq. 1
    (kept for comparison with earlier results). With GMP the gradient reaches W_fc only
    through the max-pooled features G, and F only at each channel's arg-max pixel.
    Differentiable; stays on ``features``' device.

    Args:
        features: F, (B, D, h, w) float, finite.
        classifier: W_fc, a 1×1 ``nn.Conv2d`` (stride 1, no padding) with D input and
            C output channels; bias-free in CAMExtractor (a bias b would give Z + b).
        pooling: one of ``("gmp", "gap", "cam-max")``.
    Returns:
        (B, C) logits, dtype of the classifier's output.
    Raises:
        ValueError: if ``features`` is not 4-D, float and finite, ``classifier`` is not
            such a 1×1 Conv2d or its input channels differ from D, or ``pooling`` is
            unknown.
    Example:
        >>> feats = torch.tensor([[[[1.0, 3.0]], [[2.0, -1.0]]]])  # (1, 2, 1, 2)
        >>> fc = nn.Conv2d(2, 1, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = fc.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        >>> pooled_logits(feats, fc, "gmp")  # 1*max(1, 3) - 1*max(2, -1) = 3 - 2
        tensor([[1.]], grad_fn=<ViewBackward0>)
        >>> pooled_logits(feats, fc, "cam-max")  # max(1 - 2, 3 + 1)
        tensor([[4.]], grad_fn=<AmaxBackward0>)

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. 1; Zhou et al., CAM, CVPR 2016 (GAP).
    """
    check_ndim("features", features, 4, "(B, D, h, w)")
    check_float("features", features)
    check_finite("features", features)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    _check_classifier(classifier, features.shape[1])
    if pooling == "cam-max":
        return classifier(features).amax(dim=(2, 3))
    pooled = features.amax(dim=(2, 3)) if pooling == "gmp" else features.mean(dim=(2, 3))
    # a 1×1 map through the conv: same weights, dtype handling and autocast as the CAM
    return classifier(pooled[:, :, None, None]).flatten(1)  # (B, C), also for B = 0


def normalize_cam(
    cam: torch.Tensor, labels: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """ReLU, then per-image, per-class min–max normalisation of a CAM to [0, 1].

    .. math:: \\hat M^c = \\frac{\\mathrm{ReLU}(M^c) - \\min \\mathrm{ReLU}(M^c)}
              {\\max \\mathrm{ReLU}(M^c) - \\min \\mathrm{ReLU}(M^c) + \\epsilon}

    Classes absent from the image-level ``labels`` are set to 0, as CoSA does before
    pseudo-labelling. Differentiable; stays on ``cam``'s device.

    Args:
        cam: raw CAM logits, (B, C, h, w) float, C foreground classes.
        labels: optional (B, C) multi-hot image labels (0/1, any dtype).
        eps: ε > 0 in the denominator, so a flat map gives 0, not NaN.
    Returns:
        (B, C, h, w) float in [0, 1).
    Raises:
        ValueError: on a non-4-D or non-float ``cam``, ``labels`` of the wrong shape or
            not multi-hot, or ``eps`` ≤ 0.
    Example:
        >>> normalize_cam(torch.tensor([[[[0.0, 2.0, -1.0]]]]))
        tensor([[[[0.0000, 1.0000, 0.0000]]]])

    Reference:
        Yang et al., CoSA, ECCV 2024, Sec. 3.1; method.md "CAM normalisation".
    """
    check_ndim("cam", cam, 4, "(B, C, h, w)")
    check_float("cam", cam)
    check_finite("cam", cam)
    check_positive("eps", eps)
    cam = F.relu(cam)
    low = cam.amin(dim=(2, 3), keepdim=True)
    high = cam.amax(dim=(2, 3), keepdim=True)
    cam = (cam - low) / (high - low + eps)
    if labels is not None:
        check_labels("labels", labels, cam.shape[1])
        if labels.shape[0] != cam.shape[0]:
            raise ValueError(
                f"labels batch {labels.shape[0]} differs from cam batch {cam.shape[0]}"
            )
        cam = cam * labels.to(cam.dtype)[:, :, None, None]
    return cam


class CAMOutput(NamedTuple):
    """What :class:`CAMExtractor` returns; all tensors on the input's device.

    The first four fields are those of :class:`wsss_blocks.models.CoSAOutput`, in the same
    order.

    Attributes:
        cam: raw last-layer CAM M = W_fc·F (1×1 classifier output, before ReLU),
            (B, C, h, w).
        logits: image-level logits Z of CoSA Eq. 1 from F and W_fc (or the max over
            ``cam`` for ``pooling="cam-max"``), (B, C).
        early_cam: raw early-layer CAM M†, (B, C, h†, w†), or None.
        early_logits: image-level logits from the early features and their own
            classifier, pooled as ``logits``, (B, C), or None.
        features: last-layer feature map F, (B, D, h, w) (a ViT's after its final norm).
    """

    cam: torch.Tensor
    logits: torch.Tensor
    early_cam: torch.Tensor | None
    early_logits: torch.Tensor | None
    features: torch.Tensor


def _token_norm(model: nn.Module) -> nn.Module | None:
    """The final token-wise norm of a ViT-like timm model (``blocks`` + ``norm``), or None.

    Token-wise means it normalises the last (channel) axis: LayerNorm, RmsNorm and
    timm's variants, all with ``normalized_shape``. A CNN's BatchNorm2d, an
    ``nn.Identity`` (ViTs with ``fc_norm``, whose norm comes after pooling) or a model
    without ``blocks`` gives None.
    """
    norm = getattr(model, "norm", None)
    if not hasattr(model, "blocks") or norm is None or isinstance(norm, nn.Identity):
        return None
    return norm if hasattr(norm, "normalized_shape") else None


def _create_timm_model(name: str, kwargs: dict) -> nn.Module:
    """``timm.create_model``; ViT-like models are built with ``dynamic_img_size=True``
    and ``dynamic_img_pad=True`` unless the caller sets them, so that any input size
    works (multi-scale CAMs, images of another size than ``img_size``, sides that are
    no multiple of the patch): the position embedding is interpolated and the image
    padded to whole patches. Models whose constructor has no such argument (CNNs) are
    built without them."""
    import timm

    if "dynamic_img_size" in kwargs or "dynamic_img_pad" in kwargs:
        return timm.create_model(name, **kwargs)
    try:
        return timm.create_model(name, dynamic_img_size=True, dynamic_img_pad=True, **kwargs)
    except TypeError as e:
        if "dynamic_img_size" not in str(e):
            raise
        return timm.create_model(name, **kwargs)


class TimmFeatures(nn.Module):
    """Feature maps of a timm backbone at chosen depths, NCHW, for CNNs and ViTs alike.

    Uses timm's ``forward_intermediates``, which reshapes a ViT's patch tokens to a
    grid and drops class/register tokens, so no grid size is hard-coded. Layers deeper
    than the last requested index are pruned away (they would cost time for nothing);
    a ViT's final norm is kept.

    For a ViT-like model (``blocks`` and a token-wise final ``norm``, e.g. LayerNorm or
    RmsNorm), the map of the model's final block (index n-1 of the full model) goes
    through that norm, as in timm's ``forward_features`` and CoSA's release, which
    computes the last-layer CAM on the normed tokens. Maps of intermediate blocks (e.g.
    M† at block 9 of 12) are the raw block outputs, as in the release. CNNs are
    unchanged.

    Args:
        model: a timm model that implements ``forward_intermediates`` (timm ≥ 1.0: ViTs,
            ResNets, EfficientNets, ConvNeXts, ...), or a model name for
            ``timm.create_model``.
        indices: intermediate indices to return, e.g. ``(-3, -1)`` for a 12-block ViT
            (blocks 9 and 11, CoSA's early and last layers) or ``(2, 3)`` for a ResNet
            (layer2 and layer3). Negative indices count from the end of the full model.
        extra_blocks: index every block stage instead of the ``feature_info`` stages
            (timm's ``extra_blocks``; EfficientNet and MobileNet families): 0 is the stem,
            k the output of ``blocks[k - 1]``. It reaches layers between two reduction
            points, e.g. an early-layer M† one stage before the last.
        final_norm: apply a ViT's final norm to its final block's map (default True);
            False returns the raw block output. No effect on models without one.
        **create_kwargs: passed to ``timm.create_model`` when ``model`` is a name
            (e.g. ``pretrained=False``, ``output_stride=8``, ``img_size=96``). ViTs
            are built with ``dynamic_img_size`` and ``dynamic_img_pad`` on unless set
            here, so any input size works (position embedding interpolated, sides
            padded to whole patches).
    Attributes:
        indices: the requested indices, made non-negative.
        channels: D_k of each returned map.
        normed_index: the index whose map gets the final norm, or None.
    Raises:
        ValueError: if the model cannot return intermediates (or block-level ones when
            ``extra_blocks``), or ``indices`` is empty or out of range.
    """

    def __init__(
        self,
        model: nn.Module | str,
        indices: Sequence[int],
        extra_blocks: bool = False,
        final_norm: bool = True,
        **create_kwargs,
    ):
        super().__init__()

        if isinstance(model, str):
            model = _create_timm_model(model, create_kwargs)
        if not hasattr(model, "forward_intermediates"):
            raise ValueError(
                f"model {type(model).__name__} has no forward_intermediates; "
                "use a timm model that supports it (timm >= 1.0)"
            )
        if len(indices) == 0:
            raise ValueError("indices must name at least one layer, got an empty sequence")
        if not hasattr(model, "feature_info"):
            raise ValueError(f"model {type(model).__name__} has no feature_info (timm >= 1.0)")
        self._extra = {}
        if extra_blocks:
            if "extra_blocks" not in inspect.signature(model.forward_intermediates).parameters:
                raise ValueError(
                    f"extra_blocks=True needs a timm model with block-level intermediates "
                    f"(EfficientNet/MobileNet families), got {type(model).__name__}"
                )
            self._extra = {"extra_blocks": True}
            n = len(model.blocks) + 1
        else:
            n = len(model.feature_info)
        for i in indices:
            if not -n <= int(i) < n:
                raise ValueError(f"indices must lie in [-{n}, {n - 1}] for this model, got {i}")
        self.indices = [int(i) % n for i in indices]
        # Only the full model's final block is followed by the norm in forward_features.
        normed = final_norm and _token_norm(model) is not None and (n - 1) in self.indices
        self.normed_index = n - 1 if normed else None
        # timm returns maps in depth order of the unique indices; remember where each is.
        self._depth_order = sorted(set(self.indices))
        if hasattr(model, "prune_intermediate_layers"):
            # prune_norm stays False (timm's default): the final norm is needed above.
            model.prune_intermediate_layers(self._depth_order, prune_head=True, **self._extra)
        self.model = model
        if extra_blocks:  # feature_info does not list every block: probe the widths once
            was_training = model.training
            model.eval()  # no BatchNorm statistics update from the probe
            with torch.no_grad():
                probe = self(torch.zeros(1, 3, 64, 64).to(next(model.parameters())))
            model.train(was_training)
            self.channels = [int(m.shape[1]) for m in probe]
        else:
            self.channels = [int(model.feature_info[i]["num_chs"]) for i in self.indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return one (B, D_k, h_k, w_k) map per requested index, in that order.

        Raises:
            ValueError: ``x`` not a 4-D floating tensor (uint8 images are named), or
                not finite (a data check).
        """
        check_image_batch("x", x, "(B, C_in, H, W)")
        maps = self.model.forward_intermediates(
            x, indices=self._depth_order, output_fmt="NCHW", intermediates_only=True, **self._extra
        )
        if self.normed_index is not None:
            k = self._depth_order.index(self.normed_index)
            # token-wise norm over D: NCHW -> NHWC -> norm -> NCHW
            maps[k] = self.model.norm(maps[k].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return [maps[self._depth_order.index(i)] for i in self.indices]


class CAMExtractor(nn.Module):
    """Backbone + bias-free 1×1 CAM classifier(s): last-layer CAM M and early-layer CAM M†.

    The returned CAMs are raw (before ReLU/normalisation), differentiable, and on the
    model's device; apply :func:`normalize_cam` for pseudo-labels and keep the raw CAM
    for the Seg2CAM loss (CoSA Eq. 8), which needs logits. Image logits follow CoSA's
    Eq. 1 (see :func:`pooled_logits`): the CAM is computed once, and GMP max-pools the
    features (cheap) rather than the CAM.

    Args:
        backbone: a timm model name or model (see :class:`TimmFeatures`).
        num_classes: C, foreground classes (no background), ≥ 1.
        last_index: feature index of the last layer (default -1).
        early_index: feature index of the early layer for M†, or None for no M†
            (CoSA uses ViT block 9 of 12, i.e. -3).
        pooling: image logits, for M and M† alike, each from its own features and
            classifier: ``"gmp"`` (CoSA Eq. 1: classifier on the max-pooled features),
            ``"gap"`` (classifier on the mean-pooled features = mean of the CAM) or
            ``"cam-max"`` (max over the CAM; not CoSA's Eq. 1, kept for earlier results).
        **create_kwargs: ``extra_blocks`` and ``final_norm`` for :class:`TimmFeatures`,
            the rest for ``timm.create_model`` when ``backbone`` is a name.
    Raises:
        ValueError: on ``num_classes`` < 1 or an unknown ``pooling``.
    Example:
        >>> ext = CAMExtractor("resnet18", num_classes=3, early_index=2, last_index=3,
        ...                    pretrained=False)
        >>> out = ext(torch.randn(2, 3, 64, 64))
        >>> tuple(out.cam.shape), tuple(out.logits.shape), tuple(out.early_cam.shape)
        ((2, 3, 4, 4), (2, 3), (2, 3, 8, 8))

    Reference:
        Zhou et al., CAM, CVPR 2016; Yang et al., CoSA, ECCV 2024, Eq. 1, Sec. 3.1, 3.4.
    """

    def __init__(
        self,
        backbone: nn.Module | str,
        num_classes: int,
        last_index: int = -1,
        early_index: int | None = None,
        pooling: str = "gmp",
        **create_kwargs,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        indices = [last_index] if early_index is None else [early_index, last_index]
        self.features = TimmFeatures(backbone, indices, **create_kwargs)
        self.pooling = pooling
        self.num_classes = num_classes
        self.feature_channels = self.features.channels[-1]
        self.classifier = nn.Conv2d(self.feature_channels, num_classes, 1, bias=False)
        self.early_classifier = (
            None
            if early_index is None
            else nn.Conv2d(self.features.channels[0], num_classes, 1, bias=False)
        )

    def _logits(self, features: torch.Tensor, cam: torch.Tensor, classifier: nn.Conv2d):
        # gap and cam-max come from the CAM already computed; gmp needs the features.
        if self.pooling == "gmp":
            return pooled_logits(features, classifier, "gmp")
        return pool_cam(cam, self.pooling)

    def forward(self, x: torch.Tensor) -> CAMOutput:
        """Args: x, (B, 3, H, W) float image batch (already normalised for the backbone)."""
        check_image_batch("x", x)
        with inputs_checked():  # everything below derives from the checked x
            maps = self.features(x)
            features = maps[-1]
            cam = self.classifier(features)
            early_cam = early_logits = None
            if self.early_classifier is not None:
                early_cam = self.early_classifier(maps[0])
                early_logits = self._logits(maps[0], early_cam, self.early_classifier)
            logits = self._logits(features, cam, self.classifier)
        return CAMOutput(cam, logits, early_cam, early_logits, features)

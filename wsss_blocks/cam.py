"""Class activation maps (CAM) from any timm backbone, CNN or ViT.

The CAM of class c is the output of a bias-free 1×1 classifier applied to a feature
map before pooling (Zhou et al., CVPR 2016); image logits are its global max (GMP, as
in CoSA) or average (GAP). CoSA also reads an early-layer CAM M† from an intermediate
block with its own 1×1 classifier (CoSA, ECCV 2024, Sec. 3.4).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_finite, check_float, check_labels, check_ndim, check_positive

POOLINGS = ("gmp", "gap")


def pool_cam(cam: torch.Tensor, pooling: str = "gmp") -> torch.Tensor:
    """Image-level class logits from a raw CAM by global pooling.

    Args:
        cam: raw CAM logits, (B, C, h, w) float, C foreground classes, any real values.
        pooling: ``"gmp"`` (global max, CoSA Eq. 1) or ``"gap"`` (global average).
    Returns:
        (B, C) logits, same dtype as ``cam``.
    Raises:
        ValueError: if ``cam`` is not 4-D float or ``pooling`` is unknown.
    Example:
        >>> pool_cam(torch.tensor([[[[1.0, 3.0]]]]), "gmp")
        tensor([[3.]])

    Reference:
        Yang et al., CoSA, ECCV 2024, Sec. 3.1 (GMP); Zhou et al., CAM, CVPR 2016 (GAP).
    """
    check_ndim("cam", cam, 4, "(B, C, h, w)")
    check_float("cam", cam)
    check_finite("cam", cam)
    if pooling == "gmp":
        return cam.amax(dim=(2, 3))
    if pooling == "gap":
        return cam.mean(dim=(2, 3))
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


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

    Attributes:
        features: last-layer feature map F, (B, D, h, w).
        cam: raw last-layer CAM M (1×1 classifier output, before ReLU), (B, C, h, w).
        logits: image-level logits pooled from ``cam``, (B, C).
        early_cam: raw early-layer CAM M†, (B, C, h†, w†), or None.
        early_logits: image-level logits pooled from ``early_cam``, (B, C), or None.
    """

    features: torch.Tensor
    cam: torch.Tensor
    logits: torch.Tensor
    early_cam: torch.Tensor | None
    early_logits: torch.Tensor | None


class TimmFeatures(nn.Module):
    """Feature maps of a timm backbone at chosen depths, NCHW, for CNNs and ViTs alike.

    Uses timm's ``forward_intermediates``, which reshapes a ViT's patch tokens to a
    grid and drops class/register tokens, so no grid size is hard-coded. Layers deeper
    than the last requested index are pruned away (they would cost time for nothing).

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
        **create_kwargs: passed to ``timm.create_model`` when ``model`` is a name
            (e.g. ``pretrained=False``, ``output_stride=8``, ``img_size=96``).
    Raises:
        ValueError: if the model cannot return intermediates (or block-level ones when
            ``extra_blocks``), or ``indices`` is empty or out of range.
    """

    def __init__(
        self,
        model: nn.Module | str,
        indices: Sequence[int],
        extra_blocks: bool = False,
        **create_kwargs,
    ):
        super().__init__()
        import timm

        if isinstance(model, str):
            model = timm.create_model(model, **create_kwargs)
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
        # timm returns maps in depth order of the unique indices; remember where each is.
        self._depth_order = sorted(set(self.indices))
        if hasattr(model, "prune_intermediate_layers"):
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
        """Return one (B, D_k, h_k, w_k) map per requested index, in that order."""
        maps = self.model.forward_intermediates(
            x, indices=self._depth_order, output_fmt="NCHW", intermediates_only=True, **self._extra
        )
        return [maps[self._depth_order.index(i)] for i in self.indices]


class CAMExtractor(nn.Module):
    """Backbone + bias-free 1×1 CAM classifier(s): last-layer CAM M and early-layer CAM M†.

    The returned CAMs are raw (before ReLU/normalisation), differentiable, and on the
    model's device; apply :func:`normalize_cam` for pseudo-labels and keep the raw CAM
    for the Seg2CAM loss (CoSA Eq. 8), which needs logits.

    Args:
        backbone: a timm model name or model (see :class:`TimmFeatures`).
        num_classes: C, foreground classes (no background), ≥ 1.
        last_index: feature index of the last layer (default -1).
        early_index: feature index of the early layer for M†, or None for no M†
            (CoSA uses ViT block 9 of 12, i.e. -3).
        pooling: ``"gmp"`` (CoSA) or ``"gap"`` for the image logits.
        **create_kwargs: ``extra_blocks`` for :class:`TimmFeatures` (block-level
            indices), the rest for ``timm.create_model`` when ``backbone`` is a name.
    Raises:
        ValueError: on ``num_classes`` < 1 or an unknown ``pooling``.
    Example:
        >>> ext = CAMExtractor("resnet18", num_classes=3, early_index=2, last_index=3,
        ...                    pretrained=False)
        >>> out = ext(torch.randn(2, 3, 64, 64))
        >>> tuple(out.cam.shape), tuple(out.logits.shape), tuple(out.early_cam.shape)
        ((2, 3, 4, 4), (2, 3), (2, 3, 8, 8))

    Reference:
        Zhou et al., CAM, CVPR 2016; Yang et al., CoSA, ECCV 2024, Sec. 3.1 and 3.4.
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

    def forward(self, x: torch.Tensor) -> CAMOutput:
        """Args: x, (B, 3, H, W) float image batch (already normalised for the backbone)."""
        check_ndim("x", x, 4, "(B, 3, H, W)")
        maps = self.features(x)
        features = maps[-1]
        cam = self.classifier(features)
        early_cam = early_logits = None
        if self.early_classifier is not None:
            early_cam = self.early_classifier(maps[0])
            early_logits = pool_cam(early_cam, self.pooling)
        return CAMOutput(features, cam, pool_cam(cam, self.pooling), early_cam, early_logits)

"""The CoSA network: timm backbone + CAM heads (M, M†) + LargeFOV segmentation decoder."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from .._checks import check_image_batch, inputs_checked
from ..cam import CAMExtractor, CAMOutput
from .base import CAMBackboneNet


class LargeFOV(nn.Module):
    """DeepLab-LargeFOV segmentation decoder.

    3×3 conv (dilation ``dilation``) D→``width``, ReLU, 3×3 conv (dilation) →``width``,
    ReLU, 1×1 conv → ``num_classes``. Output stays at the input grid (h × w).

    Args:
        in_channels: D, channels of the feature map.
        num_classes: classes *including* background (C+1).
        width: hidden channels (DeepLab/CoSA: 512).
        dilation: dilation of the 3×3 convs (CoSA: 5).
        dropout: dropout probability before the classifier (0 = none).
    Raises:
        ValueError: if a size is < 1.
    Example:
        >>> LargeFOV(8, 3, width=16)(torch.zeros(1, 8, 6, 6)).shape
        torch.Size([1, 3, 6, 6])

    Reference:
        Chen et al., DeepLab, TPAMI 2018; Yang et al., CoSA, ECCV 2024, Sec. 4.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 512,
        dilation: int = 5,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.in_channels = in_channels
        for name, v in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("width", width),
            ("dilation", dilation),
        ):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        pad = dilation
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=pad, dilation=dilation),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=pad, dilation=dilation),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) float → (B, num_classes, h, w) logits."""
        check_image_batch("features", features, "(B, D, h, w)")
        if features.shape[1] != self.in_channels:
            raise ValueError(
                f"features must have {self.in_channels} channels, got shape {tuple(features.shape)}"
            )
        return self.body(features)


class CoSAOutput(NamedTuple):
    """Outputs of :class:`CoSANet`, all at the feature grid h × w.

    The first four fields are those of :class:`wsss_blocks.CAMOutput`, in the same order.

    Attributes:
        cam: (B, C, h, w) raw last-layer CAM M.
        logits: (B, C) image logits from M.
        early_cam: (B, C, h†, w†) raw early-layer CAM M† or None.
        early_logits: (B, C) image logits from M† (None without an early layer).
        seg: (B, C+1, h, w) segmentation logits S.
    """

    cam: torch.Tensor
    logits: torch.Tensor
    early_cam: torch.Tensor | None
    early_logits: torch.Tensor | None
    seg: torch.Tensor


class CoSANet(CAMBackboneNet):
    """CoSA's network, used for both the ON (student) and the AN (its EMA teacher).

    Input images are floats in [0, 1]; the network normalises them with the ImageNet
    mean/std itself, so data pipelines and visualisations stay in image space.

    Args:
        num_classes: C, foreground classes (the decoder predicts C+1 with background).
        backbone: timm model name (or model), see :class:`wsss_blocks.CAMExtractor`.
        last_index, early_index: feature indices of the last layer and of the early
            layer for M† (None: no M†).
        pooling: ``"gmp"`` (CoSA Eq. 1: the classifier on max-pooled features), ``"gap"``
            or ``"cam-max"`` (see :func:`wsss_blocks.pooled_logits`).
        decoder_width: hidden width of the LargeFOV decoder (CoSA: 512).
        decoder_dilation: its dilation (CoSA: 5).
        **create_kwargs: ``extra_blocks`` (see :class:`wsss_blocks.TimmFeatures`), the rest
            for ``timm.create_model`` (``pretrained``, ``output_stride``, ...).
    Example:
        >>> net = CoSANet(4, "resnet18", last_index=3, early_index=2, decoder_width=16,
        ...               pretrained=False)
        >>> out = net(torch.rand(2, 3, 64, 64))
        >>> tuple(out.seg.shape), tuple(out.cam.shape)
        ((2, 5, 4, 4), (2, 4, 4, 4))

    Reference:
        Yang et al., CoSA, ECCV 2024, Fig. 2 and Sec. 4 (implementation details).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Module | str = "resnet18",
        last_index: int = -1,
        early_index: int | None = -3,
        pooling: str = "gmp",
        decoder_width: int = 512,
        decoder_dilation: int = 5,
        **create_kwargs,
    ):
        super().__init__(
            CAMExtractor(backbone, num_classes, last_index, early_index, pooling, **create_kwargs)
        )
        self.num_classes = num_classes
        self.decoder = LargeFOV(
            self.cam_extractor.feature_channels, num_classes + 1, decoder_width, decoder_dilation
        )

    def forward(self, images: torch.Tensor) -> CoSAOutput:
        """images: (B, 3, H, W) float in [0, 1]. Returns :class:`CoSAOutput`."""
        out = self.forward_cam(images)
        with inputs_checked():  # the features derive from checked images
            seg = self.decoder(out.features)
        return CoSAOutput(out.cam, out.logits, out.early_cam, out.early_logits, seg)

    def forward_cam(self, images: torch.Tensor) -> CAMOutput:
        """The CAM branch alone, without the decoder: for passes that need only the CAMs
        (the AN's multi-scale CPL pass; the decoder costs ~15% of a forward there).

        Args:
            images: (B, 3, H, W) float in [0, 1].
        Returns:
            :class:`wsss_blocks.CAMOutput` (cam, logits, early_cam, early_logits,
            features); ``self.decoder(out.features)`` gives the segmentation logits S.
        Raises:
            ValueError: if ``images`` is not a (B, 3, H, W) float tensor.

        Reference:
            Yang et al., CoSA, ECCV 2024, Fig. 2 (the CAM branch of the AN and ON).
        """
        check_image_batch("images", images)
        with inputs_checked():  # the sub-modules' inputs derive from checked images
            return self.cam_extractor(self.normalize(images))

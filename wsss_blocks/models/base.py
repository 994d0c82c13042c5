"""A base for networks built on a :class:`wsss_blocks.CAMExtractor`."""

from __future__ import annotations

import torch
import torch.nn as nn

from .._checks import check_float, check_ndim
from ..cam import CAMExtractor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CAMBackboneNet(nn.Module):
    """What every network on a CAM extractor needs: ImageNet input normalisation and the
    backbone / head parameter split for two learning rates.

    Subclasses add their heads and ``forward``; they call :meth:`normalize` on the input
    images, so data pipelines and visualisations stay in image space ([0, 1]).

    Args:
        cam_extractor: the :class:`wsss_blocks.CAMExtractor` holding the backbone
            (its ``features``) and the CAM classifiers.
    Raises:
        TypeError: if ``cam_extractor`` is not a :class:`wsss_blocks.CAMExtractor`.
    Example:
        >>> net = CAMBackboneNet(CAMExtractor("resnet18", 3, pretrained=False))
        >>> net.normalize(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])

    Reference:
        WSSS convention (CoSA, AuxSegNet): ImageNet-normalised input; heads trained at a
        multiple of the backbone's learning rate (CoSA Sec. 4: 10×).
    """

    def __init__(self, cam_extractor: CAMExtractor):
        super().__init__()
        if not isinstance(cam_extractor, CAMExtractor):
            raise TypeError(
                f"cam_extractor must be a CAMExtractor, got {type(cam_extractor).__name__}"
            )
        self.cam_extractor = cam_extractor
        # Not persistent: constants, so checkpoints hold only learned state.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float images in [0, 1] → ImageNet-normalised, same shape and dtype.

        Raises:
            ValueError: if ``images`` is not a 4-D float tensor with 3 channels.
        """
        check_ndim("images", images, 4, "(B, 3, H, W)")
        check_float("images", images)
        if images.shape[1] != 3:
            raise ValueError(f"images must have 3 channels, got shape {tuple(images.shape)}")
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters of the backbone (trained at the base learning rate)."""
        return list(self.cam_extractor.features.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Every other parameter: CAM classifiers and task heads (a higher learning rate)."""
        ids = {id(p) for p in self.backbone_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

"""Networks assembled from the blocks: LargeFOV decoder and the CoSA network."""

from .cosa import CoSANet, CoSAOutput, LargeFOV, upsample

__all__ = ["CoSANet", "CoSAOutput", "LargeFOV", "upsample"]

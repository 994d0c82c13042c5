"""Networks assembled from the blocks: LargeFOV decoder and the CoSA network."""

from .cosa import CoSANet, CoSAOutput, LargeFOV, upsample
from .weights import load_weights_by_position, packaged_weights_path

__all__ = [
    "CoSANet",
    "CoSAOutput",
    "LargeFOV",
    "load_weights_by_position",
    "packaged_weights_path",
    "upsample",
]

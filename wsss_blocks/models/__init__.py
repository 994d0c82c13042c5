"""Networks assembled from the blocks: a CAM-network base, the LargeFOV decoder and the CoSA
network."""

from .base import CAMBackboneNet
from .cosa import CoSANet, CoSAOutput, LargeFOV
from .weights import load_weights_by_position, packaged_weights_path

__all__ = [
    "CAMBackboneNet",
    "CoSANet",
    "CoSAOutput",
    "LargeFOV",
    "load_weights_by_position",
    "packaged_weights_path",
]

"""Python face of the compiled operators in csrc/ and their pure-PyTorch references."""

from wsss_blocks.ops.contrastive import (
    MAX_KERNEL_DIM,
    contrastive_separation_loss_kernel,
    csc_implementation,
)
from wsss_blocks.ops.reference import (
    NORM_EPS,
    contrastive_separation_loss_reference,
    normalize_rows,
)

__all__ = [
    "MAX_KERNEL_DIM",
    "NORM_EPS",
    "contrastive_separation_loss_kernel",
    "contrastive_separation_loss_reference",
    "csc_implementation",
    "normalize_rows",
]

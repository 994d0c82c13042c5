"""wsss-blocks: reusable building blocks for weakly supervised semantic segmentation.

Each block takes tensors and returns tensors; import only what you need::

    from wsss_blocks import CAMExtractor, EMATeacher, cam_to_cpl, raw_cam2seg_loss
"""

from ._checks import IGNORE_INDEX, data_checks_enabled, set_data_checks
from .affinity import (
    CrossTaskAffinityFusion,
    NonLocalAffinity,
    fuse_affinities,
    nonlocal_affinity,
    propagate,
)
from .cam import CAMExtractor, CAMOutput, TimmFeatures, normalize_cam, pool_cam, pooled_logits
from .data.saliency_maps import cached_saliency, load_saliency_maps, save_saliency_maps
from .gmm import gmm_crossing
from .losses import (
    classification_loss,
    dense_energy_loss,
    energy_gate,
    raw_cam2seg_loss,
    saliency_loss,
    seg2cam_loss,
)
from .losses.contrastive import contrastive_separation_loss
from .metrics import IoUResult, MeanIoU, mask_absent_classes
from .models import CoSANet, LargeFOV
from .multiscale import multiscale_cam, multiscale_seg
from .ops.contrastive import csc_implementation
from .pseudo_labels import (
    cam_confidence,
    cam_to_cpl,
    cam_to_cpl_dual,
    fuse_cam_saliency,
    perplexity,
    raw_weights,
    seg_to_spl,
)
from .refine import pixel_adaptive_refinement
from .saliency import SALIENCY_METHODS, border_prior_saliency, estimate_saliency, opencv_saliency
from .teacher import EMATeacher
from .threshold import GMMThresholdSearcher, unit_histogram

__version__ = "0.1.0"

__all__ = [
    "IGNORE_INDEX",
    "data_checks_enabled",
    "set_data_checks",
    "CAMExtractor",
    "CAMOutput",
    "TimmFeatures",
    "normalize_cam",
    "pool_cam",
    "pooled_logits",
    "multiscale_cam",
    "multiscale_seg",
    "pixel_adaptive_refinement",
    "classification_loss",
    "raw_cam2seg_loss",
    "seg2cam_loss",
    "dense_energy_loss",
    "energy_gate",
    "contrastive_separation_loss",
    "csc_implementation",
    "GMMThresholdSearcher",
    "gmm_crossing",
    "unit_histogram",
    "IoUResult",
    "MeanIoU",
    "mask_absent_classes",
    "CoSANet",
    "LargeFOV",
    "cam_confidence",
    "cam_to_cpl",
    "cam_to_cpl_dual",
    "perplexity",
    "raw_weights",
    "seg_to_spl",
    "EMATeacher",
    "CrossTaskAffinityFusion",
    "NonLocalAffinity",
    "fuse_affinities",
    "nonlocal_affinity",
    "propagate",
    "SALIENCY_METHODS",
    "border_prior_saliency",
    "cached_saliency",
    "estimate_saliency",
    "fuse_cam_saliency",
    "load_saliency_maps",
    "opencv_saliency",
    "saliency_loss",
    "save_saliency_maps",
]

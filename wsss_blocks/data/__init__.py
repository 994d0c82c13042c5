"""Data: the bundled MF-Seg data set, Fashion-MNIST reader, weak/strong views, VOC and
COCO loaders, saliency maps on disk."""

from .coco import COCO_CLASSES, COCOSegmentation, coco_instances_to_masks
from .fashion_mnist import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    read_idx,
)
from .mfseg import (
    GENERATOR_VERSION,
    MFSEG_LARGE,
    PREFERRED_TEXTURE,
    MFSeg,
    generate_mfseg,
    mfseg_cache_dir,
    mfseg_cache_key,
)
from .saliency_maps import (
    SALIENCY_CACHE_VERSION,
    cached_saliency,
    load_saliency_maps,
    saliency_cache_dir,
    save_saliency_maps,
)
from .textures import TEXTURE_NAMES, load_texture
from .views import (
    MAGNITUDE_MAPS,
    RANDAUG_OPS,
    EvalView,
    RandomRescaleCrop,
    ViewPair,
    WeakStrongViews,
    apply_randaug_op,
    gaussian_blur_batch,
    randaug_batch,
)
from .voc import (
    VOC_CLASSES,
    SegmentationFolder,
    VOCSegmentation,
    labels_from_mask,
    read_label_png,
    read_split_list,
    voc_palette,
)

__all__ = [
    "COCO_CLASSES",
    "COCOSegmentation",
    "RandomRescaleCrop",
    "coco_instances_to_masks",
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "GENERATOR_VERSION",
    "MFSEG_LARGE",
    "PREFERRED_TEXTURE",
    "MAGNITUDE_MAPS",
    "RANDAUG_OPS",
    "TEXTURE_NAMES",
    "VOC_CLASSES",
    "EvalView",
    "MFSeg",
    "SegmentationFolder",
    "VOCSegmentation",
    "ViewPair",
    "WeakStrongViews",
    "apply_randaug_op",
    "gaussian_blur_batch",
    "generate_mfseg",
    "labels_from_mask",
    "load_fashion_mnist",
    "load_texture",
    "mfseg_cache_dir",
    "mfseg_cache_key",
    "read_idx",
    "read_label_png",
    "randaug_batch",
    "read_split_list",
    "SALIENCY_CACHE_VERSION",
    "cached_saliency",
    "load_saliency_maps",
    "saliency_cache_dir",
    "save_saliency_maps",
    "voc_palette",
]

"""The public API, pinned (after kornia's test_api_surface.py).

For each public namespace: its ``__all__``, sorted, equals the list below; every name in
it resolves; every public class and function in it has a docstring of its own. The API
reference (``make docs``) documents exactly these names, one page per namespace.

Changed the API on purpose? Update the namespace's list here in the same commit; the
failure message names what was added and what was removed.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

PUBLIC_API: dict[str, list[str]] = {
    "wsss_blocks": [
        "CAMExtractor",
        "CAMOutput",
        "CoSANet",
        "CrossTaskAffinityFusion",
        "EMATeacher",
        "GMMThresholdSearcher",
        "IGNORE_INDEX",
        "IoUResult",
        "LargeFOV",
        "MeanIoU",
        "NonLocalAffinity",
        "SALIENCY_METHODS",
        "TimmFeatures",
        "border_prior_saliency",
        "cached_saliency",
        "cam_confidence",
        "cam_to_cpl",
        "cam_to_cpl_dual",
        "classification_loss",
        "contrastive_separation_loss",
        "csc_implementation",
        "data_checks_enabled",
        "dense_energy_loss",
        "energy_gate",
        "estimate_saliency",
        "fuse_affinities",
        "fuse_cam_saliency",
        "gmm_crossing",
        "load_saliency_maps",
        "mask_absent_classes",
        "multiscale_cam",
        "multiscale_seg",
        "nonlocal_affinity",
        "normalize_cam",
        "opencv_saliency",
        "perplexity",
        "pixel_adaptive_refinement",
        "pool_cam",
        "pooled_logits",
        "propagate",
        "raw_cam2seg_loss",
        "raw_weights",
        "saliency_loss",
        "save_saliency_maps",
        "seg2cam_loss",
        "seg_to_spl",
        "set_data_checks",
        "unit_histogram",
    ],
    "wsss_blocks.data": [
        "COCOSegmentation",
        "COCO_CLASSES",
        "DEFAULT_FASHION_MNIST_DIR",
        "EvalView",
        "FASHION_MNIST_CLASSES",
        "GENERATOR_VERSION",
        "MAGNITUDE_MAPS",
        "MFSEG_LARGE",
        "MFSeg",
        "PREFERRED_TEXTURE",
        "RANDAUG_OPS",
        "RandomRescaleCrop",
        "SALIENCY_CACHE_VERSION",
        "SegmentationFolder",
        "TEXTURE_NAMES",
        "VOCSegmentation",
        "VOC_CLASSES",
        "ViewPair",
        "WeakStrongViews",
        "apply_randaug_op",
        "cached_saliency",
        "coco_instances_to_masks",
        "gaussian_blur_batch",
        "generate_mfseg",
        "labels_from_mask",
        "load_fashion_mnist",
        "load_saliency_maps",
        "load_texture",
        "mfseg_cache_dir",
        "mfseg_cache_key",
        "randaug_batch",
        "read_idx",
        "read_label_png",
        "read_split_list",
        "saliency_cache_dir",
        "save_saliency_maps",
        "voc_palette",
    ],
    "wsss_blocks.losses": [
        "classification_loss",
        "contrastive_separation_loss",
        "dense_energy_loss",
        "energy_gate",
        "raw_cam2seg_loss",
        "saliency_loss",
        "seg2cam_loss",
    ],
    "wsss_blocks.models": [
        "CAMBackboneNet",
        "CoSANet",
        "CoSAOutput",
        "LargeFOV",
        "load_weights_by_position",
        "packaged_weights_path",
    ],
    "wsss_blocks.ops": [
        "MAX_KERNEL_DIM",
        "NORM_EPS",
        "contrastive_separation_loss_kernel",
        "contrastive_separation_loss_reference",
        "csc_implementation",
        "normalize_rows",
    ],
    "wsss_blocks.training": [
        "AMP_MODES",
        "Batch",
        "ConfigError",
        "DATA_NAMES",
        "DistInfo",
        "NonFiniteLossError",
        "RunData",
        "RunLock",
        "Stepper",
        "StopSignals",
        "TrainBatches",
        "any_rank",
        "autocast",
        "average_buffers_",
        "build_adamw",
        "build_data",
        "check_amp",
        "check_resume_config",
        "check_values",
        "cpu_has_native_bf16",
        "data_checks_for",
        "distributed",
        "eval_batches",
        "evaluate_segmentation",
        "format_iou_table",
        "gather_objects",
        "get_key",
        "integer",
        "is_distributed",
        "load_checkpoint",
        "load_config",
        "merge",
        "number",
        "overlay_batch",
        "parameter_digest",
        "parse_overrides",
        "poly_lr_factor",
        "progress_bar",
        "rank_and_world",
        "resolve_amp",
        "resolve_device",
        "rng_state",
        "sample_indices",
        "save_checkpoint",
        "seed_everything",
        "set_rng_state",
        "sliding_window_seg",
        "start_run",
        "sum_over_ranks_",
        "unwrap",
        "wrap_ddp",
        "write_metrics",
    ],
    "wsss_blocks.diagnostics": [
        "VOC_COEXISTENCE_CLASSES",
        "coexistence_miou",
        "cpl_sweep_confusions",
        "label_confusion",
        "label_quality",
        "reliability_auroc",
        "reliability_curve",
        "restrict",
        "texture_fp_counts",
        "texture_fp_rates",
        "threshold_sweep",
    ],
    "wsss_blocks.gmm": [
        "em_fit_histogram",
        "gmm_crossing",
        "hard_split_bounds",
        "sheppard_variances",
    ],
    "wsss_blocks.utils": [
        "BACKGROUND_INDEX",
        "IGNORE_INDEX",
        "upsample",
    ],
    "wsss_blocks.viz": [
        "colorize_labels",
        "label_palette",
        "plot_pseudo_label_diagnostics",
        "plot_threshold_diagnostics",
        "plot_training_curves",
        "save_overlay_grid",
    ],
}

DOCS_API = Path(__file__).resolve().parent.parent / "docs" / "api"


def _all(namespace: str) -> list[str]:
    module = importlib.import_module(namespace)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{namespace} has no __all__"
    return list(names)


def test_pinned_lists_are_sorted_and_unique():
    for namespace, names in PUBLIC_API.items():
        assert names == sorted(set(names)), f"keep PUBLIC_API[{namespace!r}] sorted and unique"


@pytest.mark.parametrize("namespace", sorted(PUBLIC_API))
def test_all_is_pinned(namespace):
    names = _all(namespace)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"{namespace}.__all__ lists these names twice: {duplicates}"
    added = sorted(set(names) - set(PUBLIC_API[namespace]))
    removed = sorted(set(PUBLIC_API[namespace]) - set(names))
    if added or removed:
        pytest.fail(
            f"the public API of {namespace} changed:\n"
            f"  added to __all__:     {added}\n"
            f"  removed from __all__: {removed}\n"
            f"If this is intended, update PUBLIC_API[{namespace!r}] in {Path(__file__).name}.",
            pytrace=False,
        )


@pytest.mark.parametrize("namespace", sorted(PUBLIC_API))
def test_every_name_resolves(namespace):
    module = importlib.import_module(namespace)
    missing = [name for name in _all(namespace) if not hasattr(module, name)]
    assert not missing, f"{namespace}.__all__ names what {namespace} does not define: {missing}"


def _own_docstring(obj) -> str:
    """The object's own docstring: not a base class's (``__doc__`` is not inherited), nor
    the signature that dataclasses and namedtuples write when a class has none."""
    doc = (obj.__doc__ or "").strip()
    generated = set()
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        generated.add(obj.__name__ + str(inspect.signature(obj)).replace(" -> None", ""))
    if inspect.isclass(obj) and isinstance(getattr(obj, "_fields", None), tuple):
        fields = ", ".join(obj._fields) + ("," if len(obj._fields) == 1 else "")
        generated.add(f"{obj.__name__}({fields})")  # as collections.namedtuple writes it
    return "" if doc in generated else doc


@pytest.mark.parametrize("namespace", sorted(PUBLIC_API))
def test_public_classes_and_functions_are_documented(namespace):
    module = importlib.import_module(namespace)
    undocumented = [
        name
        for name in _all(namespace)
        if (inspect.isclass(obj := getattr(module, name, None)) or callable(obj))
        and not _own_docstring(obj)
    ]
    assert not undocumented, f"{namespace}: public names without a docstring: {undocumented}"


@pytest.mark.parametrize("namespace", sorted(PUBLIC_API))
def test_namespace_has_an_api_reference_page(namespace):
    pages = {
        found.group(1): page.name
        for page in DOCS_API.glob("*.rst")
        if (found := re.search(r"^\.\. automodule:: (\S+)$", page.read_text(), re.M))
    }
    assert namespace in pages, f"docs/api has no page with '.. automodule:: {namespace}'"

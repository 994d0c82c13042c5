"""Run plumbing for training examples, in the manner of ``timm.utils``: configs,
device and mixed precision, seeds and checkpoints, the optimisation step, data
building and batching, and segmentation evaluation. The CoSA and AuxSegNet examples
are built on it; a new method's trainer can be too."""

from .config import ConfigError, load_config, merge
from .data import DATA_NAMES, Batch, RunData, TrainBatches, build_data, eval_batches, overlay_batch
from .evaluation import evaluate_segmentation, format_iou_table, sliding_window_seg
from .faults import RunLock, StopSignals, check_values, get_key, integer, number
from .loop import (
    NonFiniteLossError,
    Stepper,
    build_adamw,
    poly_lr_factor,
    progress_bar,
    write_metrics,
)
from .runtime import (
    AMP_MODES,
    autocast,
    check_amp,
    data_checks_for,
    load_checkpoint,
    resolve_device,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    start_run,
)

__all__ = [
    "AMP_MODES",
    "DATA_NAMES",
    "Batch",
    "ConfigError",
    "RunData",
    "NonFiniteLossError",
    "RunLock",
    "StopSignals",
    "Stepper",
    "TrainBatches",
    "autocast",
    "build_adamw",
    "build_data",
    "check_amp",
    "check_values",
    "data_checks_for",
    "eval_batches",
    "evaluate_segmentation",
    "format_iou_table",
    "get_key",
    "integer",
    "load_checkpoint",
    "load_config",
    "merge",
    "number",
    "overlay_batch",
    "poly_lr_factor",
    "progress_bar",
    "resolve_device",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "sliding_window_seg",
    "start_run",
    "write_metrics",
]

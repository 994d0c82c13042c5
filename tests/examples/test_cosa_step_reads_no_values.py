"""A CoSA training step never reads a tensor's value on the host, checked on the CPU.

On the meta device tensors have shapes but no values, and everything that would make
the host wait for a GPU raises there: ``.item()``, ``bool(t)``, ``.tolist()``,
``nonzero`` and boolean-mask indexing (data-dependent shapes), ``unique``, copies to
the CPU. One step that completes on meta (views, the AN pass, every loss term, the
threshold search, backward, AdamW, the EMA update, the loss log) therefore has no
such point: the CPU stand-in for ``tests/cuda``'s ``set_sync_debug_mode("error")``
check, which needs a GPU. What meta cannot see: a synchronisation torch makes without a
value read (none is called here).

L_csc is the exception, left out of the configs below: its anchors are the pixels where
P† ≤ ε, a data-dependent set, gathered by a boolean mask before the fused kernel (one
wait per step on a GPU; ``contrastive_separation_loss`` says so).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from examples.cosa import train
from wsss_blocks import EMATeacher
from wsss_blocks.data import WeakStrongViews
from wsss_blocks.data.views import MAGNITUDE_MAPS, RANDAUG_OPS
from wsss_blocks.training import Stepper, build_adamw, data_checks_for

CONFIGS = Path(__file__).resolve().parents[2] / "examples/cosa/configs"
META = torch.device("meta")
CNN = ["model.weights=null", "data.crop_size=48", "train.batch_size=2"]
VIT = [
    "model.pretrained=false", "model.backbone=vit_tiny_patch16_224", "model.img_size=null",
    "data.crop_size=64", "train.batch_size=2", "model.decoder_width=32",
]  # fmt: skip
CASES = {
    "default": ("default.yaml", CNN),
    "cosa_ema": ("cosa_ema.yaml", CNN),
    "baseline": ("baseline.yaml", CNN),
    "default, paper search": ("default.yaml", [*CNN, "threshold.dynamic=true",
                                               "threshold.policy=paper"]),
    "default, release search + energy": ("default.yaml", [*CNN, "threshold.dynamic=true",
                                                          "loss.energy=0.05"]),
    "paper": ("paper.yaml", [*CNN, "loss.csc=0"]),
    "voc_vit_b16": ("voc_vit_b16.yaml", [*VIT, "loss.csc=0"]),
}  # fmt: skip


def _one_meta_step(config: str, overrides: list[str]) -> tuple[dict, dict]:
    cfg = train.load_config(CONFIGS / config, [*overrides, "train.device=cpu"])
    num_classes, size = 10, cfg["data"]["crop_size"]
    model = train.build_model(cfg, num_classes).to(META)
    t = cfg["train"]
    teacher = EMATeacher(model, t["ema_momentum"]) if t["use_teacher"] else None
    optimizer = build_adamw(model, t["lr"], t["head_lr_mult"], t["weight_decay"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    weights = {k: float(v) for k, v in cfg["loss"].items() if k in train.LOSS_WEIGHTS}
    stepper = Stepper(model, optimizer, schedule, weights, teacher, "fp32", log_every=1)
    views = WeakStrongViews(size, scale=(0.75, 1.5))
    images = torch.rand(2, 3, size, size, device=META)
    masks = torch.zeros(2, size, size, dtype=torch.long, device=META)
    labels = torch.zeros(2, num_classes, device=META)
    step = max(t["warmup_iterations"], train.s2c_start(cfg))  # every term on from here
    thresholds = train.Thresholds(cfg)
    with data_checks_for(torch.device("cuda")):  # as the trainer runs on a GPU
        xw, xs, _, valid = views(images, masks)
        terms = train.cosa_losses(model, teacher, (xw, xs, valid), labels, step, thresholds, cfg)
        stepper.step(step, terms)
    return terms, cfg


@pytest.mark.parametrize("case", list(CASES))
def test_a_cosa_step_runs_on_the_meta_device(case):
    config, overrides = CASES[case]
    terms, cfg = _one_meta_step(config, overrides)
    on = {k for k, v in cfg["loss"].items() if k in train.LOSS_WEIGHTS and v}
    assert set(terms) == on  # every term switched on was computed
    assert all(v.device == META and v.shape == () for v in terms.values())


def test_the_proxy_catches_a_value_read():
    """The check can fail: CSC gathers its anchors by a boolean mask."""
    with pytest.raises(NotImplementedError, match="nonzero"):
        _one_meta_step("paper.yaml", CNN)


@pytest.mark.parametrize("magnitude_map", MAGNITUDE_MAPS)
@pytest.mark.parametrize("op", RANDAUG_OPS)
def test_every_view_op_runs_on_the_meta_device(op, magnitude_map):
    views = WeakStrongViews(32, ops=(op,), magnitude_map=magnitude_map, blur_p=1.0)
    images = torch.rand(3, 3, 40, 40, device=META)
    masks = torch.zeros(3, 40, 40, dtype=torch.long, device=META)
    with data_checks_for(torch.device("cuda")):
        out = views(images, masks)
    assert out.strong.shape == (3, 3, 32, 32) and out.strong.device == META

"""CUDA checks of the training path: AMP runs, the CSC CUDA op against its reference,
and one CoSA step without a host synchronisation. Run where a GPU exists (``make
gpu-check``); the module skips cleanly elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from examples.cosa import train  # noqa: E402
from wsss_blocks import EMATeacher  # noqa: E402
from wsss_blocks.data import WeakStrongViews  # noqa: E402
from wsss_blocks.losses.contrastive import contrastive_separation_loss  # noqa: E402
from wsss_blocks.ops.contrastive import csc_implementation  # noqa: E402
from wsss_blocks.training import Stepper, build_adamw, data_checks_for  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "examples/cosa/configs/voc_vit_b16.yaml"
SMALL = [
    "model.pretrained=false", "model.backbone=vit_tiny_patch16_224", "model.img_size=null",
    "train.device=cuda", "data.crop_size=112", "data.num_workers=2", "train.batch_size=4",
    "train.warmup_iterations=5", "train.lr_warmup_iterations=2", "model.decoder_width=64",
    "data.cpl_eval_images=4", "eval.num_overlays=2",
]  # fmt: skip


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_twenty_cuda_amp_iterations_give_finite_losses(amp, voc_tree, tmp_path):
    out = tmp_path / "run"
    sets = [*SMALL, f"data.root={voc_tree.parent}", f"train.amp={amp}", f"output_dir={out}",
            "train.iterations=20", "eval.interval=20"]  # fmt: skip
    final = train.train(train.load_config(CONFIG, sets))
    losses = json.loads((out / "metrics.json").read_text())["losses"]
    assert len(losses) == 2 and all(
        torch.isfinite(torch.tensor(v)) for _, t in losses for v in t.values()
    )
    assert 0.0 <= final["val_seg_miou"] <= 1.0


@pytest.mark.cuda
def test_csc_cuda_op_equals_the_reference_in_values_and_gradients():
    if csc_implementation("cuda") != "kernel-cuda":
        pytest.skip("the CUDA kernel is not compiled into this build")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 21, generator=gen)
    y = torch.randint(0, 21, (3000,), generator=gen)
    grads = {}
    for impl in ("kernel", "reference"):
        xi = x.cuda().requires_grad_()
        loss = contrastive_separation_loss(xi, y.cuda(), 0.1, impl=impl)
        loss.backward()
        grads[impl] = (loss.detach(), xi.grad)
    torch.testing.assert_close(grads["kernel"][0], grads["reference"][0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads["kernel"][1], grads["reference"][1], rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
def test_one_training_step_does_not_synchronise_with_the_host():
    # L_csc left out: its anchors (P† ≤ ε) are gathered by a boolean mask, one wait per
    # step by design (tests/examples/test_cosa_step_reads_no_values.py checks the rest
    # on the CPU).
    sets = [*SMALL, "train.amp=bf16", "threshold.dynamic=true", "loss.csc=0"]
    cfg = train.load_config(CONFIG, sets)
    device = torch.device("cuda")
    model = train.build_model(cfg, 20).to(device)
    teacher = EMATeacher(model, 0.9994)
    t = cfg["train"]
    opt = build_adamw(model, t["lr"], t["head_lr_mult"], t["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    weights = {k: float(v) for k, v in cfg["loss"].items() if k in train.LOSS_WEIGHTS}
    stepper = Stepper(model, opt, sched, weights, teacher, "bf16")
    thresholds = train.Thresholds(cfg)
    views = WeakStrongViews(112, scale=(1.0, 1.0))
    images = torch.rand(4, 3, 112, 112, device=device)
    masks = torch.zeros(4, 112, 112, dtype=torch.long, device=device)
    labels = torch.zeros(4, 20, device=device)
    labels[:, 0] = 1
    step = 10  # after the warm-up (every loss term on), and a logged step

    def one_step():
        xw, xs, _, valid = views(images, masks)
        terms = train.cosa_losses(model, teacher, (xw, xs, valid), labels, step, thresholds, cfg)
        stepper.step(step, terms)

    with data_checks_for(device):
        one_step()  # warm-up: lazy initialisation may synchronise once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            one_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(torch.tensor(v)) for v in stepper.loss_log[-1][1].values())


@pytest.mark.cuda
def test_a_non_finite_step_is_skipped_on_the_gpu_without_a_host_read():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).cuda()
    opt = build_adamw_like_the_trainer(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    teacher = EMATeacher(model, 0.5)
    stepper = Stepper(model, opt, sched, {"a": 1.0}, teacher, log_every=1, max_nonfinite=2)
    x = torch.ones(1, 3, device="cuda")
    stepper.step(0, {"a": model(x).mean()})
    before = model.weight.detach().clone()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stepper.step(1, {"a": model(x).mean() * float("nan")})
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(before, model.weight)
    with pytest.warns(UserWarning, match="steps skipped"):
        stepper.loss_log  # noqa: B018
    assert stepper.skipped == 1


def build_adamw_like_the_trainer(model):
    """Fused AdamW, as build_adamw gives on CUDA (a Linear has no backbone/head split)."""
    return torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)

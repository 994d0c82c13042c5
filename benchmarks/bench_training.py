"""Training-loop costs of the CoSA example: views, a baseline step and a full CoSA step.

    pytest benchmarks/bench_training.py --benchmark-enable

All cases run in one session on the same threads, so their ratios are comparable.
Nothing is asserted about time; compare the table.
"""

from pathlib import Path

import pytest
import torch

from wsss_blocks.data import WeakStrongViews

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32  # the largest batch a case uses


def _trainer():
    from examples.cosa import train

    return train


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (BATCH, 3, 96, 96), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, 11, (BATCH, 96, 96), generator=g)
    labels = (torch.rand(BATCH, 10, generator=g) < 0.3).float()
    labels[:, 0] = 1
    return images, masks, labels


def test_weak_strong_views(benchmark, batch):
    views = WeakStrongViews(96, scale=(0.75, 1.5))
    benchmark(views, batch[0], batch[1])


# The last two cases are earlier defaults: single-scale CPLs, and before that a 6x6 CAM
# grid with batch 32, to compare their step cost with the current default's
# (stride 8, batch 16, CPLs from scales 1.0 and 1.5 with flips; docs/results.md).
STEP_CASES = {
    "baseline": ("baseline.yaml", []),
    "cosa": ("default.yaml", []),
    "cosa-bf16-trained": ("default.yaml", ["train.amp=bf16"]),  # bf16 backward too
    "cosa-scales-1.25": ("default.yaml", ["model.cam_scales=[1.0,1.25]"]),
    "cosa-ema": ("cosa_ema.yaml", []),  # with the EMA teacher, L_cls-dagger, M-dagger
    "cosa+energy": ("default.yaml", ["loss.energy=0.05"]),
    "cosa+spl-3x2": ("default.yaml", ["loss.spl_scales=[1.0,0.5,1.5]", "loss.spl_flip=true"]),
    "cosa-scale-1-flip": ("default.yaml", ["model.cam_scales=[1.0]"]),  # a cut of the AN pass
    "cosa-single-scale": ("default.yaml", ["model.cam_scales=[1.0]", "model.cam_flip=false"]),
    "cosa-os16-b32": (
        "default.yaml",
        ["model.output_stride=16", "train.batch_size=32", "model.cam_scales=[1.0]",
         "model.cam_flip=false"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_training_step(benchmark, batch, case):
    """One optimisation step after warm-up (AN forward + ON forward/backward + EMA), on
    the config's batch size."""
    trainer = _trainer()
    config, overrides = STEP_CASES[case]
    cfg = trainer.load_config(ROOT / "examples/cosa/configs" / config, overrides)
    torch.set_num_threads(cfg["threads"])
    model = trainer.build_model(cfg, 10)
    teacher = trainer.EMATeacher(model, 0.99) if cfg["train"]["use_teacher"] else None
    thresholds = trainer.Thresholds(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    views = WeakStrongViews(96, scale=(0.75, 1.5))
    bs = cfg["train"]["batch_size"]
    images, masks, labels = (t[:bs] for t in batch)
    step = trainer.s2c_start(cfg)  # the first step with every loss on (L_s2c starts last)

    def one_step():
        xw, xs, _, valid = views(images, masks)
        xw = xw.contiguous(memory_format=torch.channels_last)
        xs = xs.contiguous(memory_format=torch.channels_last)
        terms = trainer.cosa_losses(model, teacher, (xw, xs, valid), labels, step, thresholds, cfg)
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if teacher is not None:
            teacher.update(model)

    benchmark.pedantic(one_step, rounds=5, warmup_rounds=1)

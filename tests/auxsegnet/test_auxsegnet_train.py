"""End-to-end smoke tests of the AuxSegNet example trainer (tiny data, two steps)."""

import json
import math
from pathlib import Path

import pytest
import torch

from wsss_blocks.data import save_saliency_maps
from wsss_blocks.data.views import WeakStrongViews
from wsss_blocks.utils import IGNORE_INDEX

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "auxsegnet" / "configs" / "default.yaml"


@pytest.fixture(scope="module")
def trainer():
    from examples.auxsegnet import train

    return train


TINY = [
    "data.num_train=16", "data.num_val=8", "data.image_size=48", "data.crop_size=48",
    "train.batch_size=4", "train.warmup_iterations=1", "train.stages=1",
    "train.stage_iterations=1", "train.lr_warmup_iterations=1", "eval.batch_size=8",
    "eval.num_overlays=2", "model.head_width=16", "model.key_channels=8",
]  # fmt: skip


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(tmp_path / "cache"))
    return TINY + [f"output_dir={tmp_path / 'run'}"]


def test_two_steps_train_and_report_every_stage(trainer, tiny, tmp_path):
    final = trainer.main(["--config", str(CONFIG), *sum([["--set", s] for s in tiny], [])])
    out = tmp_path / "run"
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [r["stage"] for r in history] == [0, 1]
    for r in history:
        assert 0.0 <= r["val_seg_miou"] <= 1.0 and 0.0 <= r["val_refined_miou"] <= 1.0
        assert sum(r["fusion_weights"]) == pytest.approx(1.0)
    assert "train_pl_miou" not in history[0]  # no pseudo-labels before the warm-up ends
    assert 0.0 <= history[1]["train_pl_miou"] <= 1.0
    assert 0.0 <= history[1]["train_saliency_iou"] <= 1.0
    d = history[1]["diagnostics"]  # the pseudo-labels' diagnostics, as for CoSA's CPL
    assert set(d) == {"miou", "fg_precision", "fg_recall", "coverage", "texture_fp_preferred",
                      "texture_fp_other"}  # fmt: skip
    assert 0.0 <= d["coverage"] <= 1.0 and 0.0 <= d["miou"] <= 1.0
    assert final["val_seg_miou"] == history[1]["val_seg_miou"] and final["minutes"] > 0
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == [
        "stage_0.png",
        "stage_1.png",
    ]
    assert (out / "checkpoint.pt").is_file() and (out / "curves.png").is_file()
    logged = json.loads((out / "metrics.json").read_text())["losses"]
    assert logged and all(set(terms) >= {"cls"} for _, terms in logged)
    assert [r["step"] for r in history] == sorted(r["step"] for r in history)
    assert list((tmp_path / "cache" / "saliency").glob("border_prior_*.npz"))


def test_saliency_from_a_directory_of_maps(trainer, tiny, tmp_path):
    cfg = trainer.load_config(CONFIG, tiny)
    train_set = trainer.build_data(cfg).train
    images = train_set.tensors()[0]
    maps = torch.rand(len(train_set), 24, 24)  # other size than the images: resized
    save_saliency_maps(tmp_path / "dss", maps, [f"{i:05d}" for i in range(len(train_set))])
    cfg["saliency"].update(source="directory", directory=str(tmp_path / "dss"))
    sal, origin = trainer.saliency_input(cfg, images)
    assert sal.shape == (len(train_set), 48, 48) and origin == str(tmp_path / "dss")
    assert float(sal.min()) >= 0.0 and float(sal.max()) <= 1.0
    cfg["saliency"]["directory"] = None
    with pytest.raises(ValueError, match="saliency.directory"):
        trainer.saliency_input(cfg, images)


def test_network_outputs_and_affinity(trainer, tiny):
    cfg = trainer.load_config(CONFIG, tiny)
    net = trainer.AuxSegNet(10, cfg["model"])
    out = net(torch.rand(2, 3, 48, 48))
    n = 6 * 6  # 48 px at output stride 8
    assert out.logits.shape == (2, 10) and out.cam.shape == (2, 10, 6, 6)
    assert out.seg.shape == out.seg_refined.shape == (2, 11, 6, 6)
    assert out.sal.shape == out.sal_refined.shape == (2, 1, 6, 6)
    assert out.affinity.shape == (2, n, n)
    torch.testing.assert_close(out.affinity.sum(-1), torch.ones(2, n))
    (out.seg_refined.sum() + out.sal_refined.sum()).backward()
    for name in ("fusion.logits", "seg_affinity.theta.weight", "sal_affinity.phi.weight"):
        assert net.get_parameter(name).grad is not None, name


def test_pack_moves_labels_and_saliency_with_the_views(trainer):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 11, (3, 16, 16), generator=g)
    y[:, :2] = IGNORE_INDEX
    s = torch.rand(3, 16, 16, generator=g)
    # Identity geometry: the views must hand back the maps unchanged.
    views = WeakStrongViews(16, scale=(1.0, 1.0), flip_p=0.0, generator=g)
    _, _, packed, valid = views(torch.rand(3, 3, 16, 16), trainer.pack(y, s))
    y2, s2 = trainer.unpack(packed, valid)
    assert torch.equal(y2, y)
    assert float((s2 - s).abs().max()) <= 0.5 / 254 + 1e-6
    # Zoomed out: padding becomes ignore with saliency 0; the rest keeps valid values.
    views = WeakStrongViews(16, scale=(0.5, 0.5), generator=g)
    _, _, packed, valid = views(torch.rand(3, 3, 16, 16), trainer.pack(y, s))
    y3, s3 = trainer.unpack(packed, valid)
    assert bool((~valid).any()) and bool((y3[~valid] == IGNORE_INDEX).all())
    assert float(s3[~valid].abs().max()) == 0.0
    assert set(y3[valid].unique().tolist()) <= set(range(11)) | {IGNORE_INDEX}


def test_pseudo_label_quality_counts_ignored_pixels_as_wrong(trainer):
    gt = torch.tensor([[[1, 1, 0, 0]]])
    assert trainer.miou_of(gt.clone(), gt, 2) == 1.0
    half = torch.tensor([[[1, IGNORE_INDEX, 0, 0]]])
    assert trainer.miou_of(half, gt, 2) < 1.0
    assert math.isfinite(trainer.miou_of(half, gt, 2))


def test_saliency_measurement_script_reports_each_estimator(tiny):
    from examples.auxsegnet import measure_saliency

    results = measure_saliency.main(["--images", "8", *sum([["--set", s] for s in tiny], [])])
    assert "border_prior" in results
    for r in results.values():
        assert 0.0 <= r["iou"] <= r["best_iou"] <= 1.0 and r["ms_per_image"] > 0


def test_learning_rate_warms_up_again_at_every_stage(trainer):
    t = {"lr_warmup_iterations": 10, "warmup_iterations": 40, "stage_iterations": 30,
         "poly_power": 0.9}  # fmt: skip
    total = 40 + 2 * 30
    factors = [trainer.lr_factor(s, total, t) for s in range(total)]
    assert all(0.0 < f <= 1.0 for f in factors)
    for start in (0, 40, 70):  # warm-up, stage 1, stage 2 begin small and ramp up
        assert factors[start] < 0.15 and factors[start + 9] > 5 * factors[start]
    assert factors[39] > factors[40] and factors[69] > factors[70]


def test_two_processes_under_torchrun_train_one_network(tiny, tmp_path):
    """The shared loop gives the AuxSegNet example DDP too: two processes train on
    their shards, every stage is evaluated, rank 0 alone reports and writes."""
    import os
    import subprocess
    import sys

    extra = ["train.stage_iterations=3", "eval.batch_size=1", "threads=2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "examples/auxsegnet/train.py"), "--config", str(CONFIG),
           *sum([["--set", s] for s in [*tiny, *extra]], [])]  # fmt: skip
    env = {**os.environ, "WSSS_BLOCKS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count("FINAL (auxsegnet") == 1
    assert "batch: 4 per process x 2 process(es)" in p.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["final"]["world_size"] == 2 and len(metrics["history"]) == 2

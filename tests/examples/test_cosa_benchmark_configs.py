"""The CoSA trainer on VOC- and COCO-format trees (written by tests/conftest.py) with
a small timm ViT from random init, and the paper configs building their model without
a download: the commands the README gives, at toy size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.cosa import evaluate, train

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "cosa" / "configs"

SMALL = [  # a random-init ViT-Tiny at 64 px on the CPU: 5 iterations, one evaluation
    "model.pretrained=false", "model.backbone=vit_tiny_patch16_224", "model.img_size=null",
    "train.device=cpu", "data.crop_size=64", "data.num_workers=0", "train.batch_size=2",
    "train.iterations=5", "train.warmup_iterations=2", "train.lr_warmup_iterations=1",
    "eval.interval=5", "model.decoder_width=16", "data.cpl_eval_images=3",
    "eval.num_overlays=2", "threshold.queue_size=3", "threshold.bins=64",
    "loss.energy_radius=2", "train.checkpoint_interval=5",
]  # fmt: skip


def _main(config: str, sets: list[str]) -> dict:
    return train.main(["--config", str(CONFIGS / config), *sum([["--set", s] for s in sets], [])])


@pytest.mark.parametrize("name", ["voc", "coco"])
def test_trainer_runs_on_a_disk_tree_and_writes_its_outputs(name, voc_tree, coco_tree,
                                                            tmp_path, capsys):  # fmt: skip
    root = voc_tree.parent if name == "voc" else coco_tree
    out = tmp_path / "run"
    final = _main(f"{name}_vit_b16.yaml", [*SMALL, f"data.root={root}", f"output_dir={out}"])
    assert 0.0 <= final["val_seg_miou"] <= 1.0 and 0.0 <= final["train_cpl_miou"] <= 1.0
    assert 0.0 <= final["val_seg_miou_on"] <= 1.0  # the ON is evaluated too (on_too)
    assert len(final["val_seg_iou"]) == (21 if name == "voc" else 81)
    for f in ("checkpoint.pt", "metrics.json", "curves.png", "config.yaml"):
        assert (out / f).is_file(), f
    assert len(list((out / "overlays").glob("*.png"))) == 1
    losses = json.loads((out / "metrics.json").read_text())["losses"]
    assert all(v == v for _, terms in losses for v in terms.values())  # finite, no NaN
    printed = capsys.readouterr().out
    assert "per-class IoU" in printed and ("aeroplane" if name == "voc" else "person") in printed
    # evaluate.py reads the classes and the data set from the checkpoint (20 or 80 classes)
    r = evaluate.main([str(out / "checkpoint.pt"), "--scales", "1.0", "0.5", "--flip",
                       "--window", "64", "--device", "cpu"])  # fmt: skip
    assert 0.0 <= r["miou"] <= 1.0 and len(r["class_names"]) == len(r["iou"]) - 1


@pytest.mark.parametrize("config", ["voc_vit_b16.yaml", "coco_vit_b16.yaml"])
def test_paper_configs_build_vit_b16_offline_and_train_one_step(config, voc_tree, coco_tree,
                                                                tmp_path):  # fmt: skip
    root = voc_tree.parent if config.startswith("voc") else coco_tree
    sets = [
        f"data.root={root}", "model.pretrained=false", "train.device=cpu", "data.crop_size=64",
        "data.num_workers=0", "train.batch_size=2", "train.iterations=1",
        "train.warmup_iterations=0", "train.lr_warmup_iterations=0", "eval.interval=1000",
        "data.cpl_eval_images=1",
        "eval.num_overlays=0", "loss.energy_radius=2", f"output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    cfg = train.load_config(CONFIGS / config, sets)
    assert cfg["model"]["backbone"] == "vit_base_patch16_224" and cfg["model"]["img_size"] == 448
    final = train.train(cfg)  # the last step evaluates: every loss term of Eq. 11 + energy ran
    assert 0.0 <= final["val_seg_miou"] <= 1.0
    logged = json.loads((tmp_path / "run/metrics.json").read_text())["losses"][0][1]
    assert set(logged) == {"cls", "cls_early", "c2s", "c2s_early", "s2c", "csc", "energy"}

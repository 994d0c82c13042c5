"""One CoSA iteration of the paper's ViT-B/16 (random init) at crop 224, batch 2, on
the CPU, split into its parts: the ON forward + backward, the AN forward (single- and
multi-scale), and the blocks (CPL, perplexity / RAW, SPL, CSC, threshold search). The
summary prints the blocks' share of the iteration (goal: at most 10%)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from examples.cosa import train
from wsss_blocks import EMATeacher, raw_weights, seg_to_spl

CONFIG = Path(__file__).resolve().parents[1] / "examples/cosa/configs/voc_vit_b16.yaml"
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup():
    cfg = train.load_config(CONFIG, ["model.pretrained=false", "model.img_size=224",
                                     "data.crop_size=224", "train.batch_size=2"])  # fmt: skip
    torch.manual_seed(0)
    model = train.build_model(cfg, 20)
    teacher = EMATeacher(model, 0.9994)
    x = torch.rand(2, 3, 224, 224)
    labels = torch.zeros(2, 20)
    labels[0, [3, 7]] = labels[1, 14] = 1
    with torch.no_grad():
        cam, cam_d, seg_an = train.an_pass(teacher.module, x, labels, cfg, early=True)
        out = model(x)
    return cfg, model, teacher, x, labels, (cam, cam_d, seg_an, out)


def test_on_forward_backward(benchmark, record_fastest, setup):
    cfg, model, _, x, _, _ = setup

    def run():
        with train.amp(cfg, x):
            out = model(x)
        (out.logits.float().sum() + out.seg.float().mean() + out.cam.float().mean()).backward()

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    record_fastest(TIMES, "ON forward + backward")


@pytest.mark.parametrize("scales", ["single", "multi"])
def test_an_forward(benchmark, record_fastest, setup, scales):
    cfg, _, teacher, x, labels, _ = setup
    if scales == "single":
        cfg = {**cfg, "model": {**cfg["model"], "cam_scales": [1.0], "cam_flip": False}}
    benchmark.pedantic(lambda: train.an_pass(teacher.module, x, labels, cfg, early=True),
                       rounds=3, warmup_rounds=1)  # fmt: skip
    record_fastest(TIMES, f"AN forward, {scales}-scale")


def test_blocks(benchmark, record_fastest, setup):
    cfg, _, _, x, labels, (cam, cam_d, seg_an, out) = setup
    thresholds = train.Thresholds(cfg)
    grid = out.cam.shape[-2:]
    valid = torch.ones(2, 224, 224, dtype=torch.bool)
    seg = train.upsample(out.seg.float(), (224, 224))

    def run():
        xi = thresholds.update("xi", cam.amax(1), 10)
        cpl, ppl, _ = train.pseudo_labels(cam, labels, xi, cfg, None, valid)
        w = raw_weights(ppl, cpl != 255)
        train.raw_cam2seg_loss(seg, cpl, w, True)
        spl = seg_to_spl(seg_an.float(), labels, cfg["loss"]["seg_tau"], size=grid)
        train.seg2cam_loss(out.cam.float(), spl)
        xi_d = thresholds.update("xi_dagger", cam_d.amax(1), 10)
        cam_d_grid = torch.nn.functional.interpolate(cam_d, size=grid, mode="area")
        anchors_valid = train.grid_valid(valid, grid)
        train.csc_term(out.cam.float(), cam_d_grid, labels, xi_d, anchors_valid, cfg)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    record_fastest(TIMES, "blocks (CPL, RAW, SPL, CSC, threshold search)")


@pytest.fixture(scope="module", autouse=True)
def summary():
    """After the module's benchmarks: each part's time and share of the iteration."""
    yield
    if len(TIMES) < 4:
        return  # not benchmarked (run with --benchmark-enable)
    an = TIMES["AN forward, multi-scale"]
    blocks = TIMES[next(k for k in TIMES if "blocks" in k)]
    # the VOC config runs the AN multi-scale twice: CAMs for CPLs, logits for SPLs
    total = TIMES["ON forward + backward"] + 2 * an + blocks
    threads = torch.get_num_threads()
    print(f"\nViT-B/16 224 px batch 2, one CoSA iteration ~ {1e3 * total:.0f} ms "
          f"(ON fwd+bwd + 2 x AN multi-scale + blocks), {threads} threads")  # fmt: skip
    for name, t in TIMES.items():
        print(f"  {name:48s} {1e3 * t:8.1f} ms  {100 * t / total:5.1f}% of the iteration")

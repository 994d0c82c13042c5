"""Cost of PAR (``pixel_adaptive_refinement``) on the CPU, set against the pass it
refines: the AN's multi-scale + flip CAM pass of the MF-Seg default.

Run once (under a minute), one thread, CPU-time clock for a shared machine::

    python -m pytest benchmarks/bench_refine.py --benchmark-enable -s -p no:randomly \
        --benchmark-timer=time.process_time --benchmark-columns=min,median,rounds

Cases, all at the MF-Seg default (batch 16, 96 px crops, PAR at half size, 10
iterations, dilations 1–24):

- ``an-pass``: the AN's CAM pass the trainer runs anyway (scales 1.0 and 1.5, flips;
  bf16 autocast where the CPU has it, as ``train.amp: auto``), without PAR;
- ``refine-cam``: the trainer's ``refine_cam`` (PAR of the present classes, ≤ 3);
- ``par-all-classes``: PAR of all 10 class maps, what ``refine_cam`` saves.

``test_zz_summary`` prints each as a ratio to ``an-pass``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsss_blocks import normalize_cam, pixel_adaptive_refinement
from wsss_blocks.utils import upsample

ROOT = Path(__file__).resolve().parents[1]
RESULTS: dict = {}


pytestmark = pytest.mark.usefixtures("one_thread")  # benchmarks/conftest.py


@pytest.fixture(scope="module")
def setting():
    from examples.cosa import train as T

    cfg = T.load_config(ROOT / "examples/cosa/configs/default.yaml",
                        ["model.weights=null", "model.cam_refine=par"])  # fmt: skip
    torch.manual_seed(0)
    net = T.build_model(cfg, num_classes=10).eval()
    images = torch.rand(16, 3, 96, 96)
    labels = torch.zeros(16, 10)
    for i in range(16):  # 1-3 objects, as MF-Seg's max_objects 3
        labels[i, torch.randperm(10)[: 1 + i % 3]] = 1
    cam = upsample(normalize_cam(torch.rand(16, 10, 12, 12), labels), (96, 96))
    return T, cfg, net, images, labels, cam


def test_an_pass(benchmark, record_fastest, setting):
    T, cfg, net, images, labels, _ = setting
    no_par = {**cfg, "model": {**cfg["model"], "cam_refine": None}}
    benchmark(lambda: T.an_pass(net, images, labels, no_par))
    record_fastest(RESULTS, "an-pass")


def test_refine_cam(benchmark, record_fastest, setting):
    T, cfg, _, images, labels, cam = setting
    benchmark(lambda: T.refine_cam(images, cam, labels, cfg))
    record_fastest(RESULTS, "refine-cam")


def test_par_all_classes(benchmark, record_fastest, setting):
    _, _, _, images, _, cam = setting
    small_images, small_cam = upsample(images, (48, 48)), upsample(cam, (48, 48))
    benchmark(lambda: pixel_adaptive_refinement(small_images, small_cam))
    record_fastest(RESULTS, "par-all-classes")


def test_zz_summary():
    if "an-pass" not in RESULTS:
        pytest.skip("run with --benchmark-enable")
    base = RESULTS["an-pass"]
    for key, value in RESULTS.items():
        print(f"{key:16s} {1e3 * value:8.1f} ms  {value / base:5.2f} x an-pass")

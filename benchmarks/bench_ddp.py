"""Training throughput of the CoSA example, 1 process against 2 under torchrun (gloo,
CPU), on the default MF-Seg configuration shortened to 60 steps. The trainer reports
images per second over its steps alone (start-up and evaluation left out); the summary
prints each case as a ratio to one process with the whole thread budget, measured in
the same run.

Cases: one process with ``threads`` 2; two processes with one thread each, at the same
effective batch (8 + 8) and at twice it (16 + 16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["train.iterations=60", "train.warmup_iterations=20", "eval.interval=1000",
         "eval.num_overlays=0", "data.num_val=16", "data.cpl_eval_images=16",
         "threads=2"]  # fmt: skip
CASES = {"1 process, batch 16": (1, 16), "2 processes, batch 8 + 8": (2, 8),
         "2 processes, batch 16 + 16": (2, 16)}  # fmt: skip
RESULTS: dict[str, float] = {}


def _train(tmp: Path, nproc: int, batch: int) -> float:
    out = tmp / f"run_{nproc}_{batch}"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]  # fmt: skip
    sets = [*SHORT, f"train.batch_size={batch}", f"output_dir={out}"]
    cmd = [*launcher, str(ROOT / "examples/cosa/train.py"),
           *(a for s in sets for a in ("--set", s))]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WSSS_BLOCKS_CACHE": str(tmp / "cache")}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())["final"]["images_per_second"]


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_throughput(benchmark, case, tmp_path_factory):
    nproc, batch = CASES[case]
    tmp = tmp_path_factory.getbasetemp()
    rate = benchmark.pedantic(_train, args=(tmp, nproc, batch), rounds=1, iterations=1)
    benchmark.extra_info["images_per_second"] = rate
    RESULTS[case] = rate


@pytest.fixture(scope="module", autouse=True)
def summary():
    """After the module's benchmarks: images/s of each case as a ratio to 1 process."""
    yield
    base = RESULTS.get("1 process, batch 16")
    if not base:
        return  # not benchmarked (run with --benchmark-enable)
    for case, rate in RESULTS.items():
        print(f"\nCoSA MF-Seg default, {case:26s}: {rate:6.1f} images/s, "
              f"{rate / base:5.2f}x one process", end="")  # fmt: skip
    print()

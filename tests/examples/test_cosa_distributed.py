"""CoSA under torchrun: 2 CPU processes (gloo) on tiny MF-Seg. The ranks stay identical
after every step, the sharded evaluation equals a single-process one, an interrupted
run resumes bit-for-bit, SIGTERM to torchrun stops every rank at one step with a
checkpoint, and a run resumed at another world size says what changed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_cosa_train import TINY  # this folder is on sys.path (rootdir-relative import)

from examples.cosa import evaluate

ROOT = Path(__file__).resolve().parents[2]
DDP = [
    *TINY, "train.iterations=20", "eval.interval=10", "train.checkpoint_interval=5",
    "train.warmup_iterations=4", "loss.s2c_start=6", "eval.batch_size=1", "threads=2",
    "threshold.dynamic=true", "loss.c2s_early=0.05", "loss.csc=0.1",
]  # fmt: skip


def _command(out: Path, extra=(), nproc: int = 2, resume: bool = False) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]  # fmt: skip
    config = ["--config", str(out / "config.yaml"), "--resume"] if resume else [
        "--config", str(ROOT / "examples/cosa/configs/cosa_ema.yaml"),  # with the EMA teacher
        *(a for s in [*DDP, f"output_dir={out}"] for a in ("--set", s))]  # fmt: skip
    return [*launcher, str(ROOT / "examples/cosa/train.py"), *config, *extra]


def _env(tmp: Path) -> dict:
    return {**os.environ, "WSSS_BLOCKS_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str], tmp: Path) -> str:
    p = subprocess.run(cmd, cwd=ROOT, env=_env(tmp), capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def _state(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 20-step run with the rank-sync log, and one stopped at step 10
    (kept as a copy) then resumed to 20."""
    tmp = tmp_path_factory.mktemp("ddp")
    full = tmp / "full"
    log = _run(_command(full, ["--set", "train.check_rank_sync=true"]), tmp)
    _run(_command(tmp / "resumed", ["--stop-at", "10"]), tmp)
    shutil.copytree(tmp / "resumed", tmp / "at10")
    resumed_log = _run(_command(tmp / "resumed", resume=True), tmp)
    return {"tmp": tmp, "full": full, "log": log, "resumed_log": resumed_log}


def test_every_rank_holds_the_same_networks_and_xi_after_every_step(runs):
    rows = [
        [json.loads(line) for line in open(runs["full"] / "rank_sync" / f"rank{r}.jsonl")]
        for r in (0, 1)
    ]
    assert [row["step"] for row in rows[0]] == list(range(1, 21))
    assert rows[0] == rows[1]  # ON and AN digests, xi and xi-dagger, at every step
    assert len({row["on"] for row in rows[0]}) == 20  # the networks did train
    assert len({row["xi"] for row in rows[0]}) > 1  # the searched xi moved (all-reduced)
    assert "batch: 4 per process x 2 process(es) = 8 per step" in runs["log"]


def test_rank_0_alone_reports_and_writes(runs):
    assert runs["log"].count("FINAL (cosa") == 1
    metrics = json.loads((runs["full"] / "metrics.json").read_text())
    assert metrics["final"]["world_size"] == 2
    assert (runs["full"] / "curves.png").is_file()


def test_the_sharded_evaluation_equals_a_single_process_one(runs):
    metrics = json.loads((runs["full"] / "metrics.json").read_text())
    single = evaluate.evaluate_checkpoint(runs["full"] / "checkpoint.pt")
    assert metrics["final"]["val_seg_miou"] == single["miou"]


def test_a_run_resumed_at_step_10_equals_the_uninterrupted_one_bit_for_bit(runs):
    a, b = _state(runs["full"]), _state(runs["tmp"] / "resumed")
    assert "resumed from" in runs["resumed_log"] and b["step"] == 20
    for key in ("model", "teacher"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"
    assert a["losses"] == b["losses"]
    assert a["thresholds"]["history"] == b["thresholds"]["history"]


def test_resuming_at_another_world_size_continues_and_says_what_changed(runs):
    at10 = runs["tmp"] / "at10"  # a copy: its config.yaml names the original output_dir
    log = _run(_command(at10, ["--set", f"output_dir={at10}"], nproc=1, resume=True), runs["tmp"])
    assert "world size 2 -> 1" in log and "per step is now 4 (was 8)" in log
    assert _state(runs["tmp"] / "at10")["step"] == 20


def test_sigterm_to_torchrun_stops_every_rank_at_one_step_with_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = _command(out, ["--set", "train.iterations=400", "--set", "train.check_rank_sync=true",
                         "--set", "train.checkpoint_interval=1000"])  # fmt: skip
    p = subprocess.Popen(cmd, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)  # fmt: skip
    sync = out / "rank_sync" / "rank0.jsonl"
    deadline = time.time() + 300
    while not (sync.is_file() and len(sync.read_text().splitlines()) >= 3):
        assert p.poll() is None and time.time() < deadline, p.stdout.read()[-3000:]
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)  # what a cluster scheduler sends
    log = p.communicate(timeout=120)[0]
    step = _state(out)["step"]
    assert 3 <= step < 400
    assert log.count(f"SIGTERM: stopped after step {step}, checkpoint") == 1
    assert "torchrun --nproc_per_node=2 examples/cosa/train.py" in log
    for r in (0, 1):  # both ranks stopped after that step
        assert len((out / "rank_sync" / f"rank{r}.jsonl").read_text().splitlines()) == step
    _run(_command(out, ["--stop-at", str(step + 2)], resume=True), tmp_path)
    assert _state(out)["step"] == step + 2

"""Checkpoints survive kill -9 at any moment of a save, a full disk is named, and a
damaged file given to load_checkpoint is named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from wsss_blocks.training import load_checkpoint, save_checkpoint

SAVER = """
import sys, torch
from wsss_blocks.training import save_checkpoint
path, i = sys.argv[1], 0
while True:
    i += 1  # 16 MB of the value i: a save takes long enough to be hit
    save_checkpoint(path, {"config": {}, "step": i, "weights": torch.full((4_000_000,), float(i))})
    print(i, flush=True)
"""


def test_kill_9_during_saves_never_leaves_the_run_without_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    hit_a_save = 0
    for delay in (0.0, 0.017, 0.033, 0.05):  # kills at different moments
        p = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE)
        p.stdout.readline()  # one save done: the process is in its loop of saves
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        hit_a_save += path.with_name("checkpoint.pt.tmp").exists()
        state = load_checkpoint(path)  # complete and consistent: every value is its step
        assert state["step"] >= 1
        assert torch.equal(state["weights"], torch.full((4_000_000,), float(state["step"])))
    assert hit_a_save >= 1  # at least one kill fell inside a save (a partial .tmp left)


def test_a_full_disk_is_named_and_the_previous_checkpoint_kept(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"config": {}, "step": 1})

    def short_write(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", short_write)
    message = (r"checkpoint .*checkpoint.pt could not be written \(\d+ MiB free on its disk; "
               r"the previous checkpoint is kept\)")  # fmt: skip
    with pytest.raises(OSError, match=message):
        save_checkpoint(path, {"config": {}, "step": 2})
    assert not path.with_name("checkpoint.pt.tmp").exists()
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_a_damaged_checkpoint_is_named(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"config": {}, "step": 1, "w": torch.randn(1000)})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match=f"checkpoint {path} cannot be read"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")

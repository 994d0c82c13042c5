"""A CoSA run survives signals, crashes during a save, damaged checkpoints, non-finite
losses and bad configuration, each with a clear message (tiny MF-Seg runs)."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch
from test_cosa_train import CONFIGS, TINY  # this folder is on sys.path (rootdir-relative import)

from examples.cosa import train
from wsss_blocks.training import ConfigError, NonFiniteLossError

ITERS = ["train.iterations=8", "train.checkpoint_interval=2", "eval.interval=8"]


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(tmp_path / "cache"))

    def make(name: str, extra=()):
        return train.load_config(
            CONFIGS / "default.yaml", [*TINY, *ITERS, f"output_dir={tmp_path / name}", *extra]
        )

    return make


def _losses_with(monkeypatch, at_step, action):
    original = train.cosa_losses

    def wrapped(model, teacher, views, labels, step, thresholds, cfg):
        terms = original(model, teacher, views, labels, step, thresholds, cfg)
        return action(terms) if step in at_step else terms

    monkeypatch.setattr(train, "cosa_losses", wrapped)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_step_saves_and_resumes_bit_for_bit(sig, run, monkeypatch, capsys):
    straight = train.train(run("straight"))
    cfg = run("stopped")

    def send(terms):
        os.kill(os.getpid(), sig)
        return terms

    with monkeypatch.context() as m:
        _losses_with(m, {4}, send)
        with pytest.raises(SystemExit) as exit_info:
            train.train(cfg)
    assert exit_info.value.code == 128 + sig
    out = capsys.readouterr().out
    assert f"{signal.Signals(sig).name}: stopped after step 5" in out
    assert train.resume_command(cfg) in out
    ckpt = torch.load(f"{cfg['output_dir']}/checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 5
    resumed = train.main(["--config", f"{cfg['output_dir']}/config.yaml", "--resume"])
    assert resumed["val_seg_miou"] == straight["val_seg_miou"]
    a = torch.load(f"{cfg['output_dir']}/checkpoint.pt", weights_only=False)["model"]
    b = torch.load(f"{straight_dir(run)}/checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def straight_dir(run) -> str:
    return run("straight")["output_dir"]


def test_resume_without_a_checkpoint_or_from_a_damaged_one_says_so(run):
    cfg = run("empty")
    with pytest.raises(FileNotFoundError, match="no checkpoint .* to resume from"):
        train.train(cfg, resume=True)
    os.makedirs(cfg["output_dir"], exist_ok=True)
    with open(f"{cfg['output_dir']}/checkpoint.pt.tmp", "wb") as f:
        f.write(b"half a checkpoint")  # a kill -9 during the first save
    with pytest.raises(FileNotFoundError, match="partial"):
        train.train(cfg, resume=True)
    train.train(run("empty", ["train.iterations=4"]), stop_at=2)
    path = f"{cfg['output_dir']}/checkpoint.pt"
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="checkpoint.pt cannot be read"):
        train.train(cfg, resume=True)


def test_non_finite_losses_are_skipped_then_stop_the_run(run, monkeypatch):
    nan = lambda terms: {**terms, "cls": terms["cls"] * math.nan}  # noqa: E731
    _losses_with(monkeypatch, {3}, nan)
    with pytest.warns(UserWarning, match="non-finite loss at step 3"):
        final = train.train(run("one_nan"))
    assert 0.0 <= final["val_seg_miou"] <= 1.0
    _losses_with(monkeypatch, {2, 3, 4}, nan)
    cfg = run("nan_run", ["train.max_nonfinite_steps=2"])
    with pytest.warns(UserWarning), pytest.raises(NonFiniteLossError, match="2 non-finite"):
        train.train(cfg)
    # the last checkpoint is the last good state: step 2, saved before the bad steps
    assert torch.load(f"{cfg['output_dir']}/checkpoint.pt", weights_only=False)["step"] == 2


@pytest.mark.parametrize(("override", "message"), [
    ("train.iterations=abc", "train.iterations must be of type int"),
    ("eval.interval=0", "eval.interval must be an integer >= 1"),
    ("train.lr=-0.001", "train.lr must be a number in \\(0"),
    ("train.warmup_iterations=9", "train.warmup_iterations \\(9\\) must not exceed"),
    ("loss.s2c=-1", "loss.s2c must be a number in \\[0"),
    ("train.ema_momentum=1.0", "train.ema_momentum"),
])  # fmt: skip
def test_bad_values_are_one_line_errors_naming_the_key(override, message, run, capsys, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train.train(run("bad", [override]))
    sets = [*TINY, *ITERS, f"output_dir={tmp_path / 'bad'}", override]
    with pytest.raises(SystemExit) as exit_info:  # the command line: one line, exit 2
        train.main(
            ["--config", str(CONFIGS / "default.yaml"), *sum([["--set", s] for s in sets], [])]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_output_dir_lock_and_writability(run, tmp_path):
    cfg = run("locked")
    os.makedirs(cfg["output_dir"])
    lock = f"{cfg['output_dir']}/.lock"
    with open(lock, "w") as f:
        f.write(f"{os.getpid()} {os.uname().nodename}")  # a live run (this process)
    with pytest.raises(ConfigError, match="in use by a live run"):
        train.train(cfg)
    with open(lock, "w") as f:
        f.write(f"999999999 {os.uname().nodename}")  # a dead run's stale lock
    with pytest.warns(UserWarning, match="stale lock"):
        train.train(run("locked", ["train.iterations=3", "eval.interval=3"]))
    assert not os.path.exists(lock)  # released at the end


def test_an_output_dir_that_cannot_be_created_is_named(run, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="output_dir .*a_file/run cannot be created"):
        train.train(run("x", [f"output_dir={blocker / 'run'}"]))


def test_resume_refuses_a_changed_training_setting_before_overwriting_anything(run, capsys):
    cfg = run("changed")
    train.train(cfg, stop_at=2)
    saved = (Path(cfg["output_dir"]) / "config.yaml").read_text()
    changed = {**cfg, "train": {**cfg["train"], "lr": 0.5}}
    with pytest.raises(ConfigError, match=r"--resume: train.lr is 0.5 but the checkpoint was "
                                          r"trained with 0.001"):  # fmt: skip
        train.train(changed, resume=True)
    assert (Path(cfg["output_dir"]) / "config.yaml").read_text() == saved  # untouched
    # evaluation settings may change: said, then the run continues
    later = {**cfg, "eval": {**cfg["eval"], "num_overlays": 0}}
    train.train(later, resume=True, stop_at=4)
    assert "resume: eval.num_overlays: 2 -> 0" in capsys.readouterr().out

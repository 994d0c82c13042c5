"""evaluate.py and threshold_check.py on a checkpoint: they reproduce the trainer's numbers."""

import importlib.util
import json

import pytest
import torch
from test_cosa_train import CONFIGS, TINY, _trainer


def _script(name: str):
    return importlib.import_module(f"examples.cosa.{name}")


def _evaluate():
    return _script("evaluate")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    sets = [*TINY, f"output_dir={out}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WSSS_BLOCKS_CACHE", str(out / "cache"))
        _trainer().main(
            ["--config", str(CONFIGS / "default.yaml"), *sum([["--set", s] for s in sets], [])]
        )
        yield out


def test_single_scale_is_the_trainers_val_miou(run_dir, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(run_dir / "cache"))
    r = _evaluate().evaluate_checkpoint(run_dir / "checkpoint.pt")
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert r["step"] == final["step"] and r["miou"] == final["val_seg_miou"]
    assert torch.equal(
        torch.tensor(r["iou"]).nan_to_num(-1), torch.tensor(final["val_seg_iou"]).nan_to_num(-1)
    )  # nan: class absent from the split
    assert "miou_tag_masked" not in r  # honest only, unless asked
    masked = _evaluate().evaluate_checkpoint(run_dir / "checkpoint.pt", tag_masked=True)
    assert masked["miou"] == r["miou"] and 0.0 <= masked["miou_tag_masked"] <= 1.0


def test_multiscale_flip_runs_and_writes_json(run_dir, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(run_dir / "cache"))
    out = tmp_path / "eval.json"
    ckpt = str(run_dir / "checkpoint.pt")
    r = _evaluate().main([ckpt, "--scales", "1.0", "1.5", "--flip", "--json", str(out)])
    assert r["scales"] == [1.0, 1.5] and r["flip"] and 0.0 <= r["miou"] <= 1.0
    assert json.loads(out.read_text())["miou"] == r["miou"]
    printed = capsys.readouterr().out
    assert "+ flip" in printed and "tag-masked" not in printed
    r = _evaluate().main([ckpt, "--tag-masked"])
    assert "tag-masked, uses GT tags" in capsys.readouterr().out
    assert 0.0 <= r["miou_tag_masked"] <= 1.0


def test_bad_split_is_an_error(run_dir):
    with pytest.raises(ValueError, match="split"):
        _evaluate().evaluate_checkpoint(run_dir / "checkpoint.pt", split="test")


def test_threshold_check_at_the_runs_xi_is_the_trainers_cpl_miou(run_dir, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(run_dir / "cache"))
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    # default.yaml: fixed xi 0.4 (PAR; kept as float32), one of the thresholds checked
    assert final["xi"] == pytest.approx(0.4)
    r = _script("threshold_check").main([str(run_dir / "checkpoint.pt"), "--images", "8"])
    assert r["fixed"][0.4] == final["train_cpl_miou"]  # TINY: cpl_eval_images=8
    for policy in ("paper", "cosa-code"):
        low, high = r["policies"][policy]["bounds"]
        assert 0.0 <= low <= r["policies"][policy]["xi"] <= high <= 1.0
    with pytest.raises(ValueError, match="--images"):
        _script("threshold_check").main([str(run_dir / "checkpoint.pt"), "--images", "0"])


def test_threshold_check_cam_refine_overrides_the_checkpoints_setting(run_dir, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(run_dir / "cache"))
    check = _script("threshold_check")
    ckpt = str(run_dir / "checkpoint.pt")
    as_run = check.main([ckpt, "--images", "8"])  # default.yaml refines by PAR
    assert check.main([ckpt, "--images", "8", "--cam-refine", "par"])["fixed"] == as_run["fixed"]
    plain = check.main([ckpt, "--images", "8", "--cam-refine", "none"])
    assert plain["fixed"] != as_run["fixed"]


def test_with_cam_refine_fills_par_settings_a_checkpoint_lacks():
    check = _script("threshold_check")
    before_par = {"backbone": "x", "cam_refine": None}  # a run from before the PAR keys
    got = check.with_cam_refine(before_par, "par")
    assert got["cam_refine"] == "par" and got["backbone"] == "x"
    assert (got["par_scale"], got["par_iterations"]) == (0.5, 10)
    own = check.with_cam_refine({"cam_refine": "par", "par_scale": 0.25}, "none")
    assert own["cam_refine"] is None and own["par_scale"] == 0.25  # the run's own setting wins


def test_threshold_check_set_overrides_cam_settings(run_dir, monkeypatch, capsys):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(run_dir / "cache"))
    check = _script("threshold_check")
    ckpt = str(run_dir / "checkpoint.pt")
    as_run = check.main([ckpt, "--images", "8"])  # default.yaml: scales 1.0 and 1.5, flips
    same = check.main([ckpt, "--images", "8", "--set", "model.cam_scales=[1.0,1.5]"])
    assert same["fixed"] == as_run["fixed"]
    single = check.main([ckpt, "--images", "8", "--set", "model.cam_scales=[1.0]",
                         "--set", "model.cam_flip=false"])  # fmt: skip
    assert single["fixed"] != as_run["fixed"]
    assert "cam_scales [1.0], cam_flip False" in capsys.readouterr().out
    with pytest.raises(ValueError, match="model.KEY=VALUE"):
        check.main([ckpt, "--images", "8", "--set", "train.lr=0.1"])

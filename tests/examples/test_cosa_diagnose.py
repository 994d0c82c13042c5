"""The CoSA trainer's pseudo-label diagnostics at each evaluation, and diagnose.py on a
checkpoint (tiny MF-Seg run of CoSA with its EMA teacher, M-dagger, CSC and the threshold
search)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cosa_train import CONFIGS, TINY  # this folder is on sys.path (rootdir-relative import)

from examples.cosa import diagnose, train

EXTRA = ["threshold.dynamic=true", "loss.c2s_early=0.05", "loss.csc=0.1",
         "eval.diagnostics_images=4"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diag")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("WSSS_BLOCKS_CACHE", str(tmp / "cache"))
        sets = [*TINY, *EXTRA, f"output_dir={tmp / 'run'}"]
        train.train(train.load_config(CONFIGS / "cosa_ema.yaml", sets))
        yield tmp / "run"


def test_every_evaluation_logs_the_diagnostics_and_plots_them(run):
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert len(history) == 2
    for r in history:
        d = r["diagnostics"]
        assert d["cpl"]["miou"] == pytest.approx(r["train_cpl_miou"])  # one CPL, two meters
        auroc = d["auroc_inv_perplexity"]
        assert 0 <= auroc <= 1 or auroc != auroc  # NaN: every pixel right, or every one wrong
        s = d["xi_sweep"]
        assert len(s["miou"]) == 19 and s["oracle_miou"] == max(s["miou"])
        assert s["current_threshold"] == pytest.approx(r["xi"]) and s["gap"] >= 0
        assert set(d["an_vs_on"]) == {"cpl_an", "cpl_on", "spl_an", "spl_on"}
        assert set(d["low_perplexity"]) == {"epsilon", "coverage", "miou_m", "miou_m_dagger"}
        assert len(d["texture_fp"]["preferred"]) == 10  # MF-Seg: one rate per class
        assert sum(d["reliability_curve"]["counts"]) > 0
    assert (run / "diagnostics.png").is_file()


def test_diagnose_reports_a_checkpoint_as_the_trainer_did(run, capsys):
    d = diagnose.main([str(run / "checkpoint.pt")])
    out = capsys.readouterr().out
    last = json.loads((run / "metrics.json").read_text())["history"][-1]["diagnostics"]
    assert d["cpl"]["miou"] == pytest.approx(last["cpl"]["miou"])
    assert d["xi_sweep"]["miou"] == pytest.approx(last["xi_sweep"]["miou"])
    assert "does low perplexity mark correct CPL pixels? AUROC" in out
    assert "AN vs ON: CPL" in out and "own texture" in out
    png = run / "diagnostics_step_000004.png"
    assert png.is_file() and png.with_suffix(".json").is_file()


def test_diagnose_names_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        diagnose.main([str(tmp_path / "none.pt")])
    assert exit_info.value.code == 2
    assert "none.pt not found" in capsys.readouterr().err


def test_the_diagnostics_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(tmp_path / "cache"))
    sets = [*TINY, "eval.diagnostics=false", f"output_dir={tmp_path / 'r'}"]
    cfg = train.load_config(CONFIGS / "default.yaml", sets)
    train.train(cfg)
    history = json.loads((Path(cfg["output_dir"]) / "metrics.json").read_text())["history"]
    assert all("diagnostics" not in r for r in history)
    assert not (Path(cfg["output_dir"]) / "diagnostics.png").exists()

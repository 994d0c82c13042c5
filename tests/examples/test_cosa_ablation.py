"""The ablation runner: variants are valid configs, the table is written, reruns resume."""

from pathlib import Path

import pytest
from test_cosa_train import TINY  # pytest puts this folder on sys.path (prepend mode)

ROOT = Path(__file__).resolve().parents[2]


def _ablation():
    from examples.cosa import ablation

    return ablation


def _settings(cfg: dict) -> dict:
    """A resolved config without its output_dir: what decides the run's results."""
    return {k: v for k, v in cfg.items() if k != "output_dir"}


def test_every_variant_is_a_valid_config():
    ablation = _ablation()
    for name in ablation.VARIANTS:
        assert ablation.load_variant(name)["method"] == "cosa", name


def test_core_without_sa_raw_dt_is_the_baseline():
    ablation = _ablation()
    no_sa_raw_dt = ["train.use_teacher=false", "loss.raw=false", "threshold.dynamic=false"]
    core = ablation.load_variant("core", no_sa_raw_dt)
    base = ablation.load_variant("baseline")
    assert _settings(core) == _settings(base)


def test_default_without_its_four_parts_is_the_baseline():
    ablation = _ablation()  # the default-X variants split the default's lead exactly
    parts = [ablation.VARIANTS[f"default-{x}"][2] for x in ("SA", "RAW", "GC", "cls†")]
    stripped = ablation.load_variant("default", sum(parts, []))
    base = ablation.load_variant("baseline")
    assert _settings(stripped) == _settings(base)


def test_no_ema_config_is_the_default_without_sa():
    ablation = _ablation()  # configs/no_ema.yaml is the measured variant default-SA
    no_ema = ablation.cosa_train.load_config(ROOT / "examples/cosa/configs/no_ema.yaml")
    variant = ablation.load_variant("default-SA")
    assert not no_ema["train"]["use_teacher"]
    assert _settings(no_ema) == _settings(variant)


def test_runs_variants_writes_table_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(tmp_path / "cache"))
    ablation = _ablation()
    sets = sum([["--set", s] for s in TINY], [])
    args = ["--variants", "core,core-DT", "--output-dir", str(tmp_path / "abl"), *sets]
    text = ablation.main(args)
    rows = [line for line in text.splitlines() if line.startswith("| core")]
    assert [r.split(" | ")[0] for r in rows] == ["| core", "| core-DT"]
    assert (tmp_path / "abl" / "ablation.md").read_text() == text
    ckpt = tmp_path / "abl" / "core" / "checkpoint.pt"
    before = ckpt.stat().st_mtime_ns
    assert ablation.main(args) == text  # finished variants are read back, not retrained
    assert ckpt.stat().st_mtime_ns == before


def test_unknown_variant_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="--variants"):
        _ablation().main(["--variants", "core,nope", "--output-dir", str(tmp_path)])

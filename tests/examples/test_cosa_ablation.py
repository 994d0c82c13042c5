"""The ablation runner: variants are valid configs, the table is written, reruns resume."""

import importlib.util
from pathlib import Path

import pytest
from test_cosa_train import TINY  # pytest puts this folder on sys.path (prepend mode)

ROOT = Path(__file__).resolve().parents[2]


def _ablation():
    path = ROOT / "examples/cosa/ablation.py"
    spec = importlib.util.spec_from_file_location("cosa_ablation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_variant_is_a_valid_config():
    ablation = _ablation()
    paper = ablation.HERE / "configs" / "paper.yaml"
    for name, (_, overrides) in ablation.VARIANTS.items():
        cfg = ablation.cosa_train.load_config(paper, overrides)
        assert cfg["method"] == "cosa", name
    base = ablation.cosa_train.load_config(paper, ablation.VARIANTS["baseline"][1])
    same = ablation.cosa_train.load_config(ablation.HERE / "configs" / "baseline.yaml")
    assert {k: v for k, v in base.items() if k != "output_dir"} == {
        k: v for k, v in same.items() if k != "output_dir"
    }  # the "baseline" variant is baseline.yaml


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

"""Every public callable against every bad input of ``cases.FAULTS``: a ValueError that
names the argument for bad shapes, batches, labels, NaN and dtypes; a finite result
(losses 0) or a named ValueError for an empty batch; shape inference on meta tensors
(or a ValueError saying why not). ``docs/reliability.md`` is pinned to what runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from cases import FAULTS, SPECS, TRAINER_FAULTS, all_outcomes, document, run_case

import wsss_blocks as W

ROOT = Path(__file__).resolve().parents[2]
NAMED = ("wrong rank", "mismatched batch", "labels out of range", "NaN", "wrong dtype")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_a_bad_input_gets_a_clear_answer(spec, fault):
    o = run_case(spec, fault)
    if o is None:
        return  # not applicable (the document says why)
    assert o.raised in (None, "ValueError"), f"{o.raised}: {o.message}"
    base = o.argument.split("[")[0]
    if fault in NAMED:
        assert o.raised == "ValueError", o.message
        assert base in o.message, f"the message does not name {base!r}: {o.message}"
    elif fault == "empty batch":
        assert o.raised is None or base in o.message, o.message
        assert o.finite is not False, f"NaN from an empty batch: {o.message}"
        if spec.name.endswith("_loss") and o.raised is None:
            assert o.message == "returns 0", o.message
    else:  # meta tensors: shape inference, or a reason
        assert o.raised is None or "meta" in o.message, o.message
        assert o.raised is not None or "meta tensor" in o.message or o.message == "returns None"


def test_every_public_callable_that_takes_tensors_is_tried():
    tried = {s.name.split(".")[0] for s in SPECS}
    untried = {  # no tensor input of their own, or files and opencv
        "IGNORE_INDEX", "SALIENCY_METHODS", "data_checks_enabled", "set_data_checks",
        "CAMOutput", "IoUResult", "csc_implementation", "cached_saliency", "estimate_saliency",
        "load_saliency_maps", "opencv_saliency", "save_saliency_maps",
    }  # fmt: skip
    assert set(W.__all__) - untried - tried == set()


@pytest.mark.parametrize("row", TRAINER_FAULTS, ids=[r[0] for r in TRAINER_FAULTS])
def test_each_trainer_fault_in_the_document_names_a_test_that_exists(row):
    _, _, test = row
    path, name = test.split("::")
    assert f"def {name}(" in (ROOT / path).read_text(), test


def test_the_reliability_document_is_generated_from_these_cases():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    assert doc == document(all_outcomes()), (
        "docs/reliability.md is out of date: run `python tests/reliability/cases.py`"
    )

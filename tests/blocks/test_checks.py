"""Validation helpers: each raises ValueError naming the argument and what it received."""

from __future__ import annotations

import pytest
import torch

from wsss_blocks._checks import (
    IGNORE_INDEX,
    check_finite,
    check_float,
    check_label_map,
    check_labels,
    check_ndim,
    check_open_unit,
    check_positive,
    check_range,
    check_same_batch,
    check_tensor,
)


def test_ignore_index_is_255():
    assert IGNORE_INDEX == 255


def test_check_tensor_rejects_non_tensor_and_returns_tensor():
    t = torch.zeros(2)
    assert check_tensor("x", t) is t
    with pytest.raises(ValueError, match="x must be a torch.Tensor, got list"):
        check_tensor("x", [1.0])


def test_check_ndim_names_argument_and_shape():
    check_ndim("cam", torch.zeros(1, 2, 3, 4), 4, "(B, C, h, w)")
    with pytest.raises(ValueError, match=r"cam must be 4-D \(B, C, h, w\), got shape \(2, 3\)"):
        check_ndim("cam", torch.zeros(2, 3), 4, "(B, C, h, w)")
    with pytest.raises(ValueError, match="cam must be a torch.Tensor"):
        check_ndim("cam", 3.0, 4, "(B, C, h, w)")


def test_check_float():
    check_float("x", torch.zeros(1, dtype=torch.float16))
    msg = "x must be a floating-point tensor, got dtype torch.int64"
    with pytest.raises(ValueError, match=msg):
        check_float("x", torch.zeros(1, dtype=torch.int64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_finite(bad):
    check_finite("x", torch.tensor([0.0, 1.0]))
    check_finite("x", torch.zeros(0))  # empty is fine
    with pytest.raises(ValueError, match="x must be finite"):
        check_finite("x", torch.tensor([0.0, bad]))


def test_check_range_inclusive_bounds_and_message():
    check_range("p", torch.tensor([0.0, 1.0]), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"p must lie in \[0.0, 1.0\], got values in \[-0.5, 1\]"):
        check_range("p", torch.tensor([-0.5, 1.0]), 0.0, 1.0)
    with pytest.raises(ValueError, match="p must lie in"):
        check_range("p", torch.tensor([0.0, 1.0 + 1e-6]), 0.0, 1.0)
    with pytest.raises(ValueError, match="p must be finite"):
        check_range("p", torch.tensor([float("nan")]), 0.0, 1.0)


def test_check_same_batch():
    check_same_batch(("a", "b"), torch.zeros(2, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"batch sizes differ: a \(2, 3\), b \(3, 3\)"):
        check_same_batch(("a", "b"), torch.zeros(2, 3), torch.zeros(3, 3))


def test_check_labels():
    check_labels("labels", torch.tensor([[0, 1, 1]]), 3)
    check_labels("labels", torch.tensor([[0.0, 1.0]]), 2)
    check_labels("labels", torch.tensor([[True, False]]), 2)
    with pytest.raises(ValueError, match="labels must be 2-D"):
        check_labels("labels", torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="labels must have 3 classes in dim 1, got shape"):
        check_labels("labels", torch.tensor([[0, 1]]), 3)
    with pytest.raises(ValueError, match="labels must be multi-hot"):
        check_labels("labels", torch.tensor([[0.5, 1.0]]), 2)
    with pytest.raises(ValueError, match="labels must be multi-hot"):
        check_labels("labels", torch.tensor([[2, 0]]), 2)


def test_check_label_map():
    check_label_map("target", torch.tensor([[0, 2, 255]]), 3)
    check_label_map("target", torch.tensor([[0, 2, 255]], dtype=torch.uint8), 3)
    with pytest.raises(ValueError, match="target values must lie in \\[0, 2\\] or be 255, got 3"):
        check_label_map("target", torch.tensor([[0, 3]]), 3)
    with pytest.raises(ValueError, match="target values .* got -1"):
        check_label_map("target", torch.tensor([[-1, 0]]), 3)
    with pytest.raises(ValueError, match="target must be an integer tensor"):
        check_label_map("target", torch.tensor([[0.0]]), 3)
    with pytest.raises(ValueError, match="target must be an integer tensor"):
        check_label_map("target", torch.tensor([[True]]), 3)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "1"])
def test_check_positive(bad):
    check_positive("tau", 1e-3)
    check_positive("tau", 2)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        check_positive("tau", bad)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan"), torch.tensor(1.0), None])
def test_check_open_unit(bad):
    check_open_unit("threshold", 0.5)
    check_open_unit("threshold", torch.tensor(0.25))
    with pytest.raises(ValueError, match="threshold must lie in \\(0, 1\\)"):
        check_open_unit("threshold", bad)


def test_check_range_quiet_on_tensors_that_require_grad():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_range("x", torch.rand(3, requires_grad=True), 0.0, 1.0)


def test_data_checks_switch_skips_value_checks_but_not_shape_checks():
    from wsss_blocks import cam_to_cpl, data_checks_enabled, set_data_checks

    labels = torch.ones(1, 2)
    bad_values = torch.full((1, 2, 4, 4), 2.0)  # outside [0, 1]
    with pytest.raises(ValueError, match="cam must lie in"):
        cam_to_cpl(bad_values, labels, 0.5)
    previous = set_data_checks(False)
    try:
        assert previous is True and not data_checks_enabled()
        assert cam_to_cpl(bad_values, labels, 0.5).shape == (1, 4, 4)  # not read: no error
        with pytest.raises(ValueError, match="4-D"):
            cam_to_cpl(bad_values[0], labels, 0.5)  # shapes are still checked
    finally:
        set_data_checks(previous)
    assert data_checks_enabled()
    with pytest.raises(TypeError, match="bool"):
        set_data_checks("no")

"""EMATeacher: exact start copy, the EMA equation on parameters and buffers, eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from wsss_blocks import EMATeacher


def _student(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 2),
    )


def _train_step(student: nn.Module, seed: int) -> None:
    """One SGD step in train mode: moves parameters and BatchNorm running stats."""
    g = torch.Generator().manual_seed(seed)
    student.train()
    x = torch.randn(6, 3, 5, 5, generator=g) * 2 + 1
    loss = student(x).square().mean()
    student.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in student.parameters():
            p -= 0.5 * p.grad


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def test_starts_as_exact_independent_copy():
    student = _student()
    _train_step(student, 1)  # non-default BN statistics and num_batches_tracked = 1
    teacher = EMATeacher(student, momentum=0.9)
    _assert_states_equal(_state(teacher.module), _state(student))
    assert teacher.module is not student
    for (n, pt), (_, ps) in zip(
        teacher.module.state_dict().items(), student.state_dict().items(), strict=True
    ):
        assert pt.data_ptr() != ps.data_ptr(), f"{n} shares storage with the student"
    before = _state(teacher.module)
    _train_step(student, 2)
    _assert_states_equal(_state(teacher.module), before)  # student steps do not leak in


def test_momentum_zero_copies_student():
    student = _student()
    teacher = EMATeacher(student, momentum=0.0)
    _train_step(student, 1)
    _train_step(student, 2)
    teacher.update(student)
    _assert_states_equal(_state(teacher.module), _state(student))


def test_momentum_one_freezes_teacher():
    student = _student()
    teacher = EMATeacher(student, momentum=1.0)
    frozen = _state(teacher.module)
    _train_step(student, 1)
    teacher.update(student)
    after = _state(teacher.module)
    for k, v in frozen.items():
        if v.is_floating_point():
            assert torch.equal(after[k], v), k
    # integer buffers are copied whatever m is
    assert int(after["1.num_batches_tracked"]) == 1


@given(m=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_one_step_matches_equation(m, seed):
    student = _student(seed)
    teacher = EMATeacher(student, momentum=m)
    _train_step(student, seed + 1)
    teacher.update(student)  # teacher now differs from the student unless m = 0
    _train_step(student, seed + 2)
    _train_step(student, seed + 3)
    t0, s = _state(teacher.module), _state(student)
    teacher.update(student)
    t1 = _state(teacher.module)
    float_keys = [k for k, v in t0.items() if v.is_floating_point()]
    assert {"1.running_mean", "1.running_var", "0.weight", "5.bias"} <= set(float_keys)
    for k in float_keys:
        want = m * t0[k].double() + (1 - m) * s[k].double()  # float64 oracle
        torch.testing.assert_close(t1[k].double(), want, rtol=1e-6, atol=1e-6, msg=k)
    assert torch.equal(t1["1.num_batches_tracked"], s["1.num_batches_tracked"])
    assert int(t1["1.num_batches_tracked"]) == 3


def test_integer_buffers_are_copied_not_averaged():
    student = _student()
    teacher = EMATeacher(student, momentum=0.5)
    for step in range(3):
        _train_step(student, step)
    teacher.update(student)
    nbt = teacher.module.state_dict()["1.num_batches_tracked"]
    assert nbt.dtype == torch.int64 and int(nbt) == 3


def test_always_eval_mode():
    student = _student().train()
    teacher = EMATeacher(student)
    assert student.training  # the student is left as it was
    for mode in (True, False, True):
        assert teacher.train(mode) is teacher
        assert not teacher.training
        assert not any(m.training for m in teacher.modules())
    assert teacher.train() is teacher and not teacher.module.training
    parent = nn.ModuleDict({"teacher": teacher, "student": student})
    parent.train()  # a parent switching to train mode does not wake the teacher
    assert student.training and not any(m.training for m in teacher.modules())
    # eval mode: dropout off and BN uses running stats, so repeated calls agree
    x = torch.randn(3, 3, 5, 5)
    assert torch.equal(teacher(x), teacher(x))
    want = student.eval()(x)
    torch.testing.assert_close(teacher(x), want.detach())


def test_wrapped_module_in_eval_mode_from_the_start():
    teacher = EMATeacher(_student().train())
    assert not any(m.training for m in teacher.module.modules())


def test_wrapper_reports_eval_mode_from_the_start():
    teacher = EMATeacher(_student().train())
    assert not teacher.training


def test_no_grad():
    student = _student()
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())  # student untouched
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    out = teacher(x)
    assert not out.requires_grad and out.grad_fn is None


def test_update_keeps_student_gradients_and_values():
    student = _student()
    teacher = EMATeacher(student, momentum=0.5)
    _train_step(student, 1)
    before = _state(student)
    grads = [p.grad.clone() for p in student.parameters()]
    teacher.update(student)
    _assert_states_equal(_state(student), before)
    for g, p in zip(grads, student.parameters(), strict=True):
        assert torch.equal(g, p.grad)
    assert all(not p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("m", [-0.1, 1.5, float("nan")])
def test_momentum_out_of_range(m):
    with pytest.raises(ValueError, match="momentum"):
        EMATeacher(_student(), momentum=m)
    teacher = EMATeacher(_student())
    with pytest.raises(ValueError, match="momentum"):
        teacher.update(_student(), momentum=m)


def test_momentum_override_applies_to_one_step():
    student = _student()
    teacher = EMATeacher(student, momentum=0.9)
    _train_step(student, 1)
    teacher.update(student, momentum=0.0)  # re-sync: an exact copy, BN statistics too
    _assert_states_equal(_state(teacher.module), _state(student))
    assert teacher.momentum == 0.9  # the next steps use the teacher's own momentum
    _train_step(student, 2)
    t0, s = _state(teacher.module), _state(student)
    teacher.update(student)
    want = 0.9 * t0["0.weight"].double() + 0.1 * s["0.weight"].double()
    torch.testing.assert_close(teacher.module[0].weight.double(), want, rtol=1e-6, atol=1e-6)


def test_architecture_mismatch_by_name_raises():
    teacher = EMATeacher(_student())
    with pytest.raises(ValueError, match="student"):
        teacher.update(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="student"):
        teacher.update(nn.Sequential(*list(_student())[:3]))  # a prefix of the same net


@pytest.mark.parametrize("student_shape", [(2, 1), (3, 2)])
def test_architecture_mismatch_by_shape_raises(student_shape):
    teacher = EMATeacher(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="student"):
        teacher.update(nn.Linear(*student_shape))


def test_skip_keeps_every_value_and_bad_skip_flags_are_named():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    teacher = EMATeacher(student, 0.5)
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.fill_(float("nan"))  # what a skipped NaN step can leave
    student[1].num_batches_tracked += 1
    teacher.update(student, skip=torch.tensor(True))
    after = teacher.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    teacher.update(student, skip=torch.tensor(False))  # not skipped: the teacher moves
    assert not torch.equal(before["0.weight"], teacher.module.state_dict()["0.weight"])
    for bad in (torch.tensor([True]), torch.tensor(1.0), True):
        with pytest.raises(ValueError, match="skip must be a 0-d bool tensor"):
            teacher.update(student, skip=bad)

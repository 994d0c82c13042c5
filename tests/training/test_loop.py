"""The shared optimisation step: the loss log (read once, terms that change over the
run), non-finite steps skipped then stopping the run, the teacher following the model."""

from __future__ import annotations

import pytest
import torch

from wsss_blocks import EMATeacher
from wsss_blocks.training import NonFiniteLossError, Stepper, poly_lr_factor


def _stepper(**kwargs):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    teacher = EMATeacher(model, 0.5)
    return model, Stepper(model, opt, sched, {"a": 1.0, "b": 0.5}, teacher, log_every=1,
                          **kwargs), teacher  # fmt: skip


def test_the_log_holds_every_entry_when_the_terms_change_between_reads():
    model, stepper, _ = _stepper()
    x = torch.ones(2, 3)
    for i in range(4):  # a warm-up of two steps with one term, then two terms
        out = model(x).mean()
        stepper.step(i, {"a": out} if i < 2 else {"a": out, "b": 2 * out})
    log = stepper.loss_log  # one read for all four entries
    assert [i for i, _ in log] == [0, 1, 2, 3]
    assert [set(t) for _, t in log] == [{"a"}, {"a"}, {"a", "b"}, {"a", "b"}]
    assert log[2][1]["b"] == pytest.approx(2 * log[2][1]["a"])


def test_a_non_finite_step_is_skipped_and_k_in_a_row_stop():
    model, stepper, teacher = _stepper(max_nonfinite=2)
    before = [p.clone() for p in model.parameters()]
    nan = model(torch.ones(1, 3)).mean() * float("nan")
    with pytest.warns(UserWarning, match="non-finite loss at step 0"):
        assert stepper.step(0, {"a": nan}) is False
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert stepper.skipped == 1
    assert stepper.step(1, {"a": model(torch.ones(1, 3)).mean()}) is True  # resets the run
    with pytest.warns(UserWarning):
        stepper.step(2, {"a": model(torch.ones(1, 3)).mean() * float("inf")})
    message = "2 non-finite losses in a row, the last at step 3"
    with pytest.raises(NonFiniteLossError, match=message):
        stepper.step(3, {"a": model(torch.ones(1, 3)).mean() * float("nan")})


def test_the_teacher_moves_towards_the_model_after_each_step():
    model, stepper, teacher = _stepper()
    w0 = model.weight.detach().clone()
    stepper.step(0, {"a": model(torch.ones(1, 3)).sum()})
    expected = 0.5 * w0 + 0.5 * model.weight.detach()
    torch.testing.assert_close(teacher.module.weight, expected)


def test_poly_schedule_with_the_release_warm_up():
    assert poly_lr_factor(0, 100, 10, warmup_start=1e-6) == pytest.approx(1e-6)
    assert poly_lr_factor(5, 100, 10, warmup_start=0.0) == pytest.approx(0.5)
    assert poly_lr_factor(10, 100, 10) == pytest.approx(0.9**0.9)
    with pytest.raises(ValueError, match="warmup_start"):
        poly_lr_factor(0, 100, 10, warmup_start=2.0)


def _device_side_stepper(optimizer: str, max_nonfinite: int = 2, on_device: bool = True):
    """The path a GPU takes (skip decided on the device), run on the CPU; with
    ``on_device=False`` the CPU's own (host-side) path, for comparison."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    if optimizer == "fused":
        opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.1, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    teacher = EMATeacher(model, 0.5)
    stepper = Stepper(model, opt, sched, {"a": 1.0}, teacher, log_every=1,
                      max_nonfinite=max_nonfinite, skip_on_device=on_device)  # fmt: skip
    return model, opt, stepper, teacher


def _snapshot(*modules_and_optimizers):
    out = []
    for m in modules_and_optimizers:
        if isinstance(m, torch.nn.Module):
            out += [t.clone() for t in m.state_dict().values()]
        else:
            out += [t.clone() for s in m.state.values() for t in s.values()]
    return out


def test_a_device_side_skip_leaves_weights_optimizer_and_teacher_untouched():
    model, opt, stepper, teacher = _device_side_stepper("fused")
    x = torch.ones(1, 3)
    stepper.step(0, {"a": model(x).mean()})  # creates the optimizer state
    before = _snapshot(model, teacher, opt)
    assert stepper.step(1, {"a": model(x).mean() * float("nan")}) is True  # not read yet
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(model, teacher, opt),
                                                  strict=True))  # fmt: skip
    assert float(opt.state[model.weight]["step"]) == 1.0  # the step count is not advanced
    stepper.step(2, {"a": model(x).mean()})  # a good step moves everything again
    assert not torch.equal(before[0], model.weight)
    with pytest.warns(UserWarning, match=r"1 non-finite loss\(es\) at steps 0 to 2"):
        stepper.loss_log  # noqa: B018
    assert stepper.skipped == 1


def test_a_device_side_run_of_k_skips_stops_at_the_log_read():
    model, _, stepper, _ = _device_side_stepper("fused", max_nonfinite=2)
    x = torch.ones(1, 3)
    for i, bad in enumerate([True, False, True, True, False]):
        stepper.step(i, {"a": model(x).mean() * (float("inf") if bad else 1.0)})
    with pytest.raises(NonFiniteLossError, match="2 non-finite losses in a row at steps 0 to 4"):
        stepper.loss_log  # noqa: B018
    assert stepper.skipped == 3
    assert torch.isfinite(model.weight).all()


def test_a_device_side_non_finite_step_with_an_unfused_optimizer_is_reported():
    model, _, stepper, _ = _device_side_stepper("foreach")
    stepper.step(0, {"a": model(torch.ones(1, 3)).mean() * float("nan")})
    with pytest.raises(NonFiniteLossError, match="cannot skip a step on the device"):
        stepper.loss_log  # noqa: B018


def test_the_device_side_skip_is_the_host_side_skip():
    """Same losses, one NaN among them: both paths end with the same weights."""
    finals = []
    for on_device in (False, True):
        model, opt, stepper, teacher = _device_side_stepper("fused", 3, on_device)
        with pytest.warns(UserWarning):
            for i in range(4):
                scale = float("nan") if i == 1 else 1.0
                stepper.step(i, {"a": model(torch.ones(1, 3) * i).mean() * scale})
            stepper.loss_log  # noqa: B018
        finals.append(_snapshot(model, teacher, opt))
    assert all(torch.equal(a, b) for a, b in zip(*finals, strict=True))

"""EMA teacher: CoSA's assignment network (AN), an exponential moving average of the ON."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ._checks import check_finite


def _checked_momentum(momentum: float) -> float:
    """``momentum`` as a float; ValueError unless it lies in [0, 1] (NaN does not)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}")
    return float(momentum)


class EMATeacher(nn.Module):
    """Exponential-moving-average copy of a student network, always in eval mode.

    .. math:: \\Theta' \\leftarrow m\\,\\Theta' + (1 - m)\\,\\Theta

    The teacher starts as an exact copy of the student (the official CoSA code builds
    two independently initialised networks; we do not). Floating-point parameters *and*
    buffers are averaged (e.g. BatchNorm running statistics); integer buffers (e.g.
    ``num_batches_tracked``) are copied. The teacher never requires grad and calling it
    runs under ``torch.no_grad()``.

    Args:
        student: the online network (ON) to follow.
        momentum: m in [0, 1]; m = 0 copies the student, m = 1 freezes the teacher.
            CoSA uses 0.9994.
    Raises:
        ValueError: if ``momentum`` is outside [0, 1].
    Example:
        >>> student = nn.Linear(2, 1)
        >>> teacher = EMATeacher(student, momentum=0.5)
        >>> _ = student.weight.data.add_(1.0)
        >>> teacher.update(student)
        >>> torch.allclose(teacher.module.weight, student.weight - 0.5)
        True

    Reference:
        Yang et al., CoSA, ECCV 2024, Sec. 3.1 (AN updated by EMA, m = 0.9994);
        Tarvainen & Valpola, Mean Teacher, NeurIPS 2017.
    """

    def __init__(self, student: nn.Module, momentum: float = 0.9994):
        super().__init__()
        self.momentum = _checked_momentum(momentum)
        self.module = copy.deepcopy(student)
        self.module.eval()
        self.module.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> EMATeacher:
        """Keep the teacher in eval mode whatever the caller asks (dropout off, BN frozen)."""
        super().train(False)
        return self

    @torch.no_grad()
    def update(
        self,
        student: nn.Module,
        momentum: float | None = None,
        skip: torch.Tensor | None = None,
    ) -> None:
        """Move the teacher one EMA step towards ``student`` (call after optimiser.step()).

        Args:
            student: the online network, with the teacher's architecture.
            momentum: m for this step only, in [0, 1]; default ``self.momentum``.
                ``momentum=0`` re-synchronises the teacher with the student (e.g. at the
                end of a warm-up).
            skip: optional 0-d bool tensor on the teacher's device; where True the
                teacher keeps every value (a skipped step, decided on the device without
                a host read; the student is then not checked for finiteness).
        Raises:
            ValueError: if ``student`` does not have the teacher's parameter/buffer names,
                shapes and dtypes, holds a non-finite value (a data check: the teacher
                would keep it for good), ``momentum`` is outside [0, 1], or ``skip`` is
                not a 0-d bool tensor.
        """
        m = self.momentum if momentum is None else _checked_momentum(momentum)
        if skip is not None and not (
            isinstance(skip, torch.Tensor) and skip.dim() == 0 and skip.dtype == torch.bool
        ):
            is_tensor = isinstance(skip, torch.Tensor)
            got = f"shape {tuple(skip.shape)} {skip.dtype}" if is_tensor else repr(skip)
            raise ValueError(f"skip must be a 0-d bool tensor or None, got {got}")
        t_state = self.module.state_dict()
        s_state = student.state_dict()
        if t_state.keys() != s_state.keys():
            missing = sorted(set(t_state) ^ set(s_state))[:5]
            raise ValueError(f"student does not match the teacher's architecture: {missing}")
        floats_t, floats_s = [], []
        for name, t in t_state.items():
            s = s_state[name]
            if s.shape != t.shape or s.dtype != t.dtype:
                raise ValueError(
                    f"student tensor {name!r} has shape {tuple(s.shape)} / {s.dtype}, the "
                    f"teacher's has {tuple(t.shape)} / {t.dtype}"
                )
            s = s.detach() if skip is None else torch.where(skip, t, s.detach())
            if t.is_floating_point():
                if skip is None:
                    check_finite(f"student tensor {name!r}", s)
                floats_t.append(t)
                floats_s.append(s)
            else:
                t.copy_(s)
        if floats_t:
            # lerp(t, s, 1 - m) = m·t + (1 - m)·s  (one fused op for all tensors)
            torch._foreach_lerp_(floats_t, floats_s, 1.0 - m)

    def forward(self, *args, **kwargs):
        """Run the teacher without gradient; arguments go to the wrapped module."""
        with torch.no_grad():
            return self.module(*args, **kwargs)

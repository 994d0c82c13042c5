"""The optimisation plumbing every trainer repeats: AdamW with a head group, the poly
schedule with warm-up, one step (backward, AMP scaling, optimizer, EMA teacher, loss
log), progress bars and ``metrics.json``."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm import tqdm

from ..teacher import EMATeacher
from .distributed import any_rank, average_buffers_, sum_over_ranks_
from .runtime import resolve_amp


def poly_lr_factor(
    step: int, total: int, warmup: int = 0, power: float = 0.9, warmup_start: float | None = None
) -> float:
    """Learning-rate factor of step ``step``: linear warm-up, then poly decay.

    During the first ``warmup`` steps the factor rises linearly: from
    ``warmup_start`` to 1 (the CoSA release: 1e-6, over 1,500 iterations), or as
    (step + 1) / warmup when ``warmup_start`` is None. Afterwards it is
    (1 − step / total) ** power, the poly schedule of DeepLab, ToCo and CoSA.

    Args:
        step: 0-based step.
        total: total number of steps (> 0).
        warmup: warm-up steps (>= 0).
        power: poly exponent (> 0).
        warmup_start: factor at step 0 of the warm-up, in [0, 1], or None.
    Returns:
        The factor, a float in [0, 1].
    Raises:
        ValueError: if ``total`` <= 0, ``warmup`` < 0 or ``warmup_start`` outside [0, 1].
    """
    if total <= 0 or warmup < 0:
        raise ValueError(f"total must be > 0 and warmup >= 0, got total={total}, warmup={warmup}")
    if warmup_start is not None and not 0.0 <= warmup_start <= 1.0:
        raise ValueError(f"warmup_start must lie in [0, 1], got {warmup_start}")
    if step < warmup:
        if warmup_start is None:
            return (step + 1) / warmup
        return warmup_start + (1.0 - warmup_start) * step / warmup
    return max(0.0, 1.0 - step / total) ** power


def build_adamw(
    model: torch.nn.Module,
    lr: float,
    head_lr_mult: float,
    weight_decay: float,
    fused: bool | None = None,
):
    """AdamW with two groups: the backbone at ``lr`` and the heads (classifiers, decoder)
    at ``lr * head_lr_mult`` (CoSA's release: 6e-5 and ×10). ``model`` must have
    ``backbone_parameters()`` and ``head_parameters()`` (every
    :class:`~wsss_blocks.models.CAMBackboneNet`).

    ``fused`` (default: on where the parameters are on CUDA) picks torch's fused AdamW,
    whose step takes a device-side skip flag: :class:`Stepper` skips a non-finite step
    with it without waiting for the GPU. The CPU keeps the unfused one (the numbers in
    docs/results.md were trained with it).

    Raises:
        ValueError: if ``lr`` or ``head_lr_mult`` is not > 0 or ``weight_decay`` < 0.
    """
    if not (lr > 0 and head_lr_mult > 0 and weight_decay >= 0):
        raise ValueError(f"train.lr and train.head_lr_mult must be > 0 and weight_decay >= 0, "
                         f"got {lr}, {head_lr_mult}, {weight_decay}")  # fmt: skip
    if fused is None:
        fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(
        [
            {"params": list(model.backbone_parameters()), "lr": lr},
            {"params": list(model.head_parameters()), "lr": lr * head_lr_mult},
        ],
        weight_decay=weight_decay,
        fused=fused or None,  # None, not False: False would also turn off foreach
    )


class NonFiniteLossError(FloatingPointError):
    """Training met non-finite losses it cannot skip (see :class:`Stepper`)."""


class Stepper:
    """One optimisation step on a weighted sum of named loss terms.

    ``step(i, terms)`` forms L = Σ_k weights[k] · terms[k], runs backward (scaled by a
    GradScaler under fp16), clips gradients if asked, steps the optimizer and the
    schedule, and updates the EMA teacher (under ``torch.distributed`` after averaging
    the BatchNorm statistics over ranks, so every rank's teacher is the same). Every
    ``log_every`` steps it keeps the terms' values as device tensors; reading
    :attr:`loss_log` turns them into numbers, the only point where the host waits for
    the device, so a CUDA step never does.

    A non-finite loss: the step is skipped (no update of the weights, the optimizer
    state or the teacher; the schedule advances) and counted in ``skipped``;
    ``max_nonfinite`` such steps in a row raise :class:`NonFiniteLossError`. Under
    ``torch.distributed`` all ranks skip a step that is non-finite on any of them. On
    the CPU this is decided on the host at once. Elsewhere (CUDA, where reading the
    loss would make the host wait) it is decided on the device: the optimizer gets the
    flag as its ``found_inf`` (an optimizer whose step takes one: torch's fused Adam,
    AdamW, SGD; :func:`build_adamw` builds it on CUDA; under fp16 the GradScaler's flag
    does it), the teacher update keeps its values, and the counts are read with the
    loss log, which then raises NonFiniteLossError for a run of ``max_nonfinite`` and
    warns of skipped steps. With an optimizer without that flag the step runs and the
    log read raises at the first non-finite loss.

    Args:
        model: the trained network (unwrapped: the EMA teacher follows it; a
            DistributedDataParallel wrapper averages its gradients in backward).
        optimizer, scheduler: as built for it.
        weights: term name → weight; a term without a weight raises KeyError.
        teacher: optional :class:`~wsss_blocks.EMATeacher` updated after each step.
        amp: an autocast mode; ``"fp16"`` (or ``"auto"`` resolving to it) adds a
            GradScaler, other modes need none.
        grad_clip: max gradient norm, 0 for none.
        log_every: steps between loss-log entries.
        max_nonfinite: non-finite steps in a row that stop the run, >= 1.
        skip_on_device: decide the skip on the device (None: everywhere but the CPU).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        weights: Mapping[str, float],
        teacher: EMATeacher | None = None,
        amp: str = "fp32",
        grad_clip: float = 0.0,
        log_every: int = 10,
        max_nonfinite: int = 1,
        skip_on_device: bool | None = None,
    ) -> None:
        if max_nonfinite < 1:
            raise ValueError(f"max_nonfinite must be >= 1, got {max_nonfinite}")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.max_nonfinite = max_nonfinite
        self.skipped = 0  # non-finite steps skipped in the run so far
        self._in_a_row = 0
        self.weights = dict(weights)
        self.teacher = teacher
        self.device = next(model.parameters()).device
        fp16 = resolve_amp(amp, self.device) == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None
        self.grad_clip = grad_clip
        self.log_every = log_every
        self._log: list[tuple[int, dict[str, float]]] = []
        self._pending: list[tuple[int, list[str], torch.Tensor]] = []
        # Device-side skip bookkeeping (not on the CPU): steps skipped, the current and
        # the longest run of them in a row since the last read.
        if skip_on_device is None:
            skip_on_device = self.device.type != "cpu"
        self.skip_on_device = skip_on_device
        self._device_skip = getattr(optimizer, "_step_supports_amp_scaling", False)
        self._counts = torch.zeros(3, dtype=torch.int64, device=self.device)
        self._unread_since: int | None = None  # first device step not yet checked

    def step(self, i: int, terms: Mapping[str, torch.Tensor], ema_momentum: float | None = None):
        """Optimise one step on ``terms`` (name → 0-d loss); ``ema_momentum`` overrides
        the teacher's momentum for this update (0.0 copies the model). Returns False if
        the step was skipped for a non-finite loss (CPU), else True."""
        loss = sum(self.weights[k] * v for k, v in terms.items())
        finite = torch.isfinite(loss)
        if not self.skip_on_device:  # decided on the host (the CPU: nothing to wait for)
            if any_rank(not finite):  # ranks skip together (DDP needs every backward)
                self.skipped += 1
                self._in_a_row += 1
                bad = {k: float(v.detach()) for k, v in terms.items()}
                if self._in_a_row >= self.max_nonfinite:
                    raise NonFiniteLossError(
                        f"{self._in_a_row} non-finite losses in a row, the last at step {i}: "
                        f"{bad}; the run stops, its last checkpoint is the last good state"
                    )
                warnings.warn(f"non-finite loss at step {i} ({bad}): step skipped", stacklevel=2)
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                return False
            self._in_a_row = 0
            bad = None
        else:
            bad = sum_over_ranks_((~finite).long()) > 0  # ranks skip together
            run = torch.where(bad, self._counts[1] + 1, 0)
            skipped = self._counts[0] + bad.long()
            self._counts = torch.stack((skipped, run, torch.maximum(self._counts[2], run)))
            if self._unread_since is None:
                self._unread_since = i
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.scaler is not None:  # a non-finite loss gives non-finite gradients: skipped
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif bad is not None and self._device_skip:
            self.optimizer.found_inf = bad.float()  # the step leaves weights and state
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
        else:
            self.optimizer.step()
        self.scheduler.step()
        average_buffers_(self.model)  # ranks' BN statistics agree (no-op in one process)
        if self.teacher is not None:
            self.teacher.update(self.model, momentum=ema_momentum, skip=bad)
        if i % self.log_every == 0:
            values = torch.stack([v.detach().float() for v in terms.values()])
            self._pending.append((i, list(terms), values))
        return True

    @property
    def loss_log(self) -> list[tuple[int, dict[str, float]]]:
        """``(step, {term: value})`` every ``log_every`` steps (reading it waits for the
        device once). Raises FloatingPointError if a CUDA step had a non-finite loss."""
        if self._pending:
            self._pending_end = self._pending[-1][0]
            # one read for all entries; the set of terms may change (e.g. after a warm-up)
            flat = torch.cat([v for _, _, v in self._pending]).tolist()
            start = 0
            for i, names, _ in self._pending:
                row = flat[start : start + len(names)]
                self._log.append((i, dict(zip(names, row, strict=True))))
                start += len(names)
            self._pending.clear()
            if self.skip_on_device:
                self._read_device_counts()
        return self._log

    def _read_device_counts(self) -> None:
        skipped, _, longest = self._counts.tolist()
        since, until = self._unread_since, self._pending_end
        self._counts[2] = 0
        self._unread_since = None
        new, self.skipped = skipped - self.skipped, skipped
        if not new:
            return
        where = f"at steps {since} to {until}"
        if not (self._device_skip or self.scaler is not None):
            raise NonFiniteLossError(
                f"non-finite loss {where}; this optimizer cannot skip a step on the device "
                "(a fused one can: build_adamw), so the weights took it"
            )
        if longest >= self.max_nonfinite:
            raise NonFiniteLossError(
                f"{longest} non-finite losses in a row {where}; the run stops, its last "
                "checkpoint is the last good state"
            )
        warnings.warn(f"{new} non-finite loss(es) {where}: steps skipped", stacklevel=3)

    def state_dict(self) -> dict:
        """Optimizer, schedule, scaler and loss log, for a checkpoint."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "losses": self.loss_log,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self._log = [tuple(e) for e in state.get("losses", [])]
        self._pending.clear()


def progress_bar(total: int, initial: int = 0, desc: str = "", disable: bool = False) -> tqdm:
    """A tqdm bar on stdout; when stdout is not a terminal (a log file) it refreshes at
    most every 60 s instead of at every step. ``disable`` hides it (ranks other than 0
    of a distributed run)."""
    tty = sys.stdout.isatty()
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stdout,
                mininterval=0.1 if tty else 60.0, disable=disable)  # fmt: skip


def write_metrics(out_dir: str | Path, final: dict, history: list, losses: list) -> None:
    """Write ``metrics.json``: the final result, every evaluation, the loss log."""
    with open(Path(out_dir) / "metrics.json", "w") as f:
        json.dump({"final": final, "history": history, "losses": losses}, f, indent=1)

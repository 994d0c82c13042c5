"""Device, mixed precision, seeds and checkpoints of a training run."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import data_checks_enabled, set_data_checks
from .distributed import DistInfo

AMP_MODES = ("auto", "bf16", "fp16", "fp32")
"""Autocast modes: bf16 (CPU and CUDA), fp16 (CUDA, with a GradScaler), fp32 (no autocast),
and auto (:func:`resolve_amp`: bf16 where the hardware computes in it, except for the
CPU's back-propagated passes, else fp16 on CUDA and fp32 on the CPU)."""


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (x86 AVX512-BF16 or AMX-BF16, Arm BF16), read
    from ``/proc/cpuinfo``; False where that file does not exist.

    Without it, oneDNN runs bf16 convolutions on a slow fallback path: an EfficientNet-Lite0
    forward + backward at batch 16, 96 px took 12.9 s under bf16 autocast and 1.0 s in fp32
    on an AMD EPYC without AVX-512 (docs/results.md, "Mixed precision on the CPU").
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_amp(amp: str, device: torch.device, grad: bool = False) -> str:
    """The autocast mode ``amp`` means on ``device`` for a pass that is back-propagated
    (``grad``) or not. Modes other than ``"auto"`` are returned as they are; ``"auto"``
    becomes:

    - on CUDA, bf16 where the GPU supports it, else fp16;
    - on a CPU with :func:`cpu_has_native_bf16`, bf16 for passes without gradient and fp32
      for back-propagated ones: there oneDNN's bf16 backward of dilated depthwise
      convolutions is ~1.7x slower than fp32's while the bf16 forward is ~2x faster (an
      EfficientNet-Lite0 at output stride 8, batch 16, 96 px: a CoSA step after the
      warm-up 1.12x faster than in bf16 throughout, a warm-up step ~1.4x;
      docs/results.md, "Mixed precision on the CPU");
    - fp32 on other CPUs and on devices without autocast (meta).

    Raises:
        ValueError: as :func:`check_amp`.
    """
    check_amp(amp, device)
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    native = device.type == "cpu" and cpu_has_native_bf16()
    return "bf16" if native and not grad else "fp32"


def resolve_device(name: str) -> torch.device:
    """The device a run asks for.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
    Returns:
        A ``torch.device``.
    Raises:
        ValueError: if ``name`` is none of these, or names CUDA on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={name!r} but CUDA is not available here; "
                             "use auto or cpu")
        return torch.device(name)
    raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N, got {name!r}")


def check_amp(amp: str, device: torch.device) -> None:
    """Raise ValueError unless ``amp`` is one of :data:`AMP_MODES` and runs on ``device``
    (fp16 autocast is CUDA only)."""
    if amp not in AMP_MODES:
        raise ValueError(f"train.amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs CUDA; use bf16 or fp32 on the CPU")


def autocast(device: torch.device, amp: str, grad: bool | None = None):
    """The autocast context of ``amp`` on ``device`` (a no-op for ``"fp32"``; ``"auto"`` as
    :func:`resolve_amp`, for a pass that is back-propagated when ``grad``, which defaults
    to :func:`torch.is_grad_enabled` at the call: open it inside ``torch.no_grad()`` for an
    inference pass).

    fp16 on CUDA needs the GradScaler :class:`~wsss_blocks.training.Stepper` makes.

    Raises:
        ValueError: as :func:`check_amp`.
    """
    grad = torch.is_grad_enabled() if grad is None else grad
    amp = resolve_amp(amp, device, grad)
    if amp == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict:
    """The torch (CPU and, where present, CUDA), NumPy and Python RNG states."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved (CUDA states only where both have CUDA)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Save ``state`` atomically: written to a temporary file beside ``path``, flushed
    to disk, then renamed over it, so a crash mid-save leaves the previous checkpoint.

    Raises:
        OSError: the write failed (a full disk, a quota): names the file and the free
            space; the partial temporary file is removed, the previous checkpoint kept.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:  # torch reports a short write as RuntimeError
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free / 2**20
        raise OSError(f"checkpoint {path} could not be written ({free:.0f} MiB free on its "
                      f"disk; the previous checkpoint is kept): {type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}") from e  # fmt: skip
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is truncated or not a checkpoint (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises several types for a damaged file
        raise ValueError(f"checkpoint {path} cannot be read (truncated or not a "
                         f"checkpoint): {type(e).__name__}: {e}") from None  # fmt: skip
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError(f"checkpoint {path} holds no run state (no 'config' entry)")
    return state


def start_run(cfg: dict, device: torch.device | None = None,
              dist: DistInfo | None = None) -> tuple[Path, torch.device]:  # fmt: skip
    """Begin a run from its config: resolve ``train.device`` (unless ``device`` is
    given) and check ``train.amp`` for it, set the threads, seed every generator with
    ``seed`` (the same on every rank, so initialisations agree), create ``output_dir``
    and save the resolved config there as ``config.yaml`` (rank 0 only).

    ``threads`` is the budget of the machine: the processes of a distributed run on
    one node share it (each gets threads // local_world_size, at least 1).

    Returns:
        ``(output_dir, device)``.
    Raises:
        ValueError: on a bad device or AMP mode (naming the key).
    """
    import yaml

    dist = dist or DistInfo()
    device = device if device is not None else resolve_device(cfg["train"]["device"])
    check_amp(cfg["train"]["amp"], device)
    torch.set_num_threads(max(1, cfg["threads"] // dist.local_world_size))
    seed_everything(cfg["seed"])
    out_dir = Path(cfg["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        with open(out_dir / "config.yaml", "w") as f:
            yaml.safe_dump(cfg, f)
    return out_dir, device


@contextlib.contextmanager
def data_checks_for(device: torch.device):
    """Within the block, the library's data-dependent input checks are off on CUDA
    (each would make a training step wait for the GPU) and unchanged elsewhere; the
    previous setting is restored on exit. See :func:`wsss_blocks.set_data_checks`."""
    previous = set_data_checks(data_checks_enabled() and device.type != "cuda")
    try:
        yield
    finally:
        set_data_checks(previous)

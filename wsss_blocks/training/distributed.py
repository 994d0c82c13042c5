"""Multi-process training with PyTorch's own engine: ``torch.distributed`` launched by
``torchrun`` (NCCL on CUDA, gloo on the CPU), DistributedDataParallel for the trained
network, and the few collective helpers a trainer needs (sums of confusion matrices,
agreement on host-side decisions, per-rank random states in a checkpoint).

Run single-process (plain ``python``) every helper is a no-op, so a trainer calls them
unconditionally.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run: ``rank`` in [0, world_size), ``local_rank``
    on its node (the CUDA device index), ``world_size`` processes in all, and
    ``local_world_size`` on this node (they share its CPU threads)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes logs, checkpoints and figures."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise ValueError(f"environment variable {name} must be a non-negative integer, "
                         f"got {value!r}")  # fmt: skip
    return int(value)


_HOST_GROUP = None  # a gloo group for host-side agreements (no GPU stream involved)


@contextlib.contextmanager
def distributed(device: torch.device) -> Iterator[tuple[DistInfo, torch.device]]:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` in the environment) for the block;
    without them (or with ``WORLD_SIZE=1``) nothing is started.

    The backend is NCCL when ``device`` is CUDA (each process then uses
    ``cuda:LOCAL_RANK``), gloo otherwise. A second gloo group carries the host-side
    agreements of :func:`any_rank`, so they never wait on a GPU stream.

    Yields:
        ``(DistInfo, device)``: the process's place and its device.
    Raises:
        ValueError: on malformed torchrun variables, or more processes on this node
            than CUDA devices.
    """
    global _HOST_GROUP
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1 or dist.is_initialized():
        info = DistInfo(dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (
            DistInfo())  # fmt: skip
        yield info, device
        return
    info = DistInfo(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0),
                    _env_int("LOCAL_WORLD_SIZE", world))  # fmt: skip
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {info.local_rank} but only "
                             f"{torch.cuda.device_count()} CUDA devices on this node")  # fmt: skip
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=world)
    _HOST_GROUP = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
    try:
        yield info, device
    finally:
        _HOST_GROUP = None
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True while a process group of more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (a host-side all-reduce over
    gloo); ``flag`` itself in a single process. Every rank must call it at the same
    point: it is how ranks agree to stop or to skip a step together."""
    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_HOST_GROUP or dist.group.WORLD)
    return bool(t.item())


def sum_over_ranks_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (e.g. a :class:`~wsss_blocks.MeanIoU`
    confusion matrix of a sharded evaluation) and return it; unchanged in a single
    process. Under NCCL a CPU tensor travels through the current CUDA device."""
    if not is_distributed():
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_gpu = tensor.cuda()
        dist.all_reduce(on_gpu)
        tensor.copy_(on_gpu.cpu())
    else:
        dist.all_reduce(tensor)
    return tensor


def average_buffers_(module: torch.nn.Module) -> None:
    """Average the floating-point buffers of ``module`` (BatchNorm running statistics)
    over ranks, in place, as ``timm.utils.distribute_bn(reduce=True)`` does: each rank
    updated them from its own batch, and the EMA teacher must follow one network.
    Nothing happens in a single process."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for b in module.buffers():
        if b.is_floating_point():
            sum_over_ranks_(b)
            b.div_(world)


def gather_objects(obj) -> list:
    """``obj`` of every rank, in rank order (picklable objects, e.g. RNG states);
    ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_HOST_GROUP or dist.group.WORLD)
    return out


def wrap_ddp(model: torch.nn.Module, device: torch.device,
             sync_batchnorm: bool = False) -> torch.nn.Module:  # fmt: skip
    """``model`` wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` when
    the run is distributed (itself otherwise). Gradients are averaged over ranks in
    backward; parameters and buffers start from rank 0's. Outputs that a step leaves
    out of its loss (the decoder during a classification warm-up) are allowed
    (``find_unused_parameters``). ``sync_batchnorm`` converts BatchNorm layers to
    :class:`~torch.nn.SyncBatchNorm` (CNN backbones, CUDA only).

    Raises:
        ValueError: ``sync_batchnorm`` on a device other than CUDA.
    """
    if not is_distributed():
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("train.sync_batchnorm needs CUDA (torch's SyncBatchNorm)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel wrapper (``model`` itself if none):
    the one to read attributes from, save, and update an EMA teacher from."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the running process group, ``(0, 1)`` without one."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def parameter_digest(module: torch.nn.Module) -> str:
    """A SHA-256 of every parameter and buffer of ``module`` (names, dtypes and
    bytes): equal digests on two ranks mean bit-identical states."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().reshape(-1)  # (a copy in standard layout)
            h.update(str(t.dtype).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()

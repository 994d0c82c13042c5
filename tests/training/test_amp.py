"""``train.amp: auto`` picks bf16 only where the hardware computes in it."""

from __future__ import annotations

import pytest
import torch

from wsss_blocks.training import autocast, cpu_has_native_bf16, resolve_amp
from wsss_blocks.training import runtime as runtime_module


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_the_cpu_follows_the_cpu(monkeypatch, native, expected):
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("auto", torch.device("cpu")) == expected
    with autocast(torch.device("cpu"), "auto"):
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert y.dtype == (torch.bfloat16 if native else torch.float32)


def test_explicit_modes_are_kept_and_bad_ones_named():
    cpu = torch.device("cpu")
    assert [resolve_amp(m, cpu) for m in ("bf16", "fp32")] == ["bf16", "fp32"]
    with pytest.raises(ValueError, match="train.amp=fp16 needs CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="train.amp must be one of"):
        resolve_amp("int8", cpu)


def test_cpu_flags_are_read_from_cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})

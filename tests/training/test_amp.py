"""``train.amp: auto`` picks bf16 only where the hardware computes in it, and on the CPU
only for passes without gradient."""

from __future__ import annotations

import io

import pytest
import torch

from wsss_blocks.training import autocast, cpu_has_native_bf16, resolve_amp
from wsss_blocks.training import runtime as runtime_module


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_the_cpu_follows_the_cpu(monkeypatch, native, expected):
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("auto", torch.device("cpu")) == expected
    with torch.no_grad(), autocast(torch.device("cpu"), "auto"):
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert y.dtype == (torch.bfloat16 if native else torch.float32)


@pytest.mark.parametrize("native", [True, False])
def test_auto_trains_in_fp32_on_the_cpu(monkeypatch, native):
    # a back-propagated pass: fp32 (oneDNN's bf16 depthwise backward is the slow one)
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("auto", torch.device("cpu"), grad=True) == "fp32"
    w = torch.ones(4, 3, requires_grad=True)
    with autocast(torch.device("cpu"), "auto"):  # grad is on: read at the call
        y = torch.nn.functional.linear(torch.ones(2, 3), w)
    assert y.dtype == torch.float32
    with autocast(torch.device("cpu"), "auto", grad=False):  # told: an inference pass
        y = torch.nn.functional.linear(torch.ones(2, 3), w)
    assert y.dtype == (torch.bfloat16 if native else torch.float32)


def test_explicit_bf16_applies_to_trained_passes_too():
    with autocast(torch.device("cpu"), "bf16"):
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3, requires_grad=True))
    assert y.dtype == torch.bfloat16


def test_auto_on_the_meta_device_is_fp32(monkeypatch):
    # meta has no autocast; the meta-step test runs the trainer there with amp auto
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_amp("auto", torch.device("meta")) == "fp32"


def test_explicit_modes_are_kept_and_bad_ones_named():
    cpu = torch.device("cpu")
    assert [resolve_amp(m, cpu) for m in ("bf16", "fp32")] == ["bf16", "fp32"]
    with pytest.raises(ValueError, match="train.amp=fp16 needs CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="train.amp must be one of"):
        resolve_amp("int8", cpu)


@pytest.mark.parametrize(
    "cpuinfo, expected",
    [
        ("flags\t: fpu sse2 avx2 fma avx512f", False),  # AVX-512 without its bf16 part
        ("flags\t: fpu avx2 avx512f avx512_bf16", True),
        ("flags\t: fpu avx2 amx_tile amx_bf16", True),
        ("Features\t: fp asimd bf16", True),  # Arm
        (None, False),  # no /proc/cpuinfo
    ],
)
def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, cpuinfo, expected):
    def fake_open(path, *args, **kwargs):
        assert path == "/proc/cpuinfo"
        if cpuinfo is None:
            raise FileNotFoundError(path)
        return io.StringIO(cpuinfo)

    monkeypatch.setattr(runtime_module, "open", fake_open, raising=False)
    runtime_module.cpu_has_native_bf16.cache_clear()
    try:
        assert cpu_has_native_bf16() is expected
    finally:
        runtime_module.cpu_has_native_bf16.cache_clear()

"""CSC loss forward + backward: the fused op against the PyTorch reference, on the CPU
and, where there is one, on the GPU (``make gpu-check`` runs it). One size, N = 4,096
anchors of D = 21 classes (a VOC batch's CAM vectors); the summary prints the times as
ratios to the CPU reference, measured in the same run."""

from __future__ import annotations

import pytest
import torch

from wsss_blocks.losses.contrastive import contrastive_separation_loss
from wsss_blocks.ops.contrastive import csc_implementation

N, D = 4096, 21
CASES = [("cpu", "reference"), ("cpu", "kernel"), ("cuda", "reference"), ("cuda", "kernel")]
RESULTS: dict[tuple[str, str], float] = {}


def _step(x, y, impl):
    x = x.detach().requires_grad_()
    loss = contrastive_separation_loss(x, y, 0.1, impl=impl)
    loss.backward()
    if x.is_cuda:
        torch.cuda.synchronize()


@pytest.mark.parametrize(("device", "impl"), CASES, ids=[f"{d}-{i}" for d, i in CASES])
def test_csc_device(benchmark, device, impl):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if impl == "kernel" and csc_implementation(device) != f"kernel-{device}":
        pytest.skip(f"the {device} kernel is not built")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=gen).to(device)
    y = torch.randint(0, D, (N,), generator=gen).to(device)
    benchmark.pedantic(_step, args=(x, y, impl), rounds=5, warmup_rounds=1)
    RESULTS[(device, impl)] = benchmark.stats.stats.min


@pytest.fixture(scope="module", autouse=True)
def summary():
    """After the module's benchmarks: each case as a ratio to the CPU reference."""
    yield
    base = RESULTS.get(("cpu", "reference"))
    if not base:
        return  # not benchmarked (run with --benchmark-enable)
    for (device, impl), t in RESULTS.items():
        print(f"\nCSC N={N} D={D} {device:4s} {impl:9s}: {1e3 * t:8.2f} ms, "
              f"{base / t:6.1f}x the speed of the CPU reference", end="")  # fmt: skip
    print()

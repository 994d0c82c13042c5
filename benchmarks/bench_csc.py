"""Fused CSC kernel vs the dense PyTorch reference (and KeOps when installed), CPU.

Run once, on an otherwise quiet machine, with the same threads for every row:

    pytest benchmarks/bench_csc.py --benchmark-enable -s -p no:randomly \
        --benchmark-timer=time.process_time

On a machine shared with other jobs, time.process_time (CPU seconds of this process, all
threads) is far steadier than wall time; every row, the GEMM peak included, then uses the
same clock, so the ratios stay meaningful.

Each case times forward + backward of the public loss. ``test_zz_summary`` prints the
markdown table of docs/kernels.md: time per implementation, speed-up over the reference,
the kernel's throughput on the 8·N²·D FLOPs of the algorithm and its ratio to the machine's
fp32 GEMM throughput (torch.mm, 2048³, measured in the same run). ``test_peak_memory``
runs N = 65,536, D = 32 in a subprocess and reports its peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from wsss_blocks.losses.contrastive import contrastive_separation_loss
from wsss_blocks.ops import csc_implementation

try:  # KeOps compiles its formulas with a C++ compiler at run time; optional.
    import pykeops  # noqa: F401
    from pykeops.torch import LazyTensor

    HAVE_KEOPS = True
except Exception:  # noqa: BLE001 - any failure means "not available"
    HAVE_KEOPS = False

TAU = 0.1
NUM_LABELS = 21  # VOC: 20 classes + background
SIZES = [1024, 4096, 16384]
DIMS = [20, 64, 256]
REFERENCE_MAX_N = 4096  # N = 16384 needs ~10 N² fp32 buffers ≈ 10 GiB: skipped
KEOPS_MAX_N = 4096  # KeOps on CPU takes minutes per call at N = 16384: skipped
RESULTS: dict = {}


def _inputs(n, d):
    gen = torch.Generator().manual_seed(n + d)
    return torch.randn(n, d, generator=gen), torch.randint(0, NUM_LABELS, (n,), generator=gen)


def _keops_loss(features, labels, tau):
    """Masked log-sum-exp CSC with KeOps LazyTensors (same math, nothing N×N stored)."""
    x = torch.nn.functional.normalize(features, dim=1)
    y = labels.to(x.dtype)
    x_i, x_j = LazyTensor(x[:, None, :]), LazyTensor(x[None, :, :])
    y_i, y_j = LazyTensor(y[:, None, None]), LazyTensor(y[None, :, None])
    s = (x_i | x_j) / tau
    same = 0.5 - (y_i - y_j).abs()  # >= 0 on same-label pairs (self included)
    nu = same.ifelse(-1e30, s).logsumexp(dim=1)  # (N, 1); -1e30 masks positives
    nu_i = LazyTensor(nu[:, None, :])
    softplus = ((nu_i - s).exp() + 1.0).log()
    total = same.ifelse(softplus, 0.0).sum(dim=1).squeeze(1)
    count = same.ifelse(1.0, 0.0).sum(dim=1).squeeze(1) - 1.0
    self_term = torch.nn.functional.softplus(nu.squeeze(1) - (x * x).sum(1) / tau)
    ell = (total - self_term) / count.clamp_min(1.0)
    has = count > 0
    return torch.where(has, ell, torch.zeros_like(ell)).sum() / has.sum().clamp_min(1)


def _step(impl, x, y):
    feats = x.clone().requires_grad_()
    if impl == "keops":
        loss = _keops_loss(feats, y, TAU)
    else:
        loss = contrastive_separation_loss(feats, y, TAU, impl=impl)
    loss.backward()
    return loss


def test_gemm_peak(benchmark):
    """fp32 GEMM throughput of torch.mm on this machine: the roofline for the kernel."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    benchmark.pedantic(torch.mm, args=(a, b), rounds=5, warmup_rounds=1)
    RESULTS["gemm_gflops"] = 2 * 2048**3 / benchmark.stats.stats.min / 1e9


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", ["reference", "kernel", "keops"])
def test_csc_forward_backward(benchmark, impl, n, d):
    if impl == "reference" and n > REFERENCE_MAX_N:
        pytest.skip(f"reference needs ~{10 * n * n * 4 / 2**30:.0f} GiB at N={n}")
    if impl == "keops" and not HAVE_KEOPS:
        pytest.skip("pykeops is not installed")
    if impl == "keops" and n > KEOPS_MAX_N:
        pytest.skip(f"KeOps on CPU is too slow at N={n} for one benchmark run")
    if impl == "kernel" and csc_implementation("cpu") != "kernel-cpu":
        pytest.skip("CSC extension not built")
    x, y = _inputs(n, d)
    rounds = 3 if n <= 4096 else 1
    benchmark.pedantic(_step, args=(impl, x, y), rounds=rounds, warmup_rounds=1)
    benchmark.extra_info.update(n=n, d=d, impl=impl, threads=torch.get_num_threads())
    RESULTS[(impl, n, d)] = benchmark.stats.stats.min


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from wsss_blocks.losses.contrastive import contrastive_separation_loss
    n, d, impl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen).requires_grad_()
    y = torch.randint(0, 21, (n,), generator=gen)
    t0 = time.perf_counter()
    if impl != "none":
        loss = contrastive_separation_loss(x, y, 0.1, impl=impl)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    seconds = time.perf_counter() - t0
    # VmHWM: this process's own peak RSS (ru_maxrss would include the forking parent's).
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    print(json.dumps({"peak_rss": hwm * 1024, "seconds": seconds}))
    """
)


def _peak(n, d, impl):
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(n), str(d), impl],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory():
    """N = 65,536, D = 32 forward + backward through the kernel; peak RSS of the process."""
    if csc_implementation("cpu") != "kernel-cpu":
        pytest.skip("CSC extension not built")
    n, d = 65536, 32
    base, full = _peak(n, d, "none"), _peak(n, d, "kernel")
    # The reference at N = 8192 for scale (its N² buffers: 0.25 GiB each).
    ref_base, ref = _peak(8192, d, "none"), _peak(8192, d, "reference")
    RESULTS["peak"] = dict(
        n=n,
        d=d,
        peak_rss_gib=full["peak_rss"] / 2**30,
        extra_mib=(full["peak_rss"] - base["peak_rss"]) / 2**20,
        seconds=full["seconds"],
        reference_matrix_gib=n * n * 4 / 2**30,
        ref8192_extra_mib=(ref["peak_rss"] - ref_base["peak_rss"]) / 2**20,
    )


def test_zz_summary():
    """Print the markdown table for docs/kernels.md (needs the cases above in this run)."""
    gemm = RESULTS.get("gemm_gflops")
    if gemm is None:
        pytest.skip("run the whole file with --benchmark-enable")
    timer = "CPU seconds" if "process_time" in " ".join(sys.argv) else "seconds"
    lines = [
        f"times in {timer}; threads: {torch.get_num_threads()}, torch {torch.__version__}, "
        f"fp32 GEMM peak (torch.mm 2048³): {gemm:.1f} GFLOP/s, "
        f"host load avg at end: {os.getloadavg()[0]:.1f}",
        "",
        "| N | D | reference (s) | kernel (s) | KeOps (s) | speed-up vs ref | "
        "kernel GFLOP/s (8N²D) | GEMM-limit time (s) | kernel / limit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v):
        return "—" if v is None else f"{v:.3f}"

    for n in SIZES:
        for d in DIMS:
            ref, ker, keo = (RESULTS.get((i, n, d)) for i in ("reference", "kernel", "keops"))
            flops = 8 * n * n * d
            limit = flops / (gemm * 1e9)
            speed = f"{ref / ker:.1f}×" if (ref and ker) else "—"
            rate = f"{flops / ker / 1e9:.1f}" if ker else "—"
            ratio = f"{ker / limit:.1f}×" if ker else "—"
            lines.append(
                f"| {n} | {d} | {fmt(ref)} | {fmt(ker)} | {fmt(keo)} | {speed} | {rate} | "
                f"{limit:.3f} | {ratio} |"
            )
    peak = RESULTS.get("peak")
    if peak:
        lines += [
            "",
            f"Peak RSS, N = {peak['n']}, D = {peak['d']}, forward + backward (kernel): "
            f"{peak['peak_rss_gib']:.2f} GiB ({peak['extra_mib']:.0f} MiB above the same "
            f"process without the loss), {peak['seconds']:.1f} s wall. One N×N fp32 matrix of "
            f"the reference would be {peak['reference_matrix_gib']:.0f} GiB. The reference "
            f"at N = 8192, D = {peak['d']} takes {peak['ref8192_extra_mib']:.0f} MiB above "
            "its baseline.",
        ]
    lines.append(
        f"own peak RSS of the benchmark process: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    )
    print("\n" + "\n".join(lines))
    RESULTS["printed_at"] = time.time()

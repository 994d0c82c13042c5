"""Fused CSC kernel vs what an expert would write instead of it (CPU): a chunked PyTorch
CSC (row blocks of B = 2^21 / N anchors, log-sum-exp over negatives, each block under
activation checkpointing; benchmarks/chunked_csc.py) eager and under ``torch.compile``.

Run once (about three minutes on a quiet 2-core machine), default torch threads:

    python -m pytest benchmarks/bench_csc_chunked.py --benchmark-enable --benchmark-only \
        -s -p no:cacheprovider

Each case times forward + backward: the public loss with ``impl="kernel"`` (input checks,
normalisation and label sort included) against the chunked loss (normalisation included).
``torch.compile`` (TorchInductor, ``dynamic=True``) compiles the block function in a module
fixture, on one block of each shape, outside every timed region; the compile time and the
number of graphs compiled later (0 expected) are printed. Rounds (min taken) at N = 4,096:
3 for the kernel, 2 for the chunked loss, after one warm-up call; at N = 16,384 one, with
no warm-up for the chunked loss. Shapes: N = 4,096 at D = 21 (VOC's classes), 32 and 256;
N = 16,384 at D = 32 only: a chunked call takes 10–60 s there on this machine, so the other
two D would add minutes. The module teardown prints the times as ratios to the kernel
(kernel = 1.0×) and the largest loss difference between the implementations.
``test_peak_memory`` (a plain test, so ``--benchmark-only`` skips it; run it with
``-k peak_memory -s``, ~1.5 min) reports the peak RSS of forward + backward at N = 8,192,
D = 32 in subprocesses, as bench_csc.py does, and for the chunked loss also with
``MALLOC_MMAP_THRESHOLD_=65536`` (glibc then returns freed blocks at once: live memory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from benchmarks.chunked_csc import block_rows_for, chunked_csc_loss, compiled_block_fn
from wsss_blocks.losses.contrastive import contrastive_separation_loss
from wsss_blocks.ops import csc_implementation

TAU = 0.1
NUM_LABELS = 21  # VOC: 20 classes + background
SHAPES = [(4096, 21), (4096, 32), (4096, 256), (16384, 32)]
IMPLS = ["kernel", "chunked", "chunked-compiled"]
RESULTS: dict = {}


def _inputs(n, d):
    gen = torch.Generator().manual_seed(n + d)
    return torch.randn(n, d, generator=gen), torch.randint(0, NUM_LABELS, (n,), generator=gen)


def _step(impl, x, y, block_fn=None):
    feats = x.clone().requires_grad_()
    if impl == "kernel":
        loss = contrastive_separation_loss(feats, y, TAU, impl="kernel")
    elif impl == "chunked":
        loss = chunked_csc_loss(feats, y, TAU)
    else:
        loss = chunked_csc_loss(feats, y, TAU, block_fn=block_fn)
    loss.backward()
    return float(loss.detach())


def _graphs():
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.fixture(scope="module")
def compiled_block():
    """The block function under torch.compile, compiled here for every benchmarked shape
    (forward and backward of one block each), so that no timed call compiles; None with
    the reason if compiling fails."""
    fn = compiled_block_fn(dynamic=True)
    start = time.perf_counter()
    try:
        for n, d in SHAPES:  # a larger N can fail a size guard of the first graph
            x, y = _inputs(n, d)
            chunked_csc_loss(x.requires_grad_(), y, TAU, block_fn=fn, max_blocks=1).backward()
    except Exception as exc:  # noqa: BLE001 - recorded and reported as the skip reason
        RESULTS["compile_error"] = f"{type(exc).__name__}: {exc}"
        return None
    RESULTS["compile_s"] = time.perf_counter() - start
    RESULTS["graphs"] = _graphs()
    return fn


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("n", "d"), SHAPES, ids=[f"n{n}-d{d}" for n, d in SHAPES])
def test_csc_chunked(benchmark, request, impl, n, d):
    if impl == "kernel" and csc_implementation("cpu") != "kernel-cpu":
        pytest.skip("CSC extension not built")
    block_fn = None
    if impl == "chunked-compiled":
        block_fn = request.getfixturevalue("compiled_block")
        if block_fn is None:
            pytest.skip(f"torch.compile failed: {RESULTS['compile_error']}")
    x, y = _inputs(n, d)
    large = n > 4096
    rounds = 1 if large else (3 if impl == "kernel" else 2)
    warmup = 0 if (large and impl != "kernel") else 1  # 10-60 s per chunked call at N = 16,384
    loss = benchmark.pedantic(_step, args=(impl, x, y, block_fn), rounds=rounds,
                              warmup_rounds=warmup)  # fmt: skip
    benchmark.extra_info.update(n=n, d=d, impl=impl, threads=torch.get_num_threads(),
                                block_rows=block_rows_for(n), loss=loss)  # fmt: skip
    if benchmark.stats:  # None with --benchmark-disable (one untimed call)
        RESULTS[(impl, n, d)] = (benchmark.stats.stats.min, loss)


@pytest.fixture(scope="module", autouse=True)
def summary():
    """After the module's benchmarks: markdown table of the times as ratios to the kernel."""
    yield
    if not any(isinstance(k, tuple) for k in RESULTS):
        return  # not benchmarked (run with --benchmark-enable)
    compiled = (f"compile (dynamic=True): {RESULTS['compile_s']:.1f} s for {RESULTS['graphs']} "
                f"graphs, {_graphs() - RESULTS['graphs']} more compiled in the timed cases"
                if "compile_s" in RESULTS else
                f"torch.compile failed: {RESULTS.get('compile_error', 'not run')}")  # fmt: skip
    lines = [
        f"wall seconds (min over rounds); threads: {torch.get_num_threads()}, torch "
        f"{torch.__version__}, B = 2^21 / N anchors per block, {compiled}, host load avg at end: "
        f"{os.getloadavg()[0]:.1f}",
        "",
        "| N | D | kernel (s) | chunked (s) | chunked, compiled (s) | kernel | chunked | "
        "chunked, compiled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for n, d in SHAPES:
        got = {impl: RESULTS.get((impl, n, d)) for impl in IMPLS}
        times = {impl: (r[0] if r else None) for impl, r in got.items()}
        losses = [r[1] for r in got.values() if r]
        if len(losses) > 1:
            worst = max(worst, (max(losses) - min(losses)) / max(abs(max(losses)), 1e-30))
        ker = times["kernel"]
        cells = ["—" if t is None else f"{t:.3f}" for t in times.values()]
        ratios = ["—" if (t is None or not ker) else f"{t / ker:.1f}×" for t in times.values()]
        lines.append(f"| {n} | {d} | " + " | ".join(cells + ratios) + " |")
    lines.append(f"\nlargest relative loss difference between implementations: {worst:.1e}")
    print("\n" + "\n".join(lines))


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from benchmarks.chunked_csc import chunked_csc_loss
    from wsss_blocks.losses.contrastive import contrastive_separation_loss
    n, d, impl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen).requires_grad_()
    y = torch.randint(0, 21, (n,), generator=gen)
    t0 = time.perf_counter()
    if impl == "chunked":
        chunked_csc_loss(x, y, 0.1).backward()
    elif impl != "none":
        contrastive_separation_loss(x, y, 0.1, impl=impl).backward()
    seconds = time.perf_counter() - t0
    with open("/proc/self/status") as f:  # VmHWM: this process's own peak RSS
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    print(json.dumps({"peak_rss": hwm * 1024, "seconds": seconds}))
    """
)


def _peak(n, d, impl, **env_vars):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
           **env_vars}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(n), str(d), impl],
                         capture_output=True, text=True, check=True, timeout=600, cwd=root,
                         env=env)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory():
    """Peak RSS above the same process without the loss, N = 8,192, D = 32 (eager only)."""
    if csc_implementation("cpu") != "kernel-cpu":
        pytest.skip("CSC extension not built")
    n, d = 8192, 32
    base = _peak(n, d, "none")["peak_rss"]
    lines = [f"peak RSS above baseline, N = {n}, D = {d}, forward + backward, "
             f"B = {block_rows_for(n)}:"]  # fmt: skip
    # glibc keeps the chunked loss's freed 8 MiB blocks in its heap, so its RSS peak is
    # mostly retained free memory; a low mmap threshold returns each block to the OS and
    # shows the peak of live memory.
    live = {"MALLOC_MMAP_THRESHOLD_": "65536"}
    for name, impl, env in [("kernel", "kernel", {}), ("chunked", "chunked", {}),
                            ("chunked, live", "chunked", live),
                            ("reference", "reference", {})]:  # fmt: skip
        got = _peak(n, d, impl, **env)
        extra = got["peak_rss"] - (_peak(n, d, "none", **env)["peak_rss"] if env else base)
        lines.append(f"  {name:13s}: {extra / 2**20:7.0f} MiB, {got['seconds']:.1f} s wall")
    print("\n" + "\n".join(lines))

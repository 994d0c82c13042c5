"""The CPU kernels' two copies: forward + backward of the CSC loss with the AVX2 + FMA copy
and with the portable one (``WSSS_BLOCKS_CPU_ISA=baseline``), each in its own process
(the copy is chosen once per process), alternating three times, best of 5 calls each.

    python benchmarks/compare_csc_isa.py

Results: docs/kernels.md ("Portable build").
"""
import os
import subprocess
import sys

code = r'''
import time, torch
from wsss_blocks import _C, contrastive_separation_loss
torch.set_num_threads(2)
res = []
for n, d in [(4096, 21), (4096, 256), (16384, 32)]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, requires_grad=True)
    y = torch.randint(0, 21, (n,), generator=g)
    t = []
    for _ in range(5):
        s = time.perf_counter()
        contrastive_separation_loss(x, y, 0.1, impl="kernel").backward()
        t.append(time.perf_counter() - s)
    res.append(min(t))
print(_C.cpu_isa, *res)
'''
best = {}
for _round in range(3):
    for isa in ("avx2+fma", "baseline"):
        env = {**os.environ, "WSSS_BLOCKS_CPU_ISA": isa}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        times = [float(v) for v in out[1:]]
        best[out[0]] = [min(a, b) for a, b in zip(best.get(out[0], times), times, strict=True)]
shapes = ["N=4096 D=21", "N=4096 D=256", "N=16384 D=32"]
for i, s in enumerate(shapes):
    a, b = best["avx2+fma"][i], best["baseline"][i]
    print(f"{s}: avx2+fma {a*1e3:.0f} ms, baseline {b*1e3:.0f} ms, baseline/avx2 = {b/a:.2f}x")

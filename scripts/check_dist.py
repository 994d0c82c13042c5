"""Release check: build the sdist, build the wheel from it, install the wheel into a new
virtual environment that holds only torch, and use it from outside the repository.

Checks, each printed as it passes:

1. ``python -m build --no-isolation`` makes an sdist and compiles the wheel *from that
   sdist* (so a file missing from the sdist fails here);
2. ``pip install <wheel>`` into a new venv whose only package is torch (with its own
   dependencies; linked from this interpreter's site-packages rather than installed again,
   which takes minutes) pulls the declared dependencies from the index;
3. from a directory outside the repository, ``import wsss_blocks`` is the installed copy,
   its compiled CSC kernel runs and matches the pure-PyTorch reference;
4. with ``WSSS_BLOCKS_NO_EXTENSION=1``, and with the compiled library deleted, the loss
   falls back to the reference with exactly one warning.

Usage: ``python scripts/check_dist.py [--workdir DIR] [--keep]`` (``make dist-check``).
The CPU extension only is built (``FORCE_CUDA=0``), which is what a wheel needs here.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

USE_IT = """
import warnings, torch, wsss_blocks
from wsss_blocks import contrastive_separation_loss
from wsss_blocks.ops import csc_implementation
print("wsss_blocks from", wsss_blocks.__file__)
assert "site-packages" in wsss_blocks.__file__, wsss_blocks.__file__
g = torch.Generator().manual_seed(0)
x = torch.randn(300, 16, generator=g, requires_grad=True)
y = torch.randint(0, 4, (300,), generator=g)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    a = contrastive_separation_loss(x, y, 0.1)
    b = contrastive_separation_loss(x, y, 0.1)
    r = contrastive_separation_loss(x, y, 0.1, impl="reference")
fallbacks = [w for w in caught if "wsss_blocks._C" in str(w.message)]
impl = csc_implementation("cpu")
print("CSC on the CPU:", impl, "| loss", round(float(a), 6), "| reference", round(float(r), 6))
torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)
assert torch.equal(a, b)
if impl == "kernel-cpu":
    from wsss_blocks import _C
    print("CPU kernels built for", _C.cpu_isa)
    assert not fallbacks, [str(w.message) for w in fallbacks]
else:
    assert len(fallbacks) == 1, f"expected one fallback warning, got {len(fallbacks)}"
    print("one warning:", str(fallbacks[0].message)[:160], "...")
"""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run ``cmd``, echoing it; raise with its output if it fails."""
    shown = [c if "\n" not in str(c) else "<script>" for c in cmd]
    print("$", " ".join(str(c) for c in shown), flush=True)
    done = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if done.returncode != 0:
        sys.exit(f"FAILED ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def torch_closure() -> list[metadata.Distribution]:
    """torch and the distributions it depends on, as installed in this interpreter."""
    found: dict[str, metadata.Distribution] = {}

    def visit(name: str) -> None:
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found:
            return
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return
        found[key] = dist
        for req in dist.requires or []:
            if "extra ==" not in req:
                visit(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])

    visit("torch")
    return list(found.values())


def link_torch(target: Path) -> None:
    """Fill ``target`` with links to the top-level entries of torch and its dependencies."""
    site = Path(sysconfig.get_paths()["purelib"])
    target.mkdir(parents=True)
    for dist in torch_closure():
        for f in dist.files or []:
            top = Path(f).parts[0]
            if top != ".." and not (target / top).exists() and (site / top).exists():
                (target / top).symlink_to(site / top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="wsss_dist_"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    env = {**os.environ, "FORCE_CUDA": "0", "CFLAGS": os.environ.get("CFLAGS", "-g0"),
           "MAX_JOBS": os.environ.get("MAX_JOBS", "2")}  # fmt: skip
    try:
        dist = work / "dist"
        run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
            env=env)  # fmt: skip
        sdist, wheel = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
        assert len(sdist) == 1 and len(wheel) == 1, (sdist, wheel)
        print(f"1. sdist {sdist[0].name} and, compiled from it, wheel {wheel[0].name} "
              f"({time.time() - start:.0f} s)")  # fmt: skip

        venv = work / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        link_torch(work / "torch-only")
        venv_site = Path(run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                             ).stdout.strip())  # fmt: skip
        (venv_site / "torch_only.pth").write_text(str(work / "torch-only") + "\n")
        before = time.time()
        run([str(venv / "bin" / "pip"), "install", "-q", str(wheel[0])])
        print(f"2. wheel installed with its declared dependencies into a venv holding only "
              f"torch ({time.time() - before:.0f} s)")  # fmt: skip

        outside = work / "elsewhere"
        outside.mkdir(exist_ok=True)
        py = str(venv / "bin" / "python")
        print(run([py, "-c", USE_IT], cwd=outside).stdout.rstrip())
        print("3. imports outside the repository; the compiled kernel runs and matches")

        print(run([py, "-c", USE_IT], cwd=outside,
                  env={**os.environ, "WSSS_BLOCKS_NO_EXTENSION": "1"}).stdout.rstrip())  # fmt: skip
        for so in (venv_site / "wsss_blocks").glob("_C*.so"):
            so.unlink()
        print(run([py, "-c", USE_IT], cwd=outside).stdout.rstrip())
        print("4. WSSS_BLOCKS_NO_EXTENSION=1 and a deleted library: the reference, one warning")
        print(f"dist check passed in {time.time() - start:.0f} s")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

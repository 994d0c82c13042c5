"""``python -m wsss_blocks``: what a bug report needs (versions, devices, the active CSC
implementation and why)."""

from __future__ import annotations

import platform
import sys


def report() -> str:
    """The environment report as text: package, Python, torch, timm and CUDA versions,
    the visible GPUs, and which CSC implementation each device uses and why."""
    import warnings

    import torch

    import wsss_blocks
    from wsss_blocks.ops._extension import extension_error, load_extension
    from wsss_blocks.ops.contrastive import csc_implementation

    with warnings.catch_warnings():  # the reason is printed below instead
        warnings.simplefilter("ignore")
        ext = load_extension()
    lines = [
        f"wsss-blocks {wsss_blocks.__version__} ({wsss_blocks.__file__})",
        f"python {platform.python_version()} on {platform.platform()}",
        f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}), "
        f"CUDA available: {torch.cuda.is_available()}",
    ]
    try:
        import timm

        lines.append(f"timm {timm.__version__}")
    except ImportError:
        lines.append("timm: not installed")
    for i in range(torch.cuda.device_count()):
        lines.append(f"GPU {i}: {torch.cuda.get_device_name(i)}")
    why = (f"compiled extension loaded, CPU kernels built for {ext.cpu_isa}" if ext is not None
           else f"extension not loaded: {extension_error()}")  # fmt: skip
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    impls = ", ".join(f"{d}: {csc_implementation(d)}" for d in devices)
    lines.append(f"CSC implementation: {impls} ({why})")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
    sys.exit(0)

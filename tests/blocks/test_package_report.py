"""``python -m wsss_blocks`` prints what a bug report needs."""

import os
import subprocess
import sys


def _report(**env) -> str:
    out = subprocess.run([sys.executable, "-m", "wsss_blocks"], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True, timeout=120)  # fmt: skip
    return out.stdout


def test_report_names_versions_and_the_active_csc_implementation():
    import torch

    import wsss_blocks

    text = _report()
    assert f"wsss-blocks {wsss_blocks.__version__}" in text
    assert f"torch {torch.__version__}" in text and "CUDA available" in text
    assert "CSC implementation: cpu: " in text
    assert "CPU kernels built for" in text or "extension not loaded" in text
    off = _report(WSSS_BLOCKS_NO_EXTENSION="1")
    assert "cpu: reference" in off and "WSSS_BLOCKS_NO_EXTENSION=1" in off

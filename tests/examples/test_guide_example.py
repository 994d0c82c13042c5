"""The user guide's 'Blocks, one call each' example runs as printed, offline."""

import re
from pathlib import Path

import torch

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"


def test_guide_example_runs_offline_as_written():
    code = re.search(r"```python\n(import torch\nfrom wsss_blocks import \*.*?)```",
                     GUIDE.read_text(), re.S).group(1)  # fmt: skip
    namespace: dict = {}
    exec(compile(code, str(GUIDE), "exec"), namespace)
    assert namespace["out"].cam.shape == (2, 20, 28, 28)
    assert namespace["cam_ms"].shape == (2, 20, 14, 14)  # multi-scale on a ViT: no error
    for name in ("loss_c2s", "loss_s2c", "loss_csc"):
        assert torch.isfinite(namespace[name]), name
    assert namespace["pred"].shape == (2, 224, 224)

"""The README's 'own training loop' example runs as printed, on a tiny fake loader."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    labels = torch.zeros(2, 20)
    labels[0, 3] = labels[1, 7] = 1
    namespace = {"loader": [(images, labels)] * 2}
    exec(compile(code, str(README), "exec"), namespace)
    loss, cpl = namespace["loss"], namespace["cpl"]
    assert torch.isfinite(loss) and loss > 0
    assert cpl.shape == (2, 4, 4)  # ResNet layer3: stride 16
    assert set(cpl.unique().tolist()) <= {0, 4, 8}  # only background and present classes

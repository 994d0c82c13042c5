"""Without the compiled extension the package imports and CSC falls back to the reference."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import warnings
    import torch
    import wsss_blocks
    from wsss_blocks.losses.contrastive import contrastive_separation_loss
    from wsss_blocks.ops import csc_implementation

    x = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        impl = csc_implementation("cpu")
        loss = contrastive_separation_loss(x, y)
        loss.backward()
        contrastive_separation_loss(x, y)
    msgs = [str(w.message) for w in caught if "wsss_blocks._C" in str(w.message)]
    assert impl == "reference", impl
    assert len(msgs) == 1, msgs
    assert "falls back to the pure-PyTorch reference" in msgs[0]
    assert torch.isfinite(x.grad).all()
    try:
        contrastive_separation_loss(x, y, impl="kernel")
    except RuntimeError as err:
        assert "unavailable" in str(err)
    else:
        raise AssertionError("impl='kernel' must raise without the extension")
    print("ok")
    """
)


def test_import_and_fallback_without_extension():
    env = dict(os.environ, WSSS_BLOCKS_NO_EXTENSION="1")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

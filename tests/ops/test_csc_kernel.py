"""The fused CSC operator (csrc/) against the float64 PyTorch reference.

Skips cleanly when the extension is not built; CUDA twins skip without a GPU.
"""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wsss_blocks.losses.contrastive import contrastive_separation_loss
from wsss_blocks.ops._extension import extension_error, load_extension
from wsss_blocks.ops.contrastive import csc_implementation
from wsss_blocks.ops.reference import contrastive_separation_loss_reference, normalize_rows

if load_extension() is None:
    pytest.skip(f"CSC extension not built: {extension_error()}", allow_module_level=True)

TAU = 0.1
RTOL = 1e-5  # fp32 kernel vs float64 reference (kernels.md)
OPS = torch.ops.wsss_blocks

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available() or csc_implementation("cuda") != "kernel-cuda",
            reason="needs a CUDA GPU and the CUDA kernel",
        ),
    ),
]


def sample_inputs(n, d, num_labels, seed, *, sort=False, dtype=torch.float32, device="cpu"):
    """Unit rows (the op's input contract) and int64 labels; optionally sorted by label."""
    gen = torch.Generator().manual_seed(seed)
    x = normalize_rows(torch.randn(n, d, generator=gen, dtype=torch.float64))
    y = torch.randint(0, max(num_labels, 1), (n,), generator=gen)
    if sort:
        y, order = torch.sort(y, stable=True)
        x = x[order]
    return x.to(dtype).to(device), y.to(device)


def op_loss(x, y, tau=TAU):
    return OPS.csc_forward(x, y, tau)[0]


def reference_op_math(x, y, tau=TAU, compute_dtype=None):
    """The op's math (rows taken as given) in PyTorch."""
    return contrastive_separation_loss_reference(
        x, y, tau, normalize=False, compute_dtype=compute_dtype
    )


def loss_and_grad(fn, x, y):
    x = x.detach().clone().requires_grad_()
    loss = fn(x, y)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return loss.detach(), torch.zeros_like(x) if grad is None else grad


def assert_close_to_oracle(x, y, device="cpu"):
    """Kernel (fp32) vs float64 reference: loss and gradient within 1e-5 relative."""
    loss_k, grad_k = loss_and_grad(op_loss, x.float().to(device), y.to(device))
    loss_r, grad_r = loss_and_grad(reference_op_math, x.double(), y)
    assert torch.isfinite(loss_k) and torch.isfinite(grad_k).all()
    assert loss_k.item() == pytest.approx(loss_r.item(), rel=RTOL, abs=1e-7)
    scale = grad_r.abs().max().item() if grad_r.numel() else 0.0
    err = (grad_k.double().cpu() - grad_r).abs().max().item() if grad_r.numel() else 0.0
    assert err <= RTOL * scale + 1e-9, (err, scale)


# Mostly small N, sometimes up to 4096 (the float64 oracle is N x N, so keep those few).
N_STRATEGY = st.one_of(st.integers(0, 160), st.integers(0, 160), st.integers(0, 4096))


@settings(max_examples=16, deadline=None)
@given(
    n=N_STRATEGY,
    d=st.sampled_from([1, 2, 3, 20, 33, 64]),
    num_labels=st.integers(1, 30),
    sort=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_op_matches_float64_reference(n, d, num_labels, sort, seed):
    x, y = sample_inputs(n, d, num_labels, seed, sort=sort, dtype=torch.float64)
    assert_close_to_oracle(x, y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sort", [False, True])
def test_op_large_n(device, sort):
    x, y = sample_inputs(4096, 20, 21, seed=3, sort=sort, dtype=torch.float64)
    assert_close_to_oracle(x, y, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [1, 31, 257, 1024])
def test_op_feature_dims(device, d):
    x, y = sample_inputs(150, d, 4, seed=d, dtype=torch.float64)
    assert_close_to_oracle(x, y, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "labels",
    [[], [0], [1, 1], [0, 1], [4] * 300, list(range(300)), [0] * 299 + [1], [7, 7, 3]],
    ids=["N=0", "N=1", "pair", "no-positives", "one-label", "all-different", "one-odd", "mix"],
)
def test_op_degenerate_labels(device, labels):
    y = torch.tensor(labels, dtype=torch.int64)
    x, _ = sample_inputs(len(labels), 5, 1, seed=1, dtype=torch.float64)
    assert_close_to_oracle(x, y, device)
    loss, grad = loss_and_grad(op_loss, x.float().to(device), y.to(device))
    if labels in ([], [0], [1, 1], [0, 1], [4] * 300, list(range(300))):
        assert loss.item() == 0.0 and (grad == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_public_loss_kernel_matches_reference_with_degenerate_rows(device):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(700, 12, generator=gen, dtype=torch.float64)
    x[:40] = 0.0  # all-zero CAM vectors (ReLU'd background)
    x[100:120] = x[200]  # duplicates
    x[300:310] *= 1e-6
    y = torch.randint(0, 6, (700,), generator=gen)
    k = loss_and_grad(
        lambda t, yy: contrastive_separation_loss(t, yy.to(device), TAU, impl="kernel"),
        x.float().to(device),
        y,
    )
    r = loss_and_grad(lambda t, yy: contrastive_separation_loss_reference(t, yy, TAU), x, y)
    assert k[0].item() == pytest.approx(r[0].item(), rel=RTOL)
    err = (k[1].double().cpu() - r[1]).abs().max().item()
    assert err <= RTOL * r[1].abs().max().item()
    assert (k[1][:40] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_flash_attention_rule(device, dtype):
    """|kernel - fp64| <= 2 |plain PyTorch at dtype - fp64| (+ a rounding floor)."""
    x, y = sample_inputs(400, 24, 6, seed=11, dtype=dtype)
    loss_k, grad_k = loss_and_grad(op_loss, x.to(device), y.to(device))
    loss_o, grad_o = loss_and_grad(reference_op_math, x.double(), y)
    loss_b, grad_b = loss_and_grad(
        lambda t, yy: reference_op_math(t, yy, compute_dtype=dtype), x, y
    )
    assert loss_k.dtype == dtype and grad_k.dtype == dtype
    ulp = torch.finfo(dtype).eps
    loss_floor = ulp * abs(loss_o.item())
    assert (
        abs(loss_k.double().item() - loss_o.item())
        <= 2 * abs(loss_b.double().item() - loss_o.item()) + loss_floor
    )
    grad_floor = ulp * grad_o.abs().max().item()
    assert (grad_k.double().cpu() - grad_o).abs().max() <= 2 * (
        grad_b.double() - grad_o
    ).abs().max() + grad_floor


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x, y = sample_inputs(70, 6, 4, seed=2, device=device)
    x.requires_grad_()
    torch.library.opcheck(OPS.csc_forward.default, (x, y, TAU))
    loss, nu, g, count = OPS.csc_forward(x.detach(), y, TAU)
    grad = torch.ones((), device=device)
    torch.library.opcheck(OPS._csc_backward.default, (grad, x.detach(), y, nu, g, count, TAU))


def test_gradcheck_float64():
    x, y = sample_inputs(23, 4, 3, seed=4, dtype=torch.float64)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: op_loss(t, y, 0.5), (x,))
    raw = torch.randn(17, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    raw.requires_grad_()
    yy = torch.randint(0, 3, (17,), generator=torch.Generator().manual_seed(9))
    assert torch.autograd.gradcheck(
        lambda t: contrastive_separation_loss(t, yy, 0.5, impl="kernel"), (raw,)
    )


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_fullgraph(backend):
    """Dynamo traces the public loss in one graph (fake kernel + registered autograd)."""
    torch._dynamo.reset()
    x, y = sample_inputs(300, 16, 5, seed=6)
    fn = torch.compile(  # (rows labelled 255 must be dropped before a compiled call)
        lambda t, yy: contrastive_separation_loss(t, yy, TAU, impl="kernel", ignore_index=None),
        fullgraph=True,
        backend=backend,
    )
    loss_c, grad_c = loss_and_grad(fn, x, y)
    loss_e, grad_e = loss_and_grad(
        lambda t, yy: contrastive_separation_loss(t, yy, TAU, impl="kernel"), x, y
    )
    assert loss_c.item() == pytest.approx(loss_e.item(), rel=1e-6)
    assert torch.allclose(grad_c, grad_e, rtol=1e-5, atol=1e-8)


def test_kernel_is_deterministic():
    x, y = sample_inputs(1100, 8, 7, seed=8)
    a = loss_and_grad(op_loss, x, y)
    b = loss_and_grad(op_loss, x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_auto_uses_kernel_on_cpu():
    assert csc_implementation("cpu") == "kernel-cpu"


@pytest.mark.parametrize(
    "x, y, tau, match",
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.int64), TAU, r"2-D .*\[4\]"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.int64), TAU, r"\[4, 2\].*\[3\]"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int32), TAU, "int64"),
        (torch.zeros(4, 2, dtype=torch.int64), torch.zeros(4, dtype=torch.int64), TAU, "float"),
        (torch.zeros(4, 1025), torch.zeros(4, dtype=torch.int64), TAU, r"D <= 1024.*1025"),
        (torch.zeros(4, 0), torch.zeros(4, dtype=torch.int64), TAU, r"\[4, 0\]"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), 0.0, "tau"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), float("nan"), "tau"),
    ],
)
def test_op_rejects_bad_input(x, y, tau, match):
    with pytest.raises(ValueError, match=match):
        OPS.csc_forward(x, y, tau)


def test_kernel_impl_rejects_large_d():
    with pytest.raises(ValueError, match="1024"):
        contrastive_separation_loss(
            torch.randn(3, 1025), torch.zeros(3, dtype=torch.int64), impl="kernel"
        )
    # auto falls back to the reference for D > 1024
    loss = contrastive_separation_loss(torch.randn(3, 1025), torch.tensor([0, 0, 1]))
    assert torch.isfinite(loss)


@pytest.mark.skipif(
    os.environ.get("FORCE_CUDA", "0") != "1", reason="only where the build forced CUDA (CI)"
)
def test_cuda_kernel_registered_when_forced():
    """A FORCE_CUDA=1 build must carry the CUDA kernels even on a machine without a GPU."""
    assert csc_implementation("cuda") == "kernel-cuda"


def _cpu_has_avx2_fma() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


_BASELINE_CHECK = """
import torch
from wsss_blocks import _C
from wsss_blocks.ops.reference import contrastive_separation_loss_reference
from wsss_blocks.losses.contrastive import contrastive_separation_loss
assert _C.cpu_isa == "baseline", _C.cpu_isa
g = torch.Generator().manual_seed(3)
x = torch.randn(700, 24, generator=g, dtype=torch.float64)
y = torch.randint(0, 5, (700,), generator=g)
out = []
for impl in ("kernel", "reference"):
    xi = x.clone().float().requires_grad_()
    loss = contrastive_separation_loss(xi, y, 0.1, impl=impl)
    loss.backward()
    out.append((loss.detach().double(), xi.grad.double()))
(lk, gk), (lr, gr) = out
torch.testing.assert_close(lk, lr, rtol=1e-5, atol=1e-7)
torch.testing.assert_close(gk, gr, rtol=1e-4, atol=1e-7)
print("ok")
"""


def test_cpu_kernels_pick_the_widest_instruction_set():
    """The AVX2 + FMA copy runs where the CPU has both (the other tests compare it with the
    reference); the portable copy, forced, matches the reference too."""
    import subprocess
    import sys

    from wsss_blocks import _C

    expected = "avx2+fma" if _cpu_has_avx2_fma() else "baseline"
    assert _C.cpu_isa == expected
    env = {**os.environ, "WSSS_BLOCKS_CPU_ISA": "baseline"}
    run = subprocess.run([sys.executable, "-c", _BASELINE_CHECK], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]

"""Cost of the windowed dense-energy loss on the CPU, and how much of the release's dense
kernel its window keeps.

Run once (about half a minute), one thread, CPU-time clock for a shared machine::

    python -m pytest benchmarks/bench_energy.py --benchmark-enable -s -p no:randomly \
        --benchmark-timer=time.process_time --benchmark-columns=min,median,rounds

Cases: forward + backward of softmax → :func:`dense_energy_loss` (σ_rgb 15, σ_xy 50,
radius 5, random gate and ROI) at the two grids where the loss is evaluated (×0.5 of the
crop): MF-Seg (B 16, K 11, 48×48) and VOC (B 2, K 21, 224×224). For orientation, each is
set against forward + backward of the LargeFOV decoder of the same setting (MF-Seg
example: 112→256 channels, dilation 2 on 12×12; CoSA VOC: 768→512, dilation 5 on 28×28),
and the MF-Seg case against a dense (all pairs, GEMM) pure-PyTorch energy.
``test_kernel_mass_share`` measures, on a photo at 224×224, which share of the release's
dense kernel mass Σ_{j≠i} W_ij lies inside the 11×11 window. ``test_zz_summary`` prints it all.
"""

from __future__ import annotations

import math

import pytest
import torch

from wsss_blocks.losses.energy import dense_energy_loss
from wsss_blocks.models import LargeFOV

SIGMA_RGB, SIGMA_XY, RADIUS = 15.0, 50.0, 5
CASES = {  # name: (B, K, H = W, LargeFOV (in, width, dilation), feature grid)
    "mfseg-16x11x48": (16, 11, 48, (112, 256, 2), 12),
    "voc-2x21x224": (2, 21, 224, (768, 512, 5), 28),
}
RESULTS: dict = {}


pytestmark = pytest.mark.usefixtures("one_thread")  # benchmarks/conftest.py


def _inputs(b, k, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, size, size, generator=g)
    # piecewise-flat colours (8×8 blocks) plus noise: the colour term matters, as on photos
    blocks = torch.rand(b, 3, size // 8 + 1, size // 8 + 1, generator=g)
    images = blocks.repeat_interleave(8, 2).repeat_interleave(8, 3)[..., :size, :size]
    images = (images + 0.02 * torch.randn(b, 3, size, size, generator=g)).clamp(0, 1)
    valid = torch.ones(b, size, size, dtype=torch.bool)
    valid[:, :, size - size // 8 :] = False  # a padded strip
    gate = torch.rand(b, size, size, generator=g)
    return logits, images, valid, gate


def _energy_step(logits, images, valid, gate):
    leaf = logits.clone().requires_grad_()
    loss = dense_energy_loss(leaf.softmax(1), images, valid, gate, SIGMA_RGB, SIGMA_XY, RADIUS)
    loss.backward()
    return loss


def _dense_energy(probs, images, valid, gate):
    """The release's energy −Σ_i g_i S_i · Σ_j W_ij S_j over all pairs, one GEMM per image."""
    b, k, h, w = probs.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], 1).float() / (math.sqrt(2) * SIGMA_XY)
    total = probs.new_zeros(())
    for i in range(b):
        col = images[i].reshape(3, -1).t() * (255 / (math.sqrt(2) * SIGMA_RGB))
        feats = torch.cat([pos, col], 1)
        kern = torch.cdist(feats, feats).square_().neg_().exp_()  # (HW, HW)
        v = valid[i].reshape(-1).float()
        s = probs[i].reshape(k, -1).t() * v[:, None]
        total = total - ((gate[i].reshape(-1) * v)[:, None] * s * (kern @ s)).sum()
    return total * 1e-7 / b


def _dense_step(logits, images, valid, gate):
    leaf = logits.clone().requires_grad_()
    loss = _dense_energy(leaf.softmax(1), images, valid, gate)
    loss.backward()
    return loss


def _largefov_step(net, feats):
    net.zero_grad(set_to_none=True)
    out = net(feats)
    out.square().mean().backward()
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_energy_forward_backward(benchmark, record_fastest, case):
    b, k, size, _, _ = CASES[case]
    args = _inputs(b, k, size)
    loss = benchmark.pedantic(_energy_step, args=args, rounds=5, warmup_rounds=1)
    assert math.isfinite(float(loss.detach())) and float(loss.detach()) > 0
    record_fastest(RESULTS, ("energy", case))


@pytest.mark.parametrize("case", list(CASES))
def test_largefov_forward_backward(benchmark, record_fastest, case):
    b, k, _, (d, width, dilation), grid = CASES[case]
    torch.manual_seed(0)
    net = LargeFOV(d, k, width, dilation)
    feats = torch.randn(b, d, grid, grid)
    benchmark.pedantic(_largefov_step, args=(net, feats), rounds=5, warmup_rounds=1)
    record_fastest(RESULTS, ("largefov", case))


def test_dense_forward_backward_mfseg(benchmark, record_fastest):
    b, k, size, _, _ = CASES["mfseg-16x11x48"]
    args = _inputs(b, k, size)
    benchmark.pedantic(_dense_step, args=args, rounds=2, warmup_rounds=1)
    record_fastest(RESULTS, ("dense", "mfseg-16x11x48"))


def test_kernel_mass_share():
    """Share of Σ_{j≠i} W_ij (dense, σ_xy 50, σ_rgb 15) inside the window, 224×224 photo."""
    textures = pytest.importorskip("wsss_blocks.data.textures")
    try:
        photo = torch.from_numpy(textures.load_texture("astronaut")).permute(2, 0, 1)
    except Exception as exc:  # noqa: BLE001 - skimage missing or without its data
        pytest.skip(f"no photo available: {exc}")
    size = 224
    img = torch.nn.functional.interpolate(photo[None].float(), (size, size), mode="area")[0]
    img = img.clamp(0, 1)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], 1).float()
    col = 255.0 * img.reshape(3, -1).t()
    centres = torch.randperm(size * size, generator=torch.Generator().manual_seed(0))[:1024]
    shares = {}
    for name, colour in (("photo", col), ("flat", torch.zeros_like(col))):
        dpos = pos[centres, None, :] - pos[None, :, :]
        dcol = colour[centres, None, :] - colour[None, :, :]
        kern = torch.exp(
            -dpos.square().sum(-1) / (2 * SIGMA_XY**2) - dcol.square().sum(-1) / (2 * SIGMA_RGB**2)
        )
        kern[torch.arange(len(centres)), centres] = 0.0  # self pair
        inside = (dpos.abs() <= RADIUS).all(-1)
        ratio = (kern * inside).sum(1) / kern.sum(1)
        shares[name] = (float(ratio.mean()), float(ratio.median()), float(kern.sum(1).mean()))
    RESULTS["share"] = shares
    assert 0 < shares["flat"][0] < shares["photo"][0] < 1


def test_zz_summary():
    """Print the table (needs the cases above in this run with --benchmark-enable)."""
    if ("energy", "voc-2x21x224") not in RESULTS:
        pytest.skip("run the whole file with --benchmark-enable")
    lines = [
        f"threads: {torch.get_num_threads()} (1 in the timed cases), torch {torch.__version__}",
        "",
        "| case | energy fwd+bwd (ms) | LargeFOV fwd+bwd (ms) | energy / LargeFOV | "
        "dense (ms) | dense / window |",
        "|---|---|---|---|---|---|",
    ]
    for case in CASES:
        e, c, d = (RESULTS.get((kind, case)) for kind in ("energy", "largefov", "dense"))
        dense = f"{d * 1e3:.0f} | {d / e:.0f}×" if d else "— | —"
        lines.append(f"| {case} | {e * 1e3:.1f} | {c * 1e3:.1f} | {e / c:.2f}× | {dense} |")
    share = RESULTS.get("share")
    if share:
        for name, (mean, median, mass) in share.items():
            lines.append(
                f"\nwindow share of the dense kernel mass ({name}, 224×224, 1024 centres): "
                f"mean {mean:.2%}, median {median:.2%}; mean dense mass Σ_j W_ij = {mass:.0f}"
            )
    print("\n" + "\n".join(lines))

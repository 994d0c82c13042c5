"""Pixel-adaptive refinement (PAR, AFA) against a per-pixel loop written from
the equations, and its properties: range, constants, colour edges, scale of the image."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wsss_blocks import pixel_adaptive_refinement
from wsss_blocks.refine import par_offsets


def loop_reference(images, maps, dilations, iterations, w_rgb=0.3, w_pos=0.01, normalise=True):
    """PAR pixel by pixel (float64): replicate padding = clamped coordinates; σ the
    unbiased standard deviation over the neighbours; weights summing to 1 + w_pos as
    in the release unless ``normalise``."""
    b, _, h, w = images.shape
    offsets = [(d * dy, d * dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)
               if dy or dx]  # fmt: skip
    dist = torch.tensor([math.hypot(dy, dx) for dy, dx in offsets], dtype=torch.float64)
    k_pos = -((dist / dist.std() / w_rgb) ** 2)
    p_pos = torch.softmax(k_pos, 0)
    weights = torch.zeros(b, len(offsets), h, w, dtype=torch.float64)
    coords = torch.zeros(len(offsets), h, w, 2, dtype=torch.long)
    for y in range(h):
        for x in range(w):
            for n, (dy, dx) in enumerate(offsets):
                cy, cx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
                coords[n, y, x] = torch.tensor([cy, cx])
            for i in range(b):
                centre = images[i, :, y, x].double()
                nb = torch.stack([images[i, :, cy, cx].double() for cy, cx in coords[:, y, x]])
                sigma = nb.std(0)
                k_rgb = -(((nb - centre).abs() / (sigma + 1e-8) / w_rgb) ** 2).mean(1)
                weights[i, :, y, x] = torch.softmax(k_rgb, 0) + w_pos * p_pos
    if normalise:
        weights = weights / (1 + w_pos)
    out = maps.double()
    for _ in range(iterations):
        new = torch.zeros_like(out)
        for n in range(len(offsets)):
            shifted = out[:, :, coords[n, :, :, 0], coords[n, :, :, 1]]
            new += weights[:, n : n + 1] * shifted
        out = new
    return out


def test_offsets_are_the_rings_of_each_dilation():
    offsets = par_offsets((1, 3))
    assert len(offsets) == 16
    assert set(offsets[:8]) == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)} - {(0, 0)}
    assert set(offsets[8:]) == {(3 * dy, 3 * dx) for dy, dx in offsets[:8]}


def test_matches_the_per_pixel_loop():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 7, 9, generator=g, dtype=torch.float64)
    maps = torch.rand(2, 4, 7, 9, generator=g, dtype=torch.float64)
    ours = pixel_adaptive_refinement(images, maps, dilations=(1, 2, 4), iterations=3)
    reference = loop_reference(images, maps, (1, 2, 4), 3)
    torch.testing.assert_close(ours, reference, rtol=1e-8, atol=1e-10)


def test_the_release_scale_leaves_the_argmax_over_a_threshold_channel_unchanged():
    """The release's weights sum to 1 + w_pos: its maps are ours times (1 + w_pos)^T, so
    the argmax over [ξ, CAMs] it takes is ours."""
    g = torch.Generator().manual_seed(1)
    images = torch.rand(1, 3, 6, 6, generator=g, dtype=torch.float64)
    cams = torch.rand(1, 2, 6, 6, generator=g, dtype=torch.float64)
    maps = torch.cat([torch.full_like(cams[:, :1], 0.5), cams], 1)
    release = loop_reference(images, maps, (1, 2), 4, normalise=False)
    ours = pixel_adaptive_refinement(images, maps, dilations=(1, 2), iterations=4)
    torch.testing.assert_close(release, ours * 1.01**4, rtol=1e-8, atol=1e-10)
    assert torch.equal(release.argmax(1), ours.argmax(1))


def test_stops_at_a_colour_edge():
    images = torch.zeros(1, 3, 12, 12)
    images[..., 6:] = 1.0
    cam = torch.zeros(1, 1, 12, 12)
    cam[..., 8] = 1.0
    out = pixel_adaptive_refinement(images, cam, dilations=(1, 2), iterations=30)
    # the lit column's colour region is filled; the other one gets only what the
    # position term (weight w_pos = 0.01) carries across, under 1/50 of that
    assert out[..., 6:].min() > 0.1
    assert out[..., :6].max() < out[..., 6:].min() / 50


def test_on_a_flat_image_it_smooths_like_a_fixed_kernel():
    cam = torch.zeros(1, 1, 15, 15)
    cam[0, 0, 7, 7] = 1.0
    out = pixel_adaptive_refinement(torch.ones(1, 3, 15, 15), cam, dilations=(1,), iterations=1)
    # σ = 0 everywhere: every colour weight is 1/8, the position term favours the 4-neighbours
    assert out[0, 0, 7, 7] == 0  # the pixel is not its own neighbour
    assert out[0, 0, 6, 7] > out[0, 0, 6, 6] > 0
    assert torch.allclose(out[0, 0, 6, 7], out[0, 0, 8, 7])
    assert torch.allclose(out[0, 0, 7, 6], out[0, 0, 6, 7])


def test_constant_maps_and_zero_iterations_are_unchanged():
    images = torch.rand(2, 3, 10, 10)
    const = torch.full((2, 3, 10, 10), 0.25)
    torch.testing.assert_close(pixel_adaptive_refinement(images, const), const)
    maps = torch.rand(2, 3, 10, 10)
    assert pixel_adaptive_refinement(images, maps, iterations=0) is maps


def test_the_colour_scale_of_the_image_does_not_matter():
    g = torch.Generator().manual_seed(2)
    images = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64)
    maps = torch.rand(1, 2, 16, 16, generator=g, dtype=torch.float64)
    a = pixel_adaptive_refinement(images, maps, dilations=(1, 2, 4))
    b = pixel_adaptive_refinement(255 * images - 30, maps, dilations=(1, 2, 4))
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # σ + 1e-8 scales too


def test_gradients_reach_the_maps():
    g = torch.Generator().manual_seed(3)
    images = torch.rand(1, 3, 5, 5, generator=g, dtype=torch.float64)
    maps = (0.2 + 0.6 * torch.rand(1, 2, 5, 5, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda m: pixel_adaptive_refinement(images, m, dilations=(1, 2), iterations=2), (maps,)
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    k=st.integers(1, 4),
    iterations=st.integers(1, 4),
)
def test_stays_within_the_input_range(seed, h, w, k, iterations):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, h, w, generator=g)
    maps = torch.rand(2, k, h, w, generator=g)
    out = pixel_adaptive_refinement(images, maps, dilations=(1, 3), iterations=iterations)
    assert out.shape == maps.shape and torch.isfinite(out).all()
    assert maps.min() <= out.min() and out.max() <= maps.max()


@pytest.mark.parametrize(
    "images, maps, kwargs, message",
    [
        (torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), {}, r"maps must be 4-D \(B, K, H, W\)"),
        (torch.rand(1, 1, 8, 8), torch.rand(1, 2, 8, 8), {}, "images must have 3 colour channels"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 2, 4, 4), {}, "resize the maps to the images"),
        (torch.rand(2, 3, 8, 8), torch.rand(1, 2, 8, 8), {}, "share batch and spatial size"),
        (torch.rand(1, 3, 8, 8), torch.full((1, 2, 8, 8), float("nan")), {}, "maps must be finite"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8).bfloat16(), {}, "maps must be float32"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8), {"iterations": -1}, "iterations must be"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8), {"w_rgb": 0.0}, "w_rgb"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8), {"w_pos": -0.1}, "w_pos must be >= 0"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8), {"dilations": ()}, "dilations must hold"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8), {"dilations": (1, 0)}, "dilations must"),
    ],
)
def test_bad_input_is_rejected_by_name(images, maps, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pixel_adaptive_refinement(images, maps, **kwargs)


def test_the_defaults_are_the_release_settings():
    """The CoSA release's models/PAR.py: PAR(num_iter=10, dilations=[1, 2, 4, 8, 12, 24]),
    w1 = 0.3, w2 = 0.01."""
    import inspect

    defaults = {k: p.default for k, p in
                inspect.signature(pixel_adaptive_refinement).parameters.items()}  # fmt: skip
    assert defaults["dilations"] == (1, 2, 4, 8, 12, 24)
    assert defaults["iterations"] == 10
    assert defaults["w_rgb"] == 0.3 and defaults["w_pos"] == 0.01

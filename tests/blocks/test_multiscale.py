"""multiscale_cam and multiscale_seg: single scale, flips, scale sums, gradients, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wsss_blocks import multiscale_cam, multiscale_seg


def _conv(seed: int = 0) -> torch.nn.Conv2d:
    torch.manual_seed(seed)
    return torch.nn.Conv2d(3, 2, 1)


def test_multiscale_cam_single_scale_is_relu_of_cam():
    conv, x = _conv(), torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(multiscale_cam(conv, x), torch.relu(conv(x)))
    up = multiscale_cam(conv, x, size=(16, 16))
    want = torch.relu(F.interpolate(conv(x), size=(16, 16), mode="bilinear"))  # resize, ReLU
    torch.testing.assert_close(up, want)


def test_multiscale_cam_flip_is_max_with_mirrored_cam():
    # a CAM function that is not mirror-symmetric: it returns the image's first channel
    x = torch.rand(1, 3, 4, 6)
    got = multiscale_cam(lambda im: im[:, :1], x, flip=True)
    # the mirrored image's CAM, mirrored back, is the image's CAM again
    torch.testing.assert_close(got, x[:, :1])
    ramp = torch.arange(6.0).expand(1, 1, 4, 6)  # CAM = a fixed ramp, whatever the image
    got = multiscale_cam(lambda im: ramp.expand(len(im), -1, -1, -1), x, flip=True)
    torch.testing.assert_close(got, torch.maximum(ramp, ramp.flip(-1)))


def test_multiscale_cam_sums_scales_at_the_first_scale_size():
    x = torch.full((1, 3, 8, 8), 0.5)
    conv = _conv()
    single = torch.relu(conv(x))
    got = multiscale_cam(conv, x, scales=(1.0, 0.5, 1.5), flip=True)
    assert got.shape == (1, 2, 8, 8)
    torch.testing.assert_close(got, 3 * single)  # a flat image gives the same map at every scale
    assert multiscale_cam(conv, x, scales=(0.5, 1.0)).shape == (1, 2, 4, 4)


def _release_loop(net, images, scales, size):
    """The official release's multi-scale CAM, written out: per scale, resize the image to
    (int(s·H), int(s·W)), run it with its mirror, upsample each raw CAM to ``size``, max
    with the un-mirrored mirror CAM, ReLU; sum over scales."""
    h, w = images.shape[-2:]
    total = 0
    for s in scales:
        x = images
        if s != 1:
            size_s = (int(s * h), int(s * w))
            x = F.interpolate(images, size_s, mode="bilinear", align_corners=False)
        cam = net(torch.cat([x, x.flip(-1)]))
        cam = F.interpolate(cam, size, mode="bilinear", align_corners=False)
        b = len(images)
        total = total + torch.relu(torch.maximum(cam[:b], cam[b:].flip(-1)))
    return total


@pytest.mark.parametrize("hw", [(13, 17), (8, 8), (21, 10)])
def test_multiscale_cam_equals_the_release_loop(hw):
    # A strided conv with signed output: resizing before or after the ReLU differs.
    torch.manual_seed(1)
    net = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
    x = torch.rand(2, 3, *hw)
    scales = (1.0, 0.5, 1.5, 0.75)
    got = multiscale_cam(net, x, scales, flip=True, size=hw)
    torch.testing.assert_close(got, _release_loop(net, x, scales, hw))
    # and the former order (ReLU at the CAM's own size, then resize) is another map
    relu_first = sum(
        F.interpolate(
            torch.relu(net(x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear"))),
            hw,
            mode="bilinear",
        )
        for s in scales
    )
    assert not torch.allclose(got, relu_first, atol=1e-4)


def test_multiscale_cam_rejects_a_scale_below_one_pixel():
    with pytest.raises(ValueError, match="scales"):
        multiscale_cam(_conv(), torch.rand(1, 3, 4, 4), scales=(1.0, 0.2))


def test_multiscale_cam_keeps_gradients():
    conv, x = _conv(), torch.rand(1, 3, 8, 8)
    multiscale_cam(conv, x, (1.0, 1.5), flip=True).sum().backward()
    assert conv.weight.grad is not None


def test_multiscale_cam_bad_input():
    conv, x = _conv(), torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="images"):
        multiscale_cam(conv, x[0])
    with pytest.raises(ValueError, match="images"):
        multiscale_cam(conv, x.long())
    with pytest.raises(ValueError, match="scales"):
        multiscale_cam(conv, x, scales=())
    with pytest.raises(ValueError, match="scales"):
        multiscale_cam(conv, x, scales=(1.0, 0.0))
    with pytest.raises(ValueError, match="cam_fn"):
        multiscale_cam(lambda im: im[0], x)
    with pytest.raises(ValueError, match="images"):
        multiscale_cam(conv, x.masked_fill(x > 0.5, float("nan")))
    with pytest.raises(ValueError, match="scales"):
        multiscale_cam(conv, x, scales=(float("inf"),))
    for size in [(8,), (0, 8), (8.5, 8)]:
        with pytest.raises(ValueError, match="size"):
            multiscale_cam(conv, x, size=size)


# ---- multiscale_seg -------------------------------------------------------------------


def test_multiscale_seg_single_scale_is_the_logits():
    conv, x = _conv(), torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(multiscale_seg(conv, x), conv(x))  # no ReLU: raw logits
    up = multiscale_seg(conv, x, size=(16, 16))
    torch.testing.assert_close(up, F.interpolate(conv(x), size=(16, 16), mode="bilinear"))


def test_multiscale_seg_flip_sums_the_mirrored_logits():
    x = torch.rand(1, 3, 4, 6)
    # logits = the image's first channel: the mirrored image's, mirrored back, equal it
    torch.testing.assert_close(multiscale_seg(lambda im: im[:, :1], x, flip=True), 2 * x[:, :1])
    ramp = torch.arange(6.0).expand(1, 1, 4, 6) - 2.5  # fixed logits, signed
    got = multiscale_seg(lambda im: ramp.expand(len(im), -1, -1, -1), x, flip=True)
    torch.testing.assert_close(got, ramp + ramp.flip(-1))  # a sum, not a max


def test_multiscale_seg_sums_scales_and_keeps_gradients():
    x = torch.full((1, 3, 8, 8), 0.5)
    conv = _conv()
    got = multiscale_seg(conv, x, scales=(1.0, 0.5, 1.5), flip=True)
    torch.testing.assert_close(got, 6 * conv(x))  # flat image: 3 scales x 2 flips
    got.sum().backward()
    assert conv.weight.grad is not None


def test_multiscale_seg_bad_input():
    conv, x = _conv(), torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="images"):
        multiscale_seg(conv, x[0])
    with pytest.raises(ValueError, match="scales"):
        multiscale_seg(conv, x, scales=(-1.0,))
    with pytest.raises(ValueError, match="seg_fn"):
        multiscale_seg(lambda im: im[0], x)
    with pytest.raises(ValueError, match="size"):
        multiscale_seg(conv, x, size=(8, 0))

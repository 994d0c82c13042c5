"""LargeFOV decoder and CoSANet assembly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wsss_blocks import EMATeacher
from wsss_blocks.models import CAMBackboneNet, CoSANet, LargeFOV
from wsss_blocks.models.base import IMAGENET_MEAN, IMAGENET_STD
from wsss_blocks.utils import upsample

R18 = {"pretrained": False, "layers": [1, 1, 1, 1]}


def test_largefov_layout():
    dec = LargeFOV(8, 5, width=16, dilation=3)
    convs = [m for m in dec.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(8, 16), (16, 16), (16, 5)]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3), (1, 1)]
    assert [c.dilation for c in convs[:2]] == [(3, 3), (3, 3)]
    assert dec(torch.randn(2, 8, 7, 9)).shape == (2, 5, 7, 9)


def test_largefov_equals_functional_composition():
    dec = LargeFOV(4, 3, width=6, dilation=2).eval()
    c1, c2, c3 = [m for m in dec.modules() if isinstance(m, torch.nn.Conv2d)]
    x = torch.randn(1, 4, 6, 6)
    h = F.relu(F.conv2d(x, c1.weight, c1.bias, padding=2, dilation=2))
    h = F.relu(F.conv2d(h, c2.weight, c2.bias, padding=2, dilation=2))
    torch.testing.assert_close(dec(x), F.conv2d(h, c3.weight, c3.bias))


def test_largefov_receptive_field_is_dilated():
    """An output pixel sees input offsets that are sums of two taps in {-d, 0, d}."""
    d = 5
    dec = LargeFOV(1, 1, width=1, dilation=d)
    for m in dec.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
    x = torch.ones(1, 1, 25, 25, requires_grad=True)
    dec(x)[0, 0, 12, 12].backward()
    seen = (x.grad[0, 0] != 0).nonzero() - 12
    offsets = {-2 * d, -d, 0, d, 2 * d}
    assert {int(v) for v in seen[:, 0]} == offsets and {int(v) for v in seen[:, 1]} == offsets


@pytest.mark.parametrize("name", ["in_channels", "num_classes", "width", "dilation"])
def test_largefov_bad_sizes(name):
    kwargs = {"in_channels": 4, "num_classes": 3, "width": 8, "dilation": 2, name: 0}
    with pytest.raises(ValueError, match=name):
        LargeFOV(**kwargs)


def test_largefov_wrong_channels_raise_value_error():
    with pytest.raises(ValueError, match="features"):
        LargeFOV(4, 3, width=8)(torch.zeros(1, 5, 6, 6))


@pytest.fixture(scope="module")
def cnn_net():
    torch.manual_seed(0)
    return CoSANet(3, "resnet18", last_index=3, early_index=2, decoder_width=8, **R18)


def test_cosanet_shapes(cnn_net):
    out = cnn_net(torch.rand(2, 3, 64, 64))
    assert out.logits.shape == (2, 3) and out.early_logits.shape == (2, 3)
    assert out.cam.shape == (2, 3, 4, 4) and out.early_cam.shape == (2, 3, 8, 8)
    assert out.seg.shape == (2, 4, 4, 4)  # C + 1 with background, at the feature grid


def test_cosanet_is_normalising_cam_extractor_plus_decoder(cnn_net):
    images = torch.rand(2, 3, 32, 32)
    out = cnn_net.eval()(images)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref = cnn_net.cam_extractor((images - mean) / std)
    torch.testing.assert_close(out.cam, ref.cam)
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.early_cam, ref.early_cam)
    torch.testing.assert_close(out.seg, cnn_net.decoder(ref.features))
    cnn_net.train()


def test_forward_cam_is_forward_without_the_decoder(cnn_net):
    images = torch.rand(2, 3, 32, 32)
    net = cnn_net.eval()
    out = net(images)

    def decoder_called(module, args):
        raise AssertionError("forward_cam ran the decoder")

    hook = net.decoder.register_forward_pre_hook(decoder_called)
    try:
        cams = net.forward_cam(images)
    finally:
        hook.remove()
    for name in ("cam", "logits", "early_cam", "early_logits"):
        torch.testing.assert_close(getattr(cams, name), getattr(out, name))
    torch.testing.assert_close(net.decoder(cams.features), out.seg)
    with pytest.raises(ValueError, match="images"):
        net.forward_cam(torch.rand(2, 4, 32, 32))
    net.train()


def test_cosanet_without_early_layer_and_with_vit():
    net = CoSANet(
        2,
        "vit_tiny_patch16_224",
        early_index=None,
        decoder_width=8,
        pretrained=False,
        img_size=32,
        depth=2,
    )
    out = net(torch.rand(1, 3, 32, 32))
    assert out.early_cam is None and out.early_logits is None
    assert out.cam.shape == (1, 2, 2, 2) and out.seg.shape == (1, 3, 2, 2)


def test_parameter_groups_partition_the_network(cnn_net):
    backbone, heads = cnn_net.backbone_parameters(), cnn_net.head_parameters()
    ids_b, ids_h = {id(p) for p in backbone}, {id(p) for p in heads}
    assert not ids_b & ids_h
    assert ids_b | ids_h == {id(p) for p in cnn_net.parameters()}
    for m in (
        cnn_net.cam_extractor.classifier,
        cnn_net.cam_extractor.early_classifier,
        cnn_net.decoder,
    ):
        assert {id(p) for p in m.parameters()} <= ids_h


def test_normalisation_constants_stay_out_of_checkpoints(cnn_net):
    keys = cnn_net.state_dict().keys()
    assert not {"mean", "std"} & set(keys)
    assert any(k.startswith("cam_extractor.features.") for k in keys)


def test_cosanet_trains_end_to_end_with_ema_teacher(cnn_net):
    teacher = EMATeacher(cnn_net, momentum=0.5)
    images = torch.rand(2, 3, 32, 32)
    out = cnn_net.train()(images)
    (out.seg.sum() + out.cam.sum() + out.early_cam.sum()).backward()
    assert all(p.grad is not None for p in cnn_net.head_parameters())
    t_out = teacher(images)
    assert not t_out.seg.requires_grad and not teacher.module.training
    cnn_net.zero_grad()


def test_cosanet_bad_input(cnn_net):
    with pytest.raises(ValueError, match="images"):
        cnn_net(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="images"):
        cnn_net(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="images must be a floating-point"):
        cnn_net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="num_classes"):
        CoSANet(0, "resnet18", **R18)


def test_cam_backbone_net_needs_a_cam_extractor():
    with pytest.raises(TypeError, match="cam_extractor must be a CAMExtractor, got Linear"):
        CAMBackboneNet(torch.nn.Linear(3, 3))


def test_upsample():
    t = torch.randn(2, 3, 4, 5)
    out = upsample(t, (8, 10))
    assert out.shape == (2, 3, 8, 10)
    torch.testing.assert_close(out, F.interpolate(t, (8, 10), mode="bilinear"))

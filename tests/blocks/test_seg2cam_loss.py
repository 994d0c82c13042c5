"""Seg2CAM loss (CoSA Eq. 8): BCE of raw CAM logits against SPL channels 1..C."""

from __future__ import annotations

import math

import pytest
import torch

from wsss_blocks import CAMExtractor, seg2cam_loss, seg_to_spl


def _oracle(cam: torch.Tensor, spl: torch.Tensor) -> torch.Tensor:
    """mean over b, c = 1..C, pixels of −[y log σ(z) + (1 − y) log(1 − σ(z))], float64."""
    z, y = cam.double(), spl[:, 1:].double()
    return -(
        y * torch.nn.functional.logsigmoid(z) + (1 - y) * torch.nn.functional.logsigmoid(-z)
    ).mean()


def test_hand_computed():
    cam = torch.tensor([[[[0.0]], [[2.0]]]])
    spl = torch.tensor([[[[0.5]], [[0.25]], [[0.25]]]])
    s2 = 1 / (1 + math.exp(-2))
    want = (math.log(2) - (0.25 * math.log(s2) + 0.75 * math.log(1 - s2))) / 2
    assert math.isclose(float(seg2cam_loss(cam, spl)), want, rel_tol=1e-6)


def test_matches_equation():
    cam = torch.randn(2, 3, 4, 5, dtype=torch.float64) * 3
    spl = torch.softmax(torch.randn(2, 4, 4, 5, dtype=torch.float64), 1)
    torch.testing.assert_close(seg2cam_loss(cam, spl), _oracle(cam, spl))


def test_background_channel_is_not_used():
    cam = torch.randn(1, 2, 3, 3)
    spl = torch.rand(1, 3, 3, 3)
    other = spl.clone()
    other[:, 0] = torch.rand(1, 3, 3)
    assert torch.equal(seg2cam_loss(cam, spl), seg2cam_loss(cam, other))
    other[:, 1] = 1 - other[:, 1]  # a foreground channel does matter
    assert not torch.equal(seg2cam_loss(cam, spl), seg2cam_loss(cam, other))


def test_spl_is_a_detached_target():
    cam = torch.randn(1, 2, 2, 2).requires_grad_(True)
    spl = torch.rand(1, 3, 2, 2).requires_grad_(True)
    seg2cam_loss(cam, spl).backward()
    assert spl.grad is None and cam.grad is not None


def test_gradient_reaches_features_and_classifier():
    ext = CAMExtractor("resnet18", 2, last_index=2, pretrained=False, layers=[1, 1, 1, 1])
    out = ext(torch.randn(2, 3, 32, 32))
    out.features.retain_grad()
    g = torch.Generator().manual_seed(0)
    spl = seg_to_spl(torch.randn(2, 3, 4, 4, generator=g), torch.tensor([[1, 0], [1, 1]]), 0.5)
    seg2cam_loss(out.cam, spl).backward()
    assert out.features.grad is not None and out.features.grad.abs().sum() > 0
    assert ext.classifier.weight.grad.abs().sum() > 0
    backbone = ext.features.model.conv1.weight.grad
    assert backbone is not None and backbone.abs().sum() > 0


def test_bad_input():
    cam, spl = torch.zeros(2, 3, 4, 4), torch.full((2, 4, 4, 4), 0.25)
    with pytest.raises(ValueError, match="cam_logits"):
        seg2cam_loss(torch.zeros(3, 4, 4), spl)
    with pytest.raises(ValueError, match="cam_logits"):
        seg2cam_loss(cam.long(), spl)
    with pytest.raises(ValueError, match="cam_logits"):
        seg2cam_loss(torch.full_like(cam, float("-inf")), spl)
    with pytest.raises(ValueError, match="spl"):
        seg2cam_loss(cam, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="spl"):
        seg2cam_loss(cam, torch.zeros(2, 3, 4, 4))  # C channels instead of C+1
    with pytest.raises(ValueError, match="spl"):
        seg2cam_loss(cam, torch.zeros(1, 4, 4, 4))  # batch mismatch
    with pytest.raises(ValueError, match="spl"):
        seg2cam_loss(cam, torch.zeros(2, 4, 4, 3))
    with pytest.raises(ValueError, match="spl"):
        seg2cam_loss(cam, spl * 5)  # outside [0, 1]
    with pytest.raises(ValueError, match="spl"):
        seg2cam_loss(cam, torch.full_like(spl, float("nan")))
    with pytest.raises(ValueError, match="spl"):
        seg2cam_loss(cam, torch.zeros(2, 4, 4, 4, dtype=torch.long))


def test_valid_mask_leaves_padding_out():
    torch.manual_seed(3)
    cam = torch.randn(2, 3, 4, 5, requires_grad=True)
    spl = torch.softmax(torch.randn(2, 4, 4, 5), 1)
    valid = torch.ones(2, 4, 5, dtype=torch.bool)
    valid[:, :, 3:] = False  # two padded columns
    loss = seg2cam_loss(cam, spl, valid)
    # equals the unmasked loss on the image part alone
    torch.testing.assert_close(loss, seg2cam_loss(cam[..., :3], spl[..., :3]))
    loss.backward()
    assert torch.all(cam.grad[..., 3:] == 0)
    # what lies under the padding does not matter
    spl2 = spl.clone()
    spl2[..., 3:] = torch.softmax(torch.randn(2, 4, 4, 2), 1)
    torch.testing.assert_close(seg2cam_loss(cam, spl2, valid), loss)


def test_valid_mask_all_padding_is_zero_and_bad_mask_rejected():
    cam = torch.randn(1, 2, 3, 3, requires_grad=True)
    spl = torch.softmax(torch.randn(1, 3, 3, 3), 1)
    loss = seg2cam_loss(cam, spl, torch.zeros(1, 3, 3, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(cam.grad == 0)
    with pytest.raises(ValueError, match="valid"):
        seg2cam_loss(cam, spl, torch.ones(1, 3, 3))  # float, not bool
    with pytest.raises(ValueError, match="valid"):
        seg2cam_loss(cam, spl, torch.ones(1, 3, 4, dtype=torch.bool))

"""``model.cam_refine: par`` in the CoSA trainer: the AN's CAMs are refined by PAR
(wsss_blocks.pixel_adaptive_refinement) before CPLs are cut, for training and for the
CPL evaluation alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsss_blocks import cam_to_cpl, normalize_cam, pixel_adaptive_refinement
from wsss_blocks.utils import upsample

ROOT = Path(__file__).resolve().parents[2]


def _trainer():
    from examples.cosa import train

    return train


def _cfg(*overrides):
    T = _trainer()
    return T.load_config(ROOT / "examples/cosa/configs/default.yaml", list(overrides))


def test_refine_cam_is_par_at_par_scale_on_every_channel():
    """Only present classes are propagated; the result equals PAR of the whole CAM."""
    T = _trainer()
    cfg = _cfg("model.cam_refine=par")
    torch.manual_seed(0)
    labels = torch.zeros(4, 10)
    labels[0, [1, 3]] = 1
    labels[1, 2] = 1
    labels[2, [0, 5, 9]] = 1
    labels[3, 7] = 1
    cam = upsample(normalize_cam(3 * torch.rand(4, 10, 12, 12) - 1, labels), (96, 96))
    images = torch.rand(4, 3, 96, 96)
    ours = T.refine_cam(images, cam, labels, cfg)
    whole = upsample(pixel_adaptive_refinement(upsample(images, (48, 48)),
                                               upsample(cam, (48, 48))), (96, 96))  # fmt: skip
    torch.testing.assert_close(ours, whole)
    assert torch.equal(ours * (1 - labels[:, :, None, None]), torch.zeros_like(ours))
    assert not torch.equal(ours, cam)
    off = _cfg("model.cam_refine=null")
    assert T.refine_cam(images, cam, labels, off) is cam
    assert T.refine_cam(images, None, labels, cfg) is None


def test_the_cpl_of_l_c2s_is_cut_from_the_refined_cam(monkeypatch):
    T = _trainer()
    cfg = _cfg("model.cam_refine=par", "model.weights=null", "model.decoder_width=8",
               "train.amp=fp32", "model.cam_scales=[1.0]", "model.cam_flip=false")  # fmt: skip
    torch.manual_seed(0)
    model = T.build_model(cfg, num_classes=3)
    x_weak, x_strong = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    calls, seen = [], []
    real = T.raw_cam2seg_loss
    monkeypatch.setattr(T, "raw_cam2seg_loss", lambda *a, **k: calls.append(a) or real(*a, **k))
    model.register_forward_hook(lambda m, a, o: seen.append(o))
    T.cosa_losses(model, None, (x_weak, x_strong, valid), labels, step=10**6,
                  thresholds=T.Thresholds(cfg), cfg=cfg)  # fmt: skip
    _, an_out = seen  # the ON's pass on the strong view, then its AN pass on the weak one
    cam = normalize_cam(upsample(an_out.cam.float(), (32, 32)), labels)
    refined = T.refine_cam(x_weak, cam, labels, cfg)
    ((_, cpl, *_),) = calls
    assert torch.equal(cpl, cam_to_cpl(refined, labels, cfg["threshold"]["fixed"]))
    assert not torch.equal(cpl, cam_to_cpl(cam, labels, cfg["threshold"]["fixed"]))


@pytest.mark.parametrize("value", ["crf", "PAR", True])
def test_an_unknown_refinement_is_rejected(value):
    T = _trainer()
    cfg = _cfg()
    cfg["model"]["cam_refine"] = value
    with pytest.raises(T.ConfigError, match="model.cam_refine must be null or par"):
        T.check_config(cfg)

"""The wiring of one CoSA step (examples/cosa/train.py ``cosa_losses``), pinned by spies.

Forward hooks record what each network receives and returns; the loss blocks are
replaced in the trainer's namespace by spies that record their arguments. Checked: the
AN gets the weak view and the ON the strong view; CPL and RAW weights from the AN's CAM
feed L_c2s; the SPL from the AN's segmentation feeds L_s2c; the CSC anchors come from
the AN's M† and their features from the ON's CAM; crop padding is 255 in the CPL and
left out of L_s2c and the anchors; nothing from the AN carries a gradient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wsss_blocks import (
    IGNORE_INDEX,
    EMATeacher,
    cam_confidence,
    cam_to_cpl,
    normalize_cam,
    perplexity,
    raw_weights,
    seg_to_spl,
)

ROOT = Path(__file__).resolve().parents[2]


def _trainer():
    from examples.cosa import train

    return train


class Spy:
    """Calls the real block and keeps the arguments of every call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.fn(*args, **kwargs)


@pytest.fixture
def step(monkeypatch):
    """Run one post-warm-up step of the paper config (every term on) with spies."""
    T = _trainer()
    cfg = T.load_config(
        ROOT / "examples/cosa/configs/paper.yaml",
        [
            "model.cam_scales=[1.0]", "model.cam_flip=false", "model.weights=null",
            "model.decoder_width=8", "train.amp=fp32", "threshold.dynamic=false",
            "loss.csc_max_anchors=100000", "loss.csc_epsilon=5.0",
        ],
    )  # fmt: skip
    torch.manual_seed(0)
    model = T.build_model(cfg, num_classes=3)
    teacher = EMATeacher(model, 0.5)
    with torch.no_grad():  # an AN that differs from the ON, so mixing them up shows
        for p in teacher.module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x_weak, x_strong = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    valid[1, :, 24:] = False  # a padded strip on the second crop
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])

    seen = {"on": [], "an": []}
    model.register_forward_hook(lambda m, a, o: seen["on"].append((a[0], o)))
    teacher.module.register_forward_hook(lambda m, a, o: seen["an"].append((a[0], o)))
    spies = {}
    for name in ("raw_cam2seg_loss", "seg2cam_loss", "contrastive_separation_loss"):
        spies[name] = Spy(getattr(T, name))
        monkeypatch.setattr(T, name, spies[name])
    thresholds = T.Thresholds(cfg)
    losses = T.cosa_losses(
        model, teacher, (x_weak, x_strong, valid), labels, step=10**6, thresholds=thresholds,
        cfg=cfg,
    )  # fmt: skip
    return dict(T=T, cfg=cfg, model=model, teacher=teacher, x_weak=x_weak, x_strong=x_strong,
                valid=valid, labels=labels, seen=seen, spies=spies, losses=losses)  # fmt: skip


def test_an_sees_the_weak_view_and_the_on_the_strong_view(step):
    ((on_in, _),) = step["seen"]["on"]
    assert torch.equal(on_in, step["x_strong"])
    assert step["seen"]["an"], "the AN never ran"
    for an_in, _ in step["seen"]["an"]:
        assert torch.equal(an_in, step["x_weak"])


def test_nothing_from_the_an_carries_a_gradient(step):
    for _, out in step["seen"]["an"]:
        assert all(t is None or not t.requires_grad for t in out)
    loss = sum(step["losses"].values())
    loss.backward()
    assert all(p.grad is None for p in step["teacher"].parameters())
    assert any(p.grad is not None for p in step["model"].parameters())
    for name, spy in step["spies"].items():  # targets are detached; only ON outputs carry grad
        ((args, kwargs),) = spy.calls if name != "raw_cam2seg_loss" else spy.calls[:1]
        targets = args[1:] + tuple(kwargs.values())
        assert all(not t.requires_grad for t in targets if isinstance(t, torch.Tensor))
        assert args[0].requires_grad


def _an_out(step):
    ((_, an_out),) = step["seen"]["an"]
    return an_out


def test_cpl_and_raw_weights_from_the_an_feed_l_c2s(step):
    an, labels, cfg = _an_out(step), step["labels"], step["cfg"]
    cam = normalize_cam(F.interpolate(an.cam.float(), (32, 32), mode="bilinear"), labels)
    cpl = cam_to_cpl(cam, labels, cfg["threshold"]["fixed"])
    cpl[~step["valid"]] = IGNORE_INDEX  # crop padding is ignored, as in the release
    nu, _ = cam_confidence(cam, labels)
    want_w = raw_weights(perplexity(nu, cfg["threshold"]["fixed"], 0.8, 1.0), cpl != IGNORE_INDEX)
    (seg, got_cpl, got_w, _), _ = step["spies"]["raw_cam2seg_loss"].calls[0]
    assert torch.equal(got_cpl, cpl)
    assert bool((got_cpl[1, :, 24:] == IGNORE_INDEX).all())
    torch.testing.assert_close(got_w, want_w)
    ((_, on_out),) = step["seen"]["on"]
    torch.testing.assert_close(seg, F.interpolate(on_out.seg.float(), (32, 32), mode="bilinear"))


def test_spl_from_the_an_feeds_l_s2c_off_the_padding(step):
    an, labels, cfg = _an_out(step), step["labels"], step["cfg"]
    ((_, on_out),) = step["seen"]["on"]
    grid = on_out.cam.shape[-2:]
    (cam_arg, spl, valid_grid), _ = step["spies"]["seg2cam_loss"].calls[0]
    torch.testing.assert_close(
        spl, seg_to_spl(an.seg.float(), labels, cfg["loss"]["seg_tau"], grid)
    )
    assert cam_arg is not None and torch.equal(cam_arg, on_out.cam.float())
    assert valid_grid.shape == (2, *grid) and not bool(valid_grid[1, :, -1].any())
    assert bool(valid_grid[0].all())


def test_csc_anchors_come_from_the_an_early_cam(step):
    an, labels, cfg, T = _an_out(step), step["labels"], step["cfg"], step["T"]
    ((_, on_out),) = step["seen"]["on"]
    grid = on_out.cam.shape[-2:]
    cam_d = normalize_cam(F.interpolate(an.early_cam.float(), (32, 32), mode="bilinear"), labels)
    cam_d = F.interpolate(cam_d, size=grid, mode="area")
    nu, _ = cam_confidence(cam_d, labels)
    xi = cfg["threshold"]["fixed"]
    anchors = perplexity(nu, xi, 0.8, 1.0) <= cfg["loss"]["csc_epsilon"]
    anchors &= T.grid_valid(step["valid"], grid)
    (feats, anchor_labels, _), _ = step["spies"]["contrastive_separation_loss"].calls[0]
    assert int(anchors.sum()) > 0 and not bool(anchors.all())  # the test discriminates
    torch.testing.assert_close(feats, on_out.cam.float().permute(0, 2, 3, 1)[anchors])
    assert torch.equal(anchor_labels, cam_to_cpl(cam_d, labels, xi)[anchors])


def test_early_cam_cpls_use_every_scale(step):
    """M†' for CPLs is multi-scale like M' (the release keeps only its last scale, a bug)."""
    from wsss_blocks import multiscale_cam

    T, cfg, teacher, labels = step["T"], step["cfg"], step["teacher"], step["labels"]
    cfg = {**cfg, "model": {**cfg["model"], "cam_scales": [1.0, 0.5, 1.5], "cam_flip": True}}
    x = step["x_weak"]
    with torch.no_grad():
        cam, cam_d, seg = T.an_pass(teacher, x, labels, cfg, early=True)
        want_d = normalize_cam(multiscale_cam(lambda im: teacher(im).early_cam, x,
                                              (1.0, 0.5, 1.5), True, (32, 32)), labels)  # fmt: skip
        want = normalize_cam(multiscale_cam(lambda im: teacher(im).cam, x, (1.0, 0.5, 1.5), True,
                                            (32, 32)), labels)  # fmt: skip
        last_only = normalize_cam(multiscale_cam(lambda im: teacher(im).early_cam, x, (1.5,), True,
                                                 (32, 32)), labels)  # fmt: skip
    torch.testing.assert_close(cam_d, want_d)
    torch.testing.assert_close(cam, want)
    torch.testing.assert_close(seg, teacher(x).seg)  # S' from the same pass, unflipped 1.0
    assert not torch.allclose(cam_d, last_only, atol=1e-3)


def test_l_s2c_starts_at_loss_s2c_start():
    """``loss.s2c_start`` delays L_s2c past the warm-up; the other terms start as before."""
    T = _trainer()
    cfg = T.load_config(
        ROOT / "examples/cosa/configs/cosa_ema.yaml",
        ["model.cam_scales=[1.0]", "model.cam_flip=false", "model.weights=null",
         "model.decoder_width=8", "train.amp=fp32", "train.warmup_iterations=300",
         "loss.s2c_start=600"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = T.build_model(cfg, num_classes=3)
    teacher = EMATeacher(model, 0.5)
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    views = (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), valid)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    terms = {}
    for step in (299, 300, 599, 600):
        losses = T.cosa_losses(model, teacher, views, labels, step, T.Thresholds(cfg), cfg)
        terms[step] = sorted(losses)
    assert terms[299] == ["cls", "cls_early"]
    assert terms[300] == terms[599] == ["c2s", "cls", "cls_early"]
    assert terms[600] == ["c2s", "cls", "cls_early", "s2c"]


@pytest.mark.parametrize("start", [299, 1201, 650.0, True])
def test_an_impossible_s2c_start_is_rejected(start):
    T = _trainer()
    cfg = T.load_config(ROOT / "examples/cosa/configs/default.yaml")
    cfg["loss"]["s2c_start"] = start
    with pytest.raises(T.ConfigError, match="loss.s2c_start"):
        T.check_config(cfg)


def test_without_a_teacher_the_on_labels_itself_on_the_weak_view():
    """default.yaml (``train.use_teacher: false``): the ON is its own AN. It trains on the
    strong view; its no-grad pass on the weak view gives the CPL of L_c2s and the SPL
    of L_s2c."""
    T = _trainer()
    cfg = T.load_config(
        ROOT / "examples/cosa/configs/default.yaml",
        ["model.cam_scales=[1.0]", "model.cam_flip=false", "model.weights=null",
         "model.decoder_width=8", "train.amp=fp32"],
    )  # fmt: skip
    assert not cfg["train"]["use_teacher"] and cfg["loss"]["cls_early"] == 0
    torch.manual_seed(0)
    model = T.build_model(cfg, num_classes=3)
    x_weak, x_strong = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    seen = []
    model.register_forward_hook(lambda m, a, o: seen.append((a[0], o)))
    l2c = Spy(T.raw_cam2seg_loss)
    s2c = Spy(T.seg2cam_loss)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "raw_cam2seg_loss", l2c)
        mp.setattr(T, "seg2cam_loss", s2c)
        losses = T.cosa_losses(model, None, (x_weak, x_strong, valid), labels,
                               T.s2c_start(cfg), T.Thresholds(cfg), cfg)  # fmt: skip
    assert sorted(losses) == ["c2s", "cls", "s2c"]
    (on_in, on_out), (an_in, an_out) = seen
    assert torch.equal(on_in, x_strong) and torch.equal(an_in, x_weak)
    assert on_out.cam.requires_grad and not an_out.cam.requires_grad
    xi = cfg["threshold"]["fixed"]
    cam = normalize_cam(F.interpolate(an_out.cam.float(), (32, 32), mode="bilinear"), labels)
    cam = T.refine_cam(x_weak, cam, labels, cfg)  # default.yaml: model.cam_refine par
    (_, got_cpl, _, _), _ = l2c.calls[0]
    assert torch.equal(got_cpl, cam_to_cpl(cam, labels, xi))
    (_, spl, _), _ = s2c.calls[0]
    grid = on_out.cam.shape[-2:]
    torch.testing.assert_close(spl, seg_to_spl(an_out.seg.float(), labels,
                                                cfg["loss"]["seg_tau"], grid))  # fmt: skip

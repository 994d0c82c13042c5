"""TimmFeatures and CAMExtractor on tiny random-weight timm models (no downloads).

The oracle for the ViT grid is the model's own token sequence, read with a forward hook
on the block (intermediate layers, raw) or from ``forward_features`` (the last layer,
after the final norm), with the prefix (class + register) tokens dropped by hand.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from wsss_blocks import CAMExtractor, TimmFeatures, pool_cam, pooled_logits

VIT = "vit_tiny_patch16_224"
VIT_REG = "vit_small_patch14_reg4_dinov2"
# resnet18's layout (strides, channels) with one block per stage, to keep tests fast
R18 = {"pretrained": False, "layers": [1, 1, 1, 1]}


def _vit(img_size: int = 64, depth: int = 3, name: str = VIT, **kw) -> torch.nn.Module:
    # depth is cut to keep the test fast; the token layout does not depend on it
    return timm.create_model(name, pretrained=False, img_size=img_size, depth=depth, **kw)


def _block_tokens(model: torch.nn.Module, block: int, x: torch.Tensor) -> torch.Tensor:
    """(B, N_prefix + h*w, D) output of ``model.blocks[block]``, read by a hook."""
    seen = {}
    handle = model.blocks[block].register_forward_hook(lambda m, i, o: seen.setdefault("t", o))
    with torch.no_grad():
        model.forward_features(x)
    handle.remove()
    return seen["t"]


def _normed_tokens(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, N_prefix + h*w, D) output of ``model.forward_features``: last block, then norm."""
    with torch.no_grad():
        return model.forward_features(x)


def _tokens_to_grid(tokens: torch.Tensor, num_prefix: int, h: int, w: int) -> torch.Tensor:
    patches = tokens[:, num_prefix:]
    assert patches.shape[1] == h * w  # the oracle itself must see the full patch set
    return patches.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def test_registered_timm_names_exist():
    assert VIT in timm.list_models(VIT)
    assert VIT_REG in timm.list_models(VIT_REG)


@pytest.mark.parametrize("img_size", [64, 96])
def test_vit_grid_is_patch_tokens_without_class_token(img_size):
    model = _vit(img_size)
    ref = copy.deepcopy(model).eval()
    feats = TimmFeatures(model, indices=(1, -1)).eval()
    x = torch.randn(2, 3, img_size, img_size)
    early, last = feats(x)
    g = img_size // 16
    assert last.shape == (2, 192, g, g) and early.shape == (2, 192, g, g)
    assert ref.num_prefix_tokens == 1  # only the class token
    # the last block of the full model goes through the final norm, the early one does not
    want_last = _tokens_to_grid(_normed_tokens(ref, x), 1, g, g)
    want_early = _tokens_to_grid(_block_tokens(ref, 1, x), 1, g, g)
    torch.testing.assert_close(last.detach(), want_last)
    torch.testing.assert_close(early.detach(), want_early)


def test_vit_with_register_tokens_drops_them():
    model = _vit(56, depth=2, name=VIT_REG)
    assert model.num_prefix_tokens == 5  # 1 class + 4 register tokens
    ref = copy.deepcopy(model).eval()
    feats = TimmFeatures(model, indices=(-1,)).eval()
    x = torch.randn(1, 3, 56, 56)
    (last,) = feats(x)
    assert last.shape == (1, 384, 4, 4)  # 56 / 14
    want = _tokens_to_grid(_normed_tokens(ref, x), 5, 4, 4)  # last block + final norm
    torch.testing.assert_close(last.detach(), want)


def test_vit_cosa_layers_last_is_normed_early_is_raw():
    # CoSA's layout on a full-depth (12-block) ViT: M† at block 9 (-3), M at block 11 (-1)
    model = _vit(64, depth=12)
    ref = copy.deepcopy(model).eval()  # same weights, unpruned
    feats = TimmFeatures(model, indices=(-3, -1)).eval()
    assert feats.indices == [9, 11] and feats.normed_index == 11
    x = torch.randn(2, 3, 64, 64)
    early, last = feats(x)
    tokens = _normed_tokens(ref, x)  # forward_features: blocks, then norm
    n = ref.num_prefix_tokens
    want_last = tokens[:, n:].transpose(1, 2).reshape(2, 192, 4, 4)
    torch.testing.assert_close(last.detach(), want_last)
    raw9 = _block_tokens(ref, 9, x)[:, n:].transpose(1, 2).reshape(2, 192, 4, 4)
    torch.testing.assert_close(early.detach(), raw9)
    # the norm matters: the raw last block is something else
    raw11 = _tokens_to_grid(_block_tokens(ref, 11, x), n, 4, 4)
    assert not torch.allclose(last.detach(), raw11, atol=1e-3)


def test_vit_final_norm_false_gives_raw_last_block():
    model = _vit(64, depth=3)
    ref = copy.deepcopy(model).eval()
    feats = TimmFeatures(model, indices=(-1,), final_norm=False).eval()
    assert feats.normed_index is None
    x = torch.randn(1, 3, 64, 64)
    (last,) = feats(x)
    torch.testing.assert_close(last.detach(), _tokens_to_grid(_block_tokens(ref, 2, x), 1, 4, 4))


def test_vit_final_norm_only_after_the_full_models_last_block():
    # block 1 of 3 is the last block kept after pruning, but not the model's final block:
    # forward_features never normalises it, so neither do we
    model = _vit(64, depth=3)
    ref = copy.deepcopy(model).eval()
    feats = TimmFeatures(model, indices=(1,)).eval()
    assert feats.normed_index is None and len(feats.model.blocks) == 2
    x = torch.randn(1, 3, 64, 64)
    (out,) = feats(x)
    torch.testing.assert_close(out.detach(), _tokens_to_grid(_block_tokens(ref, 1, x), 1, 4, 4))


def test_vit_pruning_keeps_the_final_norm():
    model = _vit(64, depth=3)
    norm = model.norm
    feats = TimmFeatures(model, indices=(0, 2))
    assert feats.model.norm is norm and isinstance(norm, torch.nn.LayerNorm)
    assert feats.model.head.__class__ is torch.nn.Identity  # the head is pruned, not the norm


def test_final_norm_passes_through_cam_extractor():
    kw = {"pretrained": False, "img_size": 64, "depth": 2}
    assert CAMExtractor(VIT, 2, **kw).features.normed_index == 1
    assert CAMExtractor(VIT, 2, final_norm=False, **kw).features.normed_index is None


@pytest.mark.parametrize(
    ("name", "kwargs", "indices"),
    [
        ("resnet18", R18, (2, -1)),
        ("efficientnet_lite0", {"pretrained": False}, (3, -1)),
        ("efficientnet_lite0", {"pretrained": False, "extra_blocks": True}, (4, 5)),
    ],
)
def test_cnn_features_unaffected_by_final_norm(name, kwargs, indices):
    kwargs = dict(kwargs)
    extra = kwargs.pop("extra_blocks", False)
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs)
    ref = copy.deepcopy(model).eval()
    on = TimmFeatures(copy.deepcopy(model), indices, extra_blocks=extra).eval()
    off = TimmFeatures(model, indices, extra_blocks=extra, final_norm=False).eval()
    assert on.normed_index is None
    x = torch.randn(2, 3, 64, 64)
    extra_kw = {"extra_blocks": True} if extra else {}
    with torch.no_grad():
        want = ref.forward_intermediates(
            x, indices=on._depth_order, intermediates_only=True, **extra_kw
        )
        got_on, got_off = on(x), off(x)
    for k, i in enumerate(on.indices):
        assert torch.equal(got_on[k], got_off[k])
        torch.testing.assert_close(got_on[k], want[on._depth_order.index(i)], rtol=0, atol=0)


def test_vit_dynamic_img_size_needs_no_code_change():
    feats = TimmFeatures(
        VIT, indices=(-1,), pretrained=False, img_size=64, depth=2, dynamic_img_size=True
    )
    assert feats(torch.randn(1, 3, 64, 64))[0].shape[-2:] == (4, 4)
    assert feats(torch.randn(1, 3, 80, 112))[0].shape[-2:] == (5, 7)


def test_vit_by_name_takes_any_input_size_and_multiscale_cams():
    from wsss_blocks import multiscale_cam

    ext = CAMExtractor(VIT, 3, early_index=-2, pretrained=False, img_size=64, depth=2)
    assert ext.features.model.dynamic_img_size  # built so, as no size was fixed by the caller
    x = torch.rand(1, 3, 64, 88)  # 88 and 0.5 * 64 = 32 ... 44: not all multiples of 16
    assert ext(x).cam.shape[-2:] == (4, 6)  # padded to whole patches: ceil(88 / 16) = 6
    cam = multiscale_cam(lambda im: ext(im).cam, x, (1.0, 0.5, 1.5), flip=True)
    assert cam.shape == (1, 3, 4, 6) and torch.isfinite(cam).all()
    fixed = TimmFeatures(VIT, indices=(-1,), pretrained=False, img_size=64, depth=2,
                         dynamic_img_size=False)  # the caller's choice is kept  # fmt: skip
    with pytest.raises(AssertionError):
        fixed(torch.rand(1, 3, 80, 80))


def test_timm_features_channels_and_negative_indices():
    feats = TimmFeatures(VIT, indices=(-3, -1), pretrained=False, img_size=64, depth=4)
    assert feats.indices == [1, 3]
    assert feats.channels == [192, 192]
    cnn = TimmFeatures("resnet18", indices=(2, -1), **R18)
    assert cnn.indices == [2, 4]
    assert cnn.channels == [128, 512]


@pytest.mark.parametrize(
    ("kwargs", "stride", "channels"),
    [({}, 32, 512), ({"output_stride": 8}, 8, 512)],
)
def test_cnn_cam_grid(kwargs, stride, channels):
    ext = CAMExtractor("resnet18", num_classes=4, **R18, **kwargs)
    out = ext(torch.randn(2, 3, 64, 64))
    g = 64 // stride
    assert out.features.shape == (2, channels, g, g)
    assert out.cam.shape == (2, 4, g, g)
    assert out.logits.shape == (2, 4)
    assert out.early_cam is None and out.early_logits is None


def test_cnn_early_layer_grid():
    ext = CAMExtractor("resnet18", num_classes=2, last_index=3, early_index=2, **R18)
    out = ext(torch.randn(2, 3, 64, 64))
    assert out.early_cam.shape == (2, 2, 8, 8)  # layer2, stride 8
    assert out.cam.shape == (2, 2, 4, 4)  # layer3, stride 16
    assert ext.early_classifier.in_channels == 128 and ext.classifier.in_channels == 256


def _eq1(features: torch.Tensor, classifier: torch.nn.Conv2d, pooling: str) -> torch.Tensor:
    """Explicit image logits for each pooling: W_fc·GMP(F), mean of the CAM, max of the CAM."""
    w = classifier.weight[:, :, 0, 0]  # (C, D)
    if pooling == "gmp":
        return features.amax((2, 3)) @ w.T
    cam = torch.einsum("bdhw,cd->bchw", features, w).flatten(2)
    return cam.mean(2) if pooling == "gap" else cam.amax(2)


@pytest.mark.parametrize("pooling", ["gmp", "gap", "cam-max"])
def test_cam_is_1x1_classifier_and_logits_follow_the_pooling(pooling):
    # (was: logits are pool_cam of the CAM for "gmp" too; CoSA's GMP pools the features)
    ext = CAMExtractor(
        VIT, 3, early_index=1, pooling=pooling, pretrained=False, img_size=64, depth=3
    ).eval()
    assert ext.classifier.bias is None and ext.early_classifier.bias is None
    x = torch.randn(2, 3, 64, 64)
    out = ext(x)
    w = ext.classifier.weight[:, :, 0, 0]  # (C, D)
    torch.testing.assert_close(out.cam, torch.einsum("bdhw,cd->bchw", out.features, w))
    torch.testing.assert_close(out.logits, _eq1(out.features, ext.classifier, pooling))
    torch.testing.assert_close(out.logits, pooled_logits(out.features, ext.classifier, pooling))
    # M† logits: the early features (not returned; read again, eval mode) and their own W
    early_feats = ext.features(x)[0]
    w_early = ext.early_classifier.weight[:, :, 0, 0]
    torch.testing.assert_close(out.early_cam, torch.einsum("bdhw,cd->bchw", early_feats, w_early))
    torch.testing.assert_close(out.early_logits, _eq1(early_feats, ext.early_classifier, pooling))
    if pooling != "gmp":
        torch.testing.assert_close(out.logits, pool_cam(out.cam, pooling))
        torch.testing.assert_close(out.early_logits, pool_cam(out.early_cam, pooling))


def test_gmp_logits_are_not_the_max_of_the_cam():
    kw = {"pretrained": False, "img_size": 64, "depth": 2}
    torch.manual_seed(0)
    gmp = CAMExtractor(VIT, 3, pooling="gmp", **kw).eval()
    cam_max = copy.deepcopy(gmp)
    cam_max.pooling = "cam-max"
    x = torch.randn(2, 3, 64, 64)
    a, b = gmp(x), cam_max(x)
    torch.testing.assert_close(a.cam, b.cam)  # same CAM ...
    assert not torch.allclose(a.logits, b.logits, atol=1e-3)  # ... different logits


def test_gmp_gradient_reaches_classifier_through_max_pooled_features():
    ext = CAMExtractor(VIT, 2, early_index=1, pretrained=False, img_size=64, depth=3).eval()
    x = torch.randn(2, 3, 64, 64)
    out = ext(x)
    (out.logits.sum() + out.early_logits.sum()).backward()
    with torch.no_grad():
        early_feats = ext.features(x)[0]
    # d(Σ_b Σ_c Z_bc)/dW[c, d] = Σ_b G_bd with G = GMP(F), the same for every class c
    for fc, feats in ((ext.classifier, out.features), (ext.early_classifier, early_feats)):
        want = feats.detach().amax((2, 3)).sum(0).expand(2, -1)
        torch.testing.assert_close(fc.weight.grad[:, :, 0, 0], want)
    assert ext.features.model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_cam_outputs_are_differentiable():
    ext = CAMExtractor(VIT, 2, early_index=1, pretrained=False, img_size=64, depth=2)
    out = ext(torch.randn(1, 3, 64, 64))
    assert out.cam.requires_grad and out.early_cam.requires_grad and out.features.requires_grad
    (out.cam.sum() + out.early_cam.sum()).backward()
    patch_w = ext.features.model.patch_embed.proj.weight
    norm_w = ext.features.model.norm.weight  # the last layer goes through the final norm
    for p in (patch_w, norm_w, ext.classifier.weight, ext.early_classifier.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_cam_extractor_accepts_a_model_instance():
    model = timm.create_model("resnet18", **R18)
    ext = CAMExtractor(model, 5, last_index=2)
    assert ext.features.model is model
    assert ext(torch.randn(2, 3, 32, 32)).cam.shape == (2, 5, 4, 4)


def test_cam_extractor_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        CAMExtractor("resnet18", 0, **R18)
    with pytest.raises(ValueError, match="pooling"):
        CAMExtractor("resnet18", 2, pooling="mean", **R18)
    ext = CAMExtractor("resnet18", 2, last_index=1, **R18)
    with pytest.raises(ValueError, match="x"):
        ext(torch.randn(3, 32, 32))


def test_timm_features_bad_input():
    with pytest.raises(ValueError, match="indices"):
        TimmFeatures("resnet18", indices=(), **R18)
    with pytest.raises(ValueError, match="model"):
        TimmFeatures(torch.nn.Linear(2, 2), indices=(0,))


@pytest.mark.parametrize("index", [3, -4, 7])
def test_timm_features_out_of_range_index_raises(index):
    with pytest.raises(ValueError, match="indices"):
        TimmFeatures(VIT, indices=(index,), pretrained=False, img_size=64, depth=3)


def test_timm_features_first_block():
    model = _vit(64, depth=3)
    ref = copy.deepcopy(model).eval()
    x = torch.randn(1, 3, 64, 64)
    (first,) = TimmFeatures(model, indices=(0,)).eval()(x)
    torch.testing.assert_close(first.detach(), _tokens_to_grid(_block_tokens(ref, 0, x), 1, 4, 4))


def test_timm_features_prunes_deeper_layers():
    vit = TimmFeatures(VIT, indices=(1,), pretrained=False, img_size=64, depth=4)
    assert len(vit.model.blocks) == 2
    cnn = TimmFeatures("resnet18", indices=(2,), **R18)
    assert sum(p.numel() for p in cnn.model.layer3.parameters()) == 0


def test_timm_features_keeps_requested_order():
    feats = TimmFeatures("resnet18", indices=(3, 2), **R18).eval()
    deep, shallow = feats(torch.randn(1, 3, 64, 64))
    assert deep.shape == (1, 256, 4, 4) and shallow.shape == (1, 128, 8, 8)


def test_cam_extractor_early_deeper_than_last():
    try:
        ext = CAMExtractor("resnet18", 2, last_index=2, early_index=3, **R18)
    except ValueError as err:  # a clear refusal is an acceptable fix too
        assert "early_index" in str(err)
        return
    out = ext.eval()(torch.randn(1, 3, 64, 64))
    assert out.cam.shape == (1, 2, 8, 8) and out.early_cam.shape == (1, 2, 4, 4)


def _lite0(**kw) -> torch.nn.Module:
    return timm.create_model("efficientnet_lite0", pretrained=False, **kw)


@pytest.mark.parametrize("output_stride", [32, 8])
def test_extra_blocks_returns_block_outputs(output_stride):
    model = _lite0(output_stride=output_stride)
    ref = copy.deepcopy(model).eval()
    seen = {}
    for k in (3, 4):
        ref.blocks[k].register_forward_hook(lambda m, i, o, k=k: seen.setdefault(k, o))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref.forward_features(x)
    # index k is the output of blocks[k - 1] (0 is the stem)
    feats = TimmFeatures(model, indices=(4, 5), extra_blocks=True).eval()
    early, last = feats(x)
    torch.testing.assert_close(early.detach(), seen[3])
    torch.testing.assert_close(last.detach(), seen[4])
    assert feats.channels == [80, 112]
    assert len(feats.model.blocks) == 5  # blocks 5 and 6 pruned


def test_extra_blocks_probe_leaves_batchnorm_statistics_alone():
    model = _lite0()
    before = copy.deepcopy(model.state_dict())
    feats = TimmFeatures(model, indices=(2, 4), extra_blocks=True)
    assert feats.training  # the probe restored the mode
    after = feats.model.state_dict()
    for k, v in after.items():
        torch.testing.assert_close(v, before[k])


def test_extra_blocks_bad_input():
    with pytest.raises(ValueError, match="extra_blocks"):
        TimmFeatures("resnet18", indices=(2,), extra_blocks=True, **R18)
    with pytest.raises(ValueError, match="indices"):
        TimmFeatures(_lite0(), indices=(8,), extra_blocks=True)

"""Saliency blocks: estimators, map folders, cache, saliency loss, CAM + saliency fusion."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from wsss_blocks.data import cached_saliency, load_saliency_maps, save_saliency_maps
from wsss_blocks.losses import saliency_loss
from wsss_blocks.pseudo_labels import fuse_cam_saliency
from wsss_blocks.saliency import border_prior_saliency, estimate_saliency, opencv_saliency
from wsss_blocks.utils import IGNORE_INDEX


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _square_on_texture(b: int = 2, size: int = 32, seed: int = 0):
    """Grey noise texture with a saturated red square in the middle; the square's mask."""
    g = _gen(seed)
    x = 0.4 + 0.2 * torch.rand(b, 1, size, size, generator=g).expand(b, 3, size, size).clone()
    fg = torch.zeros(b, size, size, dtype=torch.bool)
    lo, hi = size // 3, 2 * size // 3
    fg[:, lo:hi, lo:hi] = True
    x[:, 0][fg], x[:, 1][fg], x[:, 2][fg] = 0.9, 0.1, 0.1
    return x, fg


# --------------------------------------------------------------------------- estimators


def test_border_prior_finds_a_coloured_object_on_a_texture():
    x, fg = _square_on_texture()
    s = border_prior_saliency(x, border=2)
    assert s.shape == fg.shape and s.dtype == torch.float32
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    pred = s >= 0.5
    iou = float((pred & fg).sum() / (pred | fg).sum())
    assert iou > 0.95
    assert float(s[fg].min()) > float(s[~fg].max())


@given(seed=st.integers(0, 2**16), border=st.integers(1, 4))
def test_border_prior_range_and_flat_images(seed, border):
    x = torch.rand(2, 3, 9, 11, generator=_gen(seed))
    s = border_prior_saliency(x, border=border)
    assert float(s.min()) == 0.0 and float(s.max()) == pytest.approx(1.0)
    flat = torch.full((1, 3, 9, 11), 0.3)
    assert torch.equal(border_prior_saliency(flat, border=border), torch.zeros(1, 9, 11))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"border": 0}, "border"), ({"border": 5}, "border"), ({"border": 2.0}, "border"),
     ({"regularization": 0.0}, "regularization")],
)  # fmt: skip
def test_border_prior_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        border_prior_saliency(torch.rand(1, 3, 8, 9), **kwargs)


@pytest.mark.parametrize(
    "images, match",
    [(torch.rand(1, 1, 8, 8), "3"), (torch.rand(3, 8, 8), "4-D"),
     (torch.full((1, 3, 8, 8), 2.0), r"\[0.0, 1.0\]")],
)  # fmt: skip
def test_estimators_reject_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        border_prior_saliency(images)


def test_border_prior_beats_the_trivial_map_on_mfseg(tmp_path):
    from wsss_blocks.data.mfseg import MFSeg

    ds = MFSeg("val", root=tmp_path, num_val=16, image_size=48, cache=False)
    images, masks, _ = ds.tensors()
    fg = masks > 0
    pred = estimate_saliency(images) >= 0.3
    iou = float((pred & fg).sum() / (pred | fg).sum())
    trivial = float(fg.float().mean())  # IoU of "everything is salient"
    assert iou > 0.5 > trivial


def test_estimate_saliency_accepts_uint8_and_is_chunk_invariant():
    x = torch.randint(0, 256, (5, 3, 12, 12), generator=_gen(1), dtype=torch.uint8)
    a = estimate_saliency(x, batch_size=2)
    b = estimate_saliency(x.float() / 255, batch_size=256)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[3:4], border_prior_saliency(x[3:4].float() / 255))
    with pytest.raises(ValueError, match="method"):
        estimate_saliency(x, method="dss")
    with pytest.raises(ValueError, match="batch_size"):
        estimate_saliency(x, batch_size=0)


@pytest.mark.parametrize("method", ["spectral_residual", "fine_grained"])
def test_opencv_estimators(method):
    pytest.importorskip("cv2")
    x, _ = _square_on_texture(b=2, size=32)
    s = opencv_saliency(x, method)
    assert s.shape == (2, 32, 32)
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0 and float(s.max()) > 0.0
    torch.testing.assert_close(estimate_saliency(x, method), s)


def test_opencv_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        opencv_saliency(torch.rand(1, 3, 8, 8), "dss")


# ------------------------------------------------------------------------ folders, cache


def test_saliency_maps_round_trip_through_png(tmp_path):
    s = torch.rand(3, 10, 12, generator=_gen(0))
    names = ["a", "b", "00002"]
    save_saliency_maps(tmp_path, s, names)
    back = load_saliency_maps(tmp_path, names)
    assert back.shape == s.shape
    assert float((back - s).abs().max()) <= 0.5 / 255 + 1e-6
    resized = load_saliency_maps(tmp_path, names[::-1], size=(5, 6))
    assert resized.shape == (3, 5, 6)
    torch.testing.assert_close(resized[2], F.interpolate(back[None, :1], (5, 6), mode="bilinear",
                               antialias=True)[0, 0], atol=1e-5, rtol=0)  # fmt: skip


def test_loading_saliency_maps_reports_missing_and_mismatched_files(tmp_path):
    save_saliency_maps(tmp_path, torch.zeros(1, 4, 4), ["small"])
    save_saliency_maps(tmp_path, torch.zeros(1, 5, 5), ["large"])
    with pytest.raises(FileNotFoundError, match="'missing'"):
        load_saliency_maps(tmp_path, ["small", "missing"])
    with pytest.raises(ValueError, match="differ in size"):
        load_saliency_maps(tmp_path, ["small", "large"])
    assert load_saliency_maps(tmp_path, ["small", "large"], size=(4, 4)).shape == (2, 4, 4)
    with pytest.raises(ValueError, match="names"):
        save_saliency_maps(tmp_path, torch.zeros(2, 4, 4), ["one"])


def test_saliency_cache_computes_once_and_keys_on_parameters(tmp_path):
    x = torch.randint(0, 256, (3, 3, 16, 16), generator=_gen(2), dtype=torch.uint8)
    first, path = cached_saliency(x, root=tmp_path, border=2)
    assert path.is_file() and path.parent == tmp_path
    mtime = path.stat().st_mtime_ns
    again, path2 = cached_saliency(x, root=tmp_path, border=2)
    assert path2 == path and path.stat().st_mtime_ns == mtime
    assert torch.equal(first, again)
    direct = estimate_saliency(x, border=2)
    assert float((first - direct).abs().max()) <= 0.5 / 255 + 1e-6
    _, other = cached_saliency(x, root=tmp_path, border=3)
    _, changed = cached_saliency(x.flip(-1), root=tmp_path, border=2)
    assert len({path, other, changed}) == 3


def test_saliency_cache_uses_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_BLOCKS_CACHE", str(tmp_path))
    _, path = cached_saliency(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    assert path.parent == tmp_path / "saliency"


# ---------------------------------------------------------------------------------- loss


def test_saliency_loss_is_bce_over_valid_pixels():
    z = torch.randn(2, 1, 4, 5, generator=_gen(0), requires_grad=True)
    s = torch.rand(2, 4, 5, generator=_gen(1))
    full = saliency_loss(z, s)
    torch.testing.assert_close(full, F.binary_cross_entropy_with_logits(z[:, 0], s))
    valid = torch.rand(2, 4, 5, generator=_gen(2)) > 0.5
    masked = saliency_loss(z, s, valid)
    expected = F.binary_cross_entropy_with_logits(z[:, 0][valid], s[valid])
    torch.testing.assert_close(masked, expected)
    masked.backward()
    assert float(z.grad[:, 0][~valid].abs().max()) == 0.0
    assert float(z.grad[:, 0][valid].abs().min()) > 0.0


def test_saliency_loss_without_valid_pixels_is_zero_with_zero_gradient():
    z = torch.randn(1, 1, 3, 3, requires_grad=True)
    loss = saliency_loss(z, torch.rand(1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(z.grad.abs().max()) == 0.0


@given(seed=st.integers(0, 2**16), scale=st.floats(0.1, 50.0))
def test_saliency_loss_is_finite_and_non_negative(seed, scale):
    z = scale * torch.randn(2, 1, 3, 4, generator=_gen(seed))
    s = (torch.rand(2, 3, 4, generator=_gen(seed + 1)) > 0.5).float()
    loss = saliency_loss(z, s)
    assert math.isfinite(float(loss)) and float(loss) >= 0.0


@pytest.mark.parametrize(
    "z, s, valid, match",
    [
        (torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3), None, "1 channel"),
        (torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 4), None, "target must have shape"),
        (torch.zeros(1, 1, 3, 3), torch.full((1, 3, 3), 1.5), None, r"\[0.0, 1.0\]"),
        (torch.full((1, 1, 3, 3), math.nan), torch.zeros(1, 3, 3), None, "finite"),
        (torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3), torch.ones(1, 3, 3), "bool"),
    ],
)
def test_saliency_loss_rejects_bad_input(z, s, valid, match):
    with pytest.raises(ValueError, match=match):
        saliency_loss(z, s, valid)


# -------------------------------------------------------------------------------- fusion


@pytest.mark.parametrize(
    "cam_value, sal_value, expected",
    [(0.9, 0.9, 2), (0.1, 0.1, 0), (0.9, 0.1, IGNORE_INDEX), (0.1, 0.9, IGNORE_INDEX),
     (0.2, 0.3, 2), (0.19, 0.3, IGNORE_INDEX), (0.2, 0.29, IGNORE_INDEX)],
)  # fmt: skip
def test_fusion_truth_table(cam_value, sal_value, expected):
    cam = torch.zeros(1, 3, 1, 1)
    cam[0, 1] = cam_value  # class index 1 -> label 2
    cam[0, 0] = cam_value / 2
    sal = torch.full((1, 1, 1), sal_value)
    out = fuse_cam_saliency(cam, torch.tensor([[1.0, 1.0, 0.0]]), sal, 0.2, 0.3)
    assert out.dtype == torch.int64 and int(out) == expected


def test_fusion_never_assigns_absent_classes():
    cam = torch.zeros(1, 2, 1, 2)
    cam[0, 1] = 0.9  # a strong CAM of class 2, which the image label says is absent
    cam[0, 0, 0, 0] = 0.5
    out = fuse_cam_saliency(cam, torch.tensor([[1.0, 0.0]]), torch.ones(1, 1, 2))
    assert out.tolist() == [[[1, IGNORE_INDEX]]]


@given(seed=st.integers(0, 2**16), c=st.integers(1, 4), t_cam=st.floats(0.05, 0.95),
       t_sal=st.floats(0.05, 0.95), background=st.sampled_from(["agree", "saliency"]),
       fill=st.booleans())  # fmt: skip
def test_fusion_agrees_with_a_per_pixel_oracle(seed, c, t_cam, t_sal, background, fill):
    g = _gen(seed)
    cam = torch.rand(2, c, 3, 4, generator=g)
    labels = (torch.rand(2, c, generator=g) > 0.4).float()
    sal = torch.rand(2, 3, 4, generator=g)
    out = fuse_cam_saliency(cam, labels, sal, t_cam, t_sal, background, fill)
    for b in range(2):
        present = [k for k in range(c) if labels[b, k] == 1]
        for i in range(3):
            for j in range(4):
                nu = max((float(cam[b, k, i, j]) for k in present), default=0.0)
                cls = 1 + max(present, key=lambda k: float(cam[b, k, i, j])) if present else 1
                fg, salient = nu >= t_cam, float(sal[b, i, j]) >= t_sal
                want = cls if fg and salient else 0 if not (fg or salient) else IGNORE_INDEX
                if fill and salient and len(present) == 1:
                    want = present[0] + 1
                if background == "saliency" and not salient:
                    want = 0
                assert int(out[b, i, j]) == want


def test_fusion_variants_background_from_saliency_and_single_class_fill():
    cam = torch.tensor([[[[0.9, 0.1, 0.1]]], [[[0.9, 0.1, 0.1]]]])  # (2, 1, 1, 3)
    cam = torch.cat([cam, cam.flip(-1) * 0], dim=1)  # class 2 silent
    sal = torch.tensor([[[0.1, 0.9, 0.1]], [[0.1, 0.9, 0.1]]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # one class, then two classes
    plain = fuse_cam_saliency(cam, labels, sal)
    assert plain.tolist() == [[[IGNORE_INDEX, IGNORE_INDEX, 0]]] * 2
    bg = fuse_cam_saliency(cam, labels, sal, background="saliency")
    assert bg.tolist() == [[[0, IGNORE_INDEX, 0]]] * 2
    filled = fuse_cam_saliency(cam, labels, sal, single_class_fill=True)
    assert filled.tolist() == [[[IGNORE_INDEX, 1, 0]], [[IGNORE_INDEX, IGNORE_INDEX, 0]]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"saliency": torch.zeros(1, 2, 2)}, "saliency must have the CAM grid"),
        ({"saliency": torch.full((1, 1, 2), 2.0)}, r"\[0.0, 1.0\]"),
        ({"cam_threshold": 0.0}, "cam_threshold"),
        ({"saliency_threshold": 1.0}, "saliency_threshold"),
        ({"cam": torch.full((1, 1, 1, 2), 1.5)}, r"cam must lie in"),
        ({"labels": torch.tensor([[1.0, 1.0]])}, "labels"),
        ({"background": "cam"}, "background"),
    ],
)
def test_fusion_rejects_bad_input(kwargs, match):
    args = {"cam": torch.zeros(1, 1, 1, 2), "labels": torch.tensor([[1.0]]),
            "saliency": torch.zeros(1, 1, 2), **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=match):
        fuse_cam_saliency(**args)


def test_estimate_saliency_names_keyword_arguments_an_opencv_method_does_not_take():
    from wsss_blocks.saliency import SALIENCY_METHODS, estimate_saliency

    opencv = next(m for m in SALIENCY_METHODS if m != "border_prior")
    with pytest.raises(ValueError, match=r"takes no keyword arguments, got \['border'\]"):
        estimate_saliency(torch.zeros(1, 3, 8, 8), opencv, border=2)

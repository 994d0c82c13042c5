import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wsss_blocks.data import RANDAUG_OPS, EvalView, WeakStrongViews, apply_randaug_op


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _batch(b=4, h=24, w=20, seed=0):
    g = _gen(seed)
    images = torch.rand(b, 3, h, w, generator=g)
    masks = torch.randint(0, 5, (b, h, w), generator=g)
    return images, masks


def _coded(b=6, h=24, w=20, seed=0):
    """Images whose channel 0 encodes the mask (value / 10), plus the masks."""
    masks = torch.randint(0, 8, (b, h, w), generator=_gen(seed))
    images = torch.rand(b, 3, h, w, generator=_gen(seed + 1))
    images[:, 0] = masks / 10.0
    return images, masks


def test_shapes_dtypes_ranges():
    images, masks = _batch()
    xw, xs, m, _ = WeakStrongViews((16, 12), generator=_gen())(images, masks)
    assert xw.shape == xs.shape == (4, 3, 16, 12) and xw.dtype == xs.dtype == torch.float32
    assert m.shape == (4, 16, 12) and m.dtype == torch.int64
    for x in (xw, xs):
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(m.unique().tolist()) <= set(range(5)) | {255}


def test_identity_op_makes_strong_equal_weak():
    images, masks = _batch()
    xw, xs, _, _ = WeakStrongViews(16, ops=("identity",), generator=_gen())(images, masks)
    assert torch.equal(xw, xs)


def test_photometric_ops_change_strong_only():
    images, masks = _batch(b=8)
    plain = WeakStrongViews(16, ops=("identity",), generator=_gen(3))
    full = WeakStrongViews(16, ops=RANDAUG_OPS[1:], generator=_gen(3))
    xw1, xs1, m1, _ = plain(images, masks)
    xw2, xs2, m2, _ = full(images, masks)
    # Same draws for the geometry and the blur: weak views and masks coincide.
    assert torch.equal(xw1, xw2) and torch.equal(m1, m2)
    assert not torch.equal(xs2, xw2)


@pytest.mark.parametrize("seed", range(4))
def test_mask_aligned_with_image_at_unit_scale(seed):
    images, masks = _coded(seed=seed)
    views = WeakStrongViews((28, 16), scale=(1.0, 1.0), blur_p=0.0, ops=("identity",), fill=0.5)
    views.generator = _gen(seed)
    xw, xs, m, valid = views(images, masks)
    code = torch.round(xw[:, 0] * 10).long()
    assert torch.equal(code[valid], m[valid])
    assert (m[~valid] == 255).all()
    assert torch.equal(xw.permute(1, 0, 2, 3)[:, ~valid], torch.full((3, int((~valid).sum())), 0.5))
    assert (~valid).any() and valid.any()  # a 28-row crop of 24 rows is padded


@pytest.mark.parametrize("seed", range(4))
def test_mask_aligned_with_image_at_random_scale(seed):
    # Four constant quadrants: away from their borders the bilinear image must carry the
    # code of the nearest-sampled mask at the same pixel.
    h = w = 32
    masks = torch.zeros(4, h, w, dtype=torch.long)
    masks[:, :16, 16:], masks[:, 16:, :16], masks[:, 16:, 16:] = 1, 2, 3
    images = torch.rand(4, 3, h, w, generator=_gen(seed))
    images[:, 0] = masks / 10.0
    views = WeakStrongViews(24, scale=(0.5, 2.0), blur_p=0.0, generator=_gen(seed))
    xw, _, m, _ = views(images, masks)
    pad = torch.nn.functional.pad(m[:, None].float(), (1, 1, 1, 1), value=-1.0)
    neigh = torch.nn.functional.max_pool2d(pad, 3, 1) == -torch.nn.functional.max_pool2d(-pad, 3, 1)
    interior = neigh[:, 0] & (m != 255)
    assert interior.sum() > 100
    assert (torch.round(xw[:, 0] * 10).long()[interior] == m[interior]).all()


def test_padding_area_at_half_scale():
    images, masks = _batch(b=3, h=32, w=32)
    views = WeakStrongViews(32, scale=(0.5, 0.5), generator=_gen())
    _, _, m, _ = views(images, masks)
    assert ((m == 255).sum(dim=(1, 2)) == 32 * 32 - 16 * 16).all()


def test_flip_only_reverses_columns():
    images, masks = _batch(b=2, h=16, w=16)
    views = WeakStrongViews(16, scale=(1.0, 1.0), flip_p=1.0, blur_p=0.0, ops=("identity",))
    xw, _, m, _ = views(images, masks)
    assert torch.allclose(xw, images.flip(-1), atol=1e-6)
    assert torch.equal(m, masks.flip(-1))


def test_uint8_and_float_inputs_agree():
    images, masks = _batch()
    u8 = (images * 255).round().to(torch.uint8)
    a = WeakStrongViews(16, generator=_gen(1))(u8, masks)
    b = WeakStrongViews(16, generator=_gen(1))(u8.float() / 255, masks)
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x.float(), y.float(), atol=1e-5)


def test_generator_reproducible_and_seed_matters():
    images, masks = _batch()
    a = WeakStrongViews(16, generator=_gen(7))(images, masks)
    b = WeakStrongViews(16, generator=_gen(7))(images, masks)
    c = WeakStrongViews(16, generator=_gen(8))(images, masks)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_masks_optional_and_ignore_kept():
    images, masks = _batch()
    xw, xs, m, _ = WeakStrongViews(16)(images)
    assert m is None and xw.shape == (4, 3, 16, 16)
    masks[:, :, :] = 255
    _, _, m, _ = WeakStrongViews(16)(images, masks)
    assert (m == 255).all()


@given(seed=st.integers(0, 2**31 - 1))
def test_property_weak_strong_share_geometry(seed):
    images, masks = _coded(b=3, h=20, w=20, seed=seed % 1000)
    views = WeakStrongViews(16, blur_p=0.0, generator=_gen(seed))
    xw, xs, m, valid = views(images, masks)
    assert torch.equal(m == 255, ~valid)
    # Photometric ops act per pixel or globally, so padding stays where it was:
    # in the weak view padded pixels hold exactly the fill value.
    assert (xw.permute(1, 0, 2, 3)[:, ~valid] == 0.0).all()


@pytest.mark.parametrize("op", RANDAUG_OPS)
@pytest.mark.parametrize("magnitude", [1, 9])
def test_each_op_keeps_shape_and_range(op, magnitude):
    x = torch.rand(3, 12, 12, generator=_gen())
    for sign in (-1.0, 1.0):
        y = apply_randaug_op(x, op, magnitude, sign)
        assert y.shape == x.shape and 0.0 <= y.min() and y.max() <= 1.0
    if op == "identity":
        assert torch.equal(apply_randaug_op(x, op, 5), x)
    elif op != "equalize":
        assert not torch.equal(apply_randaug_op(x, op, 9), x)


def test_randaug_op_errors():
    x = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="op"):
        apply_randaug_op(x, "rotate", 3)
    with pytest.raises(ValueError, match="magnitude"):
        apply_randaug_op(x, "contrast", 10)


def test_eval_view():
    images, masks = _batch()
    x, m = EvalView()((images * 255).to(torch.uint8), masks.to(torch.uint8))
    assert x.dtype == torch.float32 and m.dtype == torch.int64 and x.shape == images.shape
    assert torch.equal(m, masks)
    assert EvalView()(images)[1] is None


@pytest.mark.parametrize(
    "images, masks, match",
    [
        (torch.rand(3, 8, 8), None, "4-D"),
        (torch.rand(1, 1, 8, 8), None, "3 \\(RGB\\)"),
        (torch.rand(1, 3, 8, 8) * 2, None, "images must lie in"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.int32), None, "uint8 or floating"),
        (torch.rand(1, 3, 8, 8), torch.zeros(1, 8, 8), "integer"),
        (torch.rand(1, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long), "batch"),
        (torch.rand(1, 3, 8, 8), torch.zeros(1, 8, 7, dtype=torch.long), "match"),
        (torch.rand(1, 3, 8, 8), torch.zeros(8, 8, dtype=torch.long), "3-D"),
    ],
)
def test_bad_inputs_raise(images, masks, match):
    with pytest.raises(ValueError, match=match):
        WeakStrongViews(8)(images, masks)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(crop_size=0), "crop_size"),
        (dict(crop_size=(8, 8, 8)), "crop_size"),
        (dict(scale=(2.0, 1.0)), "scale"),
        (dict(scale=(0.0, 1.0)), "scale"),
        (dict(flip_p=1.5), "flip_p"),
        (dict(blur_p=-0.1), "blur_p"),
        (dict(blur_sigma=(0.0, 1.0)), "blur_sigma"),
        (dict(ops=("rotate",)), "ops"),
        (dict(ops=()), "ops"),
        (dict(magnitude=(0, 9)), "magnitude"),
        (dict(fill=2.0), "fill"),
    ],
)
def test_bad_arguments_raise(kw, match):
    kw = {"crop_size": 8, **kw}
    with pytest.raises(ValueError, match=match):
        WeakStrongViews(**kw)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu_geometry():
    images, masks = _coded(b=4, h=24, w=24)
    kw = dict(crop_size=20, blur_p=0.0, ops=("identity",))
    cpu = WeakStrongViews(**kw, generator=_gen(5))(images, masks)
    gpu = WeakStrongViews(**kw, generator=_gen(5))(images.cuda(), masks.cuda())
    assert gpu[0].is_cuda and torch.equal(gpu[2].cpu(), cpu[2])
    assert torch.allclose(gpu[0].cpu(), cpu[0], atol=1e-5)


def test_batched_blur_matches_torchvision_per_image():
    from torchvision.transforms.v2 import functional as TF

    from wsss_blocks.data import gaussian_blur_batch

    x = torch.rand(3, 3, 20, 17, generator=_gen())
    sigmas = torch.tensor([0.3, 1.1, 2.0])
    y = gaussian_blur_batch(x, sigmas)
    k = 2 * 5 + 1  # 2 * ceil(2.5 * max sigma) + 1, the support used for all images
    for i in range(3):
        ref = TF.gaussian_blur(x[i], [k, k], [float(sigmas[i])] * 2)
        assert torch.allclose(y[i], ref, atol=1e-5)
    with pytest.raises(ValueError, match="sigmas"):
        gaussian_blur_batch(x, torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="batch"):
        gaussian_blur_batch(x, torch.ones(2))


@pytest.mark.parametrize("shape", [(3, 3, 10, 12), (2, 1, 5, 3), (2, 3, 2, 9), (0, 3, 8, 8)])
def test_sharpness_degenerate_equals_torchvision_bit_for_bit(shape):
    # The batched strong view's own sharpness blur (its kernel reaches CUDA without a
    # host wait) must stay torchvision's adjust_sharpness at factor 0.
    from torchvision.transforms.v2 import functional as TF

    from wsss_blocks.data.views import _sharpness_degenerate

    x = torch.rand(*shape, generator=_gen(3))
    x[..., 0, 0] = 1.0  # a saturated pixel: the clamp at 1 is part of the rule
    assert torch.equal(_sharpness_degenerate(x), TF.adjust_sharpness(x, 0.0))


@pytest.mark.parametrize("magnitude_map", ["torchvision", "cosa-release"])
def test_batched_randaug_matches_per_image_ops(magnitude_map):
    from wsss_blocks.data import randaug_batch

    n = 2 * len(RANDAUG_OPS)
    x = torch.rand(n, 3, 10, 12, generator=_gen())
    ops = [RANDAUG_OPS[i % len(RANDAUG_OPS)] for i in range(n)]
    mags = torch.randint(1, 10, (n,), generator=_gen(1))
    signs = torch.where(torch.rand(n, generator=_gen(2)) < 0.5, -1.0, 1.0)
    y = randaug_batch(x, ops, mags, signs, magnitude_map)
    for i in range(n):
        ref = apply_randaug_op(x[i], ops[i], int(mags[i]), float(signs[i]), magnitude_map)
        assert torch.allclose(y[i], ref, atol=1e-6), ops[i]
    with pytest.raises(ValueError, match="B=18"):
        randaug_batch(x, ops[:-1], mags, signs)
    with pytest.raises(ValueError, match="magnitudes"):
        randaug_batch(x, ops, mags * 0, signs)
    with pytest.raises(ValueError, match="ops"):
        randaug_batch(x, ["rotate"] * n, mags, signs)


def test_release_magnitude_map_hand_cases():
    # The official CoSA release (dataloaders/randaug.py): enhance factor 1.8 m / 10 + 0.1,
    # solarize threshold min(int(256 m / 10), 255) on 0..255, posterize 4 - int(4 m / 10) bits.
    x = torch.full((3, 2, 2), 0.5)
    got = apply_randaug_op(x, "brightness", 5, sign=-1.0, magnitude_map="cosa-release")
    torch.testing.assert_close(got, x * (0.18 * 5 + 0.1))  # factor 1.0: unchanged, any sign
    got = apply_randaug_op(x, "brightness", 9, magnitude_map="cosa-release")
    torch.testing.assert_close(got, (x * 1.72).clamp(0, 1))
    v = torch.tensor([[[24.0, 25.0], [229.0, 230.0]]]).expand(3, 2, 2) / 255
    sol = apply_randaug_op(v, "solarize", 1, magnitude_map="cosa-release")  # threshold 25
    torch.testing.assert_close(sol[0], torch.tensor([[24.0, 230.0], [26.0, 25.0]]) / 255)
    sol9 = apply_randaug_op(v, "solarize", 9, magnitude_map="cosa-release")  # threshold 230
    torch.testing.assert_close(sol9[0], torch.tensor([[24.0, 25.0], [229.0, 25.0]]) / 255)
    levels = {m: apply_randaug_op(torch.rand(3, 8, 8, generator=_gen(m)), "posterize", m,
                                  magnitude_map="cosa-release").mul(255).round().unique().numel()
              for m in (1, 5, 9)}  # fmt: skip
    assert levels[1] <= 16 and levels[5] <= 4 and levels[9] <= 2  # 4, 2 and 1 bits


def test_unknown_magnitude_map_is_rejected():
    from wsss_blocks.data import randaug_batch

    x, mags, signs = torch.rand(1, 3, 4, 4), torch.tensor([3]), torch.tensor([1.0])
    with pytest.raises(ValueError, match="magnitude_map"):
        randaug_batch(x, ["color"], mags, signs, magnitude_map="fixmatch")
    with pytest.raises(ValueError, match="magnitude_map"):
        WeakStrongViews(8, magnitude_map="fixmatch")


def test_views_pass_the_magnitude_map_to_the_strong_view():
    images, masks = _batch()
    a = WeakStrongViews(16, generator=_gen(3), magnitude_map="cosa-release")
    b = WeakStrongViews(16, generator=_gen(3))
    xa, sa, _, _ = a(images, masks)
    xb, sb, _, _ = b(images, masks)
    assert torch.equal(xa, xb)  # the weak view and the geometry do not depend on it
    assert not torch.equal(sa, sb)


def test_views_stay_in_unit_range_after_blur_and_solarize():
    # A blur of values in [0, 1] can round one ulp above 1, and solarize then maps that
    # to a tiny negative value; the views promise [0, 1] exactly.
    images = torch.ones(64, 3, 16, 16)
    images[:, :, ::2] = 0.999999
    views = WeakStrongViews(16, scale=(1.0, 1.0), blur_p=1.0, blur_sigma=(0.3, 2.0),
                            ops=("solarize",), generator=_gen(5))  # fmt: skip
    xw, xs, _, _ = views(images)
    assert float(xw.min()) >= 0.0 and float(xw.max()) <= 1.0
    assert float(xs.min()) >= 0.0 and float(xs.max()) <= 1.0

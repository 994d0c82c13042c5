"""Palette, label colouring and the overlay grid figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wsss_blocks.viz import colorize_labels, label_palette, save_overlay_grid


def test_palette_matches_voc_colours():
    pal = label_palette(21)
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    known = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        4: (0, 0, 128),
        8: (64, 0, 0),
        15: (192, 128, 128),
        20: (0, 64, 128),
        255: (255, 255, 255),
    }
    for k, rgb in known.items():
        assert tuple(pal[k]) == rgb, k
    assert len({tuple(c) for c in pal[:21]}) == 21  # distinct colours for VOC classes


@pytest.mark.parametrize("bad", [0, 256, -3])
def test_palette_bad_size(bad):
    with pytest.raises(ValueError, match="num_classes"):
        label_palette(bad)


def test_colorize_labels():
    labels = torch.tensor([[0, 1], [255, 2]])
    rgb = colorize_labels(labels, 3)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    want = np.array([[[0, 0, 0], [128, 0, 0]], [[255, 255, 255], [0, 128, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(rgb, want)
    with pytest.raises(ValueError, match="labels"):
        colorize_labels(torch.zeros(1, 2, 2, dtype=torch.long), 3)


@pytest.mark.parametrize("bad", [-1, 3])
def test_colorize_labels_out_of_range(bad):
    with pytest.raises(ValueError, match="labels"):
        colorize_labels(torch.tensor([[0, bad]]), 3)


def test_save_overlay_grid(tmp_path):
    b, h, w = 2, 8, 6
    images = torch.rand(b, 3, h, w)
    cams = torch.rand(b, h, w)
    cpl = torch.randint(0, 3, (b, h, w))
    cpl[0, 0, 0] = 255
    gt = torch.randint(0, 3, (b, h, w))
    path = save_overlay_grid(tmp_path / "sub" / "grid.png", images, cams, {"CPL": cpl, "GT": gt}, 3)
    assert path == tmp_path / "sub" / "grid.png" and path.exists()
    img = np.asarray(Image.open(path).convert("RGB"))
    header = img.shape[0] - b * h
    assert img.shape == (header + b * h, 4 * w, 3) and header > 0
    body = img[header:]
    for i in range(b):
        rows = body[i * h : (i + 1) * h]
        want_img = (images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        np.testing.assert_array_equal(rows[:, :w], want_img)
        pal = label_palette(3)
        np.testing.assert_array_equal(rows[:, 2 * w : 3 * w], pal[cpl[i].numpy()])
        np.testing.assert_array_equal(rows[:, 3 * w :], pal[gt[i].numpy()])
        assert not np.array_equal(rows[:, w : 2 * w], rows[:, :w])  # the heat map is drawn


def test_save_overlay_grid_bad_input(tmp_path):
    images, cams = torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4)
    lab = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="images"):
        save_overlay_grid(tmp_path / "a.png", torch.rand(3, 4, 4), cams, {}, 2)
    with pytest.raises(ValueError, match="cams"):
        save_overlay_grid(tmp_path / "a.png", images, torch.rand(1, 1, 4, 4), {}, 2)
    with pytest.raises(ValueError, match="cams"):
        save_overlay_grid(tmp_path / "a.png", images, torch.rand(1, 4, 5), {}, 2)
    with pytest.raises(ValueError, match="GT"):
        save_overlay_grid(tmp_path / "a.png", images, cams, {"CPL": lab, "GT": lab[:, :3]}, 2)
    assert not (tmp_path / "a.png").exists()


def test_the_legend_names_the_colours_shown(tmp_path):
    from PIL import Image

    labels = torch.tensor([[[0, 1], [2, 255]]])
    images = torch.rand(1, 3, 2, 2)
    plain = save_overlay_grid(tmp_path / "a.png", images, torch.rand(1, 2, 2), {"L": labels}, 3)
    named = save_overlay_grid(tmp_path / "b.png", images, torch.rand(1, 2, 2), {"L": labels}, 3,
                              class_names=["cat", "dog"])  # fmt: skip
    assert Image.open(named).height > Image.open(plain).height  # the legend's lines
    with pytest.raises(ValueError, match="class_names must have num_classes - 1 = 2"):
        save_overlay_grid(tmp_path / "c.png", images, torch.rand(1, 2, 2), {"L": labels}, 3,
                          class_names=["cat"])  # fmt: skip

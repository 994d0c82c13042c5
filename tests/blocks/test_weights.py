"""load_weights_by_position: a renamed checkpoint lands on the right (pruned) tensors."""

import pytest
import timm
import torch

from wsss_blocks import TimmFeatures
from wsss_blocks.models.weights import load_weights_by_position


def _renamed_checkpoint(tmp_path, arch="resnet18"):
    source = timm.create_model(arch, pretrained=False)
    state = {f"other_impl.{i}": v.clone() for i, v in enumerate(source.state_dict().values())}
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    return source, path


def test_loads_into_pruned_model_by_position(tmp_path):
    source, path = _renamed_checkpoint(tmp_path)
    features = TimmFeatures("resnet18", indices=(2,), pretrained=False)  # layer3+ pruned
    count = load_weights_by_position(features.model, path)
    own = features.model.state_dict()
    assert count == len(own) < len(source.state_dict())
    for key, value in own.items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_rejects_a_checkpoint_of_another_architecture(tmp_path):
    _, path = _renamed_checkpoint(tmp_path, "resnet10t")
    model = timm.create_model("resnet18", pretrained=False)
    with pytest.raises(ValueError, match="cannot be matched by position|shape"):
        load_weights_by_position(model, path)

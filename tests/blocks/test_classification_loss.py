"""Multi-label classification loss (CoSA Eq. 1) against the BCE formula."""

from __future__ import annotations

import math

import pytest
import torch

from wsss_blocks import classification_loss


def _oracle(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. (1) in float64: -mean_{b,c} [y log σ(z) + (1 - y) log(1 - σ(z))]."""
    z, y = logits.double(), labels.double()
    s = torch.sigmoid(z)
    return -(y * torch.log(s) + (1 - y) * torch.log(1 - s)).mean()


def test_hand_computed():
    loss = classification_loss(torch.tensor([[0.0, 2.0]]), torch.tensor([[1, 0]]))
    # y=1, z=0: -log σ(0) = log 2 ; y=0, z=2: -log(1 - σ(2)) = log(1 + e^2)
    want = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert math.isclose(float(loss), want, rel_tol=1e-6)
    loss = classification_loss(torch.tensor([[3.0], [-1.0]]), torch.tensor([[1], [1]]))
    want = (math.log(1 + math.exp(-3)) + math.log(1 + math.e)) / 2  # mean over the batch
    assert math.isclose(float(loss), want, rel_tol=1e-6)


def test_matches_equation_and_gradient():
    logits = (torch.randn(4, 5, dtype=torch.float64) * 3).requires_grad_(True)
    labels = (torch.rand(4, 5) > 0.5).float()
    loss = classification_loss(logits, labels)
    torch.testing.assert_close(loss, _oracle(logits.detach(), labels))
    loss.backward()
    # d/dz of mean BCE = (σ(z) - y) / (B·C)
    want = (torch.sigmoid(logits.detach()) - labels.double()) / 20
    torch.testing.assert_close(logits.grad, want)


def test_label_dtypes_agree_and_dtype_kept():
    logits = torch.randn(2, 3)
    lab = torch.tensor([[1, 0, 1], [0, 0, 1]])
    ref = classification_loss(logits, lab)
    assert ref.dtype == torch.float32 and ref.dim() == 0
    for other in (lab.bool(), lab.float(), lab.to(torch.uint8)):
        torch.testing.assert_close(classification_loss(logits, other), ref)


def test_perfect_prediction_tends_to_zero():
    labels = torch.tensor([[1, 0, 1]])
    logits = (labels * 2 - 1) * 30.0
    assert 0 <= float(classification_loss(logits.float(), labels)) < 1e-12


def test_bad_input():
    z, y = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="logits"):
        classification_loss(torch.zeros(2, 3, 1), y)
    with pytest.raises(ValueError, match="logits"):
        classification_loss(torch.zeros(2, 3, dtype=torch.long), y)
    with pytest.raises(ValueError, match="logits"):
        classification_loss(torch.tensor([[0.0, float("nan"), 1.0]] * 2), y)
    with pytest.raises(ValueError, match="logits"):
        classification_loss(torch.tensor([[0.0, float("inf"), 1.0]] * 2), y)
    with pytest.raises(ValueError, match="labels"):
        classification_loss(z, torch.ones(2, 4))
    with pytest.raises(ValueError, match="labels"):
        classification_loss(z, torch.ones(3, 3))
    with pytest.raises(ValueError, match="labels"):
        classification_loss(z, torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="labels"):
        classification_loss(z, torch.full((2, 3), -1))
    with pytest.raises(ValueError, match="labels"):
        classification_loss(z, torch.ones(2, 3, 1))

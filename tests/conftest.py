"""Shared pytest setup: a fixed torch seed per test and one hypothesis profile.

Property tests build their tensors from seeds that hypothesis draws (through a
``torch.Generator``), so a failing example replays exactly. Set
``WSSS_HYPOTHESIS_PROFILE=wsss-thorough`` for ten times more examples.
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
settings.load_profile(os.environ.get("WSSS_HYPOTHESIS_PROFILE", "wsss"))


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same torch RNG state, whatever ran before it."""
    torch.manual_seed(0)
    yield

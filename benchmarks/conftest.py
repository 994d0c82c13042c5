"""Fixtures shared by the benchmarks."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (comparable on a shared machine), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def record_fastest(benchmark):
    """A function ``record(results, key)`` storing the fastest round (s) under ``key``.

    Nothing is stored under ``--benchmark-disable``, where the benchmark has no stats.
    """

    def record(results: dict, key) -> None:
        stats = getattr(benchmark, "stats", None)
        if stats is not None:
            results[key] = stats.stats.min

    return record

"""Speed of the dynamic threshold searcher (CoSA Eq. 6) against refitting scikit-learn.

Run (one run gives all ratios; scikit-learn rounds are few because it is slow)::

    python -m pytest benchmarks/bench_threshold.py --benchmark-enable -p no:randomly \
        --benchmark-columns=min,median,mean,rounds --benchmark-sort=name

Goals (kernels.md part 2): one update + fit ≤ 1 ms for a 4×28×28 batch with K = 100 on
the CPU, ≥ 100× faster than refitting scikit-learn's GaussianMixture(2) on the same queue,
and a cost that does not grow with K. The searcher runs on one thread (as a data-loader-free
training step would call it); scikit-learn uses its defaults (tol 1e-3, k-means start), the
cheapest refit it offers. Environment variable ``WSSS_BENCH_SKLEARN_LARGE=0`` skips the
scikit-learn refit of the 8×448×448 queue (measured at K = 10 only; see that test).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from wsss_blocks.threshold import GMMThresholdSearcher

SIZES = {"4x28x28": (4, 28, 28), "8x448x448": (8, 448, 448)}
POOL = 4  # distinct batches cycled through in the timed loop


def _cam_batch(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """CAM-like max-confidence values: 70 % Beta near 0 (background), 30 % Beta near 1."""
    g = torch.Generator().manual_seed(seed)
    n = int(np.prod(shape))
    bg = torch.distributions.Beta(1.5, 12.0).sample((n,))
    fg = torch.distributions.Beta(10.0, 1.5).sample((n,))
    pick = torch.rand(n, generator=g) < 0.7
    return torch.where(pick, bg, fg).reshape(shape)


pytestmark = pytest.mark.usefixtures("one_thread")  # benchmarks/conftest.py


def _filled(shape, queue_size: int, **kw) -> tuple[GMMThresholdSearcher, list[torch.Tensor]]:
    torch.manual_seed(0)
    pool = [_cam_batch(shape, i) for i in range(POOL)]
    searcher = GMMThresholdSearcher(queue_size=queue_size, validate=False, **kw)
    for i in range(queue_size):  # a full queue: every update also evicts
        searcher.update(pool[i % POOL])
    return searcher, pool


def _cycle(searcher: GMMThresholdSearcher, pool: list[torch.Tensor]):
    state = {"i": 0}

    def step():
        state["i"] += 1
        return searcher.update(pool[state["i"] % POOL])

    return step


@pytest.mark.parametrize("size", list(SIZES))
def test_update_paper_k100(benchmark, size):
    searcher, pool = _filled(SIZES[size], 100)
    benchmark.group = f"update {size} K=100"
    xi = benchmark(_cycle(searcher, pool))
    assert 0.0 < float(xi) < 1.0


@pytest.mark.parametrize("size", list(SIZES))
def test_update_paper_validated_k100(benchmark, size):
    """validate=True adds the range check, which reads min/max back to the host."""
    searcher, pool = _filled(SIZES[size], 100)
    searcher.validate = True
    benchmark.group = f"update {size} K=100"
    benchmark(_cycle(searcher, pool))


def test_update_cosa_code_k100(benchmark):
    """Official rule: 3 components restarted each update, up to 100 EM steps (tol 1e-3)."""
    searcher, pool = _filled(SIZES["4x28x28"], 100, policy="cosa-code")
    benchmark.group = "update 4x28x28 K=100"
    benchmark(_cycle(searcher, pool))


@pytest.mark.parametrize("queue_size", [10, 100, 1000])
def test_update_paper_queue_size(benchmark, queue_size):
    searcher, pool = _filled(SIZES["4x28x28"], queue_size)
    benchmark.group = "update 4x28x28 vs K"
    benchmark(_cycle(searcher, pool))


@pytest.mark.parametrize("size, queue_size", [("4x28x28", 100), ("8x448x448", 10)])
def test_sklearn_refit(benchmark, size, queue_size):
    """scikit-learn refit on the queue the searcher holds. For 8×448×448 only K = 10
    (1.6·10^7 values, ~31 s, 2.3 GB peak) is measured: K = 100 would need ~20 GB and
    several minutes here, so the ratio against it is a lower bound."""
    if size == "8x448x448" and os.environ.get("WSSS_BENCH_SKLEARN_LARGE", "1") == "0":
        pytest.skip("WSSS_BENCH_SKLEARN_LARGE=0")
    shape = SIZES[size]
    torch.manual_seed(0)
    pool = [_cam_batch(shape, i).reshape(-1).double().numpy() for i in range(POOL)]
    queue = np.concatenate([pool[i % POOL] for i in range(queue_size)])[:, None]
    benchmark.group = f"sklearn refit {size} K={queue_size}"
    rounds = 3 if size == "4x28x28" else 1

    def refit():
        return GaussianMixture(2, random_state=0).fit(queue)

    gm = benchmark.pedantic(refit, rounds=rounds, iterations=1, warmup_rounds=0)
    assert gm.converged_


def test_sklearn_official_rule_refit(benchmark):
    """The official ``rungmm(queue, modal=3)`` refit on the 4×28×28, K = 100 queue: the
    scikit-learn counterpart of the ``"cosa-code"`` policy."""
    torch.manual_seed(0)
    pool = [_cam_batch(SIZES["4x28x28"], i).reshape(-1).double().numpy() for i in range(POOL)]
    queue = np.concatenate([pool[i % POOL] for i in range(100)])
    benchmark.group = "sklearn refit 4x28x28 K=100"

    def refit():
        kept = queue[queue > 0.05][:, None]
        gm = GaussianMixture(
            3,
            weights_init=[1 / 3] * 3,
            means_init=[[kept.min()], [np.median(kept)], [kept.max()]],
            precisions_init=[[[1.0]]] * 3,
        )
        labels = gm.fit_predict(kept)
        return kept[labels == 0].max(), kept[labels == 2].min()

    low, high = benchmark.pedantic(refit, rounds=3, iterations=1, warmup_rounds=0)
    assert low <= high

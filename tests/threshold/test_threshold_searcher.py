"""Behaviour of GMMThresholdSearcher: queue bookkeeping, policies, edge cases, state, no sync."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import wsss_blocks.gmm as gmm_module
from wsss_blocks.gmm import em_fit_histogram, gmm_crossing, hard_split_bounds
from wsss_blocks.threshold import (
    GMMThresholdSearcher,
    _histogram_histc,
    _histogram_index_put,
    unit_histogram,
)


def _bimodal(n: int, seed: int, lo=0.2, hi=0.75, share=0.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n_lo = int(n * share)
    x = torch.cat(
        (lo + 0.07 * torch.randn(n_lo, generator=g), hi + 0.08 * torch.randn(n - n_lo, generator=g))
    )
    return x[(x >= 0) & (x <= 1)]


# ---------------------------------------------------------------- histogram


def test_threshold_unit_histogram_matches_numpy_and_counts_invalid():
    g = torch.Generator().manual_seed(1)
    v = torch.rand(5000, generator=g)
    v[:3] = torch.tensor([0.0, 1.0, 0.5])
    bad = torch.tensor([-0.1, 1.5, float("nan"), float("inf")])
    h = unit_histogram(torch.cat((v, bad)), 64)
    ref, _ = np.histogram(v.numpy(), bins=64, range=(0.0, 1.0))
    assert h.dtype == torch.int64 and h.shape == (65,)
    assert h[:-1].tolist() == ref.tolist()
    assert int(h[-1]) == 4


def test_threshold_unit_histogram_dtypes_and_all_three_implementations_agree():
    """CPU bincount, the CUDA histc path and the deterministic index_put path (run on the CPU
    here) give the same counts, invalid slot included."""
    v = torch.rand(3000, generator=torch.Generator().manual_seed(2))
    v = torch.cat((v, torch.tensor([0.0, 1.0, -0.5, 1.5, float("nan"), float("-inf")])))
    ref = unit_histogram(v, 32)
    assert int(ref[-1]) == 4 and int(ref.sum()) == v.numel()
    assert torch.equal(_histogram_histc(v, 32), ref)
    assert torch.equal(_histogram_index_put(v, 32), ref)
    assert torch.equal(unit_histogram(v.double(), 32), ref)
    assert int(unit_histogram(v.half(), 32)[:-1].sum()) == 3002
    with pytest.raises(ValueError, match="floating-point"):
        unit_histogram(torch.ones(3, dtype=torch.int64), 8)


# ---------------------------------------------------------------- queue


def test_threshold_ring_total_is_histogram_of_last_k_batches():
    k, bins = 5, 128
    searcher = GMMThresholdSearcher(queue_size=k, bins=bins)
    batches = [torch.rand(3, 7, generator=torch.Generator().manual_seed(i)) for i in range(12)]
    for step, b in enumerate(batches, start=1):
        searcher.update(b)
        window = torch.cat([x.reshape(-1) for x in batches[max(0, step - k) : step]])
        assert searcher.histogram()[0].tolist() == unit_histogram(window, bins)[:-1].tolist()
    assert searcher.num_updates == 12


def test_threshold_queue_fit_equals_fit_of_concatenated_window():
    """The running total makes the queue fit identical to a fit of the K batches at once."""
    batches = [_bimodal(500, seed) for seed in range(8)]
    queued = GMMThresholdSearcher(queue_size=3, init_iters=400, em_iters=400)
    for b in batches:
        queued.update(b)
    once = GMMThresholdSearcher(queue_size=1, init_iters=400)
    once.update(torch.cat(batches[-3:]))
    for a, b in zip(queued.mixture(), once.mixture(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(queued.threshold, once.threshold, atol=1e-6, rtol=0)


def test_threshold_initial_value_before_any_batch_and_cold_start():
    searcher = GMMThresholdSearcher(initial_threshold=0.37)
    assert searcher.threshold.dim() == 0 and float(searcher.threshold) == pytest.approx(0.37)
    assert [float(b) for b in searcher.bounds] == pytest.approx([0.37, 0.37])
    assert int(searcher.histogram()[0].sum()) == 0
    xi = searcher.update(_bimodal(2000, 0))  # one batch of K = 100: fit what is there
    assert 0.4 < float(xi) < 0.6 and searcher.num_updates == 1


def test_threshold_warm_start_tracks_a_converged_fit_on_a_drifting_stream():
    """The default 5 warm-started EM steps per update stay within 1/bins of a converged fit."""
    searcher = GMMThresholdSearcher(queue_size=20, validate=False)
    for step in range(60):
        f = step / 60
        searcher.update(_bimodal(1500, step, lo=0.15 + 0.1 * f, hi=0.6 + 0.25 * f))
        if step % 15 == 14:
            ref = GMMThresholdSearcher(queue_size=1, init_iters=2000)
            ref.update(torch.repeat_interleave(searcher.centres, searcher.total).float())
            assert abs(float(searcher.threshold) - float(ref.threshold)) < 1 / searcher.bins
            torch.testing.assert_close(searcher.mixture()[1], ref.mixture()[1], atol=1e-3, rtol=0)


def test_threshold_cost_structure_is_independent_of_queue_size():
    """Same data, K = 10 or 1000: the fit only sees the running total, so results agree."""
    small, large = GMMThresholdSearcher(queue_size=10), GMMThresholdSearcher(queue_size=1000)
    for seed in range(10):
        b = _bimodal(300, seed)
        torch.testing.assert_close(small.update(b), large.update(b))


# ---------------------------------------------------------------- EMA and policies


def test_threshold_ema_smoothing_follows_official_update_rule():
    """ξ ← d·ξ + (1 − d)·ξ_fit from the initial value, as the official EMAtracker."""
    data = _bimodal(3000, 3)
    plain = GMMThresholdSearcher(initial_threshold=0.5)
    smooth = GMMThresholdSearcher(initial_threshold=0.5, ema_decay=0.9)
    expected = 0.5
    for _ in range(3):
        xi_fit = float(plain.update(data))  # EMA does not feed back into EM: same fits
        smooth.update(data)
        expected = 0.9 * expected + 0.1 * xi_fit
    assert float(smooth.threshold) == pytest.approx(expected, abs=1e-6)
    assert abs(float(smooth.threshold) - xi_fit) > 0.001  # smoothing is doing something
    assert float(smooth.fitted_bounds[0]) == pytest.approx(xi_fit, abs=1e-6)


def test_threshold_cosa_code_policy_gives_ordered_dual_bounds():
    g = torch.Generator().manual_seed(4)
    x = torch.cat(
        (
            0.02 * torch.rand(3000, generator=g),  # filtered out (≤ 0.05)
            (0.3 + 0.05 * torch.randn(2000, generator=g)).clamp(0.06, 1),
            (0.85 + 0.05 * torch.randn(2000, generator=g)).clamp(0, 1),
        )
    )
    searcher = GMMThresholdSearcher(policy="cosa-code")
    xi = searcher.update(x)
    low, high = searcher.bounds
    assert 0.05 < float(low) <= float(high) < 1.0
    assert float(xi) == pytest.approx((float(low) + float(high)) / 2, abs=1e-6)
    assert searcher.mixture()[0].shape == (3,)


def test_threshold_paper_bounds_both_equal_xi():
    searcher = GMMThresholdSearcher()
    xi = searcher.update(_bimodal(2000, 5))
    low, high = searcher.bounds
    assert float(low) == float(high) == pytest.approx(float(xi))


# ---------------------------------------------------------------- degenerate queues


def test_threshold_all_equal_queue_gives_that_value():
    searcher = GMMThresholdSearcher(bins=1024)
    xi = searcher.update(torch.full((4, 8, 8), 0.3))
    assert torch.isfinite(xi) and abs(float(xi) - 0.3) <= 1 / 1024
    pi, mu, var = searcher.mixture()
    assert torch.isfinite(torch.cat((pi, mu, var))).all()


@given(
    seed=st.integers(0, 2**31 - 1),
    centre=st.floats(0.1, 0.9),
    spread=st.floats(0.005, 0.2),
    policy=st.sampled_from(["paper", "cosa-code"]),
)
def test_threshold_unimodal_queue_threshold_lies_in_data_range(seed, centre, spread, policy):
    g = torch.Generator().manual_seed(seed)
    x = (centre + spread * torch.randn(2000, generator=g)).clamp(0.06, 1.0)
    searcher = GMMThresholdSearcher(policy=policy)
    xi = float(searcher.update(x))
    assert math.isfinite(xi)
    assert float(x.min()) - 1 / 1024 <= xi <= float(x.max()) + 1 / 1024
    assert torch.isfinite(torch.cat(searcher.mixture())).all()


def test_threshold_empty_batches_keep_the_previous_state():
    searcher = GMMThresholdSearcher(queue_size=2, initial_threshold=0.4)
    assert float(searcher.update(torch.empty(0))) == pytest.approx(0.4)
    xi = float(searcher.update(_bimodal(1000, 6)))
    xi_queued = float(searcher.update(torch.empty(0)))  # one batch still queued: EM goes on
    assert xi_queued == pytest.approx(xi, abs=1e-3)
    assert float(searcher.update(torch.empty(0))) == xi_queued  # queue empty: ξ kept exactly
    assert int(searcher.histogram()[0].sum()) == 0


def test_threshold_cosa_code_all_values_filtered_keeps_state():
    searcher = GMMThresholdSearcher(policy="cosa-code", initial_bounds=(0.3, 0.6))
    searcher.update(torch.full((100,), 0.01))
    assert [float(b) for b in searcher.bounds] == pytest.approx([0.3, 0.6])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf")])
def test_threshold_invalid_values_raise_when_validating(bad):
    x = torch.rand(10)
    x[3] = bad
    with pytest.raises(ValueError, match="values"):
        GMMThresholdSearcher().update(x)


def test_threshold_without_validation_invalid_values_are_skipped_and_counted():
    x = _bimodal(2000, 7)
    dirty = torch.cat((x, torch.tensor([float("nan"), -1.0, 2.0])))
    ref, fast = GMMThresholdSearcher(), GMMThresholdSearcher(validate=False)
    torch.testing.assert_close(fast.update(dirty), ref.update(x))
    assert int(fast.invalid_count) == 3 and int(ref.invalid_count) == 0


def test_threshold_rejects_non_float_values_and_bad_arguments():
    with pytest.raises(ValueError, match="floating-point"):
        GMMThresholdSearcher().update(torch.ones(4, dtype=torch.int64))
    for kwargs in (
        {"policy": "otsu"},
        {"queue_size": 0},
        {"bins": 1},
        {"ema_decay": 1.0},
        {"initial_threshold": 1.5},
        {"em_iters": 0},
        {"policy": "cosa-code", "initial_bounds": (0.7, 0.2)},
        {"initial_bounds": (0.3, 0.6)},  # policy "paper" has one threshold
        {"tol": -1.0},
        {"reg_covar": 0.0},
        {"ema_decay": True},
    ):
        with pytest.raises(ValueError):
            GMMThresholdSearcher(**kwargs)


# ---------------------------------------------------------------- state and devices


def test_threshold_state_dict_round_trip_continues_identically():
    a = GMMThresholdSearcher(queue_size=4, ema_decay=0.5)
    for seed in range(6):
        a.update(_bimodal(500, seed))
    b = GMMThresholdSearcher(queue_size=4, ema_decay=0.5)
    b.load_state_dict(a.state_dict())
    assert b.num_updates == 6
    for seed in range(6, 10):  # includes evictions of restored batches
        torch.testing.assert_close(a.update(_bimodal(500, seed)), b.update(_bimodal(500, seed)))
    assert torch.equal(a.total, b.total)


def test_threshold_load_state_dict_refuses_other_configuration():
    sd = GMMThresholdSearcher(queue_size=4, bins=64).state_dict()
    with pytest.raises((ValueError, RuntimeError)):
        GMMThresholdSearcher(queue_size=4, bins=128).load_state_dict(sd)
    with pytest.raises(ValueError, match="policy"):
        GMMThresholdSearcher(queue_size=4, bins=64, policy="cosa-code").load_state_dict(sd)


def test_threshold_state_follows_to_and_returns_on_value_device():
    searcher = GMMThresholdSearcher().to("cpu")
    xi = searcher.update(_bimodal(500, 8))
    assert xi.device.type == "cpu" and xi.dtype == torch.float32 and xi.dim() == 0
    assert all(
        t.device.type == "cpu"
        for t in searcher.state_dict().values()
        if isinstance(t, torch.Tensor)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_threshold_cuda_update_does_not_synchronise():
    searcher = GMMThresholdSearcher(validate=False).cuda()
    x = _bimodal(4000, 9).cuda()
    searcher.update(x)  # first call: allocations, cold start
    torch.cuda.set_sync_debug_mode("error")
    try:
        xi = searcher.update(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = GMMThresholdSearcher()
    ref.update(x.cpu())
    ref.update(x.cpu())
    assert xi.is_cuda and abs(float(xi) - float(ref.threshold)) < 1e-5


@pytest.mark.parametrize("policy", ["paper", "cosa-code"])
def test_threshold_update_path_has_no_host_reads(monkeypatch, policy):
    """With validate=False nothing in update reads a tensor back to Python."""
    # The CPU-only early exit of EM with a tolerance reads a CPU flag; off, the path is the
    # one accelerators run.
    monkeypatch.setattr(gmm_module, "_CPU_EARLY_EXIT", False)
    searcher = GMMThresholdSearcher(validate=False, policy=policy)
    searcher.update(_bimodal(1000, 10))

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation in the update path")

    x = _bimodal(1000, 11)
    for name in (
        "item",
        "tolist",
        "numpy",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "nonzero",
        "cpu",
    ):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    monkeypatch.setattr(torch, "nonzero", forbidden)
    xi = searcher.update(x)
    monkeypatch.undo()
    assert math.isfinite(float(xi))


# ---------------------------------------------------------------- math helpers


def _mixture(draw):
    w = draw(st.floats(0.05, 0.95))
    m1, m2 = sorted((draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0))))
    s1, s2 = draw(st.floats(0.01, 0.3)), draw(st.floats(0.01, 0.3))
    return w, m1, m2, s1, s2


@given(st.data())
def test_threshold_crossing_equalises_weighted_densities_or_falls_back(data):
    w, m1, m2, s1, s2 = _mixture(data.draw)
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    xi = float(gmm_crossing(t(w, 1 - w), t(m1, m2), t(s1**2, s2**2)))

    def f(x):  # log fg − log bg weighted density
        return (math.log(1 - w) - math.log(s2) - 0.5 * ((x - m2) / s2) ** 2) - (
            math.log(w) - math.log(s1) - 0.5 * ((x - m1) / s1) ** 2
        )

    assert m1 - 1e-12 <= xi <= m2 + 1e-12
    grid = np.linspace(m1, m2, 2001)
    values = np.array([f(x) for x in grid])
    if m2 - m1 > 1e-9 and values[0] < 0 < values[-1]:
        # f turns from bg to fg exactly at ξ (the Eq. 6 hard-split optimum)
        assert abs(f(xi)) < 1e-6 * max(1.0, abs(values).max())
        eps = 1e-6 * (m2 - m1)
        assert f(xi - eps) < f(xi + eps)
    elif not np.any(np.diff(np.sign(values)) > 0):
        assert xi == pytest.approx(0.5 * (m1 + m2))  # no bg→fg crossing: midpoint


def test_threshold_crossing_is_symmetric_in_component_order():
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    a = gmm_crossing(t(0.3, 0.7), t(0.2, 0.7), t(0.05**2, 0.1**2))
    b = gmm_crossing(t(0.7, 0.3), t(0.7, 0.2), t(0.1**2, 0.05**2))
    assert float(a) == pytest.approx(float(b))


def test_threshold_em_monotone_likelihood_and_tol_freezes():
    x = _bimodal(5000, 12).double()
    bins = 256
    w = unit_histogram(x, bins)[:-1].double()
    c = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    start = (
        torch.tensor([0.5, 0.5]).double(),
        torch.tensor([0.4, 0.5]).double(),
        torch.tensor([0.04, 0.04]).double(),
    )

    def loglik(pi, mu, var):
        dens = (
            pi[:, None]
            * torch.exp(-0.5 * (c - mu[:, None]) ** 2 / var[:, None])
            / torch.sqrt(2 * math.pi * var[:, None])
        ).sum(0)
        return float((w * torch.log(dens)).sum())

    values = [loglik(*em_fit_histogram(w, c, *start, iters=i)) for i in range(0, 30, 3)]
    # EM never lowers the likelihood (up to the tiny reg_covar term, a MAP-like nudge)
    assert all(b >= a - 1e-6 * abs(a) for a, b in zip(values[:-1], values[1:], strict=True))
    loose = em_fit_histogram(w, c, *start, iters=500, tol=1e-2)
    full = em_fit_histogram(w, c, *start, iters=500)
    assert not torch.allclose(loose[1], full[1], atol=1e-4)  # stopped early
    assert torch.equal(em_fit_histogram(w, c, *start, iters=800, tol=1e-2)[1], loose[1])


def test_threshold_hard_split_bounds_follow_assignment():
    c = (torch.arange(100, dtype=torch.float64) + 0.5) / 100
    w = torch.ones(100, dtype=torch.float64)
    d = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    low, high = hard_split_bounds(w, c, d(1, 1, 1) / 3, d(0.2, 0.5, 0.8), d(1e-3, 1e-3, 1e-3))
    assert float(low) == pytest.approx(0.345) and float(high) == pytest.approx(0.655)
    w[:40] = 0  # empty lowest cluster: low falls back to the data minimum
    low, _ = hard_split_bounds(w, c, d(1, 1, 1) / 3, d(0.2, 0.5, 0.8), d(1e-3, 1e-3, 1e-3))
    assert float(low) == pytest.approx(0.405)


def test_threshold_cpu_early_exit_gives_the_frozen_result(monkeypatch):
    x = _bimodal(4000, 13)
    early = GMMThresholdSearcher(policy="cosa-code")
    early.update(x)
    monkeypatch.setattr(gmm_module, "_CPU_EARLY_EXIT", False)
    full = GMMThresholdSearcher(policy="cosa-code")
    full.update(x)
    for a, b in zip(early.mixture(), full.mixture(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(early.smoothed_bounds, full.smoothed_bounds)

"""Dynamic foreground/background threshold ξ from a GMM fitted to a queue of CAM values.

CoSA (Yang et al., ECCV 2024, Eq. 6) picks the CPL threshold ξ by fitting a two-component
Gaussian mixture to the assignment network's per-pixel max-CAM values over the last K
batches (K = 100). Refitting scikit-learn on ~10^6 values costs seconds per step, so here
the queue is a ring of K per-batch histograms on the unit interval with a running total
(add the new batch, subtract the evicted one: O(batch) per step, independent of K), and EM
runs on the bin centres with the counts as weights, in float64, warm-started from the last
fit, on the tensors' device and without host synchronisation.

Binning replaces each value by its bin centre, which inflates every component's variance by
about ``h²/12`` (h the bin width; Sheppard's correction). EM runs on the binned data as is,
and the reported variances subtract ``h²/12``, so they estimate the variances a fit to the
raw values would give. The EM engine and the thresholds a fit implies are
:mod:`wsss_blocks.gmm`; this module holds the queue of histograms and the searcher.

Design notes: ``docs/threshold.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._checks import check_float, check_int, check_interval, check_range, check_tensor
from .gmm import (
    _design,
    _em,
    _gmm_crossing,
    _init_median_split,
    _init_min_median_max,
    hard_split_bounds,
    sheppard_variances,
)

__all__ = ["POLICIES", "GMMThresholdSearcher", "unit_histogram"]

POLICIES = ("paper", "cosa-code")
_RESTART_EVERY = 10  # updates between checks for a dead mixture component (paper policy)


def unit_histogram(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Count values in ``bins`` equal bins on [0, 1], plus one slot for invalid values.

    Bin ``i`` holds ``i/bins <= v < (i+1)/bins``; the last bin also holds ``v == 1``.
    Values outside [0, 1], NaN and ±inf are not binned; they are counted in the extra last
    slot, so nothing is silently clamped and the count needs no host synchronisation.

    Args:
        values: float tensor of any shape (N values in all).
        bins: number of bins, ≥ 2.
    Returns:
        (bins + 1,) int64 on ``values.device``: counts per bin, then the invalid count.
    Raises:
        ValueError: if ``values`` is not a floating-point tensor.
    Example:
        >>> unit_histogram(torch.tensor([0.0, 0.3, 1.0, 2.0, float("nan")]), 4).tolist()
        [1, 1, 0, 1, 2]
    """
    check_tensor("values", values)
    check_float("values", values)
    flat = values.detach().reshape(-1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    if flat.device.type == "cpu":
        # bincount is a serial loop on the CPU; histc splits even a few thousand values
        # across threads, and the hand-off costs milliseconds when the cores are busy.
        return torch.bincount(_bin_index(flat, bins), minlength=bins + 1)
    if torch.are_deterministic_algorithms_enabled():
        return _histogram_index_put(flat, bins)  # histc on CUDA is flagged non-deterministic
    return _histogram_histc(flat, bins)  # CUDA bincount would read its output size back


def _bin_index(flat: torch.Tensor, bins: int) -> torch.Tensor:
    """floor(v·bins) per value (v = 1 joins the last bin); ``bins`` for invalid values."""
    valid = (flat >= 0) & (flat <= 1)  # False for NaN
    idx = (flat * bins).to(torch.int64).clamp_(0, bins - 1)
    return torch.where(valid, idx, bins)


def _histogram_index_put(flat: torch.Tensor, bins: int) -> torch.Tensor:
    """Same counts as :func:`unit_histogram` with an accumulating (deterministic) index_put."""
    idx = _bin_index(flat, bins)
    out = torch.zeros(bins + 1, dtype=torch.int64, device=flat.device)
    return out.index_put_((idx,), torch.ones_like(idx), accumulate=True)


def _histogram_histc(flat: torch.Tensor, bins: int) -> torch.Tensor:
    """Same counts as :func:`unit_histogram` with ``histc`` (skips out-of-range and NaN)."""
    if flat.numel() >= 2**24:  # histc's float counts are exact up to 2**24 per bin
        flat = flat.double()
    counts = torch.histc(flat, bins=bins, min=0.0, max=1.0).to(torch.int64)
    return torch.cat((counts, (flat.numel() - counts.sum()).reshape(1)))


class GMMThresholdSearcher(nn.Module):
    """Dynamic CPL threshold ξ: a GMM fitted by EM to a queue of K per-batch histograms.

    Per :meth:`update` the batch's values are binned into ``bins`` bins on [0, 1]
    (O(batch)); under ``torch.distributed`` the histogram is all-reduced (summed) over ranks
    first, so every rank gets the same ξ. It enters a ring of ``queue_size`` histograms whose
    running total gains the new one and loses the evicted one (O(bins), independent of K).
    EM (float64) then runs ``em_iters`` steps on the total, warm-started from the previous
    fit (``init_iters`` steps from a data-driven start on the first update), and ξ is derived
    from the fit, optionally smoothed by an EMA:
    ξ ← d·ξ + (1 − d)·ξ_fit (d = ``ema_decay``; the official code uses 0.99).

    Policies:

    * ``"paper"`` (Eq. 6): 2 components; ξ* where π_fg N(ξ|fg) = π_bg N(ξ|bg) between the
      means (:func:`~wsss_blocks.gmm.gmm_crossing`), midpoint fallback. ``bounds`` = (ξ, ξ).
    * ``"cosa-code"`` (official release): values ≤ ``filter_threshold`` (0.05) dropped (bins
      whose centre is ≤ it), 3 components started at min/median/max with weights 1/3 and
      variance 1; ``bounds`` = (max of the lowest cluster, min of the highest cluster)
      (:func:`~wsss_blocks.gmm.hard_split_bounds`), each smoothed by the EMA; ξ = their midpoint.

    Keep one instance per CAM stream (M and M†). The module's state (the ring, the running
    total, the fit and ξ) lives in buffers: ``.to(device)``, ``state_dict`` and
    ``load_state_dict`` carry it, and :meth:`update` moves it to the values' device if
    needed. Keep the searcher out of ``.half()``/``.to(dtype)`` casts, which would lower its
    float64 state (it still works, less precisely).

    Host synchronisation: none in :meth:`update` when ``validate=False``. ``validate=True``
    (the default) checks that the values lie in [0, 1] and are finite, raising
    :class:`ValueError` otherwise, which reads a min/max back to the host. With
    ``validate=False`` such values are skipped (not clamped) and counted in
    ``invalid_count``. (On CPU tensors, EM with a ``tol`` may stop early by reading its
    convergence flag, which is plain memory there; accelerators never read anything back.)

    Args:
        queue_size: K, number of batches in the queue (paper: 100), ≥ 1.
        bins: histogram bins on [0, 1], ≥ 2; the fit's resolution is about 1/bins.
        policy: ``"paper"`` or ``"cosa-code"``.
        ema_decay: d in [0, 1); 0 disables smoothing.
        initial_threshold: ξ before any update (and the EMA's start), in [0, 1].
        em_iters: EM steps per update, ≥ 1; default 5 for ``"paper"`` (warm-started, so
            a few steps track the slowly changing queue) and 100 for ``"cosa-code"`` (the
            official ``max_iter``, restarting every update).
        init_iters: EM steps on the first update when warm-starting, ≥ 0.
        validate: check values (needs a host sync); see above.
        initial_bounds: ``"cosa-code"`` start of (low, high); default (ξ₀, ξ₀). Passing it
            with policy ``"paper"`` (one threshold) is an error.
        filter_threshold: ``"cosa-code"`` drops values ≤ this, in [0, 1).
        reg_covar: variance floor, as scikit-learn's ``reg_covar`` (1e-6).
        warm_start: if False, restart EM from the policy's start on every update, running
            ``em_iters`` steps (the official code's behaviour). Default: True for
            ``"paper"``, False for ``"cosa-code"``, whose 3-component fit of bimodal data has
            several local optima, so a warm start would make ξ depend on the path taken.
        tol: freeze EM once the mean log-likelihood changes by less than ``tol`` (as
            scikit-learn, still without a host sync); default None (all ``em_iters`` steps)
            for ``"paper"`` and 1e-3 (scikit-learn's default, used by the official code)
            for ``"cosa-code"``; 0 runs all steps. On CPU tensors EM then stops as soon
            as it is frozen (checked every 4 steps; no device to synchronise with).
        sync_distributed: all-reduce each batch's histogram when torch.distributed is
            initialised.
        process_group: the group for that all-reduce (default: the world).
    Raises:
        ValueError: for an unknown policy, an argument out of range, or ``initial_bounds``
            with policy ``"paper"``.
    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> bg = torch.rand(700, generator=g) * 0.3          # background CAM values
        >>> fg = 0.6 + torch.rand(300, generator=g) * 0.4    # foreground CAM values
        >>> searcher = GMMThresholdSearcher(queue_size=100, bins=1024)
        >>> float(searcher.threshold)
        0.5
        >>> xi = searcher.update(torch.cat((bg, fg)).reshape(1, 10, 100))
        >>> xi.shape, xi.dtype, 0.3 < float(xi) < 0.6
        (torch.Size([]), torch.float32, True)

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (6) and Sec. 4 (queue of 100 batches).
    """

    def __init__(
        self,
        queue_size: int = 100,
        bins: int = 1024,
        policy: str = "paper",
        ema_decay: float = 0.0,
        initial_threshold: float = 0.5,
        em_iters: int | None = None,
        init_iters: int = 200,
        validate: bool = True,
        *,
        initial_bounds: tuple[float, float] | None = None,
        filter_threshold: float = 0.05,
        reg_covar: float = 1e-6,
        warm_start: bool | None = None,
        tol: float | None = None,
        sync_distributed: bool = True,
        process_group: Any = None,
    ) -> None:
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        check_int("queue_size", queue_size, 1)
        check_int("bins", bins, 2)
        cosa = policy == "cosa-code"
        if em_iters is None:
            em_iters = 100 if cosa else 5
        if warm_start is None:
            warm_start = not cosa
        if tol is None and cosa:
            tol = 1e-3
        check_int("em_iters", em_iters, 1)
        if tol is not None:
            check_interval("tol", tol, 0.0, float("inf"))
        check_int("init_iters", init_iters, 0)
        check_interval("ema_decay", ema_decay, 0.0, 1.0, right_open=True)
        check_interval("initial_threshold", initial_threshold, 0.0, 1.0)
        check_interval("filter_threshold", filter_threshold, 0.0, 1.0, right_open=True)
        check_interval("reg_covar", reg_covar, 0.0, 1.0, left_open=True, right_open=True)
        if initial_bounds is None:
            initial_bounds = (initial_threshold, initial_threshold)
        elif not cosa:
            raise ValueError(
                f"initial_bounds applies to policy 'cosa-code' only (policy 'paper' has one "
                f"threshold: set initial_threshold), got initial_bounds={initial_bounds!r}"
            )
        if len(initial_bounds) != 2 or not 0 <= initial_bounds[0] <= initial_bounds[1] <= 1:
            raise ValueError(
                f"initial_bounds must be (low, high) with 0 <= low <= high <= 1, "
                f"got {initial_bounds!r}"
            )
        self.queue_size = queue_size
        self.bins = bins
        self.policy = policy
        self.ema_decay = float(ema_decay)
        self.em_iters = em_iters
        self.init_iters = init_iters
        self.validate = validate
        self.filter_threshold = float(filter_threshold)
        self.reg_covar = float(reg_covar)
        self.warm_start = bool(warm_start)
        self.tol = None if tol is None else float(tol)
        self.sync_distributed = sync_distributed
        self.process_group = process_group
        self._seen = 0  # batches enqueued so far (host-side, identical on every rank)

        f64 = torch.float64
        k = 2 if policy == "paper" else 3
        centres = (torch.arange(bins, dtype=f64) + 0.5) / bins
        self.register_buffer("centres", centres, persistent=False)
        self.register_buffer("design", _design(centres), persistent=False)
        self.register_buffer("ring", torch.zeros(queue_size, bins, dtype=torch.int64))
        self.register_buffer("total", torch.zeros(bins, dtype=torch.int64))
        self.register_buffer("invalid_count", torch.zeros((), dtype=torch.int64))
        # Raw (binned-data) mixture parameters; uninformative until the first update.
        self.register_buffer("pi", torch.full((k,), 1.0 / k, dtype=f64))
        self.register_buffer("mu", (torch.arange(k, dtype=f64) + 0.5) / k)
        self.register_buffer("var", torch.full((k,), (0.5 / k) ** 2, dtype=f64))
        self.register_buffer("fitted_bounds", torch.tensor(initial_bounds, dtype=f64))
        self.register_buffer("smoothed_bounds", torch.tensor(initial_bounds, dtype=f64))

    # ------------------------------------------------------------------ public API
    @property
    def threshold(self) -> torch.Tensor:
        """Current ξ as a 0-d float32 tensor (the midpoint of ``bounds``)."""
        return self.smoothed_bounds.mean().to(torch.float32)

    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high) 0-d float32 tensors; both equal ξ for ``"paper"``."""
        b = self.smoothed_bounds.to(torch.float32)
        return b[0], b[1]

    @property
    def num_updates(self) -> int:
        """Number of batches enqueued so far (host-side counter)."""
        return self._seen

    @property
    def bin_width(self) -> float:
        """h = 1 / bins."""
        return 1.0 / self.bins

    def mixture(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fitted (weights, means, variances), each (K,) float64, sorted by mean.

        Variances carry Sheppard's correction (binning variance h²/12 removed, floored at
        ``reg_covar``), so they estimate a fit to the raw values. Before the first update
        these are the uninformative start values.
        """
        order = torch.argsort(self.mu)
        var = sheppard_variances(self.var.to(torch.float64), self.bin_width, self.reg_covar)
        return self.pi[order].double(), self.mu[order].double(), var[order]

    def histogram(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The queue's total counts (bins,) int64 and bin edges (bins + 1,) float64."""
        edges = torch.linspace(0.0, 1.0, self.bins + 1, dtype=torch.float64)
        return self.total.clone(), edges.to(self.total.device)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`update`."""
        return self.update(values)

    @torch.no_grad()
    def update(self, values: torch.Tensor) -> torch.Tensor:
        """Enqueue a batch of CAM values, refit the mixture and return the new ξ.

        Args:
            values: float tensor of any shape, e.g. (B, h, w) max-CAM values, in [0, 1].
                An empty tensor enqueues an empty histogram (it still evicts the oldest).
        Returns:
            0-d float32 tensor ξ on ``values.device``.
        Raises:
            ValueError: if ``values`` is not a float tensor; with ``validate=True`` also if
                it holds values outside [0, 1], NaN or ±inf (this check syncs the host).
        """
        check_tensor("values", values)
        check_float("values", values)
        if self.validate:
            check_range("values", values, 0.0, 1.0)
        if self.total.device != values.device:
            self.to(values.device)
        hist = unit_histogram(values, self.bins)
        if self.sync_distributed and _distributed_ready():
            torch.distributed.all_reduce(hist, group=self.process_group)
        self._enqueue(hist[:-1])
        self.invalid_count.add_(hist[-1])  # in place: `+=` would re-register the buffer
        self._fit()
        return self.threshold

    # ------------------------------------------------------------------ internals
    def _enqueue(self, counts: torch.Tensor) -> None:
        slot = self._seen % self.queue_size
        self.total.add_(counts - self.ring[slot])
        self.ring[slot] = counts
        self._seen += 1

    def _fit(self) -> None:
        f64 = torch.float64
        centres = self.centres
        w = self.total.to(f64)
        if self.policy == "cosa-code":
            w = torch.where(centres > self.filter_threshold, w, torch.zeros_like(w))
        total = w.sum()
        has_data = total > 0
        w = w / total.clamp_min(1.0)
        cold = self._seen == 1 or not self.warm_start
        if cold:
            if self.policy == "paper":
                start = _init_median_split(w, self.design, self.reg_covar)
            else:
                start = _init_min_median_max(w, centres)
            iters = self.init_iters if self.warm_start else self.em_iters
        else:
            start = (self.pi.to(f64), self.mu.to(f64), self.var.to(f64))
            iters = self.em_iters
        pi, mu, var = _em(w, self.design, *start, iters, self.reg_covar, self.tol)
        if not cold and self.policy == "paper" and self._seen % _RESTART_EVERY == 0:
            # A component whose weight died out cannot grow back by EM: restart from the
            # median split. Checked every few updates only, as it costs ~20 small ops.
            restart = _init_median_split(w, self.design, self.reg_covar)
            dead = pi.min() < 1e-3
            pi, mu, var = (
                torch.where(dead, r, p) for r, p in zip(restart, (pi, mu, var), strict=True)
            )
        var_c = sheppard_variances(var, self.bin_width, self.reg_covar)
        if self.policy == "paper":
            xi = _gmm_crossing(pi, mu, var_c)
            fitted = torch.stack((xi, xi))
        else:
            fitted = torch.stack(hard_split_bounds(w, centres, pi, mu, var_c))
        # An empty queue (or all values filtered out) keeps the previous state.
        keep = ~has_data
        self.pi.copy_(torch.where(keep, self.pi, pi))
        self.mu.copy_(torch.where(keep, self.mu, mu))
        self.var.copy_(torch.where(keep, self.var, var))
        self.fitted_bounds.copy_(torch.where(keep, self.fitted_bounds, fitted))
        smoothed = torch.lerp(self.fitted_bounds, self.smoothed_bounds, self.ema_decay)
        self.smoothed_bounds.copy_(torch.where(keep, self.smoothed_bounds, smoothed))

    def get_extra_state(self) -> dict:
        """Host-side state for ``state_dict``: the update counter and the configuration."""
        return {
            "seen": self._seen,
            "queue_size": self.queue_size,
            "bins": self.bins,
            "policy": self.policy,
        }

    def set_extra_state(self, state: dict) -> None:
        """Restore the update counter; refuse a checkpoint of another configuration."""
        for key in ("queue_size", "bins", "policy"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"checkpoint has {key}={state.get(key)!r}, this searcher has "
                    f"{key}={getattr(self, key)!r}"
                )
        self._seen = int(state["seen"])

    def extra_repr(self) -> str:
        return (
            f"policy={self.policy!r}, queue_size={self.queue_size}, bins={self.bins}, "
            f"ema_decay={self.ema_decay}, em_iters={self.em_iters}, validate={self.validate}"
        )


def _distributed_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()

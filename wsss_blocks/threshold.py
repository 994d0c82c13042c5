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
raw values would give.

Design notes: ``docs/threshold.md``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._checks import (
    check_finite,
    check_float,
    check_nonnegative,
    check_range,
    check_tensor,
)

__all__ = [
    "GMMThresholdSearcher",
    "em_fit_histogram",
    "gmm_crossing",
    "hard_split_bounds",
    "sheppard_variances",
    "unit_histogram",
]

POLICIES = ("paper", "cosa-code")
_EPS = 10 * torch.finfo(torch.float64).eps  # added to component masses, as scikit-learn does
_LOG_2PI = math.log(2 * math.pi)
_RESTART_EVERY = 10  # updates between checks for a dead mixture component (paper policy)
# With a tolerance, EM on CPU tensors stops once converged, checked every few steps: reading
# a CPU tensor is no device synchronisation. On accelerators all steps run (frozen).
_CPU_EARLY_EXIT = True
_EXIT_CHECK_EVERY = 4


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
        # across threads, which stalls by milliseconds on a busy machine (measured).
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


def _m_step(
    resp: torch.Tensor, phi: torch.Tensor, reg_covar: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """M-step from responsibilities ``resp`` (K, bins) and weighted moments ``phi`` (3, bins)."""
    # Broadcast-and-sum rather than a matmul: BLAS threads tiny GEMMs, which stalls on
    # busy CPUs (measured: 10x slower with 2 threads on a loaded 2-core machine).
    s = (resp.unsqueeze(1) * phi).sum(-1)  # (K, 3): Σ w r x², Σ w r x, Σ w r
    nk = s[:, 2] + _EPS
    mu = s[:, 1] / nk
    var = (s[:, 0] / nk - mu * mu).clamp_min(0.0) + reg_covar
    return nk / nk.sum(), mu, var


def _log_coefficients(pi: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """(K, 3) coefficients c with log(π_k N(x | μ_k, σ²_k)) = c_k0 x² + c_k1 x + c_k2."""
    inv = 1.0 / var
    c2 = torch.log(pi) - 0.5 * (_LOG_2PI + torch.log(var) + mu * mu * inv)
    return torch.stack((-0.5 * inv, mu * inv, c2), dim=1)


def _log_densities(coef: torch.Tensor, design: torch.Tensor) -> list[torch.Tensor]:
    """Per component k, the (bins,) log(π_k N(x | μ_k, σ²_k)) from its (K, 3) coefficients."""
    return list((coef.unsqueeze(2) * design).sum(1).unbind())


def _e_step(
    logs: list[torch.Tensor], with_log_norm: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(K, bins) responsibilities and, if asked, the (bins,) log Σ_k π_k N(x | k).

    Only ``sigmoid`` and ``logaddexp`` touch the (bins,) rows: r_k = σ(ℓ_k − LSE_{j≠k} ℓ_j).
    ``exp``/``log`` (MKL VML) and ``softmax``/``logsumexp`` over dim 0 split even ~1000
    elements across threads, which stalls by milliseconds on a busy CPU (measured here).
    """
    if len(logs) == 2:
        r1 = torch.sigmoid(logs[1] - logs[0])
        norm = torch.logaddexp(logs[0], logs[1]) if with_log_norm else None
        return torch.stack((1.0 - r1, r1)), norm
    # Leave-one-out log-sum-exp from prefix and suffix sums (no -inf padding needed).
    prefix, suffix = [logs[0]], [logs[-1]]
    for log in logs[1:-1]:
        prefix.append(torch.logaddexp(prefix[-1], log))
    for log in reversed(logs[1:-1]):
        suffix.append(torch.logaddexp(suffix[-1], log))
    suffix.reverse()  # suffix[i] = LSE(logs[i+1:]), prefix[i] = LSE(logs[:i+1])
    others = [suffix[0]]
    others += [torch.logaddexp(prefix[k - 1], suffix[k]) for k in range(1, len(logs) - 1)]
    others.append(prefix[-1])
    resp = torch.stack([torch.sigmoid(log - o) for log, o in zip(logs, others, strict=True)])
    norm = torch.logaddexp(logs[0], others[0]) if with_log_norm else None
    return resp, norm


def _design(centres: torch.Tensor) -> torch.Tensor:
    """(3, bins) rows x², x, 1 of the bin centres: log densities are quadratics in x."""
    return torch.stack((centres * centres, centres, torch.ones_like(centres)))


def em_fit_histogram(
    weights: torch.Tensor,
    centres: torch.Tensor,
    pi: torch.Tensor,
    mu: torch.Tensor,
    var: torch.Tensor,
    iters: int,
    reg_covar: float = 1e-6,
    tol: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run up to ``iters`` EM steps of a 1-D Gaussian mixture on weighted points (binned data).

    Each point x_b (a bin centre) carries weight w_b (its count). E-step:
    r_kb ∝ π_k N(x_b | μ_k, σ²_k); M-step: N_k = Σ_b w_b r_kb, μ_k = Σ w r x / N_k,
    σ²_k = Σ w r x² / N_k − μ_k² + reg_covar, π_k = N_k / Σ N. This is scikit-learn's
    ``GaussianMixture`` EM with each sample repeated ``w_b`` times.

    With ``tol`` set, scikit-learn's stopping rule is reproduced without a host sync: the
    parameters freeze after the first step whose change of the mean log-likelihood is below
    ``tol``, and on accelerators all ``iters`` steps still run. On CPU tensors (where reading
    a flag is no device sync) the loop also stops early, with the same result.

    Args:
        weights: (bins,) non-negative counts (any real dtype); zero total leaves the
            parameters finite but meaningless (callers guard it).
        centres: (bins,) float64 point positions.
        pi, mu, var: (K,) float64 starting weights, means and variances (warm start).
        iters: number of EM steps, ≥ 0.
        reg_covar: variance floor added in every M-step, as scikit-learn's ``reg_covar``.
        tol: optional convergence threshold on the mean log-likelihood (scikit-learn's
            ``tol``; None runs all ``iters`` steps).
    Returns:
        (pi, mu, var), each (K,) float64: variances of the binned data (no Sheppard
        correction; see :func:`sheppard_variances`).
    Example:
        >>> x = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
        >>> w = torch.tensor([0, 5, 9, 5, 0, 0, 0, 2, 4, 2, 0.0], dtype=torch.float64)
        >>> start = torch.tensor([0.5, 0.5], dtype=torch.float64)
        >>> pi, mu, var = em_fit_histogram(w, x, start, torch.tensor([0.2, 0.7]).double(),
        ...                                torch.full((2,), 0.1, dtype=torch.float64), 50)
        >>> [round(v, 3) for v in mu.tolist()], [round(v, 3) for v in pi.tolist()]
        ([0.2, 0.8], [0.704, 0.296])

    Reference:
        Dempster, Laird & Rubin (1977); CoSA (Yang et al., ECCV 2024) Eq. (6) fits this model.
    """
    w = weights.to(torch.float64)
    w = w / w.sum().clamp_min(1e-300)
    return _em(w, _design(centres.to(torch.float64)), pi, mu, var, iters, reg_covar, tol)


def _em(
    w: torch.Tensor,
    design: torch.Tensor,
    pi: torch.Tensor,
    mu: torch.Tensor,
    var: torch.Tensor,
    iters: int,
    reg_covar: float,
    tol: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM core of :func:`em_fit_histogram` on normalised weights and a precomputed design."""
    phi = design * w
    if tol is None and pi.shape[0] == 2:
        return _em_two(phi, design, pi, mu, var, iters, reg_covar)
    params = torch.stack((pi, mu, var))  # (3, K), one tensor so that freezing is one where
    bound = torch.full((), -math.inf, dtype=torch.float64, device=w.device)
    done = torch.zeros((), dtype=torch.bool, device=w.device)
    early_exit = _CPU_EARLY_EXIT and w.device.type == "cpu"
    for step in range(iters):
        logs = _log_densities(_log_coefficients(*params.unbind()), design)
        resp, log_norm = _e_step(logs, with_log_norm=tol is not None)
        new = torch.stack(_m_step(resp, phi, reg_covar))
        if log_norm is None:
            params = new
            continue
        prev, bound = bound, (w * log_norm).sum()
        params = torch.where(done, params, new)
        done = done | ((bound - prev).abs() < tol)
        if early_exit and step % _EXIT_CHECK_EVERY == _EXIT_CHECK_EVERY - 1 and bool(done):
            break  # same result as running on frozen: params no longer change
    return params.unbind()


def _em_two(
    phi: torch.Tensor,
    design: torch.Tensor,
    pi: torch.Tensor,
    mu: torch.Tensor,
    var: torch.Tensor,
    iters: int,
    reg_covar: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two-component EM with as few (tiny) ops per step as possible: per-op overhead, not
    arithmetic, dominates at 1024 bins. Same updates as :func:`_m_step`; the E-step is a
    sigmoid of the log-density difference, a quadratic in x."""
    x2, x = design[0], design[1]
    phi_total = phi.sum(1)
    mass = pi  # unnormalised masses suffice: only their ratio enters the E-step
    for _ in range(iters):
        inv = var.reciprocal()
        lin = mu * inv
        const = torch.addcmul(torch.log(mass * inv.sqrt()), lin, mu, value=-0.5)
        coef = torch.stack((inv, lin, const))  # (3, 2)
        d = coef[:, 1] - coef[:, 0]
        r1 = torch.sigmoid(torch.addcmul(torch.addcmul(d[2], d[1], x), d[0], x2, value=-0.5))
        s1 = (phi * r1).sum(1)  # (3,): Σ w r x², Σ w r x, Σ w r for component 1
        s = torch.stack((phi_total - s1, s1), 1)  # (3, 2)
        mass = s[2] + _EPS
        moments = s[:2] / mass
        mu = moments[1]
        var = torch.addcmul(moments[0], mu, mu, value=-1.0).clamp_min_(0.0).add_(reg_covar)
    return mass / mass.sum(), mu, var


def sheppard_variances(var: torch.Tensor, bin_width: float, reg_covar: float) -> torch.Tensor:
    """Sheppard's correction: remove the h²/12 variance that binning adds, floored at reg_covar."""
    return (var - bin_width * bin_width / 12.0).clamp_min(reg_covar)


def gmm_crossing(pi: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """ξ* of a 2-component 1-D mixture: where the weighted densities cross between the means.

    With f(x) = log π_fg N(x|μ_fg, σ_fg) − log π_bg N(x|μ_bg, σ_bg) (fg = higher mean),
    ξ* is the root of the quadratic f with f' > 0 (f turns from "background more likely" to
    "foreground more likely"), which maximises the hard-split likelihood of Eq. (6). If that
    root is not inside [μ_bg, μ_fg] (one component dominates everywhere between the means, or
    the means coincide), ξ* falls back to the midpoint (μ_bg + μ_fg) / 2.

    Args:
        pi, mu, std: (2,) floating tensors, weights (>= 0), means and standard deviations
            (> 0), all finite.
    Returns:
        0-d tensor ξ*, dtype of ``mu``, on its device (no host synchronisation when the
        data checks are off, see :func:`wsss_blocks.set_data_checks`).
    Raises:
        ValueError: naming the argument that is not a (2,) floating tensor, is not
            finite, or has a weight < 0 or a deviation <= 0.
    Example:
        >>> t = lambda *v: torch.tensor(v, dtype=torch.float64)
        >>> round(float(gmm_crossing(t(0.5, 0.5), t(0.2, 0.8), t(0.1, 0.1))), 6)
        0.5
        >>> round(float(gmm_crossing(t(0.9, 0.1), t(0.2, 0.8), t(0.1, 0.1))), 4)  # heavier bg
        0.5366

    Reference:
        Yang et al., CoSA, ECCV 2024, Eq. (6).
    """
    for name, t in (("pi", pi), ("mu", mu), ("std", std)):
        check_tensor(name, t)
        if tuple(t.shape) != (2,):
            raise ValueError(f"{name} must have shape (2,) (one value per component), "
                             f"got {tuple(t.shape)}")  # fmt: skip
        check_float(name, t)
        check_finite(name, t)
    check_nonnegative("pi", pi)
    check_nonnegative("std", std, strict=True)
    return _gmm_crossing(pi, mu, std)


def _gmm_crossing(pi: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """:func:`gmm_crossing` without input checks (the searcher's own fitted mixture)."""
    order = torch.argsort(mu)
    p, m, v = torch.stack((pi, mu, std * std))[:, order].unbind()  # background first
    # log π N(x|μ, σ²) = −x²/(2σ²) + (μ/σ²) x + log(π/σ) − μ²/(2σ²) + const, per component;
    # f = A x² + B x + C is fg − bg, with A = −Δ(1/σ²)/2.
    inv = v.reciprocal()
    lin = m * inv
    const = torch.addcmul(torch.log(p * inv.sqrt()), lin, m, value=-0.5)
    q = torch.stack((inv, lin, const), 1)
    dinv, b, c = (q[1] - q[0]).unbind()
    disc = torch.addcmul(b * b, dinv, c, value=2.0)  # B² − 4AC
    s = disc.clamp_min(0.0).sqrt()
    # Root with f'(r) = +s, in the form without cancellation for either sign of B:
    # −2C / (B + s), or (s − B) / (2A) = (B − s) / Δ(1/σ²).
    root = torch.where(b >= 0, -2.0 * c / (b + s), (b - s) / dinv)
    m_lo, m_hi = m.unbind()
    # Inside [μ_bg, μ_fg] (NaN and ±inf fail the clamp test) and a real root.
    ok = (disc >= 0) & (root.clamp(m_lo, m_hi) == root)
    return torch.where(ok, root, 0.5 * (m_lo + m_hi))


def hard_split_bounds(
    weights: torch.Tensor,
    centres: torch.Tensor,
    pi: torch.Tensor,
    mu: torch.Tensor,
    var: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual thresholds of the official CoSA release from a mixture's hard assignment.

    Each occupied bin goes to its most likely component (argmax of π_k N(x|μ_k, σ²_k), as
    scikit-learn's ``predict``). ``low`` = the largest value in the lowest-mean cluster,
    ``high`` = the smallest value in the highest-mean cluster. An empty cluster falls back to
    the data's minimum (``low``) or maximum (``high``), and ``low <= high`` is enforced by
    ordering the pair.

    Args:
        weights: (bins,) counts; only bins with weight > 0 count as data.
        centres: (bins,) float64 bin centres (the values' stand-ins, within h/2).
        pi, mu, var: (K,) float64 mixture weights, means, variances.
    Returns:
        (low, high), 0-d float64 tensors on the inputs' device.
    Example:
        >>> x = torch.linspace(0.05, 0.95, 10, dtype=torch.float64)
        >>> w = torch.ones(10, dtype=torch.float64)
        >>> d = lambda *v: torch.tensor(v, dtype=torch.float64)
        >>> lo, hi = hard_split_bounds(w, x, d(1, 1, 1) / 3, d(0.1, 0.5, 0.9), d(.01, .01, .01))
        >>> round(float(lo), 2), round(float(hi), 2)
        (0.25, 0.75)

    Reference:
        Official CoSA code (``rungmm`` in ``utils/seg_helper.py``); Yang et al., ECCV 2024.
    """
    occupied = weights > 0
    logs = _log_densities(_log_coefficients(pi, mu, var), _design(centres))
    best, labels = logs[0], torch.zeros_like(centres, dtype=torch.int64)
    for k, log in enumerate(logs[1:], start=1):  # argmax over components, element-wise
        better = log > best
        best = torch.where(better, log, best)
        labels = torch.where(better, torch.full_like(labels, k), labels)
    inf = torch.full_like(centres, math.inf)
    lowest = occupied & (labels == torch.argmin(mu))
    highest = occupied & (labels == torch.argmax(mu))
    data_min = torch.where(occupied, centres, inf).min()
    data_max = torch.where(occupied, centres, -inf).max()
    low = torch.where(lowest, centres, -inf).max()
    high = torch.where(highest, centres, inf).min()
    low = torch.where(torch.isfinite(low), low, data_min)
    high = torch.where(torch.isfinite(high), high, data_max)
    return torch.minimum(low, high), torch.maximum(low, high)


def _init_median_split(
    w: torch.Tensor, design: torch.Tensor, reg_covar: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2-component start: split the data at its weighted median (a 1-D two-means-like start).

    The median bin is divided fractionally, so a single occupied bin still gives finite
    parameters (two equal components).
    """
    total = w.sum()
    before = torch.cumsum(w, 0) - w
    low = ((0.5 * total - before) / w.clamp_min(1e-300)).clamp(0.0, 1.0)
    low = torch.where(w > 0, low, torch.zeros_like(low))
    return _m_step(torch.stack((low, 1.0 - low)), design * w, reg_covar)


def _init_min_median_max(
    w: torch.Tensor, centres: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3-component start of the official code: means at min/median/max, weights 1/3, var 1."""
    occupied = (w > 0).to(torch.uint8)
    n = w.numel()
    i_min = torch.argmax(occupied)
    i_max = n - 1 - torch.argmax(occupied.flip(0))
    cum = torch.cumsum(w, 0)
    i_med = torch.searchsorted(cum, 0.5 * cum[-1:]).clamp_max(n - 1)[0]
    mu = centres[torch.stack((i_min, i_med, i_max))]
    pi = torch.full_like(mu, 1.0 / 3.0)
    return pi, mu, torch.ones_like(mu)


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
      means (:func:`gmm_crossing`), midpoint fallback. ``bounds`` = (ξ, ξ).
    * ``"cosa-code"`` (official release): values ≤ ``filter_threshold`` (0.05) dropped (bins
      whose centre is ≤ it), 3 components started at min/median/max with weights 1/3 and
      variance 1; ``bounds`` = (max of the lowest cluster, min of the highest cluster)
      (:func:`hard_split_bounds`), each smoothed by the EMA; ξ = their midpoint.

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
        initial_bounds: ``"cosa-code"`` start of (low, high); default (ξ₀, ξ₀).
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
        ValueError: for an unknown policy or an argument out of range.
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
        _check_int("queue_size", queue_size, 1)
        _check_int("bins", bins, 2)
        cosa = policy == "cosa-code"
        if em_iters is None:
            em_iters = 100 if cosa else 5
        if warm_start is None:
            warm_start = not cosa
        if tol is None and cosa:
            tol = 1e-3
        _check_int("em_iters", em_iters, 1)
        if tol is not None and not (isinstance(tol, (int, float)) and tol >= 0):
            raise ValueError(f"tol must be None or a number >= 0, got {tol!r}")
        _check_int("init_iters", init_iters, 0)
        _check_interval("ema_decay", ema_decay, 0.0, 1.0, right_open=True)
        _check_interval("initial_threshold", initial_threshold, 0.0, 1.0)
        _check_interval("filter_threshold", filter_threshold, 0.0, 1.0, right_open=True)
        if not (isinstance(reg_covar, (int, float)) and 0 < reg_covar < 1):
            raise ValueError(f"reg_covar must lie in (0, 1), got {reg_covar!r}")
        if initial_bounds is None:
            initial_bounds = (initial_threshold, initial_threshold)
        if len(initial_bounds) != 2 or not 0 <= initial_bounds[0] <= initial_bounds[1] <= 1:
            raise ValueError(
                f"initial_bounds must be (low, high) with 0 <= low <= high <= 1, "
                f"got {initial_bounds!r}"
            )
        if policy == "paper":
            initial_bounds = (initial_threshold, initial_threshold)
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
        """Fitted (weights, means, stds), each (K,) float64, sorted by mean.

        Standard deviations carry Sheppard's correction (binning variance h²/12 removed,
        floored at ``reg_covar``), so they estimate a fit to the raw values. Before the first
        update these are the uninformative start values.
        """
        order = torch.argsort(self.mu)
        var = sheppard_variances(self.var.to(torch.float64), self.bin_width, self.reg_covar)
        return self.pi[order].double(), self.mu[order].double(), var[order].sqrt()

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
            xi = _gmm_crossing(pi, mu, var_c.sqrt())
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


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_interval(
    name: str, value: object, low: float, high: float, right_open: bool = False
) -> None:
    ok = (
        isinstance(value, (int, float))
        and low <= value
        and (value < high if right_open else value <= high)
    )
    if not ok:
        bracket = ")" if right_open else "]"
        raise ValueError(f"{name} must lie in [{low}, {high}{bracket}, got {value!r}")

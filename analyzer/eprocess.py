"""The anytime-valid test: a conditional hypergeometric mixture e-process (design.md, "Statistics").

In one interval the canary served n_c requests with x_c "bad" ones (5xx, or slower than a
latency boundary), the stable n_b with x_b. If both revisions have the same probability of a bad
request, then given the totals (N = n_c + n_b requests, B = x_c + x_b bad) the canary's count is
hypergeometric: Y ~ Hypergeom(N, B, n_c). For an odds ratio psi > 1 ("the canary is worse"), the
interval's likelihood ratio of Fisher's noncentral hypergeometric against the central one is

    LR(psi) = psi^x_c / E_H0[psi^Y],

which has expectation 1 under H0 whatever the totals. The product over intervals, mixed over a
fixed grid of odds ratios, is a test martingale: by Ville's inequality it ever reaches 1/alpha
with probability at most alpha, however often it is looked at. That is what lets autocanary
check every few seconds without inflating false rollbacks.

Everything is in log space, and the state is a plain tuple of floats (one log-product per grid
point) that round-trips through JSON inside the rollout. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import gammaln

ODDS_RATIO_GRID: tuple[float, ...] = tuple(float(v) for v in np.geomspace(1.25, 16.0, 16))
"""The alternatives mixed over: odds ratios from 1.25 (a subtle regression) to 16 (a gross one)."""

_LOG_PSI: NDArray[np.float64] = np.log(np.asarray(ODDS_RATIO_GRID))
_LOG_WEIGHT = -math.log(len(ODDS_RATIO_GRID))  # equal prior weights


def log_likelihood_ratios(
    canary_n: int,
    canary_bad: int,
    stable_n: int,
    stable_bad: int,
    odds_ratios: Sequence[float] = ODDS_RATIO_GRID,
) -> NDArray[np.float64]:
    """log LR(psi) of one interval for every psi of the grid (zeros when it holds no information)."""
    _check_counts(canary_n, canary_bad, stable_n, stable_bad)
    total, bad = canary_n + stable_n, canary_bad + stable_bad
    low, high = max(0, bad - stable_n), min(bad, canary_n)
    log_psi = _LOG_PSI if odds_ratios is ODDS_RATIO_GRID else np.log(np.asarray(odds_ratios, dtype=np.float64))
    if low == high:  # no requests on one side, or no bad ones (or only bad ones): nothing to learn
        return np.zeros(len(log_psi))
    y = np.arange(low, high + 1, dtype=np.float64)
    # log P_H0(Y = y): the scalar parts with math.lgamma, the parts that vary with y vectorised.
    constant = (
        math.lgamma(canary_n + 1)
        + math.lgamma(stable_n + 1)
        + math.lgamma(bad + 1)
        + math.lgamma(total - bad + 1)
        - math.lgamma(total + 1)
    )
    log_pmf = constant - (
        gammaln(y + 1) + gammaln(canary_n - y + 1) + gammaln(bad - y + 1) + gammaln(stable_n - bad + y + 1)
    )
    tilted = log_pmf[None, :] + log_psi[:, None] * y[None, :]
    peak = tilted.max(axis=1)
    log_mgf = peak + np.log(np.exp(tilted - peak[:, None]).sum(axis=1))
    result: NDArray[np.float64] = canary_bad * log_psi - log_mgf
    return result


def log_sum_exp(values: NDArray[np.float64]) -> float:
    """log(sum(exp(values))) without overflow. scipy's logsumexp does the same through its array-API
    layer, which costs about 0.2 ms a call: more than the rest of a rollout's tick."""
    peak = float(values.max())
    if not math.isfinite(peak):
        return peak
    return peak + math.log(float(np.exp(values - peak).sum()))


def _check_counts(canary_n: int, canary_bad: int, stable_n: int, stable_bad: int) -> None:
    if min(canary_n, canary_bad, stable_n, stable_bad) < 0:
        raise ValueError("counts must not be negative")
    if canary_bad > canary_n or stable_bad > stable_n:
        raise ValueError(
            f"more bad requests than requests: canary {canary_bad}/{canary_n}, stable {stable_bad}/{stable_n}"
        )


@dataclass(frozen=True)
class EProcess:
    """The mixture e-process of one comparison (errors, or one latency boundary)."""

    log_products: tuple[float, ...] = (0.0,) * len(ODDS_RATIO_GRID)
    """log prod_i LR_i(psi_k) for each grid point k, since the rollout started."""

    def updated(self, canary_n: int, canary_bad: int, stable_n: int, stable_bad: int) -> EProcess:
        step = log_likelihood_ratios(canary_n, canary_bad, stable_n, stable_bad)
        if not step.any():
            return self
        return EProcess(tuple(float(v) for v in np.asarray(self.log_products) + step))

    @property
    def log_value(self) -> float:
        """log of the e-value M_t = sum_k w_k prod_i LR_i(psi_k)."""
        return log_sum_exp(np.asarray(self.log_products) + _LOG_WEIGHT)

    @property
    def value(self) -> float:
        return math.exp(min(self.log_value, 700.0))

    def crossed(self, alpha: float) -> bool:
        """M_t >= 1/alpha: reject "the canary is no worse" at level alpha."""
        return self.log_value >= -math.log(alpha)

    @property
    def best_odds_ratio(self) -> float:
        """The grid point the data favour most (for explanations only)."""
        return ODDS_RATIO_GRID[int(np.argmax(self.log_products))]


def combined_log_value(processes: Sequence[EProcess]) -> float:
    """Equal-weight average of several e-processes (still an e-process), in log space."""
    if not processes:
        return 0.0
    return log_sum_exp(np.asarray([p.log_value for p in processes])) - math.log(len(processes))

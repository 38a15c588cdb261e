"""The other half of the test: an anytime-valid e-process that the canary is *no worse*.

`analyzer/eprocess.py` tests "the canary is no worse" and rolls back when that is refuted. This
module tests the opposite null, so that a good canary can advance as soon as the data allow:

    H0: the canary's odds of a bad request are at least psi0 = `max_odds_ratio` times the stable's.

Given one interval's totals (N requests, B bad), the canary's bad count Y follows Fisher's
noncentral hypergeometric with odds ratio psi, P_psi(y) ∝ h(y) psi^y. Against an alternative
psi_a < psi0 the interval's likelihood ratio is

    LR(y) = P_psi_a(y) / P_psi0(y) = (psi_a / psi0)^y * E_0[psi0^Y] / E_0[psi_a^Y],

(E_0 the central hypergeometric), the same quantities as the rollback test's.

Why testing against the boundary psi0 covers the whole composite null psi >= psi0: the family is
an exponential family in log psi, so it has a monotone likelihood ratio in y. Hence LR(y) is
decreasing in y, and Y under any psi >= psi0 is stochastically larger than under psi0, so
E_psi[LR(Y)] <= E_psi0[LR(Y)] = 1. Each interval's factor has conditional expectation at most 1
given the past and the interval's totals, whatever psi >= psi0 holds in it; the product is a
nonnegative supermartingale, and by Ville's inequality it ever reaches 1/beta with probability
at most beta. A mixture over alternatives (fixed weights) keeps that property.

The alternatives sit at or below an odds ratio of 1 ("the canary is as good, or better"), with
most weight on 1, where a good canary is: the mixture then grows almost as fast as the best
single alternative would for a canary equal to the stable. Log space, a tuple of floats as
state (one log-product per alternative), pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from analyzer.eprocess import ODDS_RATIO_GRID, EProcess, log_likelihood_ratios, log_sum_exp

ALTERNATIVES: tuple[float, ...] = (1.0, 0.8, 0.6, 0.4)
"""The odds ratios mixed over as alternatives: equal to the stable, or better."""
WEIGHTS: tuple[float, ...] = (0.6, 0.2, 0.1, 0.1)
"""Their prior weights (sum 1): most on "equal to the stable", the usual good canary."""

_LOG_WEIGHTS: NDArray[np.float64] = np.log(np.asarray(WEIGHTS))


def log_likelihood_ratios_no_worse(
    max_odds_ratio: float, canary_n: int, canary_bad: int, stable_n: int, stable_bad: int
) -> NDArray[np.float64]:
    """log LR(psi_a vs max_odds_ratio) of one interval for every alternative (zeros without information)."""
    # Both against the central hypergeometric, in one pass over the interval's support.
    against_central = log_likelihood_ratios(
        canary_n, canary_bad, stable_n, stable_bad, (*ALTERNATIVES, _above_one(max_odds_ratio))
    )
    return _against_boundary(against_central)


def _above_one(max_odds_ratio: float) -> float:
    if not max_odds_ratio > 1.0:
        raise ValueError(f"max_odds_ratio must be above 1, got {max_odds_ratio}")
    return max_odds_ratio


def _against_boundary(against_central: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each alternative's log LR against the central law (all but the last) minus the boundary's (the last)."""
    result: NDArray[np.float64] = against_central[:-1] - against_central[-1]
    return result


def _plus(log_products: tuple[float, ...], step: NDArray[np.float64]) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(log_products) + step)


@dataclass(frozen=True)
class NoWorseProcess:
    """The mixture e-process for "the canary is no worse than `max_odds_ratio` x the stable's odds"."""

    log_products: tuple[float, ...] = (0.0,) * len(ALTERNATIVES)
    """log prod_i LR_i(psi_a) for each alternative, since the rollout started."""

    def updated(
        self, max_odds_ratio: float, canary_n: int, canary_bad: int, stable_n: int, stable_bad: int
    ) -> NoWorseProcess:
        step = log_likelihood_ratios_no_worse(max_odds_ratio, canary_n, canary_bad, stable_n, stable_bad)
        return NoWorseProcess(_plus(self.log_products, step)) if step.any() else self

    @property
    def log_value(self) -> float:
        """log of the e-value sum_k w_k prod_i LR_i(psi_k)."""
        return log_sum_exp(np.asarray(self.log_products) + _LOG_WEIGHTS)

    @property
    def value(self) -> float:
        return math.exp(min(self.log_value, 700.0))

    def shown(self, beta: float) -> bool:
        """The e-value is at or above 1/beta: "materially worse" is rejected at level beta."""
        return self.log_value >= -math.log(beta)


def updated_both(
    against: EProcess,
    no_worse: NoWorseProcess,
    max_odds_ratio: float,
    counts: tuple[int, int, int, int],
) -> tuple[EProcess, NoWorseProcess]:
    """Both e-processes of one comparison updated with one interval's counts (canary n, canary bad,
    stable n, stable bad), from one pass over the interval's hypergeometric support."""
    step = log_likelihood_ratios(*counts, (*ODDS_RATIO_GRID, *ALTERNATIVES, _above_one(max_odds_ratio)))
    if not step.any():
        return against, no_worse
    rollback_step, no_worse_step = step[: len(ODDS_RATIO_GRID)], _against_boundary(step[len(ODDS_RATIO_GRID) :])
    return EProcess(_plus(against.log_products, rollback_step)), NoWorseProcess(
        _plus(no_worse.log_products, no_worse_step)
    )

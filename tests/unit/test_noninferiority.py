"""The no-worse e-process: exactness, validity at and beyond its null's boundary, power, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import nchypergeom_fisher

from analyzer.eprocess import EProcess
from analyzer.noninferiority import (
    ALTERNATIVES,
    WEIGHTS,
    NoWorseProcess,
    log_likelihood_ratios_no_worse,
    updated_both,
)

BETA = 0.05


@pytest.mark.parametrize("counts", [(50, 1, 950, 5), (500, 10, 9500, 47), (3, 3, 7, 0), (100, 0, 100, 50)])
def test_likelihood_ratios_are_fishers_noncentral_against_the_boundary(counts: tuple[int, int, int, int]) -> None:
    canary_n, canary_bad, stable_n, stable_bad = counts
    total, bad = canary_n + stable_n, canary_bad + stable_bad
    expected = [
        nchypergeom_fisher.logpmf(canary_bad, total, canary_n, bad, psi)
        - nchypergeom_fisher.logpmf(canary_bad, total, canary_n, bad, 1.5)
        for psi in ALTERNATIVES
    ]
    assert np.allclose(log_likelihood_ratios_no_worse(1.5, *counts), expected, atol=1e-9)


def _crossing_rate(odds_ratio: float, max_odds_ratio: float, runs: int, seed: int) -> float:
    """Share of canaries with error odds `odds_ratio` x the stable's whose no-worse e-process ever
    reaches 1/BETA over 40 looks, with random totals and error rates."""
    rng = np.random.default_rng(seed)
    crossed = 0
    for _ in range(runs):
        process = NoWorseProcess()
        stable_rate = rng.uniform(0.002, 0.05)
        odds = odds_ratio * stable_rate / (1 - stable_rate)
        canary_rate = odds / (1 + odds)
        for _ in range(40):
            canary_n, stable_n = int(rng.poisson(rng.uniform(5, 400))), int(rng.poisson(rng.uniform(50, 2000)))
            process = process.updated(
                max_odds_ratio,
                canary_n,
                int(rng.binomial(canary_n, canary_rate)),
                stable_n,
                int(rng.binomial(stable_n, stable_rate)),
            )
            if process.shown(BETA):
                crossed += 1
                break
    return crossed / runs


@pytest.mark.parametrize("odds_ratio", [1.5, 2.0, 3.0], ids=["at-the-boundary", "2x", "3x"])
def test_validity_under_the_null_with_random_totals(odds_ratio: float) -> None:
    runs = 1000
    rate = _crossing_rate(odds_ratio, 1.5, runs, seed=int(odds_ratio * 10))
    # Ville: at most beta for every odds ratio at or above the boundary; allow 3 standard errors.
    assert rate <= BETA + 3 * math.sqrt(BETA * (1 - BETA) / runs)


def test_a_good_canary_with_plenty_of_traffic_is_shown_no_worse() -> None:
    rng = np.random.default_rng(3)
    shown = 0
    for _ in range(200):
        process = NoWorseProcess()
        for _ in range(40):  # 20,000 canary requests at 1 % errors, beside 180,000 stable ones
            process = process.updated(1.5, 500, int(rng.binomial(500, 0.01)), 4500, int(rng.binomial(4500, 0.01)))
        shown += process.shown(BETA)
    assert shown / 200 >= 0.95


def test_a_worse_canary_drives_the_evidence_down() -> None:
    process = NoWorseProcess()
    for _ in range(20):
        process = process.updated(1.5, 100, 3, 900, 9)
    assert process.value < 0.1


def test_the_mixture_weights_sum_to_one_and_favour_an_equal_canary() -> None:
    assert math.isclose(sum(WEIGHTS), 1.0)
    assert ALTERNATIVES[0] == 1.0 and WEIGHTS[0] == max(WEIGHTS)
    assert all(alternative <= 1.0 for alternative in ALTERNATIVES)


def test_updating_both_in_one_pass_equals_updating_each() -> None:
    against, no_worse = EProcess(), NoWorseProcess()
    for counts in [(120, 2, 880, 5), (300, 0, 2700, 14), (0, 0, 50, 1), (80, 1, 920, 3)]:
        against, no_worse = updated_both(against, no_worse, 1.5, counts)
    alone_against, alone_no_worse = EProcess(), NoWorseProcess()
    for counts in [(120, 2, 880, 5), (300, 0, 2700, 14), (0, 0, 50, 1), (80, 1, 920, 3)]:
        alone_against = alone_against.updated(*counts)
        alone_no_worse = alone_no_worse.updated(1.5, *counts)
    assert np.allclose(against.log_products, alone_against.log_products)
    assert np.allclose(no_worse.log_products, alone_no_worse.log_products)


def test_state_round_trips_through_json() -> None:
    process = NoWorseProcess().updated(1.5, 400, 1, 3600, 20)
    again = NoWorseProcess(tuple(json.loads(json.dumps(process.log_products))))
    assert again == process and again.log_value == process.log_value


@pytest.mark.parametrize("counts", [(0, 0, 100, 3), (100, 0, 900, 0), (100, 100, 900, 900)])
def test_intervals_without_information_leave_the_evidence_alone(counts: tuple[int, int, int, int]) -> None:
    assert NoWorseProcess().updated(1.5, *counts) == NoWorseProcess()


@pytest.mark.parametrize("max_odds_ratio", [1.0, 0.5])
def test_a_boundary_at_or_below_one_is_refused(max_odds_ratio: float) -> None:
    with pytest.raises(ValueError, match="above 1"):
        NoWorseProcess().updated(max_odds_ratio, 100, 1, 900, 5)

"""The e-process: exactness, validity under H0, power, state, edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import hypergeom, nchypergeom_fisher

from analyzer.eprocess import ODDS_RATIO_GRID, EProcess, combined_log_value, log_likelihood_ratios


@pytest.mark.parametrize(
    "counts", [(50, 1, 950, 5), (500, 10, 9500, 47), (3, 3, 7, 0), (100, 0, 100, 50), (1, 1, 1000, 0)]
)
def test_likelihood_ratios_match_fishers_noncentral_hypergeometric(counts: tuple[int, int, int, int]) -> None:
    canary_n, canary_bad, stable_n, stable_bad = counts
    total, bad = canary_n + stable_n, canary_bad + stable_bad
    expected = [
        nchypergeom_fisher.logpmf(canary_bad, total, canary_n, bad, psi)
        - hypergeom.logpmf(canary_bad, total, bad, canary_n)
        for psi in ODDS_RATIO_GRID
    ]
    assert np.allclose(log_likelihood_ratios(*counts), expected, atol=1e-9)


def _h0_crossing_rate(alpha: float, runs: int, seed: int) -> float:
    """Share of good canaries (same error rate) whose e-process ever reaches 1/alpha over 60 looks."""
    rng = np.random.default_rng(seed)
    crossed = 0
    for _ in range(runs):
        process = EProcess()
        rate = rng.uniform(0.001, 0.05)
        for _ in range(60):
            canary_n, stable_n = int(rng.poisson(rng.uniform(5, 200))), int(rng.poisson(rng.uniform(50, 2000)))
            process = process.updated(
                canary_n, int(rng.binomial(canary_n, rate)), stable_n, int(rng.binomial(stable_n, rate))
            )
            if process.crossed(alpha):
                crossed += 1
                break
    return crossed / runs


def test_validity_under_h0_with_random_totals() -> None:
    alpha, runs = 0.05, 2000
    rate = _h0_crossing_rate(alpha, runs, seed=7)
    # Ville: at most alpha, whatever the totals and however often we look; allow 3 standard errors.
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_power_on_a_clear_regression() -> None:
    rng = np.random.default_rng(11)
    detected = 0
    for _ in range(300):
        process = EProcess()
        for _ in range(30):
            process = process.updated(100, int(rng.binomial(100, 0.04)), 900, int(rng.binomial(900, 0.005)))
        detected += process.crossed(0.005)
    assert detected / 300 >= 0.99


def test_a_better_canary_drives_the_evidence_down() -> None:
    process = EProcess()
    for _ in range(20):
        process = process.updated(100, 0, 900, 9)
    assert process.value < 0.1


def test_state_round_trips_through_json() -> None:
    process = EProcess().updated(50, 3, 950, 5).updated(60, 2, 940, 4)
    restored = EProcess(tuple(json.loads(json.dumps(process.log_products))))
    assert restored == process
    assert restored.log_value == process.log_value


@pytest.mark.parametrize(
    "counts",
    [(0, 0, 1000, 5), (100, 0, 0, 0), (0, 0, 0, 0), (100, 0, 900, 0), (100, 100, 900, 900)],
    ids=["canary-idle", "stable-idle", "no-requests", "no-errors", "all-errors"],
)
def test_intervals_without_information_leave_the_evidence_alone(counts: tuple[int, int, int, int]) -> None:
    process = EProcess().updated(50, 3, 950, 5)
    assert process.updated(*counts) == process


@pytest.mark.parametrize("counts", [(-1, 0, 10, 0), (10, 11, 10, 0), (10, 0, 10, 11)])
def test_impossible_counts_are_refused(counts: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError, match=r"negative|more bad requests"):
        EProcess().updated(*counts)


def test_all_canary_errors_against_a_clean_stable_is_strong_evidence() -> None:
    assert EProcess().updated(20, 20, 980, 0).crossed(0.001)


def test_combining_is_an_average() -> None:
    strong, neutral = EProcess().updated(20, 10, 980, 5), EProcess()
    combined = combined_log_value([strong, neutral])
    assert combined == pytest.approx(math.log((strong.value + neutral.value) / 2))
    assert combined_log_value([]) == 0.0

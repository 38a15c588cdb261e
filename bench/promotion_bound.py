"""How fast could any test promote a good canary? An oracle's time to promote, for comparison.

The `default` schedule (steps 5, 10, 25, 50 % of 30 s to 150 s, checked every 10 s, at least 100
canary requests a step) ends a step early only once the canary is shown no worse than
`max_odds_ratio` times the stable's error odds, at level `beta`. This oracle knows the stable's
error rate exactly and runs Wald's sequential probability ratio test of "the canary's odds are
`max_odds_ratio` times the stable's" against "they are equal" on the canary's requests alone,
ending a step once the ratio reaches 1/beta. Each canary request adds on average the
Kullback-Leibler divergence between the two to the log ratio, and by Wald's identity no test
that ends a step early for at most beta of the worse canaries can, on average, need fewer than
about ln(1/beta) / KL canary requests before it may: the oracle is that reference. autocanary
must also learn the stable's rate from its requests and cover every alternative at or below an
odds ratio of 1, so it is slower. Pure NumPy; it prints the oracle's median time to promote per
traffic level and writes it to bench/RESULTS.md.

    .venv/bin/python -m bench.promotion_bound
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.results import write_section
from policies import load_policy

RATES = (20, 100, 1000, 5000)
ERROR_RATE = 0.005


def promote_time(
    rng: np.random.Generator,
    rate: float,
    max_odds_ratio: float,
    beta: float,
    shares: Sequence[float],
    timing: tuple[float, float, float, float],
) -> float:
    """Seconds until the oracle's schedule promotes a canary as good as the stable; `timing` is the
    step floor, the step's longest length, the interval and the minimum requests of a step."""
    floor, longest, interval, min_requests = timing
    odds = max_odds_ratio * ERROR_RATE / (1 - ERROR_RATE)
    worse = odds / (1 + odds)
    per_error, per_success = math.log(ERROR_RATE / worse), math.log((1 - ERROR_RATE) / (1 - worse))
    threshold, log_ratio, t = -math.log(beta), 0.0, 0.0
    for share in shares:
        in_step, requests = 0.0, 0
        while True:
            n = int(rng.poisson(rate * share * interval))
            errors = int(rng.binomial(n, ERROR_RATE))
            log_ratio += errors * per_error + (n - errors) * per_success
            t, in_step, requests = t + interval, in_step + interval, requests + n
            shown = log_ratio >= threshold
            if in_step >= floor and requests >= min_requests and (shown or in_step >= longest):
                break
    return t


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    policy = load_policy("default")
    shares = tuple(policy.step_weight(i) / 100 for i in range(len(policy.steps)))
    timing = (
        policy.step_min_duration.total_seconds(),
        policy.step_max_duration.total_seconds(),
        policy.interval.total_seconds(),
        float(policy.min_requests_per_step),
    )
    rows = []
    for max_odds_ratio in (policy.max_odds_ratio, 2.0):
        for rate in RATES:
            rng = np.random.default_rng([args.seed, rate, int(max_odds_ratio * 10)])
            times = [promote_time(rng, rate, max_odds_ratio, policy.beta, shares, timing) for _ in range(args.runs)]
            row = (
                f"| {rate} rps | {max_odds_ratio:g}x | {policy.beta:g} | {np.median(times):.0f}"
                f" | {np.percentile(times, 90):.0f} |"
            )
            print(row)
            rows.append(row)
    table = "\n".join(
        [
            "| traffic | max_odds_ratio | beta | oracle's median s to promote | p90 s |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    if not args.no_write:
        note = (
            f"`python -m bench.promotion_bound --runs {args.runs}` (seed {args.seed}): a good canary (0.5 % errors"
            " on both sides) under the `default` schedule, steps ended by an oracle's SPRT that knows the stable's"
            " error rate (see the script's docstring). A lower bound on what any test at that level can do; the"
            " `2x` rows show what a looser boundary would allow."
        )
        write_section(
            Path(__file__).with_name("RESULTS.md"),
            "promotion_bound",
            "How fast any test could promote a good canary",
            note,
            table,
        )


if __name__ == "__main__":
    main()

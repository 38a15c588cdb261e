"""How often the crash e2e test's bad canaries would be promoted before the e-process catches them.

`tests/e2e/test_workers_e2e.py` runs 20 rollouts through two short steps (20 %, 50 %, 3 s each)
at 12 requests/s per service with alpha 0.001; 6 of the canaries are bad. With little traffic a
bad canary can be promoted before the evidence reaches 1/alpha, which is a property of the
statistics, not a crash-safety bug. This computes the miss rate per bad canary, pessimistically
(one judgement per step, Poisson traffic), for several canary error rates, so the test uses one
whose miss rate is negligible.

    .venv/bin/python -m bench.crash_test_power          # 20,000 runs per rate, a few seconds
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from analyzer.eprocess import EProcess
from bench.results import write_section

RATE_PER_SERVICE = 12.0
STEP_SECONDS = 3.0
SHARES = (0.2, 0.5)
ALPHA = 0.001


def miss_rate(error_rate: float, runs: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    missed = 0
    for _ in range(runs):
        process, caught = EProcess(), False
        for share in SHARES:
            canary_n = int(rng.poisson(RATE_PER_SERVICE * STEP_SECONDS * share))
            stable_n = int(rng.poisson(RATE_PER_SERVICE * STEP_SECONDS * (1 - share)))
            canary_bad = int(rng.binomial(canary_n, error_rate))
            if canary_n and stable_n:
                process = process.updated(canary_n, canary_bad, stable_n, 0)
            if process.crossed(ALPHA):
                caught = True
                break
        missed += not caught
    return missed / runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args(argv)
    rows = []
    for error_rate in (0.5, 0.8, 0.9):
        rate = miss_rate(error_rate, args.runs, args.seed)
        rows.append(f"| {error_rate:.0%} | {rate:.4f} | {1 - (1 - rate) ** 6:.4f} |")
        print(f"canary errors {error_rate:.0%}: missed {rate:.4f} per canary")
    table = "\n".join(
        ["| bad canary's error rate | missed per canary | a run misses any of 6 |", "|---|---|---|", *rows]
    )
    note = (
        f"`python -m bench.crash_test_power --runs {args.runs}`: the crash e2e test's traffic (12 req/s per"
        " service, steps 20 % and 50 % of 3 s, one judgement per step), alpha 0.001, stable without errors."
    )
    write_section(
        Path(__file__).with_name("RESULTS.md"), "crash_test_power", "Power of the crash e2e test", note, table
    )


if __name__ == "__main__":
    main()

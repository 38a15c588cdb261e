"""Monte Carlo benchmark of rollback decisions: the analyzer against a Flagger-style rule and an oracle.

Every run simulates one rollout of the `default` schedule (canary share 5, 10, 25, 50 % for
150 s each, checked every 10 s) with Poisson traffic at a given total rate, and feeds the
per-interval counts to three deciders:

- autocanary: the analyzer's own code (`analyzer.verdict.judge`, policy `default`);
- Flagger-style: canary success rate >= 99 % over a 60 s window checked every 60 s, roll back
  after N failed checks (N = 1, 2, 5); a window without canary requests is a failed check;
- oracle: an SPRT on the canary alone that knows the true rates (stable's and canary's), with
  the same alpha as the policy: the best any test could do.

It prints, per traffic level and scenario, the false-rollback rate (good canaries), the share
of bad canaries detected before the rollout ends, the median and p90 time to rollback, and the
ratio of autocanary's median to the oracle's; and writes the table to bench/RESULTS.md.

    .venv/bin/python -m bench.decisions               # 2000 runs per cell (a few minutes on 2 cores)
    .venv/bin/python -m bench.decisions --runs 200    # a quick look
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.stats import norm

from analyzer.verdict import AnalysisState, choose_boundaries, judge
from bench.results import write_section
from policies import Policy, load_policy
from rollouts.counts import RevisionCounts
from rollouts.verdict import Outcome
from sandbox.metrics import OPENCENSUS_BUCKETS_MS

RATES = (20, 100, 1000)
SHARES = (0.05, 0.10, 0.25, 0.50)
STEP_SECONDS, INTERVAL = 150, 10
INTERVALS = len(SHARES) * STEP_SECONDS // INTERVAL
FLAGGER_WINDOW = 6  # intervals: 60 s, checked every 60 s
FLAGGER_N = (1, 2, 5)
MEDIAN_MS, SIGMA = 100.0, 0.6


@dataclass(frozen=True)
class Scenario:
    name: str
    stable_error: float
    canary_error: float
    canary_latency_factor: float = 1.0

    @property
    def bad(self) -> bool:
        return self.canary_error != self.stable_error or self.canary_latency_factor != 1.0


SCENARIOS = (
    Scenario("good (0.5 % = 0.5 %)", 0.005, 0.005),
    Scenario("errors 0.5 -> 1 %", 0.005, 0.01),
    Scenario("errors 0.5 -> 2 %", 0.005, 0.02),
    Scenario("errors 0.1 -> 0.8 %", 0.001, 0.008),
    Scenario("latency x1.5", 0.005, 0.005, 1.5),
)


def bucket_probabilities(factor: float) -> NDArray[np.float64]:
    """P(latency in each bucket) for lognormal(median 100 ms x factor, sigma 0.6), +Inf last."""
    cdf = norm.cdf((np.log(np.asarray(OPENCENSUS_BUCKETS_MS)) - math.log(MEDIAN_MS * factor)) / SIGMA)
    probabilities: NDArray[np.float64] = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    clipped: NDArray[np.float64] = np.clip(probabilities, 0, 1) / probabilities.sum()
    return clipped


@dataclass
class RunResult:
    autocanary: float | None  # seconds to rollback, None when not rolled back
    flagger: dict[int, float | None]
    oracle: float | None


@dataclass
class FlaggerRule:
    """Canary success rate >= 99 % over 60 s, checked every 60 s; roll back after N failed checks."""

    rolled_back_at: dict[int, float | None] = field(default_factory=lambda: dict.fromkeys(FLAGGER_N))
    failed_checks: int = 0
    window_requests: int = 0
    window_errors: int = 0

    def observe(self, index: int, canary: RevisionCounts, t: float) -> None:
        self.window_requests += canary.requests
        self.window_errors += canary.errors
        if (index + 1) % FLAGGER_WINDOW:
            return
        if self.window_requests == 0 or 1 - self.window_errors / self.window_requests < 0.99:
            self.failed_checks += 1  # no data counts as a failed check, as in Flagger
            for n in FLAGGER_N:
                if self.rolled_back_at[n] is None and self.failed_checks >= n:
                    self.rolled_back_at[n] = t
        self.window_requests = self.window_errors = 0


@dataclass
class Oracle:
    """An SPRT on the canary alone that knows the true rates, with the policy's alpha."""

    p0: float
    p1: float
    threshold: float
    boundary: float | None = None  # latency scenarios: the slow/fast boundary tested
    log_ratio: float = 0.0
    rolled_back_at: float | None = None

    def observe(self, canary: RevisionCounts, t: float) -> None:
        if self.rolled_back_at is not None:
            return
        bad = canary.slow(self.boundary) if self.boundary is not None else canary.errors
        self.log_ratio += bad * math.log(self.p1 / self.p0)
        self.log_ratio += (canary.requests - bad) * math.log((1 - self.p1) / (1 - self.p0))
        if self.log_ratio >= self.threshold:
            self.rolled_back_at = t


def oracle_for(
    policy: Policy, scenario: Scenario, stable_p: NDArray[np.float64], canary_p: NDArray[np.float64]
) -> Oracle:
    if scenario.canary_latency_factor == 1.0:
        return Oracle(scenario.stable_error, scenario.canary_error, -math.log(policy.alpha_errors))
    # The boundary the analyzer itself tests first: nearest the pooled p90 of the first interval.
    pooled = SHARES[0] * canary_p + (1 - SHARES[0]) * stable_p
    boundary = choose_boundaries(policy.latency_boundaries, _expected_histogram(pooled))[0]
    position = OPENCENSUS_BUCKETS_MS.index(int(boundary))
    p0, p1 = float(stable_p[position + 1 :].sum()), float(canary_p[position + 1 :].sum())
    return Oracle(p0, p1, -math.log(policy.alpha_latency), boundary)


def simulate(policy: Policy, scenario: Scenario, rate: int, seed: int) -> RunResult:
    rng = np.random.default_rng(seed)
    stable_p = bucket_probabilities(1.0)
    canary_p = bucket_probabilities(scenario.canary_latency_factor)
    state, ours = AnalysisState(), None
    flagger = FlaggerRule()
    oracle = oracle_for(policy, scenario, stable_p, canary_p) if scenario.bad else None

    for index in range(INTERVALS):
        t = float((index + 1) * INTERVAL)
        share = SHARES[index * INTERVAL // STEP_SECONDS]
        n_c = int(rng.poisson(rate * share * INTERVAL))
        n_s = int(rng.poisson(rate * (1 - share) * INTERVAL))
        canary = _with_histogram(n_c, int(rng.binomial(n_c, scenario.canary_error)), rng.multinomial(n_c, canary_p))
        stable = _with_histogram(n_s, int(rng.binomial(n_s, scenario.stable_error)), rng.multinomial(n_s, stable_p))
        if ours is None:
            judgement = judge(policy, state, canary, stable)
            state = judgement.state
            ours = t if judgement.verdict.outcome is Outcome.FAIL else None
        flagger.observe(index, canary, t)
        if oracle:
            oracle.observe(canary, t)
        finished = ours is not None and None not in flagger.rolled_back_at.values()
        if finished and (oracle is None or oracle.rolled_back_at is not None):
            break
    return RunResult(ours, flagger.rolled_back_at, oracle.rolled_back_at if oracle else None)


def _with_histogram(requests: int, errors: int, per_bucket: NDArray[np.int64]) -> RevisionCounts:
    cumulative = np.cumsum(per_bucket[:-1])
    return RevisionCounts.of(requests, errors, dict(zip(OPENCENSUS_BUCKETS_MS, cumulative.tolist(), strict=True)))


def _expected_histogram(probabilities: NDArray[np.float64]) -> RevisionCounts:
    cumulative = np.cumsum(probabilities[:-1]) * 100_000
    return RevisionCounts.of(
        100_000, 0, dict(zip(OPENCENSUS_BUCKETS_MS, cumulative.round().astype(int).tolist(), strict=True))
    )


def _cell(args: tuple[str, int, int, int, int]) -> tuple[int, int, list[RunResult]]:
    policy_name, scenario_index, rate, first_seed, runs = args
    policy = load_policy(policy_name)
    scenario = SCENARIOS[scenario_index]
    return (
        scenario_index,
        rate,
        [simulate(policy, scenario, rate, seed) for seed in range(first_seed, first_seed + runs)],
    )


@dataclass
class Summary:
    rolled_back: float
    median: float | None
    p90: float | None
    mean: float | None

    @classmethod
    def of(cls, times: Sequence[float | None]) -> Summary:
        detected = [t for t in times if t is not None]
        rate = len(detected) / len(times)
        if not detected:
            return cls(rate, None, None, None)
        return cls(rate, float(np.median(detected)), float(np.percentile(detected, 90)), float(np.mean(detected)))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs per cell (default 2000)")
    parser.add_argument("--policy", default="default")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args(argv)

    chunks = max(1, args.workers * 2)
    per_chunk = math.ceil(args.runs / chunks)
    jobs = [
        (args.policy, s, rate, args.seed + 1_000_000 * s + 10_000 * rate + c * per_chunk, per_chunk)
        for s in range(len(SCENARIOS))
        for rate in RATES
        for c in range(chunks)
    ]
    started = time.perf_counter()
    results: dict[tuple[int, int], list[RunResult]] = {}
    with multiprocessing.Pool(args.workers) as pool:
        for done, (s, rate, runs) in enumerate(pool.imap_unordered(_cell, jobs), start=1):
            results.setdefault((s, rate), []).extend(runs)
            print(f"\r{done}/{len(jobs)} chunks done", end="", flush=True)
    elapsed = time.perf_counter() - started
    print()

    header = (
        "| traffic | scenario | runs | autocanary rolled back | median s | p90 s | Flagger N=1 | N=2 | N=5"
        " | Flagger N=5 median s | oracle median s | median / oracle | mean / oracle mean |"
    )
    lines = [header, "|" + "---|" * 13]
    for rate in RATES:
        for s, scenario in enumerate(SCENARIOS):
            runs = results[(s, rate)][: args.runs]
            ours = Summary.of([r.autocanary for r in runs])
            flagger = {n: Summary.of([r.flagger[n] for r in runs]) for n in FLAGGER_N}
            oracle = Summary.of([r.oracle for r in runs]) if scenario.bad else None
            ratio = f"{ours.median / oracle.median:.2f}" if oracle and ours.median and oracle.median else "-"
            mean_ratio = f"{ours.mean / oracle.mean:.2f}" if oracle and ours.mean and oracle.mean else "-"
            lines.append(
                f"| {rate} rps | {scenario.name} | {len(runs)} | {100 * ours.rolled_back:.1f} %"
                f" | {_seconds(ours.median)} | {_seconds(ours.p90)}"
                + "".join(f" | {100 * flagger[n].rolled_back:.1f} %" for n in FLAGGER_N)
                + f" | {_seconds(flagger[5].median)} | {_seconds(oracle.median if oracle else None)}"
                + f" | {ratio} | {mean_ratio} |"
            )
    table = "\n".join(lines)
    print(table)
    print(f"{args.runs} runs per cell in {elapsed:.0f} s")
    if not args.no_write:
        note = (
            f"`python -m bench.decisions --runs {args.runs}` (policy `{args.policy}`, seed {args.seed}),"
            f' {elapsed:.0f} s on {args.workers} workers. "rolled back" is the false-rollback rate for the good'
            " scenario and the detection rate (rollback before the rollout ends at 600 s) for the others;"
            " times are seconds from the start of the rollout, among the runs rolled back."
        )
        write_section(
            Path(__file__).with_name("RESULTS.md"),
            "decisions",
            "Rollback decisions (Monte Carlo)",
            note,
            table,
        )


if __name__ == "__main__":
    main()

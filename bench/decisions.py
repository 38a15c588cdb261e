"""Monte Carlo benchmark of rollout decisions: autocanary against Flagger- and Argo-style rules and an oracle.

Every run simulates rollouts with Poisson traffic at a given total rate, checked every 10 s, and
feeds the per-interval counts to these deciders:

- autocanary: the analyzer and the engine themselves (`analyzer.verdict.judge`,
  `rollouts.engine.decide`) under the policy (`default`: steps 5, 10, 25, 50 % that last 30 s
  to 2.5 min, ending early once the canary is shown no worse), on the traffic its own decisions
  route to the canary;
- today's fixed schedule: the same policy with every step 2.5 min (`step_min_duration` alone),
  as autocanary decided before steps could end early; its traffic (5, 10, 25, 50 % for 150 s
  each) is also what the next three see:
- Flagger-style rule: canary success rate >= 99 % over a 60 s window checked every 60 s, roll
  back after N failed checks (N = 1, 2, 5; failed checks are not reset); a window without canary
  requests is a failed check;
- Argo-style fixed pauses: the same steps, each paused 2.5 min, with a background analysis of
  the canary's success rate (>= 99 %) every 60 s, aborted at its 4th failed measurement
  (`failureLimit: 3`); promoted after the last pause;
- oracle: an SPRT on the canary alone that knows the true rates (stable's and canary's), with
  the same alpha as the policy: the best any test could do;
- Flagger-style schedule, on its own traffic: canary weight 10 % stepping by 10 every 60 s up to
  50 %, the check above, rollback at 5 failed checks, promoted after a passing check at 50 %.

It prints two tables per traffic level and scenario. Rollbacks: the false-rollback rate (good
canaries), the share of bad canaries detected before the rollout ends, the median and p90 time
to rollback, and the ratio of autocanary's median to the oracle's. Promotion: each schedule's
share of runs promoted and its median time to promote, and how often any autocanary step ended
early. Both go to bench/RESULTS.md.

    .venv/bin/python -m bench.decisions               # 2000 runs per cell (a few minutes on 2 cores)
    .venv/bin/python -m bench.decisions --runs 200    # a quick look
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.stats import norm

from analyzer.replay import Schedule
from analyzer.verdict import AnalysisState, choose_boundaries, judge
from bench.results import write_section
from policies import Policy, load_policy
from rollouts import Phase
from rollouts.counts import RevisionCounts
from sandbox.metrics import OPENCENSUS_BUCKETS_MS

RATES = (20, 100, 1000)
SHARES = (0.05, 0.10, 0.25, 0.50)
STEP_SECONDS, INTERVAL = 150, 10
INTERVALS = len(SHARES) * STEP_SECONDS // INTERVAL
FLAGGER_WINDOW = 6  # intervals: 60 s, checked every 60 s
FLAGGER_N = (1, 2, 5)
FLAGGER_STEP, FLAGGER_MAX_WEIGHT, FLAGGER_THRESHOLD = 10, 50, 5
ARGO_FAILURE_LIMIT = 3
MAX_SECONDS = 1800  # a rollout still running then (steps held for traffic) counts as neither
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
    Scenario("errors 0.5 -> 0.75 % (odds 1.5x)", 0.005, 0.0075),
)
"""Appended, never reordered: a scenario's index seeds its runs, so earlier rows stay comparable."""


def bucket_probabilities(factor: float) -> NDArray[np.float64]:
    """P(latency in each bucket) for lognormal(median 100 ms x factor, sigma 0.6), +Inf last."""
    cdf = norm.cdf((np.log(np.asarray(OPENCENSUS_BUCKETS_MS)) - math.log(MEDIAN_MS * factor)) / SIGMA)
    probabilities: NDArray[np.float64] = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    clipped: NDArray[np.float64] = np.clip(probabilities, 0, 1) / probabilities.sum()
    return clipped


@dataclass(frozen=True)
class Ending:
    """How one schedule's rollout ended: promoted or rolled back at t seconds (None: neither)."""

    promoted_at: float | None = None
    rolled_back_at: float | None = None
    ended_a_step_early: bool = False


@dataclass
class RunResult:
    autocanary: Ending
    fixed: Ending  # today's fixed schedule
    flagger: dict[int, float | None]
    oracle: float | None
    argo: Ending
    flagger_schedule: Ending


class EngineRun:
    """One rollout decided by the analyzer and the engine themselves, on a clock of its own."""

    def __init__(self, policy: Policy) -> None:
        self.schedule = Schedule(policy)
        self.state = AnalysisState()
        self.step_started = 0.0
        self.ending = Ending()

    @property
    def running(self) -> bool:
        return self.schedule.rollout.phase is Phase.PROGRESSING

    @property
    def canary_share(self) -> float:
        return self.schedule.rollout.canary_weight / 100

    def observe(self, canary: RevisionCounts, stable: RevisionCounts, t: float) -> None:
        policy = self.schedule.rollout.policy
        judgement = judge(policy, self.state, canary, stable)
        self.state = judgement.state
        before = self.schedule.rollout.step_index
        self.schedule.judged(judgement.verdict, t)
        rollout = self.schedule.rollout
        stepped = rollout.step_index != before or rollout.phase is Phase.PROMOTING
        early = self.ending.ended_a_step_early or (
            stepped and t - self.step_started < policy.step_max_duration.total_seconds()
        )
        if stepped:
            self.step_started = t
        if rollout.phase is Phase.PROMOTING:
            self.ending = Ending(promoted_at=t, ended_a_step_early=early)
        elif rollout.phase is Phase.ROLLING_BACK:
            self.ending = Ending(rolled_back_at=t, ended_a_step_early=early)
        else:
            self.ending = Ending(ended_a_step_early=early)


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
class ArgoRule:
    """Argo-style fixed pauses: the canary's success rate (>= 99 %) measured every 60 s in the
    background, aborted when failed measurements exceed `failureLimit`; a window without canary
    requests is no measurement. Promoted when the last pause ends."""

    failed: int = 0
    window_requests: int = 0
    window_errors: int = 0
    ending: Ending = Ending()

    def observe(self, index: int, canary: RevisionCounts, t: float) -> None:
        if self.ending != Ending():
            return
        self.window_requests += canary.requests
        self.window_errors += canary.errors
        if (index + 1) % FLAGGER_WINDOW == 0:
            if self.window_requests and 1 - self.window_errors / self.window_requests < 0.99:
                self.failed += 1
            self.window_requests = self.window_errors = 0
        if self.failed > ARGO_FAILURE_LIMIT:
            self.ending = Ending(rolled_back_at=t)
        elif index + 1 == INTERVALS:
            self.ending = Ending(promoted_at=t)


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


def simulate(policy: Policy, fixed: Policy, scenario: Scenario, rate: int, seed: int) -> RunResult:
    stable_p = bucket_probabilities(1.0)
    canary_p = bucket_probabilities(scenario.canary_latency_factor)
    draw = _traffic(scenario, rate, stable_p, canary_p)

    # Today's fixed schedule, and the rules that see its traffic (5, 10, 25, 50 % for 150 s each).
    rng = np.random.default_rng(seed)
    ours, flagger, argo = EngineRun(fixed), FlaggerRule(), ArgoRule()
    oracle = oracle_for(policy, scenario, stable_p, canary_p) if scenario.bad else None
    for index in range(INTERVALS):
        t = float((index + 1) * INTERVAL)
        canary, stable = draw(rng, SHARES[index * INTERVAL // STEP_SECONDS])
        if ours.running:
            ours.observe(canary, stable, t)
        flagger.observe(index, canary, t)
        argo.observe(index, canary, t)
        if oracle:
            oracle.observe(canary, t)
        decided = not ours.running and None not in flagger.rolled_back_at.values() and argo.ending != Ending()
        if decided and (oracle is None or oracle.rolled_back_at is not None):
            break

    # autocanary under the policy, on the traffic its own steps route to the canary.
    rng = np.random.default_rng([seed, 1])
    early, t = EngineRun(policy), 0.0
    while early.running and t < MAX_SECONDS:
        t += INTERVAL
        early.observe(*draw(rng, early.canary_share), t)

    return RunResult(
        autocanary=early.ending,
        fixed=ours.ending,
        flagger=flagger.rolled_back_at,
        oracle=oracle.rolled_back_at if oracle else None,
        argo=argo.ending,
        flagger_schedule=_flagger_schedule(draw, np.random.default_rng([seed, 2])),
    )


Draw = Callable[[np.random.Generator, float], tuple[RevisionCounts, RevisionCounts]]


def _traffic(scenario: Scenario, rate: int, stable_p: NDArray[np.float64], canary_p: NDArray[np.float64]) -> Draw:
    """One interval's counts of both revisions when the canary gets `share` of `rate`."""

    def draw(rng: np.random.Generator, share: float) -> tuple[RevisionCounts, RevisionCounts]:
        n_c = int(rng.poisson(rate * share * INTERVAL))
        n_s = int(rng.poisson(rate * (1 - share) * INTERVAL))
        canary = _with_histogram(n_c, int(rng.binomial(n_c, scenario.canary_error)), rng.multinomial(n_c, canary_p))
        stable = _with_histogram(n_s, int(rng.binomial(n_s, scenario.stable_error)), rng.multinomial(n_s, stable_p))
        return canary, stable

    return draw


def _flagger_schedule(draw: Draw, rng: np.random.Generator) -> Ending:
    """Flagger's progressive schedule: 10 % stepping by 10 every 60 s to 50 %, promoted after a
    passing check at 50 %, rolled back at the 5th failed check (no canary requests: failed)."""
    weight, failed, t = FLAGGER_STEP, 0, 0.0
    while t < MAX_SECONDS:
        requests = errors = 0
        for _ in range(FLAGGER_WINDOW):
            canary, _ = draw(rng, weight / 100)
            requests, errors = requests + canary.requests, errors + canary.errors
        t += FLAGGER_WINDOW * INTERVAL
        if requests and 1 - errors / requests >= 0.99:
            if weight >= FLAGGER_MAX_WEIGHT:
                return Ending(promoted_at=t)
            weight += FLAGGER_STEP
        else:
            failed += 1
            if failed >= FLAGGER_THRESHOLD:
                return Ending(rolled_back_at=t)
    return Ending()


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
    fixed = fixed_schedule(policy_name, policy)
    scenario = SCENARIOS[scenario_index]
    return (
        scenario_index,
        rate,
        [simulate(policy, fixed, scenario, rate, seed) for seed in range(first_seed, first_seed + runs)],
    )


def fixed_schedule(name: str, policy: Policy) -> Policy:
    """The policy as autocanary ran it before steps could end early: every step its longest length."""
    return load_policy(name, {"step_min_duration": f"{policy.step_max_duration.total_seconds():g}s"})


@dataclass
class Summary:
    share: float
    """The share of runs with a time (rolled back, or promoted)."""
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


def _share(summary: Summary) -> str:
    return f"{100 * summary.share:.1f} %"


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

    rollbacks = [
        "| traffic | scenario | runs | autocanary rolled back | median s | p90 s | fixed schedule rolled back"
        " | Flagger N=1 | N=2 | N=5 | Flagger N=5 median s | oracle median s | median / oracle | mean / oracle mean |",
        "|" + "---|" * 14,
    ]
    promotions = [
        "| traffic | scenario | autocanary promoted | median s to promote | a step ended early"
        " | fixed schedule promoted | median s | Flagger-style schedule promoted | median s"
        " | Argo-style pauses promoted | median s |",
        "|" + "---|" * 11,
    ]
    for rate in RATES:
        for s, scenario in enumerate(SCENARIOS):
            runs = results[(s, rate)][: args.runs]
            ours = Summary.of([r.autocanary.rolled_back_at for r in runs])
            fixed = Summary.of([r.fixed.rolled_back_at for r in runs])
            flagger = {n: Summary.of([r.flagger[n] for r in runs]) for n in FLAGGER_N}
            oracle = Summary.of([r.oracle for r in runs]) if scenario.bad else None
            ratio = f"{ours.median / oracle.median:.2f}" if oracle and ours.median and oracle.median else "-"
            mean_ratio = f"{ours.mean / oracle.mean:.2f}" if oracle and ours.mean and oracle.mean else "-"
            rollbacks.append(
                f"| {rate} rps | {scenario.name} | {len(runs)} | {100 * ours.share:.1f} %"
                f" | {_seconds(ours.median)} | {_seconds(ours.p90)} | {100 * fixed.share:.1f} %"
                + "".join(f" | {100 * flagger[n].share:.1f} %" for n in FLAGGER_N)
                + f" | {_seconds(flagger[5].median)} | {_seconds(oracle.median if oracle else None)}"
                + f" | {ratio} | {mean_ratio} |"
            )
            promoted = {
                name: Summary.of([getattr(r, name).promoted_at for r in runs])
                for name in ("autocanary", "fixed", "flagger_schedule", "argo")
            }
            early = sum(r.autocanary.ended_a_step_early for r in runs) / len(runs)
            promotions.append(
                f"| {rate} rps | {scenario.name} | {_share(promoted['autocanary'])}"
                f" | {_seconds(promoted['autocanary'].median)} | {100 * early:.1f} %"
                + "".join(
                    f" | {_share(promoted[name])} | {_seconds(promoted[name].median)}"
                    for name in ("fixed", "flagger_schedule", "argo")
                )
                + " |"
            )
    lines = [
        "Rollbacks:",
        "",
        *rollbacks,
        "",
        "Promotion:",
        "",
        *promotions,
    ]
    table = "\n".join(lines)
    print(table)
    print(f"{args.runs} runs per cell in {elapsed:.0f} s")
    if not args.no_write:
        note = (
            f"`python -m bench.decisions --runs {args.runs}` (policy `{args.policy}`, seed {args.seed}),"
            f' {elapsed:.0f} s on {args.workers} workers. "rolled back" is the false-rollback rate for the good'
            " scenario and the detection rate (rollback before the rollout ends) for the others;"
            " times are seconds from the start of the rollout, among the runs rolled back (or promoted)."
            " autocanary's steps last 30 s to 150 s; the fixed schedule's 150 s (600 s in all); Flagger-style,"
            " 10 % stepping by 10 every 60 s to 50 % (300 s at best); Argo-style, 150 s pauses (600 s)."
        )
        write_section(
            Path(__file__).with_name("RESULTS.md"),
            "decisions",
            "Rollout decisions (Monte Carlo)",
            note,
            table,
        )


if __name__ == "__main__":
    main()

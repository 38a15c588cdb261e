"""One interval's judgement: e-processes for errors and latency, guardrails, and a sentence.

`judge(policy, state, canary, stable)` folds one interval's counts into the rollout's
statistical state and returns a `Verdict`:

- `fail` when the error e-process reaches 1/alpha_errors, the latency e-process (an average over
  its boundaries) reaches 1/alpha_latency, or a guardrail is breached;
- `inconclusive` when the interval cannot be compared (no canary or no stable requests);
- `pass` otherwise.

When the policy lets steps end early (`step_max_duration` > `step_min_duration`), every
comparison also runs the opposite test (analyzer/noninferiority.py): that the canary is no worse
than `max_odds_ratio` times the stable. The verdict says whether all of them reached 1/beta
(`no_worse`), with the weakest evidence and a sentence; the engine decides what that allows.

Latency boundaries are chosen once, from the pooled histogram (both revisions; the stable's
dominates it) of the first interval with enough requests, and kept for the rest of the rollout.
Testing that same interval stays valid: under H0 the pooled histogram does not depend on which
requests went to which revision, so given it the canary's slow count is still hypergeometric.
Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from analyzer.eprocess import EProcess, combined_log_value
from analyzer.guardrails import check_guardrails
from analyzer.noninferiority import NoWorseProcess, updated_both
from policies import LatencyBoundaries, Policy
from rollouts.counts import RevisionCounts
from rollouts.verdict import Check, Outcome, Verdict

MIN_REQUESTS_FOR_BOUNDARIES = 20
"""Requests (both revisions) an interval needs before its histogram may choose the latency boundaries."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Tally(BaseModel):
    """Requests and bad requests of both revisions since the rollout started (for sentences)."""

    model_config = _FROZEN

    canary_n: int = 0
    canary_bad: int = 0
    stable_n: int = 0
    stable_bad: int = 0

    def plus(self, canary_n: int, canary_bad: int, stable_n: int, stable_bad: int) -> Tally:
        return Tally(
            canary_n=self.canary_n + canary_n,
            canary_bad=self.canary_bad + canary_bad,
            stable_n=self.stable_n + stable_n,
            stable_bad=self.stable_bad + stable_bad,
        )


class AnalysisState(BaseModel):
    """The analyzer's part of a rollout, carried across all its steps (stored as JSON)."""

    model_config = _FROZEN

    errors: tuple[float, ...] = EProcess().log_products
    error_tally: Tally = Tally()
    latency_boundaries_ms: tuple[float, ...] = ()
    latency: tuple[tuple[float, ...], ...] = ()
    latency_tallies: tuple[Tally, ...] = ()
    no_worse_errors: tuple[float, ...] = NoWorseProcess().log_products
    no_worse_latency: tuple[tuple[float, ...], ...] = ()
    """One no-worse e-process per latency boundary (empty while the policy has fixed steps)."""
    intervals: int = 0

    @classmethod
    def load(cls, stored: dict[str, Any]) -> AnalysisState:
        return cls.model_validate(stored) if stored else cls()

    def dump(self) -> dict[str, Any]:
        """As stored in the rollout; the no-worse e-processes only once they hold something, so a
        rollout with fixed steps is still read by the workers of the release before them."""
        unused = {name for name in _NO_WORSE_FIELDS if getattr(self, name) == AnalysisState.model_fields[name].default}
        return self.model_dump(mode="json", exclude=unused)


_NO_WORSE_FIELDS = ("no_worse_errors", "no_worse_latency")


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    state: AnalysisState


def error_verdict(message: str) -> Verdict:
    """The verdict when metrics could not be read: never a failure, never a pass."""
    return Verdict(outcome=Outcome.ERROR, sentence=f"metrics unavailable: {message}")


def judge(policy: Policy, state: AnalysisState, canary: RevisionCounts, stable: RevisionCounts) -> Judgement:
    guardrails = check_guardrails(policy.guardrails, canary)
    breached = [check for check in guardrails if check.outcome is Outcome.FAIL]
    if canary.requests == 0 or stable.requests == 0:
        side = "canary" if canary.requests == 0 else "stable"
        sentence = f"no {side} requests in the interval: nothing to compare"
        outcome = Outcome.FAIL if breached else Outcome.INCONCLUSIVE
        if breached:
            sentence = "; ".join(check.sentence for check in breached)
        verdict = Verdict(
            outcome=outcome,
            checks=tuple(guardrails),
            evidence=_evidence(state),
            sentence=sentence,
            canary_requests=canary.requests,
            stable_requests=stable.requests,
        )
        return Judgement(verdict, state.model_copy(update={"intervals": state.intervals + 1}))

    state = _with_errors(state, policy, canary, stable)
    state = _with_latency(state, policy, canary, stable)
    error_check = _error_check(state, policy.alpha_errors)
    latency_check = _latency_check(state, policy.alpha_latency)
    checks = [error_check, *([latency_check] if latency_check else []), *guardrails]
    failed = [check for check in checks if check.outcome is Outcome.FAIL]
    sentence = "; ".join(f"{c.name}: {c.sentence}" for c in (failed or checks[:2]))
    no_worse = _no_worse(state, policy) if policy.ends_steps_early else None
    verdict = Verdict(
        outcome=Outcome.FAIL if failed else Outcome.PASS,
        checks=tuple(checks),
        evidence=_evidence(state),
        evidence_by_test=_evidence_by_test(state),
        sentence=sentence,
        no_worse=no_worse is not None and no_worse.shown,
        no_worse_evidence=no_worse.evidence if no_worse else None,
        no_worse_sentence=no_worse.sentence if no_worse else "",
        canary_requests=canary.requests,
        stable_requests=stable.requests,
    )
    return Judgement(verdict, state.model_copy(update={"intervals": state.intervals + 1}))


def choose_boundaries(settings: LatencyBoundaries, histogram: RevisionCounts) -> tuple[float, ...]:
    """Bucket boundaries nearest the histogram's quantiles (and the SLO), distinct, ascending."""
    available = [boundary for boundary, _ in histogram.buckets]
    if not available:
        return ()
    wanted = [q for q in (histogram.quantile_ms(q) for q in settings.quantiles) if q is not None]
    if settings.slo_ms is not None:
        wanted.append(settings.slo_ms)
    return tuple(sorted({min(available, key=lambda b: abs(math.log(b) - math.log(max(w, 1e-9)))) for w in wanted}))


def _updated(
    policy: Policy, against: tuple[float, ...], no_worse: tuple[float, ...], counts: tuple[int, int, int, int]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """One comparison's e-processes (log-products) after an interval; the no-worse one only when
    the policy can end steps early (otherwise it stays as it was, and costs nothing)."""
    if not policy.ends_steps_early:
        return EProcess(against).updated(*counts).log_products, no_worse
    rollback, shown = updated_both(EProcess(against), NoWorseProcess(no_worse), policy.max_odds_ratio, counts)
    return rollback.log_products, shown.log_products


def _with_errors(state: AnalysisState, policy: Policy, canary: RevisionCounts, stable: RevisionCounts) -> AnalysisState:
    counts = (canary.requests, canary.errors, stable.requests, stable.errors)
    errors, no_worse = _updated(policy, state.errors, state.no_worse_errors, counts)
    tally = state.error_tally.plus(*counts)
    return state.model_copy(update={"errors": errors, "no_worse_errors": no_worse, "error_tally": tally})


def _with_latency(
    state: AnalysisState, policy: Policy, canary: RevisionCounts, stable: RevisionCounts
) -> AnalysisState:
    if not state.latency_boundaries_ms:
        pooled = canary.plus(stable)
        if pooled.requests < MIN_REQUESTS_FOR_BOUNDARIES or not pooled.buckets:
            return state
        boundaries = choose_boundaries(policy.latency_boundaries, pooled)
        state = state.model_copy(
            update={
                "latency_boundaries_ms": boundaries,
                "latency": tuple(EProcess().log_products for _ in boundaries),
                "latency_tallies": tuple(Tally() for _ in boundaries),
            }
        )
    canary_slow, stable_slow = canary.slow_by_boundary, stable.slow_by_boundary
    if not all(b in canary_slow and b in stable_slow for b in state.latency_boundaries_ms):
        return state  # an interval without histograms (e.g. a trace without buckets) teaches nothing here
    processes, no_worse_processes, tallies = [], [], []
    for boundary, products, no_worse, tally in zip(
        state.latency_boundaries_ms, state.latency, _no_worse_latency(state), state.latency_tallies, strict=True
    ):
        counts = (canary.requests, canary_slow[boundary], stable.requests, stable_slow[boundary])
        against, shown = _updated(policy, products, no_worse, counts)
        processes.append(against)
        no_worse_processes.append(shown)
        tallies.append(tally.plus(*counts))
    return state.model_copy(
        update={
            "latency": tuple(processes),
            "no_worse_latency": tuple(no_worse_processes),
            "latency_tallies": tuple(tallies),
        }
    )


def _no_worse_latency(state: AnalysisState) -> tuple[tuple[float, ...], ...]:
    """The no-worse e-processes of the latency boundaries (fresh ones for a state saved before
    they existed: the evidence starts where they do)."""
    if len(state.no_worse_latency) == len(state.latency_boundaries_ms):
        return state.no_worse_latency
    return tuple(NoWorseProcess().log_products for _ in state.latency_boundaries_ms)


@dataclass(frozen=True)
class NoWorse:
    """Where the tests that the canary is no worse stand: all shown, the weakest e-value, in words."""

    shown: bool
    evidence: float
    sentence: str


def _no_worse(state: AnalysisState, policy: Policy) -> NoWorse:
    threshold = 1 / policy.beta
    ratio = f"{policy.max_odds_ratio:g}x"
    tests = [
        (NoWorseProcess(state.no_worse_errors), "stable's error odds", state.error_tally),
        *(
            (NoWorseProcess(products), f"stable's odds of a request slower than {boundary:g} ms", tally)
            for boundary, products, tally in zip(
                state.latency_boundaries_ms, _no_worse_latency(state), state.latency_tallies, strict=True
            )
            if tally.canary_n  # boundaries chosen but not yet tested: not a test yet
        ),
    ]
    parts = []
    for process, what, tally in tests:
        shown = process.shown(policy.beta)
        parts.append(
            f"canary {'' if shown else 'not yet shown '}no worse than {ratio} {what}:"
            f" evidence {format_evidence(process.value)} {'>=' if shown else '<'} {format_evidence(threshold)}"
            f" over {tally.canary_n + tally.stable_n:,} requests"
        )
    weakest = min(process.value for process, _, _ in tests)
    return NoWorse(all(process.shown(policy.beta) for process, _, _ in tests), weakest, "; ".join(parts))


def _error_check(state: AnalysisState, alpha: float) -> Check:
    process, tally = EProcess(state.errors), state.error_tally
    crossed = process.crossed(alpha)
    return Check(
        name="errors",
        outcome=Outcome.FAIL if crossed else Outcome.PASS,
        canary_value=_share(tally.canary_bad, tally.canary_n),
        stable_value=_share(tally.stable_bad, tally.stable_n),
        threshold=1 / alpha,
        evidence=process.value,
        sentence=(
            f"canary 5xx {_percent(tally.canary_bad, tally.canary_n)} vs stable"
            f" {_percent(tally.stable_bad, tally.stable_n)}"
            f" over {tally.canary_n + tally.stable_n:,} requests;"
            f" evidence {format_evidence(process.value)} {'>=' if crossed else '<'} {format_evidence(1 / alpha)}"
        ),
    )


def _latency_check(state: AnalysisState, alpha: float) -> Check | None:
    if not state.latency_boundaries_ms or not any(tally.canary_n for tally in state.latency_tallies):
        return None  # boundaries chosen, no interval tested against them yet
    processes = [EProcess(products) for products in state.latency]
    log_value = combined_log_value(processes)
    crossed = log_value >= -math.log(alpha)
    worst = max(range(len(processes)), key=lambda i: processes[i].log_value)
    boundary, tally = state.latency_boundaries_ms[worst], state.latency_tallies[worst]
    value = math.exp(min(log_value, 700.0))
    return Check(
        name=f"latency>{boundary:g}ms",
        outcome=Outcome.FAIL if crossed else Outcome.PASS,
        canary_value=_share(tally.canary_bad, tally.canary_n),
        stable_value=_share(tally.stable_bad, tally.stable_n),
        threshold=1 / alpha,
        evidence=value,
        sentence=(
            f"canary slower than {boundary:g} ms {_percent(tally.canary_bad, tally.canary_n)} vs stable"
            f" {_percent(tally.stable_bad, tally.stable_n)} over {tally.canary_n + tally.stable_n:,} requests;"
            f" evidence {format_evidence(value)} {'>=' if crossed else '<'} {format_evidence(1 / alpha)}"
        ),
    )


def _evidence(state: AnalysisState) -> float:
    log_values = [EProcess(state.errors).log_value]
    if state.latency:
        log_values.append(combined_log_value([EProcess(products) for products in state.latency]))
    return math.exp(min(max(log_values), 700.0))


def _evidence_by_test(state: AnalysisState) -> dict[str, float]:
    tests = {"errors": EProcess(state.errors).value}
    for boundary, products in zip(state.latency_boundaries_ms, state.latency, strict=True):
        tests[f"latency>{boundary:g}ms"] = EProcess(products).value
    return tests


def _share(bad: int, total: int) -> float | None:
    return bad / total if total else None


def _percent(bad: int, total: int) -> str:
    return f"{100 * bad / total:.2f} % ({bad:,} of {total:,})" if total else "n/a (no requests)"


def format_evidence(value: float) -> str:
    """An e-value as the sentences write it: whole numbers in the hundreds of thousands, else 3 digits."""
    return f"{value:,.0f}" if 100 <= value < 1e6 else f"{value:.3g}"

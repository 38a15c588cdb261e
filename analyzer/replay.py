"""Backtesting a policy on recorded per-interval counts (`autocanary replay`).

A trace is JSON Lines, one interval per line, holding that interval's counts only:

    {"t": 10, "canary": {"requests": 52, "errors": 1, "buckets": {"100": 30, "+Inf": 52}},
     "stable": {"requests": 948, "errors": 4}}

`buckets` is optional and cumulative over `le` as in Prometheus, with `le` written in the
policy dialect's unit (milliseconds for knative-opencensus, seconds for knative-otel) and
`+Inf` equal to `requests`. The decision replays the statistics, the guardrails and their
minimum-sample rules. The step schedule is replayed beside it only to tell when it would have
promoted (`promote_t`: the engine's own decisions on these verdicts, time counted from t = 0);
the canary's share of the traffic is what the trace holds, not what the steps would have set.
Parsing and replaying are pure; reading files and Prometheus is the CLI's job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from analyzer.dialects import queries_for
from analyzer.verdict import AnalysisState, judge
from policies import Policy
from rollouts.counts import RevisionCounts
from rollouts.engine import decide, handle
from rollouts.events import Begin, CanaryReady
from rollouts.model import Rollout
from rollouts.phase import Phase
from rollouts.ports import MetricsSource
from rollouts.verdict import Outcome, Verdict

_START = datetime(2000, 1, 1, tzinfo=UTC)
"""t = 0 of a trace, for the engine's clock (only differences matter)."""


class TraceError(ValueError):
    """A trace line that cannot be replayed; says which line and which field."""


@dataclass(frozen=True)
class TraceInterval:
    t: float
    canary: RevisionCounts
    stable: RevisionCounts


@dataclass(frozen=True)
class ReplayStep:
    interval: TraceInterval
    verdict: Verdict


@dataclass(frozen=True)
class ReplayResult:
    decision: Literal["rollback", "no_rollback"]
    t: float | None
    reason: str
    steps: tuple[ReplayStep, ...]
    promote_t: float | None = None
    """When the policy's step schedule would have promoted (None: not within the trace)."""

    def summary(self) -> dict[str, Any]:
        return {"decision": self.decision, "t": self.t, "reason": self.reason, "promote_t": self.promote_t}


def replay(policy: Policy, intervals: Iterable[TraceInterval]) -> ReplayResult:
    state, steps, schedule = AnalysisState(), [], Schedule(policy)
    for interval in intervals:
        judgement = judge(policy, state, interval.canary, interval.stable)
        state = judgement.state
        steps.append(ReplayStep(interval, judgement.verdict))
        if judgement.verdict.outcome is Outcome.FAIL:
            return ReplayResult("rollback", interval.t, judgement.verdict.sentence, tuple(steps))
        schedule.judged(judgement.verdict, interval.t)
    evidence = max((step.verdict.evidence for step in steps), default=1.0)
    reason = f"no check failed over {len(steps)} intervals; largest evidence {evidence:.3g}"
    return ReplayResult("no_rollback", None, reason, tuple(steps), schedule.promote_t)


class Schedule:
    """The engine stepping through a policy's steps on verdicts that come from elsewhere (a trace,
    a simulation), on a clock that starts at t = 0, to tell when it would have promoted."""

    def __init__(self, policy: Policy) -> None:
        made = Rollout.new(
            id="replay",
            namespace="replay",
            service="replay",
            stable_revision="stable",
            canary_revision="canary",
            policy=policy,
            now=_START,
        )
        self.rollout = handle(handle(made, Begin(), _START).rollout, CanaryReady(), _START).rollout
        self.promote_t: float | None = None

    def judged(self, verdict: Verdict, t: float) -> None:
        if self.rollout.phase is not Phase.PROGRESSING:
            return  # promoted, or given up (insufficient traffic): the schedule has ended
        self.rollout = decide(self.rollout, verdict, _START + timedelta(seconds=t)).rollout
        if self.rollout.phase is Phase.PROMOTING:
            self.promote_t = t


def parse_trace(lines: Iterable[str], dialect: MetricsSource, source: str = "trace") -> list[TraceInterval]:
    intervals: list[TraceInterval] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise TraceError(f"{where}: not valid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise TraceError(f"{where}: each line must be a JSON object")
        t = record.get("t")
        if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
            raise TraceError(f"{where}: t: must be a number of seconds")
        if intervals and t < intervals[-1].t:
            raise TraceError(f"{where}: t: {t} goes back in time (previous {intervals[-1].t})")
        canary = _revision(record.get("canary"), dialect, f"{where}: canary")
        stable = _revision(record.get("stable"), dialect, f"{where}: stable")
        intervals.append(TraceInterval(float(t), canary, stable))
    return intervals


def trace_record(t: float, canary: RevisionCounts, stable: RevisionCounts, dialect: MetricsSource) -> dict[str, Any]:
    """One trace line's object, with `le` in the dialect's unit (the inverse of `parse_trace`)."""
    return {"t": t, "canary": _revision_record(canary, dialect), "stable": _revision_record(stable, dialect)}


def _revision_record(counts: RevisionCounts, dialect: MetricsSource) -> dict[str, Any]:
    record: dict[str, Any] = {"requests": counts.requests, "errors": counts.errors}
    if counts.buckets:
        unit = queries_for(dialect).ms_per_unit
        record["buckets"] = {f"{boundary / unit:g}": count for boundary, count in counts.buckets}
        record["buckets"]["+Inf"] = counts.requests
    return record


def _revision(value: object, dialect: MetricsSource, where: str) -> RevisionCounts:
    if not isinstance(value, Mapping):
        raise TraceError(f"{where}: must be an object with requests and errors")
    requests, errors = value.get("requests"), value.get("errors", 0)
    for field, number in (("requests", requests), ("errors", errors)):
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise TraceError(f"{where}.{field}: must be a whole number >= 0, got {number!r}")
    if not isinstance(requests, int) or not isinstance(errors, int):  # for the type checker; checked above
        raise TraceError(f"{where}: requests and errors must be whole numbers")
    if errors > requests:
        raise TraceError(f"{where}.errors: {errors} errors out of {requests} requests")
    return RevisionCounts.of(requests, errors, _buckets(value.get("buckets"), requests, dialect, where))


def _buckets(value: object, requests: int, dialect: MetricsSource, where: str) -> dict[float, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TraceError(f"{where}.buckets: must be an object of le -> count")
    unit = queries_for(dialect).ms_per_unit
    parsed: dict[float, int] = {}
    for le, count in value.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise TraceError(f"{where}.buckets[{le}]: must be a whole number >= 0, got {count!r}")
        if le == "+Inf":
            if count != requests:
                raise TraceError(f"{where}.buckets[+Inf]: {count} must equal requests ({requests})")
            continue
        try:
            boundary = float(le)
        except ValueError:
            raise TraceError(f"{where}.buckets: {le!r} is not a bucket boundary") from None
        if count > requests:
            raise TraceError(f"{where}.buckets[{le}]: {count} exceeds requests ({requests})")
        parsed[round(boundary * unit, 6)] = count
    previous = 0
    for boundary in sorted(parsed):
        if parsed[boundary] < previous:
            raise TraceError(f"{where}.buckets[{boundary / unit:g}]: buckets must be cumulative (non-decreasing in le)")
        previous = parsed[boundary]
    return parsed

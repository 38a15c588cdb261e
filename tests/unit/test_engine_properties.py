"""Invariants of the engine over random histories (hypothesis).

A history is a sequence of (seconds later, event) pairs applied through the engine, with a
tiny simulated cluster that carries out the traffic actions the way the runner would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import Policy
from rollouts import (
    TERMINAL_PHASES,
    Decision,
    InvalidTransition,
    Outcome,
    Phase,
    Promote,
    Rollback,
    Rollout,
    SetTraffic,
    handle,
)
from rollouts.events import (
    Abort,
    Begin,
    CanaryNotReady,
    CanaryReady,
    Event,
    Failed,
    Pause,
    PromoteNow,
    Resume,
    RollbackRequired,
    Superseded,
    Tick,
    TrafficApplied,
)
from tests.factories import T0, policy, rollout, seconds, verdict

policies = st.builds(
    lambda steps, on_insufficient, min_requests: policy(
        steps=steps,
        step_min_duration="30s",
        interval="10s",
        min_requests_per_step=min_requests,
        progress_deadline="60s",
        max_insufficient_duration="20s",
        on_insufficient_traffic=on_insufficient,
    ),
    st.lists(st.integers(1, 99), min_size=1, max_size=5, unique=True).map(sorted),
    st.sampled_from(["rollback", "hold"]),
    st.integers(0, 300),
)

ticks = st.builds(
    lambda outcome, requests: Tick(verdict(outcome, requests)),
    st.sampled_from(list(Outcome)),
    st.integers(0, 200),
)
# Ticks and readiness are what the runner sends most; manual commands and faults are rarer.
events = st.one_of(
    ticks,
    ticks,
    ticks,
    st.just(Begin()),
    st.just(CanaryReady()),
    st.just(CanaryNotReady("not ready")),
    st.just(TrafficApplied()),
    st.sampled_from(
        [
            Abort("op", "r"),
            Pause("op", "r"),
            Resume("op", "r"),
            PromoteNow("op", "r"),
            RollbackRequired("bad query"),
            Superseded("edited"),
            Failed("deleted"),
        ]
    ),
)
histories = st.lists(st.tuples(st.integers(0, 40), events), max_size=60)
automatic_histories = st.lists(
    st.tuples(st.integers(0, 40), st.one_of(ticks, ticks, st.just(CanaryReady()), st.just(TrafficApplied()))),
    max_size=60,
)


@dataclass
class Cluster:
    """What the Service's traffic would be after the runner carried out the actions."""

    stable: int = 100
    canary: int = 0
    writes: list[tuple[int, int]] = field(default_factory=list)

    def apply(self, decision: Decision) -> None:
        for action in decision.actions:
            if isinstance(action, SetTraffic):
                self.stable, self.canary = action.stable, action.canary
            elif isinstance(action, Promote):
                self.stable, self.canary = 0, 100
            elif isinstance(action, Rollback):
                self.stable, self.canary = 100, 0
            else:
                continue
            self.writes.append((self.stable, self.canary))


@dataclass
class Step:
    before: Rollout
    event: Event
    now: datetime
    decision: Decision | None  # None when the engine refused the event


def play(start: Rollout, history: list[tuple[int, Event]], cluster: Cluster) -> list[Step]:
    current, now, steps = start, T0, []
    for delay, event in history:
        now += seconds(delay)
        try:
            decision = handle(current, event, now)
        except InvalidTransition:
            steps.append(Step(current, event, now, None))
            continue
        cluster.apply(decision)
        steps.append(Step(current, event, now, decision))
        current = decision.rollout
    return steps


@settings(max_examples=300, deadline=None)
@given(policies, histories)
def test_every_set_traffic_sums_to_100(policy_: Policy, history: list[tuple[int, Event]]) -> None:
    for step in play(rollout(policy_), history, Cluster()):
        for action in step.decision.actions if step.decision else ():
            if isinstance(action, SetTraffic):
                assert action.stable + action.canary == 100
                assert 0 <= action.canary <= 100


@settings(max_examples=300, deadline=None)
@given(policies, histories)
def test_a_fail_verdict_never_raises_the_canary_weight(policy_: Policy, history: list[tuple[int, Event]]) -> None:
    for step in play(rollout(policy_), history, Cluster()):
        if step.decision is None or not isinstance(step.event, Tick) or step.event.verdict.outcome is not Outcome.FAIL:
            continue
        assert step.decision.rollout.canary_weight <= step.before.canary_weight
        assert not any(isinstance(action, Promote) for action in step.decision.actions)
        assert all(
            action.canary <= step.before.canary_weight
            for action in step.decision.actions
            if isinstance(action, SetTraffic)
        )


@settings(max_examples=300, deadline=None)
@given(policies, histories)
def test_terminal_phases_are_absorbing(policy_: Policy, history: list[tuple[int, Event]]) -> None:
    ended_as: Phase | None = None
    for step in play(rollout(policy_), history, Cluster()):
        if ended_as is not None:
            assert step.decision is None, f"{ended_as} accepted {step.event}"
            assert step.before.phase is ended_as
        elif step.decision and step.decision.rollout.phase in TERMINAL_PHASES:
            ended_as = step.decision.rollout.phase


@settings(max_examples=300, deadline=None)
@given(policies, histories, st.integers(0, 40))
def test_abort_from_any_non_terminal_phase_ends_with_stable_at_100(
    policy_: Policy, history: list[tuple[int, Event]], delay: int
) -> None:
    cluster = Cluster()
    steps = play(rollout(policy_), history, cluster)
    current = next((s.decision.rollout for s in reversed(steps) if s.decision), rollout(policy_))
    if current.phase in TERMINAL_PHASES:
        return
    now = current.updated_at + seconds(delay)
    aborted = handle(current, Abort("oncall", "pager"), now)
    cluster.apply(aborted)
    confirmed = handle(aborted.rollout, TrafficApplied(), now)
    assert confirmed.rollout.phase is Phase.ABORTED
    assert (cluster.stable, cluster.canary) == (100, 0)
    assert confirmed.rollout.canary_weight == 0


@settings(max_examples=400, deadline=None)
@given(policies, automatic_histories)
def test_promotion_only_after_the_last_step_met_its_duration_and_requests(
    policy_: Policy, history: list[tuple[int, Event]]
) -> None:
    start = handle(rollout(policy_), Begin(), T0).rollout
    for step in play(start, history, Cluster()):
        if step.decision is None or not any(isinstance(a, Promote) for a in step.decision.actions):
            continue
        judged = step.decision.rollout
        assert isinstance(step.event, Tick) and step.event.verdict.outcome is Outcome.PASS
        assert step.before.step_index == len(policy_.steps) - 1
        assert step.before.step_started_at is not None
        assert step.now - step.before.step_started_at >= policy_.step_min_duration
        assert judged.step_requests >= policy_.min_requests_per_step

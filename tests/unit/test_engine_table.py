"""Every phase x every event: which transitions the engine allows and where they lead."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from rollouts import TERMINAL_PHASES, InvalidTransition, Outcome, Phase, Rollout, handle
from rollouts.engine import TRANSITIONS, allowed_events
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
from tests.factories import T0, rollout, seconds, verdict

EVENTS: dict[str, Event] = {
    "begin": Begin(),
    "canary_ready": CanaryReady(),
    "canary_not_ready": CanaryNotReady("0/1 pods ready"),
    "tick_pass": Tick(verdict(Outcome.PASS)),
    "tick_fail": Tick(verdict(Outcome.FAIL)),
    "tick_inconclusive": Tick(verdict(Outcome.INCONCLUSIVE, 0)),
    "tick_error": Tick(verdict(Outcome.ERROR, 0)),
    "traffic_applied": TrafficApplied(),
    "rollback_required": RollbackRequired("bad query"),
    "superseded": Superseded("traffic edited by hand"),
    "failed": Failed("service deleted"),
    "abort": Abort("oncall", "pager"),
    "pause": Pause("oncall", "looking"),
    "resume": Resume("oncall", "fine"),
    "promote_now": PromoteNow("oncall", "urgent fix"),
}

# Where each event leads from each active phase, one tick after the phase was entered;
# "-" means the engine must refuse it. Terminal phases refuse everything (tested below).
EXPECTED = """
event              pending       initializing  progressing   paused        promoting     rolling_back
begin              initializing  -             -             -             -             -
canary_ready       -             progressing   -             -             -             -
canary_not_ready   -             initializing  -             -             -             -
tick_pass          -             -             progressing   paused        -             -
tick_fail          -             -             rolling_back  rolling_back  -             -
tick_inconclusive  -             -             progressing   paused        -             -
tick_error         -             -             progressing   paused        -             -
traffic_applied    -             -             -             -             succeeded     rolled_back
rollback_required  -             rolling_back  rolling_back  rolling_back  rolling_back  -
superseded         superseded    superseded    superseded    superseded    superseded    superseded
failed             failed        failed        failed        failed        failed        failed
abort              rolling_back  rolling_back  rolling_back  rolling_back  rolling_back  rolling_back
pause              paused        paused        paused        -             -             -
resume             -             -             -             progressing   -             -
promote_now        -             -             promoting     promoting     -             -
"""


def _expected() -> dict[tuple[Phase, str], Phase | None]:
    header, *rows = [line.split() for line in EXPECTED.strip().splitlines()]
    phases = [Phase(name) for name in header[1:]]
    table: dict[tuple[Phase, str], Phase | None] = {}
    for event, *cells in rows:
        for phase, cell in zip(phases, cells, strict=True):
            table[(phase, event)] = None if cell == "-" else Phase(cell)
    return table


TABLE = _expected()


def _reach(phase: Phase) -> Rollout:
    """A rollout brought to `phase` by the engine itself, at T0."""
    steps: dict[Phase, Callable[[], Rollout]] = {
        Phase.PENDING: rollout,
        Phase.INITIALIZING: lambda: _after(Phase.PENDING, Begin()),
        Phase.PROGRESSING: lambda: _after(Phase.INITIALIZING, CanaryReady()),
        Phase.PAUSED: lambda: _after(Phase.PROGRESSING, Pause("a", "b")),
        Phase.PROMOTING: lambda: _after(Phase.PROGRESSING, PromoteNow("a", "b")),
        Phase.SUCCEEDED: lambda: _after(Phase.PROMOTING, TrafficApplied()),
        Phase.ROLLING_BACK: lambda: _after(Phase.PROGRESSING, Tick(verdict(Outcome.FAIL))),
        Phase.ROLLED_BACK: lambda: _after(Phase.ROLLING_BACK, TrafficApplied()),
        Phase.ABORTED: lambda: _after(Phase.PENDING, Abort("a", "b"), TrafficApplied()),
        Phase.SUPERSEDED: lambda: _after(Phase.PROGRESSING, Superseded("edited")),
        Phase.FAILED: lambda: _after(Phase.PROGRESSING, Failed("gone")),
    }
    reached = steps[phase]()
    assert reached.phase is phase
    return reached


def _after(start: Phase, *events: Event, now: datetime = T0) -> Rollout:
    current = _reach(start)
    for event in events:
        current = handle(current, event, now).rollout
    return current


ACTIVE_CASES = sorted(TABLE, key=lambda key: (list(Phase).index(key[0]), key[1]))


@pytest.mark.parametrize(("phase", "event"), ACTIVE_CASES, ids=[f"{p.value}-{e}" for p, e in ACTIVE_CASES])
def test_active_phase_x_event(phase: Phase, event: str) -> None:
    start = _reach(phase)
    expected = TABLE[(phase, event)]
    if expected is None:
        with pytest.raises(InvalidTransition) as refused:
            handle(start, EVENTS[event], T0 + seconds(10))
        assert refused.value.phase == phase.value
    else:
        decision = handle(start, EVENTS[event], T0 + seconds(10))
        assert decision.rollout.phase is expected
        assert decision.rollout.updated_at == T0 + seconds(10)


TERMINAL_CASES = [(phase, event) for phase in sorted(TERMINAL_PHASES) for event in EVENTS]


@pytest.mark.parametrize(("phase", "event"), TERMINAL_CASES, ids=[f"{p.value}-{e}" for p, e in TERMINAL_CASES])
def test_terminal_phase_refuses_every_event(phase: Phase, event: str) -> None:
    ended = _reach(phase)
    with pytest.raises(InvalidTransition, match=f"in phase {phase.value}"):
        handle(ended, EVENTS[event], T0 + seconds(10))


def test_table_covers_every_phase_and_event_type() -> None:
    assert {phase for phase, _ in TABLE} | TERMINAL_PHASES == set(Phase)
    event_types = {type(event) for event in EVENTS.values()}
    assert {event for _, event in TRANSITIONS} == event_types


def test_the_engine_table_and_the_expected_table_agree_on_what_is_allowed() -> None:
    allowed_by_engine = {(phase, event) for (phase, event) in TRANSITIONS}
    allowed_expected = {(phase, type(EVENTS[name])) for (phase, name), to in TABLE.items() if to is not None}
    assert allowed_by_engine == allowed_expected


def test_allowed_events_names_verbs_for_error_messages() -> None:
    assert allowed_events(Phase.PAUSED) == sorted(
        {"abort", "fail", "judge", "promote", "resume", "roll back", "supersede"}
    )
    assert allowed_events(Phase.SUCCEEDED) == []

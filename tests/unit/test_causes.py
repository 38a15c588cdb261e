"""Table-driven tests of `rollouts.causes`: what the cluster, the metrics and a decision mean."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from rollouts import Phase, engine
from rollouts.causes import (
    EmptyWindow,
    cluster_event,
    empty_window,
    foreign_change,
    idle_next_tick,
    judging_window,
    log_entries,
    needs_write,
    notifications,
    readiness,
)
from rollouts.events import Abort, Begin, CanaryNotReady, CanaryReady, Failed, Superseded, Tick
from rollouts.model import Rollout
from rollouts.ports import TargetState, TrafficTarget, VersionState
from tests.factories import T0, policy, rollout, seconds, verdict

STABLE, CANARY = "checkout-00001", "checkout-00002"


def service(
    *targets: tuple[str, int],
    latest_created: str | None = CANARY,
    observed: bool = True,
    floating: bool = False,
) -> TargetState:
    spec = tuple(TrafficTarget(revision, percent) for revision, percent in targets)
    if floating:
        spec += (TrafficTarget("", 0, latest=True),)
    return TargetState(
        namespace="shop",
        name="checkout",
        generation=3,
        observed_generation=3 if observed else 2,
        resource_version="7",
        spec_traffic=spec,
        status_traffic=spec,
        newest_version=latest_created,
        newest_ready_version=latest_created,
        ready="True",
    )


def at_step(weight: int, applied: int | None = None, phase: Phase = Phase.PROGRESSING) -> Rollout:
    return rollout(phase=phase, canary_weight=weight, applied_canary_weight=weight if applied is None else applied)


AS_LEFT = service((STABLE, 90), (CANARY, 10))


@pytest.mark.parametrize(
    ("the_rollout", "state", "expected"),
    [
        pytest.param(rollout(), None, Failed("Service shop/checkout not found"), id="pending-service-missing"),
        pytest.param(at_step(10), None, Failed("Service shop/checkout was deleted"), id="progressing-service-deleted"),
        pytest.param(rollout(), AS_LEFT, Begin(), id="pending-begins"),
        pytest.param(at_step(10), AS_LEFT, None, id="progressing-as-left-nothing-to-say"),
        pytest.param(
            at_step(10),
            service((STABLE, 60), (CANARY, 40)),
            Superseded("traffic was set to 40 % canary by someone else (autocanary wrote 10 %)"),
            id="operator-moved-the-weight",
        ),
        pytest.param(
            at_step(0, phase=Phase.ROLLING_BACK),
            service((STABLE, 60), (CANARY, 40)),
            None,
            id="rolling-back-ignores-hand-edits",
        ),
        pytest.param(
            rollout(phase=Phase.INITIALIZING),
            service((STABLE, 60), (CANARY, 40)),
            None,
            id="not-pinned-yet-nothing-is-foreign",
        ),
    ],
)
def test_cluster_event(the_rollout: Rollout, state: TargetState | None, expected: object) -> None:
    assert cluster_event(the_rollout, state) == expected


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(AS_LEFT, None, id="as-left"),
        pytest.param(service((STABLE, 100), (CANARY, 0)), None, id="the-weight-autocanary-wrote-before"),
        pytest.param(
            service((STABLE, 90), (CANARY, 10), latest_created="checkout-00003"),
            "revision checkout-00003 was created",
            id="new-revision",
        ),
        pytest.param(
            service((STABLE, 90), (CANARY, 10), floating=True),
            "spec.traffic was edited to checkout-00001 90 %, checkout-00002 10 %, latest (latestRevision) 0 %",
            id="floating-latest-revision",
        ),
        pytest.param(
            service((STABLE, 80), ("checkout-00000", 20)),
            "spec.traffic was edited to checkout-00001 80 %, checkout-00000 20 %",
            id="a-third-revision",
        ),
        pytest.param(
            replace(AS_LEFT, route_match='[{"uri":{"prefix":"/b"}}]'),
            'the request matches of the route to both subsets were edited to [{"uri":{"prefix":"/b"}}]',
            id="istio-route-matches-edited",
        ),
    ],
)
def test_foreign_change(state: TargetState, expected: str | None) -> None:
    # Applied 0 % at the pin, intended 10 % now: either is autocanary's own.
    assert foreign_change(at_step(10, applied=0), state) == expected


@pytest.mark.parametrize(
    ("canary", "state", "applied", "expected"),
    [
        pytest.param(VersionState("shop", CANARY, "True"), AS_LEFT, 0, CanaryReady(), id="ready-and-pinned"),
        pytest.param(
            VersionState("shop", CANARY, "Unknown", message="pulling image"),
            AS_LEFT,
            0,
            CanaryNotReady("pulling image"),
            id="not-ready-says-why",
        ),
        pytest.param(
            VersionState("shop", CANARY, "False", reason="ExitCode1"),
            AS_LEFT,
            0,
            CanaryNotReady("ExitCode1"),
            id="failed-says-its-reason",
        ),
        pytest.param(
            VersionState("shop", CANARY, "True"),
            service((STABLE, 100), (CANARY, 0), observed=False),
            0,
            CanaryNotReady("waiting for the pinned route to be observed"),
            id="ready-but-pin-not-observed",
        ),
        pytest.param(
            VersionState("shop", CANARY, "True"),
            AS_LEFT,
            None,
            CanaryNotReady("waiting for the pinned route to be observed"),
            id="ready-but-pin-not-written",
        ),
    ],
)
def test_readiness(canary: VersionState, state: TargetState, applied: int | None, expected: object) -> None:
    initializing = rollout(phase=Phase.INITIALIZING, applied_canary_weight=applied)
    assert readiness(initializing, state, canary) == expected


STEP = rollout(phase=Phase.PROGRESSING, step_started_at=T0, canary_weight=5)
"""At the first step of `default` (10 s interval: windows of at most 100 s)."""


@pytest.mark.parametrize(
    ("the_rollout", "at", "expected"),
    [
        pytest.param(STEP, T0 + seconds(2), None, id="shorter-than-two-scrapes-waits"),
        pytest.param(STEP, T0 + seconds(30), 30, id="from-the-step-start"),
        pytest.param(STEP.with_analyzed(T0 + seconds(20), {}), T0 + seconds(30), 10, id="abuts-the-last-window"),
        pytest.param(STEP, T0 + seconds(3600), 100, id="capped-at-ten-intervals"),
    ],
)
def test_judging_window(the_rollout: Rollout, at: datetime, expected: int | None) -> None:
    assert judging_window(the_rollout, at, min_window=3) == expected


@pytest.mark.parametrize(
    ("the_rollout", "canary", "stable", "window", "expected"),
    [
        pytest.param(STEP, 10, 90, 30, EmptyWindow.JUDGE, id="traffic-is-judged"),
        pytest.param(STEP, 0, 90, 30, EmptyWindow.JUDGE, id="silent-canary-alone-is-judged"),
        pytest.param(STEP, 0, 0, 30, EmptyWindow.WIDEN, id="silence-widens-the-window"),
        pytest.param(STEP, 0, 0, 100, EmptyWindow.JUDGE, id="silence-at-the-ceiling-is-judged"),
        pytest.param(STEP.with_metrics_down(), 0, 0, 30, EmptyWindow.GAP, id="silence-after-an-outage-is-a-gap"),
    ],
)
def test_empty_window(the_rollout: Rollout, canary: int, stable: int, window: int, expected: EmptyWindow) -> None:
    assert empty_window(the_rollout, canary, stable, window) is expected


@pytest.mark.parametrize(
    ("the_rollout", "now", "expected"),
    [
        pytest.param(rollout(phase=Phase.INITIALIZING), T0, T0 + seconds(5), id="initializing-polls-every-5s"),
        pytest.param(STEP, T0 + seconds(5), T0 + seconds(11), id="next-window-an-interval-after-the-step"),
        pytest.param(
            STEP.with_analyzed(T0 + seconds(60), {}), T0 + seconds(61), T0 + seconds(71), id="after-the-last-window"
        ),
        pytest.param(STEP, T0 + seconds(40), T0 + seconds(50), id="overdue-and-idle-looks-an-interval-later"),
    ],
)
def test_idle_next_tick(the_rollout: Rollout, now: datetime, expected: datetime) -> None:
    assert idle_next_tick(the_rollout, now, min_window=3, metrics_lag=timedelta(seconds=1)) == expected


@pytest.mark.parametrize(
    ("the_rollout", "expected"),
    [
        pytest.param(at_step(10), False, id="weight-confirmed"),
        pytest.param(at_step(25, applied=10), True, id="weight-not-confirmed-yet"),
        pytest.param(rollout(phase=Phase.INITIALIZING), True, id="pin-not-written-yet"),
        pytest.param(at_step(100, phase=Phase.PROMOTING), True, id="promotion-still-to-write"),
        pytest.param(at_step(0, applied=25, phase=Phase.ROLLING_BACK), True, id="rollback-still-to-write"),
        pytest.param(rollout(phase=Phase.SUCCEEDED, applied_canary_weight=100, canary_weight=100), False, id="ended"),
    ],
)
def test_needs_write(the_rollout: Rollout, expected: bool) -> None:
    assert needs_write(the_rollout) is expected


def test_an_abort_logs_who_and_why_then_the_rollback_and_notifies() -> None:
    before = at_step(25)
    event = Abort("alice", "5xx on checkout")
    decision = engine.handle(before, event, T0)
    entries = log_entries(before, event, decision, T0)
    assert [(e.kind, e.actor, e.message) for e in entries] == [
        ("abort", "alice", "5xx on checkout"),
        ("rolling_back", "autocanary", "aborted by alice: 5xx on checkout"),
    ]
    assert notifications(decision.actions, T0) == []  # the rollback notifies once it is confirmed


def test_a_verdict_is_logged_with_its_numbers() -> None:
    before = STEP.model_copy(update={"policy": policy(step_min_duration="10m")})
    event = Tick(verdict(canary_requests=40))
    decision = engine.handle(before, event, T0 + seconds(30))
    (entry,) = log_entries(before, event, decision, T0 + seconds(30))
    assert entry.kind == "verdict" and entry.phase == "progressing"
    assert entry.data["canary_requests"] == 40 and entry.data["stable_requests"] == 360
    assert entry.data["step"] == 1 and entry.data["canary_weight"] == 5


def test_the_step_weight_written_but_not_confirmed_before_a_promotion_is_not_foreign() -> None:
    # Step 2 (10 %) was written, its worker died before confirming it (applied still 5 %), and the
    # next tick promoted: the cluster's 10 % is autocanary's own, not an operator's edit.
    promoting = rollout(
        phase=Phase.PROMOTING, step_index=1, step_started_at=T0, canary_weight=100, applied_canary_weight=5
    )
    assert foreign_change(promoting, service((STABLE, 90), (CANARY, 10))) is None
    assert foreign_change(promoting, service((STABLE, 60), (CANARY, 40))) == (
        "traffic was set to 40 % canary by someone else (autocanary wrote 5 %)"
    )


def test_an_edited_or_removed_match_route_is_foreign_once_autocanary_wrote_it() -> None:
    written = '{"match":[{"headers":{"end-user":{"exact":"jason"}}}]}'
    in_match_step = at_step(0).with_applied(0, route=written)
    assert (
        foreign_change(
            in_match_step,
            replace(AS_LEFT, spec_traffic=service((STABLE, 100), (CANARY, 0)).spec_traffic, own_route=written),
        )
        is None
    )
    edited = replace(service((STABLE, 100), (CANARY, 0)), own_route='{"match":[]}')
    assert foreign_change(in_match_step, edited) == "autocanary's match route was edited by someone else"
    removed = service((STABLE, 100), (CANARY, 0))
    assert foreign_change(in_match_step, removed) == "autocanary's match route was removed by someone else"
    assert foreign_change(at_step(0), removed) is None  # before the route is confirmed, nothing to compare


def tagged(*entries: tuple[str, int, str | None]) -> TargetState:
    """The Service with tags on its traffic entries."""
    return replace(AS_LEFT, spec_traffic=tuple(TrafficTarget(r, p, tag=t) for r, p, t in entries))


@pytest.mark.parametrize(
    ("state", "canary_url", "change"),
    [
        pytest.param(tagged((STABLE, 90, None), (CANARY, 10, "canary")), "http://u", None, id="as-written"),
        pytest.param(tagged((STABLE, 90, None), (CANARY, 10, None)), "", None, id="not-yet-written"),
        pytest.param(
            tagged((STABLE, 90, "canary"), (CANARY, 10, None)),
            "http://u",
            f"tag canary was moved to {STABLE} by someone else",
            id="moved-to-the-stable",
        ),
        pytest.param(
            tagged((STABLE, 90, None), (CANARY, 10, None)),
            "http://u",
            f"tag canary was taken off {CANARY} by someone else",
            id="taken-off",
        ),
        pytest.param(
            tagged((STABLE, 90, "current"), (CANARY, 10, "canary")), "http://u", None, id="another-tag-is-not-ours"
        ),
    ],
)
def test_a_tag_someone_else_moved_is_a_foreign_change(state: TargetState, canary_url: str, change: str | None) -> None:
    rollout_ = at_step(10).model_copy(update={"canary_url": canary_url})
    assert foreign_change(rollout_, state) == change


def test_a_tag_taken_off_by_the_final_write_is_no_foreign_change() -> None:
    promoting = rollout(phase=Phase.PROMOTING, canary_weight=100, applied_canary_weight=50, canary_url="http://u")
    assert engine.pending_write(promoting) is not None  # a final write, perhaps done before a crash
    assert foreign_change(promoting, tagged((STABLE, 0, None), (CANARY, 100, None))) is None


def test_a_policy_without_a_tag_watches_no_tag() -> None:
    untagged = rollout(policy(canary_tag=""), phase=Phase.PROGRESSING, canary_weight=10, applied_canary_weight=10)
    assert untagged.target.tag == ""
    assert foreign_change(untagged, tagged((STABLE, 90, "canary"), (CANARY, 10, None))) is None

"""The engine's behaviour, scenario by scenario, with an injected clock."""

from __future__ import annotations

from datetime import datetime

import pytest

from policies import NotificationEvent
from rollouts import (
    Decision,
    InvalidTransition,
    ManualActionKind,
    Notify,
    Outcome,
    Phase,
    Promote,
    Rollback,
    Rollout,
    ScheduleTick,
    SetTraffic,
    Verdict,
    abort,
    decide,
    handle,
    pause,
    pending_write,
    promote_now,
    resume,
)
from rollouts.events import Begin, CanaryNotReady, CanaryReady, TrafficApplied
from tests.factories import T0, policy, rollout, seconds, verdict

FAST = policy(
    steps=[5, 10, 25, 50],
    step_min_duration="30s",
    interval="10s",
    min_requests_per_step=100,
    progress_deadline="60s",
    max_insufficient_duration="30s",
)


def progressing(at: datetime = T0) -> Rollout:
    started = handle(rollout(FAST, at), Begin(), at).rollout
    return handle(started, CanaryReady(), at).rollout


def traffic(decision: Decision) -> list[SetTraffic]:
    return [action for action in decision.actions if isinstance(action, SetTraffic)]


def notified(decision: Decision) -> list[NotificationEvent]:
    return [action.event for action in decision.actions if isinstance(action, Notify)]


def test_begin_pins_both_revisions_and_ticks_immediately() -> None:
    decision = handle(rollout(FAST), Begin(), T0)
    assert decision.rollout.phase is Phase.INITIALIZING
    assert traffic(decision) == [SetTraffic(stable=100, canary=0)]
    assert notified(decision) == [NotificationEvent.STARTED]
    assert decision.next_tick == T0


def test_canary_ready_enters_the_first_step() -> None:
    decision = handle(handle(rollout(FAST), Begin(), T0).rollout, CanaryReady(), T0 + seconds(3))
    assert decision.rollout.phase is Phase.PROGRESSING
    assert (decision.rollout.step_index, decision.rollout.canary_weight) == (0, 5)
    assert decision.rollout.step_started_at == T0 + seconds(3)
    assert traffic(decision) == [SetTraffic(stable=95, canary=5)]
    assert decision.next_tick == T0 + seconds(13)


def test_good_canary_promotes_through_every_step() -> None:
    current, now = progressing(), T0
    splits = [(current.stable_weight, current.canary_weight)]
    while current.phase is Phase.PROGRESSING:
        now += FAST.interval
        decision = decide(current, verdict(Outcome.PASS, 40), now)
        splits += [(t.stable, t.canary) for t in traffic(decision)]
        current = decision.rollout
    assert splits == [(95, 5), (90, 10), (75, 25), (50, 50)]
    assert current.phase is Phase.PROMOTING
    assert pending_write(current) == Promote()
    done = handle(current, TrafficApplied(), now)
    assert done.rollout.phase is Phase.SUCCEEDED
    assert done.rollout.finished_at == now
    assert notified(done) == [NotificationEvent.PROMOTED]
    assert done.rollout.checks.passed == 12  # three 10 s ticks per 30 s step, four steps


def test_a_step_waits_for_its_minimum_duration_even_with_plenty_of_traffic() -> None:
    current = progressing()
    decision = decide(current, verdict(Outcome.PASS, 10_000), T0 + seconds(29))
    assert decision.rollout.step_index == 0
    assert traffic(decision) == []
    assert "29s of 30s" in decision.rollout.reason


def test_inconclusive_never_advances_a_step() -> None:
    current = progressing()
    current = decide(current, verdict(Outcome.PASS, 200), T0 + seconds(20)).rollout
    decision = decide(current, verdict(Outcome.INCONCLUSIVE, 0), T0 + seconds(40))
    assert decision.rollout.step_index == 0
    assert decision.rollout.checks.inconclusive == 1
    assert "waiting for a conclusive check" in decision.rollout.reason
    advanced = decide(decision.rollout, verdict(Outcome.PASS, 5), T0 + seconds(50))
    assert advanced.rollout.step_index == 1


def test_fail_rolls_back_with_the_verdict_sentence() -> None:
    sentence = "canary 5xx 2.1 % vs stable 0.4 % over 3,120 requests; evidence 142 >= 100"
    decision = decide(progressing(), verdict(Outcome.FAIL, 300, sentence), T0 + seconds(10))
    assert decision.rollout.phase is Phase.ROLLING_BACK
    assert decision.rollout.canary_weight == 0
    assert decision.actions[0] == Rollback(sentence)
    assert decision.next_tick == T0 + seconds(10)
    ended = handle(decision.rollout, TrafficApplied(), T0 + seconds(11))
    assert ended.rollout.phase is Phase.ROLLED_BACK
    assert ended.rollout.reason == sentence
    assert notified(ended) == [NotificationEvent.ROLLED_BACK]


def test_metrics_error_holds_and_never_promotes() -> None:
    current = progressing()
    for tick in range(1, 30):
        decision = decide(current, verdict(Outcome.ERROR, 0, "prometheus unreachable"), T0 + seconds(10 * tick))
        assert traffic(decision) == [] and decision.rollout.phase is Phase.PROGRESSING
        current = decision.rollout
    assert current.checks.errored == 29
    assert current.step_requests == 0
    assert "metrics unavailable" in current.reason


def test_insufficient_traffic_rolls_back_after_the_grace_period() -> None:
    current = progressing()
    for tick in range(1, 6):  # 50 s: 30 s of step plus 20 s of grace, still waiting
        current = decide(current, verdict(Outcome.PASS, 5), T0 + seconds(10 * tick)).rollout
    assert current.phase is Phase.PROGRESSING
    assert current.reason.startswith("insufficient traffic: canary served 25 of 100")
    decision = decide(current, verdict(Outcome.PASS, 5), T0 + seconds(60))
    assert decision.rollout.phase is Phase.ROLLING_BACK
    assert "insufficient traffic" in decision.rollout.reason


def test_insufficient_traffic_holds_when_the_policy_says_so_and_advances_once_traffic_comes() -> None:
    holding = policy(**{**FAST.model_dump(mode="json", exclude={"name"}), "on_insufficient_traffic": "hold"})
    current = handle(handle(rollout(holding), Begin(), T0).rollout, CanaryReady(), T0).rollout
    for tick in range(1, 60):
        current = decide(current, verdict(Outcome.PASS, 1), T0 + seconds(10 * tick)).rollout
        assert current.phase is Phase.PROGRESSING and current.step_index == 0
    assert "holding (policy: hold)" in current.reason
    advanced = decide(current, verdict(Outcome.PASS, 100), T0 + seconds(600))
    assert advanced.rollout.step_index == 1


def test_canary_never_ready_rolls_back_at_the_progress_deadline() -> None:
    initializing = handle(rollout(FAST), Begin(), T0).rollout
    waiting = handle(initializing, CanaryNotReady("ContainersNotReady"), T0 + seconds(59))
    assert waiting.rollout.phase is Phase.INITIALIZING
    assert waiting.next_tick == T0 + seconds(64)  # polls at most every 5 s while initializing
    late = handle(waiting.rollout, CanaryNotReady("ContainersNotReady"), T0 + seconds(60))
    assert late.rollout.phase is Phase.ROLLING_BACK
    assert "not Ready within the progress deadline (1m): ContainersNotReady" in late.rollout.reason


def test_abort_records_the_actor_and_ends_aborted_with_stable_at_100() -> None:
    now = T0 + seconds(15)
    decision = abort(progressing(), "alice", "error budget burning", now)
    assert decision.rollout.phase is Phase.ROLLING_BACK
    assert decision.actions[0] == Rollback("aborted by alice: error budget burning")
    assert decision.rollout.last_action is not None
    assert (decision.rollout.last_action.kind, decision.rollout.last_action.actor) == (
        ManualActionKind.ABORT,
        "alice",
    )
    ended = handle(decision.rollout, TrafficApplied(), now)
    assert ended.rollout.phase is Phase.ABORTED
    assert notified(ended) == [NotificationEvent.ABORTED]


def test_abort_during_a_rollback_ends_aborted() -> None:
    rolling = decide(progressing(), verdict(Outcome.FAIL), T0 + seconds(10)).rollout
    aborted = abort(rolling, "bob", "", T0 + seconds(11)).rollout
    assert aborted.reason == "aborted by bob"
    assert handle(aborted, TrafficApplied(), T0 + seconds(12)).rollout.phase is Phase.ABORTED


def test_pause_holds_the_weight_but_a_failure_still_rolls_back() -> None:
    paused = pause(progressing(), "carol", "investigating", T0 + seconds(5)).rollout
    for tick in range(1, 10):
        decision = decide(paused, verdict(Outcome.PASS, 500), T0 + seconds(10 * tick))
        assert traffic(decision) == [] and decision.rollout.phase is Phase.PAUSED
        paused = decision.rollout
    assert paused.reason == "paused by carol: investigating"
    failed = decide(paused, verdict(Outcome.FAIL, 500), T0 + seconds(100))
    assert failed.rollout.phase is Phase.ROLLING_BACK


def test_resume_continues_the_step_where_it_was() -> None:
    paused = pause(progressing(), "carol", "", T0 + seconds(5)).rollout
    paused = decide(paused, verdict(Outcome.PASS, 500), T0 + seconds(40)).rollout
    resumed = resume(paused, "carol", "looks fine", T0 + seconds(45))
    assert resumed.rollout.phase is Phase.PROGRESSING
    assert resumed.next_tick == T0 + seconds(45)
    advanced = decide(resumed.rollout, verdict(Outcome.PASS, 10), T0 + seconds(46))
    assert advanced.rollout.step_index == 1  # the paused time at 5 % counted toward the step


def test_resume_before_the_first_step_initializes_again() -> None:
    paused = pause(handle(rollout(FAST), Begin(), T0).rollout, "dan", "", T0 + seconds(1)).rollout
    resumed = resume(paused, "dan", "", T0 + seconds(300))
    assert resumed.rollout.phase is Phase.INITIALIZING
    assert resumed.rollout.phase_entered_at == T0 + seconds(300)  # a fresh progress deadline
    assert traffic(resumed) == [SetTraffic(stable=100, canary=0)]


def test_promote_now_skips_the_remaining_steps() -> None:
    decision = promote_now(progressing(), "erin", "hotfix", T0 + seconds(1))
    assert decision.rollout.phase is Phase.PROMOTING
    assert decision.actions[0] == Promote()
    assert decision.rollout.reason == "promoted by erin: hotfix"


def test_promote_now_refuses_a_canary_that_is_not_ready_yet() -> None:
    initializing = handle(rollout(FAST), Begin(), T0).rollout
    with pytest.raises(InvalidTransition, match="cannot promote rollout r1 in phase initializing"):
        promote_now(initializing, "erin", "", T0)


def test_decide_takes_the_policy_from_the_rollout() -> None:
    slower = policy(
        **{**FAST.model_dump(mode="json", exclude={"name"}), "step_min_duration": "5m", "step_max_duration": "5m"}
    )
    current = progressing()
    assert decide(current, verdict(Outcome.PASS, 1000), T0 + seconds(60)).rollout.step_index == 1
    held = decide(current.model_copy(update={"policy": slower}), verdict(Outcome.PASS, 1000), T0 + seconds(60))
    assert held.rollout.step_index == 0


def test_pending_write_is_none_outside_the_final_phases() -> None:
    assert pending_write(progressing()) is None
    rolling = decide(progressing(), verdict(Outcome.FAIL, 1, "x"), T0).rollout
    assert pending_write(rolling) == Rollback("x")


def test_every_non_terminal_decision_schedules_a_tick() -> None:
    decision = decide(progressing(), verdict(Outcome.PASS, 1), T0 + seconds(10))
    assert [a for a in decision.actions if isinstance(a, ScheduleTick)] == [ScheduleTick(T0 + seconds(20))]


def test_each_judged_verdict_records_its_evidence_and_an_error_keeps_the_last() -> None:
    judged = decide(progressing(), verdict(Outcome.PASS, 200).model_copy(update={"evidence": 42.5}), T0 + seconds(10))
    assert judged.rollout.evidence == 42.5
    held = decide(judged.rollout, verdict(Outcome.ERROR, 0, "prometheus unreachable"), T0 + seconds(20))
    assert held.rollout.evidence == 42.5  # no new data, no new evidence


EARLY = policy(
    steps=[5, 10, 25, 50],
    step_min_duration="30s",
    step_max_duration="150s",
    interval="10s",
    min_requests_per_step=100,
    max_insufficient_duration="30s",
)
NO_WORSE = "canary no worse than 1.5x stable's error odds: evidence 112 >= 100 over 4,210 requests"


def shown(canary_requests: int = 100, no_worse: bool = True) -> Verdict:
    return verdict(Outcome.PASS, canary_requests).model_copy(
        update={
            "no_worse": no_worse,
            "no_worse_evidence": 112.0 if no_worse else 3.0,
            "no_worse_sentence": NO_WORSE if no_worse else "canary not yet shown no worse than 1.5x: evidence 3 < 100",
        }
    )


def early_progressing() -> Rollout:
    return handle(handle(rollout(EARLY), Begin(), T0).rollout, CanaryReady(), T0).rollout


def test_a_step_shown_no_worse_ends_at_its_floor_and_says_why() -> None:
    current = early_progressing()
    held = decide(current, shown(60), T0 + seconds(20))  # shown, but before the 30 s floor
    assert held.rollout.step_index == 0 and traffic(held) == []
    decision = decide(held.rollout, shown(60), T0 + seconds(30))
    assert decision.rollout.step_index == 1
    assert traffic(decision) == [SetTraffic(stable=90, canary=10)]
    message = next(action.message for action in decision.actions if isinstance(action, Notify))
    assert f"step 1 ended early after 30s: {NO_WORSE}" in message


def test_a_step_not_yet_shown_no_worse_runs_to_its_longest_length() -> None:
    current, now = early_progressing(), T0
    while current.step_index == 0 and current.phase is Phase.PROGRESSING:
        now += EARLY.interval
        current = decide(current, shown(40, no_worse=False), now).rollout
        if now == T0 + seconds(100):
            assert "1m40s of 30s to 2m30s" in current.reason and "not yet shown no worse" in current.reason
    assert now == T0 + seconds(150) and current.step_index == 1


def test_shown_no_worse_never_ends_a_step_without_its_minimum_requests() -> None:
    current = early_progressing()
    decision = decide(current, shown(20), T0 + seconds(40))
    assert decision.rollout.step_index == 0
    assert "20 of 100 canary requests" in decision.rollout.reason


def test_insufficient_traffic_is_judged_from_the_longest_length_not_the_floor() -> None:
    current, now = early_progressing(), T0
    while now < T0 + seconds(170):
        now += EARLY.interval
        current = decide(current, shown(1), now).rollout
    assert current.phase is Phase.PROGRESSING and "insufficient traffic" in current.reason
    now += seconds(20)  # 150 s + the 30 s grace
    assert decide(current, shown(1), now).rollout.phase is Phase.ROLLING_BACK


def test_the_last_step_shown_no_worse_promotes_early_with_the_reason() -> None:
    current = early_progressing().model_copy(update={"step_index": 3, "canary_weight": 50})
    decision = decide(current, shown(500), T0 + seconds(30))
    assert decision.rollout.phase is Phase.PROMOTING
    assert decision.rollout.reason == f"all 4 steps passed; step 4 ended early after 30s: {NO_WORSE}"


def test_a_failure_during_a_step_shown_no_worse_still_rolls_back() -> None:
    failing = shown(500).model_copy(update={"outcome": Outcome.FAIL, "sentence": "latency>400ms: worse"})
    decision = decide(early_progressing(), failing, T0 + seconds(40))
    assert decision.rollout.phase is Phase.ROLLING_BACK
    assert decision.rollout.reason == "latency>400ms: worse"


def test_fixed_steps_ignore_the_no_worse_evidence() -> None:
    decision = decide(progressing(), shown(500), T0 + seconds(20))
    assert decision.rollout.step_index == 0 and not FAST.ends_steps_early

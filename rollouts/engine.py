"""The rollout engine: given a rollout and what just happened, decide what happens next.

Pure: `handle(rollout, event, now)` returns a `Decision` (the new rollout and the actions the
runner must carry out) and touches nothing else: no clock, no network, no store. The
`TRANSITIONS` table lists every (phase, event) pair that is allowed; anything else raises
`InvalidTransition`, so a command that makes no sense (abort a finished rollout, promote before
the canary is Ready) is refused instead of half-done.

Crash safety comes from the shape of the phases: the final writes are decided first
(`promoting`, `rolling_back`) and confirmed later (`TrafficApplied`), so the runner can save the
decision, die, and have the next worker repeat the write (`pending_write`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from policies import InsufficientTrafficAction, NotificationEvent, Policy, format_duration
from rollouts.actions import Action, Notify, Promote, Rollback, ScheduleTick, SetTraffic
from rollouts.errors import InvalidTransition
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
from rollouts.matching import request_matches
from rollouts.model import ManualActionKind, Rollout
from rollouts.phase import ACTIVE_PHASES, Phase
from rollouts.verdict import Outcome, Verdict

INIT_POLL = timedelta(seconds=5)
"""Longest wait between two readiness checks of the canary while initializing."""


@dataclass(frozen=True)
class Decision:
    """The engine's answer: the rollout to save and the actions to carry out, in order."""

    rollout: Rollout
    actions: tuple[Action, ...] = ()

    @property
    def next_tick(self) -> datetime | None:
        ticks = [action.at for action in self.actions if isinstance(action, ScheduleTick)]
        return min(ticks) if ticks else None


Handler = Callable[[Rollout, Any, Policy, datetime], Decision]


def handle(rollout: Rollout, event: Event, now: datetime) -> Decision:
    """Apply one event under the rollout's own policy (frozen when it was registered).

    Raises `InvalidTransition` when the rollout's phase does not allow the event.
    """
    handler = TRANSITIONS.get((rollout.phase, type(event)))
    if handler is None:
        raise InvalidTransition(rollout.phase.value, event.verb, rollout.id)
    decision = handler(rollout, event, rollout.policy, now)
    return Decision(decision.rollout.with_updated(now), decision.actions)


def decide(rollout: Rollout, verdict: Verdict, now: datetime) -> Decision:
    """Judge one interval's verdict: hold, advance a step, promote or roll back."""
    return handle(rollout, Tick(verdict), now)


def abort(rollout: Rollout, actor: str, reason: str, now: datetime) -> Decision:
    """Stable back to 100 % now; the rollout ends `aborted` once the router confirms it."""
    return handle(rollout, Abort(actor, reason), now)


def pause(rollout: Rollout, actor: str, reason: str, now: datetime) -> Decision:
    """Hold at the current weight; failures still roll back."""
    return handle(rollout, Pause(actor, reason), now)


def resume(rollout: Rollout, actor: str, reason: str, now: datetime) -> Decision:
    """Continue a paused rollout where it was."""
    return handle(rollout, Resume(actor, reason), now)


def promote_now(rollout: Rollout, actor: str, reason: str, now: datetime) -> Decision:
    """Skip the remaining steps and route 100 % to the canary."""
    return handle(rollout, PromoteNow(actor, reason), now)


def pending_write(rollout: Rollout) -> Promote | Rollback | None:
    """The final write a rollout in `promoting` or `rolling_back` still needs (to repeat after a crash)."""
    if rollout.phase is Phase.PROMOTING:
        return Promote()
    if rollout.phase is Phase.ROLLING_BACK:
        return Rollback(rollout.reason)
    return None


def allowed_events(phase: Phase) -> list[str]:
    """The verbs a phase accepts, for error messages and docs."""
    return sorted({event.verb for (from_phase, event) in TRANSITIONS if from_phase is phase})


# --- handlers -------------------------------------------------------------------------------


def _begin(rollout: Rollout, _: Begin, policy: Policy, now: datetime) -> Decision:
    started = rollout.with_phase(Phase.INITIALIZING, now, reason="pinning both revisions")
    message = (
        f"rollout {rollout.id}: {rollout.canary_revision} to replace {rollout.stable_revision}"
        f" on {rollout.namespace}/{rollout.service} in {len(policy.steps)} steps"
        f" ({', '.join(policy.describe_step(i) for i in range(len(policy.steps)))}), policy {policy.name}"
    )
    return Decision(
        started,
        (SetTraffic(stable=100, canary=0), Notify(NotificationEvent.STARTED, message), ScheduleTick(now)),
    )


def _canary_ready(rollout: Rollout, _: CanaryReady, policy: Policy, now: datetime) -> Decision:
    return _enter_step(rollout.with_phase(Phase.PROGRESSING, now, reason=""), 0, policy, now)


def _canary_not_ready(rollout: Rollout, event: CanaryNotReady, policy: Policy, now: datetime) -> Decision:
    detail = event.detail or "not Ready yet"
    if now - rollout.phase_entered_at >= policy.progress_deadline:
        return _roll_back(
            rollout,
            now,
            f"canary revision {rollout.canary_revision} was not Ready within the progress deadline"
            f" ({format_duration(policy.progress_deadline)}): {detail}",
        )
    waiting = rollout.with_reason(f"waiting for canary revision {rollout.canary_revision}: {detail}")
    return Decision(waiting, (ScheduleTick(now + min(policy.interval, INIT_POLL)),))


def _tick(rollout: Rollout, event: Tick, policy: Policy, now: datetime) -> Decision:
    verdict = event.verdict
    if verdict.outcome is Outcome.ERROR:
        held = (
            rollout.with_counted(Outcome.ERROR, 0)
            .with_metrics_down()
            .with_reason(f"metrics unavailable, holding at {rollout.canary_weight} %: {verdict.sentence}")
        )
        return _wait(held, policy, now)
    judged = (
        rollout.with_metrics_back(now)
        .with_counted(verdict.outcome, verdict.canary_requests)
        .with_evidence(verdict.evidence, verdict.no_worse_evidence)
    )
    if verdict.outcome is Outcome.FAIL:
        return _roll_back(judged, now, verdict.sentence or "a check failed")
    if judged.phase is Phase.PAUSED or judged.step_started_at is None:
        return _wait(judged, policy, now)

    position = f"step {judged.step_index + 1}/{len(policy.steps)} at {policy.describe_step(judged.step_index)}"
    # Time without metrics is not observed time: an outage neither ends a step nor uses up the
    # insufficient-traffic grace (the window right after it holds no samples, not low traffic).
    elapsed = judged.observed_in_step(now)
    full = elapsed >= policy.step_max_duration
    enough = judged.step_requests >= policy.min_requests_per_step
    if elapsed < policy.step_min_duration or (not enough and not full):
        return _wait(judged.with_reason(_progress(judged, verdict, policy, position, elapsed)), policy, now)
    if not enough:
        return _starved(judged, policy, now, position, elapsed)
    if verdict.outcome is not Outcome.PASS:
        return _wait(judged.with_reason(f"{position}: waiting for a conclusive check"), policy, now)
    if not full and not verdict.no_worse:
        return _wait(judged.with_reason(_progress(judged, verdict, policy, position, elapsed)), policy, now)
    # A step ends at its full length, or earlier once the canary is shown no worse (and its floor passed).
    early = (
        ""
        if full
        else f"step {judged.step_index + 1} ended early after {format_duration(elapsed)}: {verdict.no_worse_sentence}"
    )
    if judged.step_index + 1 < len(policy.steps):
        return _enter_step(judged, judged.step_index + 1, policy, now, early)
    last = early or f"last check: {verdict.sentence}".rstrip(": ")
    return _promote(judged, now, f"all {len(policy.steps)} steps passed; {last}")


def _progress(rollout: Rollout, verdict: Verdict, policy: Policy, position: str, elapsed: timedelta) -> str:
    """Where a step stands: its time against its floor (and its longest length), its requests, and
    how far the evidence that the canary is no worse has come."""
    length = format_duration(policy.step_min_duration)
    if policy.ends_steps_early:
        length = f"{length} to {format_duration(policy.step_max_duration)}"
    progress = (
        f"{position}: {format_duration(elapsed)} of {length},"
        f" {rollout.step_requests} of {policy.min_requests_per_step} canary requests"
    )
    return f"{progress}; {verdict.no_worse_sentence}" if verdict.no_worse_sentence else progress


def _starved(rollout: Rollout, policy: Policy, now: datetime, position: str, elapsed: timedelta) -> Decision:
    """A step that ran its full length (`step_max_duration`) without the minimum canary requests."""
    message = (
        f"insufficient traffic: canary served {rollout.step_requests} of {policy.min_requests_per_step}"
        f" requests in {position} after {format_duration(elapsed)}"
    )
    overdue = elapsed - policy.step_max_duration >= policy.max_insufficient_duration
    if overdue and policy.on_insufficient_traffic is InsufficientTrafficAction.ROLLBACK:
        return _roll_back(rollout, now, message)
    suffix = (
        "; holding (policy: hold)"
        if overdue
        else (f"; waiting up to {format_duration(policy.max_insufficient_duration)} more")
    )
    return _wait(rollout.with_reason(message + suffix), policy, now)


def _traffic_applied(rollout: Rollout, _: TrafficApplied, policy: Policy, now: datetime) -> Decision:
    where = f"{rollout.namespace}/{rollout.service}"
    if rollout.phase is Phase.PROMOTING:
        done = rollout.with_phase(Phase.SUCCEEDED, now)
        message = f"{rollout.canary_revision} promoted to 100 % on {where}: {rollout.reason}"
        return Decision(done, (Notify(NotificationEvent.PROMOTED, message),))
    aborted = rollout.last_action is not None and rollout.last_action.kind is ManualActionKind.ABORT
    phase, event = (
        (Phase.ABORTED, NotificationEvent.ABORTED) if aborted else (Phase.ROLLED_BACK, NotificationEvent.ROLLED_BACK)
    )
    message = (
        f"{rollout.stable_revision} serves 100 % again on {where};"
        f" {rollout.canary_revision} {phase.value}: {rollout.reason}"
    )
    return Decision(rollout.with_phase(phase, now), (Notify(event, message),))


def _rollback_required(rollout: Rollout, event: RollbackRequired, policy: Policy, now: datetime) -> Decision:
    return _roll_back(rollout, now, event.reason)


def _superseded(rollout: Rollout, event: Superseded, policy: Policy, now: datetime) -> Decision:
    reason = f"superseded: {event.what}; autocanary stopped writing to the Service"
    ended = rollout.with_phase(Phase.SUPERSEDED, now, reason=reason)
    return Decision(ended, (Notify(NotificationEvent.SUPERSEDED, reason),))


def _failed(rollout: Rollout, event: Failed, policy: Policy, now: datetime) -> Decision:
    ended = rollout.with_phase(Phase.FAILED, now, reason=event.message)
    return Decision(ended, (Notify(NotificationEvent.FAILED, event.message),))


def _abort(rollout: Rollout, event: Abort, policy: Policy, now: datetime) -> Decision:
    reason = f"aborted by {event.actor}: {event.reason}" if event.reason else f"aborted by {event.actor}"
    marked = rollout.with_manual_action(ManualActionKind.ABORT, event.actor, event.reason, now)
    return _roll_back(marked, now, reason)


def _pause(rollout: Rollout, event: Pause, policy: Policy, now: datetime) -> Decision:
    reason = _by("paused", event.actor, event.reason)
    paused = rollout.with_manual_action(ManualActionKind.PAUSE, event.actor, event.reason, now).with_phase(
        Phase.PAUSED, now, reason=reason
    )
    return Decision(paused, (Notify(NotificationEvent.PAUSED, reason), ScheduleTick(now + policy.interval)))


def _resume(rollout: Rollout, event: Resume, policy: Policy, now: datetime) -> Decision:
    reason = _by("resumed", event.actor, event.reason)
    marked = rollout.with_manual_action(ManualActionKind.RESUME, event.actor, event.reason, now)
    notify = Notify(NotificationEvent.RESUMED, reason)
    if rollout.step_started_at is None:  # paused before the first step: initialize again
        again = marked.with_phase(Phase.INITIALIZING, now, reason=reason)
        return Decision(again, (SetTraffic(stable=100, canary=0), notify, ScheduleTick(now)))
    return Decision(marked.with_phase(Phase.PROGRESSING, now, reason=reason), (notify, ScheduleTick(now)))


def _promote_now(rollout: Rollout, event: PromoteNow, policy: Policy, now: datetime) -> Decision:
    marked = rollout.with_manual_action(ManualActionKind.PROMOTE, event.actor, event.reason, now)
    return _promote(marked, now, _by("promoted", event.actor, event.reason))


# --- shared moves -----------------------------------------------------------------------------


def _enter_step(rollout: Rollout, index: int, policy: Policy, now: datetime, why: str = "") -> Decision:
    weight, match = policy.step_weight(index), policy.step_match(index)
    stepped = rollout.with_step(index, weight, now)
    if match is not None:
        message = (
            f"step {index + 1}/{len(policy.steps)}: requests with {match.describe()} to {rollout.canary_revision},"
            f" the rest to {rollout.stable_revision}"
        )
    else:
        message = (
            f"step {index + 1}/{len(policy.steps)}: {rollout.canary_revision} {weight} %,"
            f" {rollout.stable_revision} {100 - weight} %"
        )
    if why:
        message = f"{message} ({why})"
    matches = request_matches(match) if match is not None else ()
    return Decision(
        stepped,
        (
            SetTraffic(stable=100 - weight, canary=weight, matches=matches),
            Notify(NotificationEvent.STEP_ADVANCED, message),
            ScheduleTick(now + policy.interval),
        ),
    )


def _wait(rollout: Rollout, policy: Policy, now: datetime) -> Decision:
    return Decision(rollout, (ScheduleTick(now + policy.interval),))


def _roll_back(rollout: Rollout, now: datetime, reason: str) -> Decision:
    rolling = rollout.with_phase(Phase.ROLLING_BACK, now, reason=reason).with_weight(0)
    return Decision(rolling, (Rollback(reason), ScheduleTick(now)))


def _promote(rollout: Rollout, now: datetime, reason: str) -> Decision:
    promoting = rollout.with_phase(Phase.PROMOTING, now, reason=reason).with_weight(100)
    return Decision(promoting, (Promote(), ScheduleTick(now)))


def _by(verb: str, actor: str, reason: str) -> str:
    return f"{verb} by {actor}: {reason}" if reason else f"{verb} by {actor}"


# --- the table --------------------------------------------------------------------------------


def _each(phases: Iterable[Phase], event: type[Event], handler: Handler) -> dict[tuple[Phase, type[Event]], Handler]:
    return {(phase, event): handler for phase in phases}


_JUDGED = (Phase.PROGRESSING, Phase.PAUSED)

TRANSITIONS: dict[tuple[Phase, type[Event]], Handler] = {
    (Phase.PENDING, Begin): _begin,
    (Phase.INITIALIZING, CanaryReady): _canary_ready,
    (Phase.INITIALIZING, CanaryNotReady): _canary_not_ready,
    **_each(_JUDGED, Tick, _tick),
    **_each((Phase.PROMOTING, Phase.ROLLING_BACK), TrafficApplied, _traffic_applied),
    **_each((Phase.INITIALIZING, *_JUDGED, Phase.PROMOTING), RollbackRequired, _rollback_required),
    **_each(ACTIVE_PHASES, Superseded, _superseded),
    **_each(ACTIVE_PHASES, Failed, _failed),
    **_each(ACTIVE_PHASES, Abort, _abort),
    **_each((Phase.PENDING, Phase.INITIALIZING, Phase.PROGRESSING), Pause, _pause),
    (Phase.PAUSED, Resume): _resume,
    **_each(_JUDGED, PromoteNow, _promote_now),
}
"""Every allowed (phase, event) pair and its handler. Terminal phases accept nothing."""

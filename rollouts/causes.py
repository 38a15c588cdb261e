"""Cause detection: what the cluster, the metrics and a decision mean, as pure functions.

kopf keeps cause detection "purely computational with no side-effects" and the I/O elsewhere;
so does autocanary. The runner reads the cluster and the metrics, then asks these rules what
they mean: which engine event a rollout's tick is about (`cluster_event`, `readiness`), whether
someone else changed the traffic (`foreign_change`), which metrics window to judge and what an
empty one is (`judging_window`, `empty_window`), when an idle rollout needs looking at again
(`idle_next_tick`), whether the cluster still lacks a write (`needs_write`), and what a decision
leaves in the event log and the notification outbox (`log_entries`, `notifications`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum

from rollouts.actions import Action, Notify, Promote, Rollback, SetTraffic
from rollouts.engine import Decision, pending_write
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
    Superseded,
    Tick,
)
from rollouts.log import LogEntry, Notification
from rollouts.model import Rollout
from rollouts.phase import Phase
from rollouts.ports import TargetState, VersionState
from rollouts.verdict import Outcome, Verdict

WRITING = (Phase.INITIALIZING, Phase.PROGRESSING, Phase.PAUSED)
"""Phases in which the cluster must carry the rollout's intended weight."""

JUDGED = (Phase.PROGRESSING, Phase.PAUSED)
"""Phases whose ticks judge a metrics window."""

NOT_STARTED = Verdict(outcome=Outcome.INCONCLUSIVE, sentence="not started")
GAP_AFTER_OUTAGE = Verdict(
    outcome=Outcome.INCONCLUSIVE,
    sentence="no samples for either revision since the metrics backend came back; not judged",
)


# --- the cluster ------------------------------------------------------------------------------


def cluster_event(rollout: Rollout, state: TargetState | None) -> Event | None:
    """What the cluster says about this rollout before any metric is read.

    None: nothing from the cluster; an initializing rollout then needs its canary's readiness
    (`readiness`), a judged one its metrics, a promoting or rolling-back one its final write.
    """
    where = f"{rollout.namespace}/{rollout.service}"
    if state is None:
        if rollout.phase is Phase.PENDING:
            return Failed(f"Service {where} not found")
        return Failed(f"Service {where} was deleted")
    if rollout.phase is Phase.PENDING:
        return Begin()
    if watches_foreign_changes(rollout):
        change = foreign_change(rollout, state)
        if change:
            return Superseded(change)
    return None


def readiness(rollout: Rollout, state: TargetState, canary: VersionState) -> CanaryReady | CanaryNotReady:
    """An initializing rollout is ready once its canary is Ready and the pinned split is observed."""
    pinned = state.pinned(rollout.stable_revision, rollout.canary_revision)
    if canary.is_ready and state.observed and pinned is not None and rollout.applied_canary_weight is not None:
        return CanaryReady()
    detail = canary.message or canary.reason or f"Ready={canary.ready}"
    if canary.is_ready:
        detail = "waiting for the pinned route to be observed"
    return CanaryNotReady(detail)


def watches_foreign_changes(rollout: Rollout) -> bool:
    """Once autocanary has pinned the Service, anything else on it is someone else's doing.

    Not while rolling back: returning the stable revision to 100 % is the safe direction, and
    an abort must win over a hand edit made in the same moment.
    """
    return rollout.applied_canary_weight is not None and rollout.phase is not Phase.ROLLING_BACK


def foreign_change(rollout: Rollout, state: TargetState) -> str | None:
    """What someone else changed on the Service, or None when it is as autocanary left it."""
    if state.newest_version not in (None, rollout.stable_revision, rollout.canary_revision):
        return f"revision {state.newest_version} was created"
    if state.route_match != rollout.route_match:
        route = rollout.route or "the route to both subsets"
        return f"the request matches of {route} were edited to {state.route_match or 'none'}"
    if rollout.match_applied and state.own_route != rollout.applied_route:
        return f"autocanary's match route was {'edited' if state.own_route else 'removed'} by someone else"
    tag_change = _tag_change(rollout, state)
    if tag_change:
        return tag_change
    pinned = state.pinned(rollout.stable_revision, rollout.canary_revision)
    if pinned is None:
        described = ", ".join(
            f"{t.version or 'latest'}{' (latestRevision)' if t.latest else ''} {t.percent} %"
            for t in state.spec_traffic
        )
        return f"spec.traffic was edited to {described}"
    canary = pinned.get(rollout.canary_revision, 0)
    if canary not in _own_weights(rollout):
        return (
            f"traffic was set to {canary} % canary by someone else (autocanary wrote {rollout.applied_canary_weight} %)"
        )
    return None


def _tag_change(rollout: Rollout, state: TargetState) -> str | None:
    """The canary's Knative tag moved to another revision, or taken off once it was confirmed in
    place (its URL recorded) while no final write, which takes it off itself, is under way."""
    tag = rollout.target.tag
    if not tag:
        return None
    tagged = state.tags.get(tag)
    if tagged is not None and tagged != rollout.canary_revision:
        return f"tag {tag} was moved to {tagged or 'the latest revision'} by someone else"
    if tagged is None and rollout.canary_url and pending_write(rollout) is None:
        return f"tag {tag} was taken off {rollout.canary_revision} by someone else"
    return None


TrafficAction = SetTraffic | Promote | Rollback
"""The actions the runner carries out through the router."""


def traffic_action(actions: Sequence[Action]) -> TrafficAction | None:
    """The traffic write a decision asks for (the engine returns at most one)."""
    return next((a for a in actions if isinstance(a, SetTraffic | Promote | Rollback)), None)


def write_needed(rollout: Rollout) -> TrafficAction | None:
    """The write a saved rollout still lacks: its final write (`pending_write`), or the step's
    weight the router has not confirmed. The repeat path after a crash or a failed write."""
    final = pending_write(rollout)
    if final is not None:
        return final
    matches = rollout.step_matches
    unconfirmed = rollout.applied_canary_weight != rollout.canary_weight or (matches and not rollout.match_applied)
    if rollout.phase in WRITING and unconfirmed:
        return SetTraffic(stable=rollout.stable_weight, canary=rollout.canary_weight, matches=matches)
    return None


def _own_weights(rollout: Rollout) -> set[int | None]:
    """Canary weights the cluster may carry from autocanary itself: the one intended now, the one
    last confirmed, and the current step's, which a worker may have written and died before
    confirming, just before the decision to promote (or pause) took the intent elsewhere."""
    own = {rollout.canary_weight, rollout.applied_canary_weight}
    if rollout.step_started_at is not None:
        own.add(rollout.policy.step_weight(rollout.step_index))
    return own


def needs_write(rollout: Rollout) -> bool:
    """The cluster does not yet carry what the rollout intends (a final write, or an unconfirmed weight)."""
    return write_needed(rollout) is not None


# --- the metrics window -----------------------------------------------------------------------


def window_ceiling(rollout: Rollout) -> int:
    """The longest window judged at once, in seconds (ten intervals): older data is not looked at."""
    return int(rollout.policy.interval.total_seconds()) * 10


def judging_window(rollout: Rollout, at: datetime, min_window: int) -> int | None:
    """Seconds of metrics to judge now, ending at `at`; None while the window is still too short.

    Windows abut: one starts where the last judged one ended (or where the step started).
    increase() needs two scrapes inside its range, so a window shorter than `min_window` waits
    rather than be judged empty or overlap the previous one.
    """
    start = rollout.analyzed_until or rollout.step_started_at or at
    window = int((at - start).total_seconds())
    if window < min_window:
        return None
    return min(window, window_ceiling(rollout))


class EmptyWindow(Enum):
    """What a window with no request on either side is."""

    JUDGE = "judge"
    """Not empty, or empty at the ceiling: judged as it is (the insufficient-traffic rule applies)."""
    GAP = "gap"
    """The metrics backend just came back and its window lies in the scrape gap: missing data."""
    WIDEN = "widen"
    """Nobody called, or Prometheus missed scrapes: judge a longer window next time."""


def empty_window(rollout: Rollout, canary_requests: int, stable_requests: int, window: int) -> EmptyWindow:
    silent = canary_requests == 0 and stable_requests == 0
    if silent and rollout.after_metrics_outage:
        return EmptyWindow.GAP
    if silent and window < window_ceiling(rollout):
        return EmptyWindow.WIDEN
    return EmptyWindow.JUDGE


def idle_next_tick(rollout: Rollout, now: datetime, min_window: int, metrics_lag: timedelta) -> datetime:
    """When a rollout with nothing to decide now next has something to do."""
    start = rollout.analyzed_until or rollout.step_started_at
    if rollout.phase in JUDGED and start is not None:
        # Judged windows abut: the next one is due an interval after the last ended (or after
        # the step started, for a rollout whose windows all held no samples so far).
        window = max(rollout.policy.interval, timedelta(seconds=min_window))
        due = start + window + metrics_lag
        # Already due and still idle: its window held no samples; look again an interval later.
        return due if due > now + timedelta(seconds=1) else now + rollout.policy.interval
    return now + min(rollout.policy.interval, timedelta(seconds=5))


# --- what a decision leaves behind ------------------------------------------------------------


def notifications(actions: Sequence[Action], now: datetime) -> list[Notification]:
    """The decision's notifications, for the outbox (saved with it, delivered by the relay)."""
    return [Notification(a.event.value, a.message, now) for a in actions if isinstance(a, Notify)]


def log_entries(before: Rollout, event: Event, decision: Decision, now: datetime) -> list[LogEntry]:
    """The log entries of one decision: the verdict with its numbers, manual actions, notifications."""
    after = decision.rollout
    entries: list[LogEntry] = []
    if isinstance(event, Tick):
        verdict = event.verdict
        entries.append(
            LogEntry(
                kind="verdict",
                message=verdict.sentence,
                at=now,
                phase=after.phase.value,
                data={
                    "outcome": verdict.outcome.value,
                    "evidence": verdict.evidence,
                    "no_worse_evidence": verdict.no_worse_evidence,
                    "tests": verdict.evidence_by_test,
                    "canary_requests": verdict.canary_requests,
                    "stable_requests": verdict.stable_requests,
                    "step": after.step_index + 1,
                    "canary_weight": after.canary_weight,
                    "checks": [check.model_dump(mode="json") for check in verdict.checks],
                },
            )
        )
    if isinstance(event, Abort | Pause | Resume | PromoteNow):
        entries.append(LogEntry(event.verb, event.reason, now, after.phase.value, actor=event.actor))
    for action in decision.actions:
        if isinstance(action, Notify):
            entries.append(LogEntry(kind=action.event.value, message=action.message, at=now, phase=after.phase.value))
        elif isinstance(action, Rollback) and before.phase is not Phase.ROLLING_BACK:
            entries.append(LogEntry(kind="rolling_back", message=action.reason, at=now, phase=after.phase.value))
        elif isinstance(action, Promote) and before.phase is not Phase.PROMOTING:
            entries.append(LogEntry(kind="promoting", message=after.reason, at=now, phase=after.phase.value))
    return entries

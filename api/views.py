"""How the domain's values are shown over HTTP: a rollout with its last verdicts, a log entry."""

from __future__ import annotations

from datetime import datetime

from api.schemas import EventPublic, RolloutPublic, TargetPublic, VerdictSummary
from rollouts.log import LogEntry
from rollouts.model import Rollout


def rollout_public(rollout: Rollout, recent: list[LogEntry], now: datetime) -> RolloutPublic:
    verdicts = [e for e in recent if e.kind == "verdict"][:10]
    evidence = verdicts[0].data.get("evidence") if verdicts else None
    in_step = (
        (now - rollout.step_started_at).total_seconds() if rollout.step_started_at and not rollout.is_terminal else None
    )
    target = rollout.target
    return RolloutPublic(
        id=rollout.id,
        target=TargetPublic(
            kind=target.kind,
            namespace=target.namespace,
            name=target.name,
            stable=target.stable,
            canary=target.canary,
            route=target.route or None,
            host=target.host or None,
            tag=target.tag or None,
            canary_url=rollout.canary_url or None,
        ),
        namespace=rollout.namespace,
        service=rollout.service,
        stable_revision=rollout.stable_revision,
        canary_revision=rollout.canary_revision,
        policy=rollout.policy.name,
        labels=rollout.labels,
        phase=rollout.phase,
        phase_doc=rollout.phase.doc,
        step=rollout.step_index + 1 if rollout.step_started_at else 0,
        steps=rollout.step_count,
        canary_weight=rollout.canary_weight,
        stable_weight=rollout.stable_weight,
        time_in_step_seconds=in_step,
        reason=rollout.reason,
        evidence=evidence,
        evidence_threshold=1 / rollout.policy.alpha_errors,
        no_worse_evidence=verdicts[0].data.get("no_worse_evidence") if verdicts else None,
        no_worse_threshold=1 / rollout.policy.beta if rollout.policy.ends_steps_early else None,
        checks=rollout.checks.model_dump(),
        last_verdicts=[
            VerdictSummary(
                at=e.at,
                outcome=str(e.data.get("outcome", "")),
                sentence=e.message,
                evidence=e.data.get("evidence"),
                no_worse_evidence=e.data.get("no_worse_evidence"),
                canary_requests=e.data.get("canary_requests"),
                stable_requests=e.data.get("stable_requests"),
            )
            for e in verdicts
        ],
        last_action=rollout.last_action,
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
        step_started_at=rollout.step_started_at,
        finished_at=rollout.finished_at,
    )


def event_public(event: LogEntry) -> EventPublic:
    return EventPublic(
        id=event.id,
        kind=event.kind,
        message=event.message,
        at=event.at,
        phase=event.phase,
        actor=event.actor,
        data=dict(event.data),
    )

"""The `Rollout`: one canary release (of a Knative Service, or of an Istio canary), as a frozen value.

Everything the engine needs to decide the next step lives here, so a rollout stored in Redis
and loaded by any worker decides exactly as it would have in the worker that saved it. The
engine returns new values (`with_...` methods); nothing mutates a rollout in place.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from policies import FieldProblem, Policy
from rollouts.actions import RequestMatch
from rollouts.errors import ValidationError
from rollouts.matching import request_matches
from rollouts.names import dns1123_label_problem
from rollouts.phase import TERMINAL_PHASES, Phase
from rollouts.ports import TargetRef
from rollouts.verdict import Outcome

TARGET_KIND = "knative"
"""The kind of a rollout's target when it names none (every rollout before Istio targets)."""

_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ManualActionKind(StrEnum):
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"


class ManualAction(BaseModel):
    """Who did what by hand, when and why (shown to on-call and kept in the event log)."""

    model_config = _FROZEN

    kind: ManualActionKind
    actor: str
    reason: str
    at: AwareDatetime


class CheckCounters(BaseModel):
    """How many ticks ended in each outcome over the whole rollout."""

    model_config = _FROZEN

    passed: Annotated[int, Field(ge=0)] = 0
    failed: Annotated[int, Field(ge=0)] = 0
    inconclusive: Annotated[int, Field(ge=0)] = 0
    errored: Annotated[int, Field(ge=0)] = 0

    def counted(self, outcome: Outcome) -> CheckCounters:
        field = {
            Outcome.PASS: "passed",
            Outcome.FAIL: "failed",
            Outcome.INCONCLUSIVE: "inconclusive",
            Outcome.ERROR: "errored",
        }[outcome]
        return self.model_copy(update={field: getattr(self, field) + 1})


_NEWER_FIELDS = ("target_kind", "route", "host", "route_match", "applied_route", "no_worse_evidence", "canary_url")


class Rollout(BaseModel):
    """One canary rollout. Stored as a versioned JSON document; decided on by the engine.

    A Knative rollout moves traffic between two revisions of a Service; an Istio rollout between
    two subsets of a VirtualService's host (`service` is then the VirtualService, the
    "revisions" are the subsets).
    """

    model_config = _FROZEN

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    namespace: str
    service: str
    stable_revision: str
    """The revision that served 100 % when the rollout was registered; what a rollback returns to."""
    canary_revision: str
    """The new revision being judged."""
    target_kind: Literal["knative", "istio", "gateway-api"] = "knative"
    """What is rolled out: a Knative Service, two Deployments behind an Istio VirtualService, or
    two backend Services of a Gateway API HTTPRoute rule."""
    route: str = ""
    """Istio: the name of the VirtualService `http` route autocanary manages (empty: the one route
    whose destinations are the two subsets, found again at every write)."""
    host: str = ""
    """Istio: the destination host of both subsets (its short name is the service in Istio's metrics)."""
    route_match: str = ""
    """Istio: the managed route's request matches when the rollout was registered (canonical JSON)."""
    policy: Policy
    """The resolved policy (named built-in plus overrides), frozen for the rollout's lifetime."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form context from the pipeline, such as the run URL or the commit."""
    phase: Phase = Phase.PENDING
    step_index: Annotated[int, Field(ge=0)] = 0
    """Index in `policy.steps` of the current step (0 before the first one starts)."""
    canary_weight: Annotated[int, Field(ge=0, le=100)] = 0
    """Percent of traffic the canary is meant to receive now."""
    step_requests: Annotated[int, Field(ge=0)] = 0
    """Canary requests served since the current step started."""
    created_at: AwareDatetime
    updated_at: AwareDatetime
    phase_entered_at: AwareDatetime
    """When the current phase began (the progress deadline counts from entering `initializing`)."""
    step_started_at: AwareDatetime | None = None
    """When the current step's weight was set; None until the first step."""
    finished_at: AwareDatetime | None = None
    applied_canary_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """The canary weight the router last confirmed in the cluster (None before the first pin)."""
    applied_route: str = ""
    """During a match step: the match route as the router confirmed it (`TargetState.own_route`;
    empty until then, and reset when a step starts), to tell someone else's edit."""
    canary_url: str = ""
    """Knative: the canary's tag URL, once the controller has given the tag one."""
    analyzed_until: AwareDatetime | None = None
    """End of the last interval the analyzer judged; the next one starts here."""
    metrics_down_since: AwareDatetime | None = None
    """Since when the metrics backend has been unreachable (None while it answers)."""
    step_outage_seconds: Annotated[float, Field(ge=0)] = 0.0
    """Time of the current step during which the metrics backend was away: not counted as observed."""
    analysis_state: dict[str, Any] = Field(default_factory=dict)
    """The analyzer's statistical state (e-processes), opaque to the engine, carried across steps."""
    checks: CheckCounters = CheckCounters()
    evidence: Annotated[float, Field(ge=0)] = 1.0
    """The last verdict's evidence against the canary (its largest e-value; 1 means none), for dashboards."""
    no_worse_evidence: Annotated[float, Field(ge=0)] | None = None
    """The last verdict's evidence that the canary is no worse (the weakest e-value of those tests;
    a step may end early at 1/beta), or None when the policy has fixed steps."""
    reason: str = ""
    """Why the rollout is where it is (a rollback's verdict, a wait's cause, an operator's reason)."""
    last_action: ManualAction | None = None
    version: Annotated[int, Field(ge=0)] = 0
    """Incremented by the store on every write; compare-and-set uses it."""

    @classmethod
    def from_stored(cls, stored: str | dict[str, Any]) -> Rollout:
        """A rollout as the store keeps it (JSON, or the dict inside a queued notification).

        Documents saved by earlier versions carry `fencing_token`, which the store's `fence:{id}`
        key holds now: they are read without it (and lose it at their next save). Only those take
        the slow path; every other document is validated straight from JSON.
        """
        try:
            return cls.model_validate_json(stored) if isinstance(stored, str) else cls.model_validate(stored)
        except PydanticValidationError:
            data = json.loads(stored) if isinstance(stored, str) else dict(stored)
            if not isinstance(data, dict) or data.pop("fencing_token", None) is None:
                raise
            return cls.model_validate(data)

    def to_stored(self) -> str:
        """The JSON document the store keeps. The fields the release before Istio targets and match
        steps did not know are left out while they hold their defaults, so a Knative rollout with
        weight steps is still read by that release's workers during a rolling upgrade; so are the
        policy fields of steps that end early while the policy's steps are fixed, and its Knative tag
        fields while they hold their defaults."""
        unused: dict[str, Any] = {
            name: True for name in _NEWER_FIELDS if getattr(self, name) == Rollout.model_fields[name].default
        }
        early_fields = ("step_max_duration", "beta", "max_odds_ratio")
        unused_policy = {
            name
            for name in ("canary_tag", "keep_canary_tag")
            if getattr(self.policy, name) == Policy.model_fields[name].default
        }
        if not self.policy.ends_steps_early and all(
            getattr(self.policy, name) == Policy.model_fields[name].default for name in early_fields[1:]
        ):
            unused_policy |= set(early_fields)  # step_max_duration is read back as step_min_duration
        if unused_policy:
            unused["policy"] = unused_policy
        return self.model_dump_json(exclude=unused)

    @classmethod
    def new(
        cls,
        *,
        id: str,
        namespace: str,
        service: str,
        stable_revision: str,
        canary_revision: str,
        policy: Policy,
        now: datetime,
        labels: dict[str, str] | None = None,
        target_kind: Literal["knative", "istio", "gateway-api"] = "knative",
        route: str = "",
        host: str = "",
        route_match: str = "",
    ) -> Rollout:
        """A pending rollout, after checking the names (every problem reported at once)."""
        problems = [
            FieldProblem(field, problem)
            for field, value in (
                ("namespace", namespace),
                ("service", service),
                ("stable_revision", stable_revision),
                ("canary_revision", canary_revision),
            )
            if (problem := dns1123_label_problem(value))
        ]
        if not problems and stable_revision == canary_revision:
            problems.append(FieldProblem("canary_revision", f"must differ from stable_revision ({stable_revision!r})"))
        if problems:
            raise ValidationError(problems)
        return cls(
            id=id,
            namespace=namespace,
            service=service,
            stable_revision=stable_revision,
            canary_revision=canary_revision,
            policy=policy,
            labels=dict(labels or {}),
            target_kind=target_kind,
            route=route,
            host=host,
            route_match=route_match,
            created_at=now,
            updated_at=now,
            phase_entered_at=now,
        )

    @property
    def target(self) -> TargetRef:
        """What this rollout moves traffic on (a Knative Service and two of its revisions, or a
        VirtualService and two subsets)."""
        return TargetRef(
            self.target_kind,
            self.namespace,
            self.service,
            self.stable_revision,
            self.canary_revision,
            self.route,
            self.host,
            self.route_match,
            self.policy.canary_tag if self.target_kind == "knative" else "",
            self.policy.keep_canary_tag,
        )

    @property
    def is_terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def step_count(self) -> int:
        return len(self.policy.steps)

    @property
    def stable_weight(self) -> int:
        return 100 - self.canary_weight

    def with_phase(self, phase: Phase, now: datetime, reason: str | None = None) -> Rollout:
        update: dict[str, Any] = {"phase": phase, "phase_entered_at": now}
        if reason is not None:
            update["reason"] = reason
        if phase in TERMINAL_PHASES:
            update["finished_at"] = now
        return self.model_copy(update=update)

    def with_step(self, index: int, weight: int, now: datetime) -> Rollout:
        """At step `index` with `weight`, set now, its request count back to zero."""
        return self.model_copy(
            update={
                "step_index": index,
                "canary_weight": weight,
                "step_started_at": now,
                "step_requests": 0,
                "step_outage_seconds": 0.0,
                "applied_route": "",
            }
        )

    def with_weight(self, canary_weight: int) -> Rollout:
        return self.model_copy(update={"canary_weight": canary_weight})

    def with_reason(self, reason: str) -> Rollout:
        return self.model_copy(update={"reason": reason})

    def with_counted(self, outcome: Outcome, canary_requests: int) -> Rollout:
        return self.model_copy(
            update={
                "checks": self.checks.counted(outcome),
                "step_requests": self.step_requests + canary_requests,
            }
        )

    def with_metrics_down(self) -> Rollout:
        """The metrics backend is away: the outage counts from the last decision, when it still answered."""
        if self.metrics_down_since is not None:
            return self
        since = max(self.updated_at, self.step_started_at or self.updated_at)
        return self.model_copy(update={"metrics_down_since": since})

    def with_metrics_back(self, now: datetime) -> Rollout:
        """The metrics backend answers again: the outage's share of this step is not observed time."""
        if self.metrics_down_since is None:
            return self
        start = max(self.metrics_down_since, self.step_started_at or self.metrics_down_since)
        outage = max(0.0, (now - start).total_seconds())
        return self.model_copy(
            update={"metrics_down_since": None, "step_outage_seconds": self.step_outage_seconds + outage}
        )

    @property
    def after_metrics_outage(self) -> bool:
        return self.metrics_down_since is not None

    def observed_in_step(self, now: datetime) -> timedelta:
        """Time in the current step with the metrics backend answering (zero before the first step)."""
        if self.step_started_at is None:
            return timedelta(0)
        return now - self.step_started_at - timedelta(seconds=self.step_outage_seconds)

    def with_evidence(self, evidence: float, no_worse_evidence: float | None = None) -> Rollout:
        return self.model_copy(update={"evidence": evidence, "no_worse_evidence": no_worse_evidence})

    def with_manual_action(self, kind: ManualActionKind, actor: str, reason: str, now: datetime) -> Rollout:
        action = ManualAction(kind=kind, actor=actor, reason=reason, at=now)
        return self.model_copy(update={"last_action": action})

    def with_applied(self, canary_weight: int, route: str = "", canary_url: str | None = None) -> Rollout:
        """The router confirmed this canary weight (and, for a match step, its match `route`; for a
        Knative tag, the URL the controller gave it)."""
        update: dict[str, Any] = {"applied_canary_weight": canary_weight, "applied_route": route}
        if canary_url:
            update["canary_url"] = canary_url
        return self.model_copy(update=update)

    @property
    def match_applied(self) -> bool:
        """During a match step: the router confirmed its match route."""
        return bool(self.applied_route)

    @property
    def step_matches(self) -> tuple[RequestMatch, ...]:
        """The requests the current step sends to the canary (empty for a weight step)."""
        if self.step_started_at is None or self.phase not in (Phase.PROGRESSING, Phase.PAUSED):
            return ()
        match = self.policy.step_match(self.step_index)
        return request_matches(match) if match is not None else ()

    def with_analyzed(self, until: datetime, state: dict[str, Any]) -> Rollout:
        return self.model_copy(update={"analyzed_until": until, "analysis_state": state})

    def with_updated(self, now: datetime) -> Rollout:
        return self.model_copy(update={"updated_at": now})

"""The `Policy` model: everything a rollout needs to know about how careful to be.

A policy is a frozen value. It is resolved once, when a rollout is registered (a named built-in
plus inline overrides), and stored inside the rollout, so editing a policy file later never
changes a rollout in flight.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from policies.custom_metrics import CustomMetrics
from policies.durations import Duration
from policies.matches import MatchStep, RequestMatchSpec


class Dialect(StrEnum):
    """Which request metrics the cluster's Prometheus holds (see design.md, "Metrics: dialects")."""

    KNATIVE_OPENCENSUS = "knative-opencensus"
    """Knative up to 1.18: `revision_app_request_count` and `revision_app_request_latencies` (ms)."""
    KNATIVE_OTEL = "knative-otel"
    """Knative 1.19+: `kn_serving_invocation_duration_seconds` over OTLP (s)."""
    ISTIO = "istio"
    """Istio's standard metrics: `istio_requests_total` and `istio_request_duration_milliseconds`
    (ms), reported by the destination's sidecar, per service and `version` label."""
    ISTIO_KNATIVE = "istio-knative"
    """The same series for Knative revisions behind Istio: per canonical service and canonical
    revision, which net-istio labels Knative's pods with (the Service and the revision name)."""
    CUSTOM = "custom"
    """The policy's own PromQL (`custom_metrics`), for series of the service's or its ingress's own."""


class InsufficientTrafficAction(StrEnum):
    """What to do when a step has run its minimum duration without enough canary requests."""

    ROLLBACK = "rollback"
    """Give up after `max_insufficient_duration`: a canary nobody exercised is not proven."""
    HOLD = "hold"
    """Keep the step's weight and wait for traffic for as long as it takes."""


class NotificationEvent(StrEnum):
    """Rollout transitions that people can be told about."""

    STARTED = "started"
    STEP_ADVANCED = "step_advanced"
    PAUSED = "paused"
    RESUMED = "resumed"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"
    FAILED = "failed"


class NotificationKind(StrEnum):
    WEBHOOK = "webhook"
    """A JSON body, signed with HMAC-SHA256 when a secret is configured."""
    SLACK = "slack"
    """A Slack incoming-webhook message."""


_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

StepWeight = Annotated[int, Field(strict=True, ge=1, le=99)]
"""A step's canary percent; strict, so `true` (which JSON parsers read as 1) is not a 1 % step."""


def _step_kind(value: object) -> str:
    return "match_step" if isinstance(value, dict | MatchStep) else "weight"


Step = Annotated[
    Annotated[StepWeight, Tag("weight")] | Annotated[MatchStep, Tag("match_step")], Discriminator(_step_kind)
]
"""A weight, or a match step (policies/matches.py): only matching requests reach the canary."""
STEP_TAGS = ("weight", "match_step")
"""The union's tags, which pydantic puts in an error's location (the document has no such level)."""


class NotificationTarget(BaseModel):
    """Where to send rollout events. Secrets are never written in a policy, only named."""

    model_config = _FROZEN

    kind: NotificationKind
    """`webhook` (generic JSON) or `slack` (incoming webhook)."""
    url: Annotated[str, Field(pattern=r"^https?://\S+$", max_length=2048)]
    """The http(s) URL to POST to."""
    secret_env: Annotated[str, Field(pattern=r"^AUTOCANARY_NOTIFY_SECRET_[A-Z0-9_]+$", max_length=128)] | None = None
    """Name of the environment variable holding the HMAC secret (webhook only); it must start with
    `AUTOCANARY_NOTIFY_SECRET_`, so a policy can never sign with any other variable of the worker."""
    events: tuple[NotificationEvent, ...] | None = None
    """Only these events; all of them when omitted."""


class Guardrails(BaseModel):
    """Absolute limits on the canary alone, as users of threshold-based tools know them.

    They complement the statistical comparison with the stable revision: a canary that is as bad
    as a bad stable is still stopped. Each is judged only over windows with `min_requests`.
    """

    model_config = _FROZEN

    min_success_rate: Annotated[float, Field(ge=0, le=100)] | None = None
    """Lowest acceptable share of non-5xx canary responses, in percent (e.g. 99.0). Off when omitted."""
    max_p99_ms: Annotated[float, Field(gt=0)] | None = None
    """Highest acceptable canary p99 latency in milliseconds, from the histogram. Off when omitted."""
    min_requests: Annotated[int, Field(ge=1)] = 50
    """Canary requests a window needs before a guardrail is judged at all."""


class LatencyBoundaries(BaseModel):
    """How the latency test chooses the histogram boundaries that define a "slow" request.

    For each quantile q the analyzer takes the bucket boundary nearest the stable revision's
    q-quantile, and counts requests above it in both revisions; a boundary near the stable's
    p90 gives power against a shift of the whole distribution, one near its p99 against a
    fatter tail. `slo_ms` adds a fixed boundary (e.g. the latency SLO). Each boundary runs its own
    e-process; they are combined by a weighted average, which stays valid.
    """

    model_config = _FROZEN

    quantiles: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = (0.9, 0.99)
    """Quantiles of the stable revision's latency whose nearest bucket boundaries are tested."""
    slo_ms: Annotated[float, Field(gt=0)] | None = None
    """An extra fixed boundary in milliseconds, typically the latency SLO."""

    @field_validator("quantiles")
    @classmethod
    def _distinct_quantiles(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(set(value)) != len(value):
            raise ValueError("quantiles must be distinct")
        return value


class Policy(BaseModel):
    """How a canary advances and when it is rolled back."""

    model_config = _FROZEN

    name: Annotated[str, Field(min_length=1, max_length=63)] = "custom"
    """Name of the policy this one was resolved from (informational)."""
    description: str = ""
    """One line for people choosing a policy."""
    canary_tag: Annotated[str, Field(max_length=63, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$")] = "canary"
    """Knative targets: the traffic tag the canary revision carries during the rollout, so people can
    reach it at its tag URL from the first moment, even at 0 % (empty: no tag)."""
    keep_canary_tag: bool = False
    """Knative targets: leave the tag on the canary revision when the rollout ends (default: removed)."""
    steps: Annotated[tuple[Step, ...], Field(min_length=1, max_length=20)] = (
        5,
        10,
        25,
        50,
    )
    """Canary weights in percent, strictly increasing, each 1..99, optionally after match steps
    (`{match: {headers: {end-user: {exact: jason}}}}`). After the last one: promote to 100."""
    step_min_duration: Duration = timedelta(seconds=30)
    """Least time the canary stays at each weight before the next step (a floor, for warm-up and
    time-of-day effects). Set alone, without `step_max_duration`, it is every step's fixed length."""
    step_max_duration: Duration = timedelta(seconds=150)
    """Longest time at each weight: a step whose checks pass advances then even if the canary has
    not yet been shown no worse. Equal to `step_min_duration`: fixed steps, never ended early."""
    interval: Duration = timedelta(seconds=10)
    """Time between two checks (ticks); each check judges the metrics of the last interval."""
    min_requests_per_step: Annotated[int, Field(ge=0)] = 100
    """Canary requests a step must have served before it may advance."""
    dialect: Dialect = Dialect.KNATIVE_OPENCENSUS
    """Which metric names the cluster's Prometheus holds (`custom`: the queries in `custom_metrics`)."""
    custom_metrics: Annotated[CustomMetrics | None, Field(validate_default=True)] = None
    """With `dialect: custom`: the PromQL for each version's requests and latency buckets."""
    alpha_errors: Annotated[float, Field(gt=0, le=0.5)] = 0.005
    """Chance of rolling back a canary whose error rate equals the stable's (bounds false rollbacks)."""
    alpha_latency: Annotated[float, Field(gt=0, le=0.5)] = 0.005
    """The same bound for the latency test."""
    beta: Annotated[float, Field(gt=0, le=0.5)] = 0.01
    """Chance of ending a step early for a canary `max_odds_ratio` times worse than the stable
    (bounds early advancement of a materially worse canary; see analyzer/noninferiority.py)."""
    max_odds_ratio: Annotated[float, Field(gt=1, le=10)] = 1.5
    """How much worse than the stable's odds of an error (or of a slow request) still counts as
    materially worse: a step ends early only once the canary is shown better than this."""
    latency_boundaries: LatencyBoundaries = LatencyBoundaries()
    """Which histogram boundaries the latency test uses."""
    guardrails: Guardrails = Guardrails()
    """Absolute limits on the canary alone."""
    progress_deadline: Duration = timedelta(minutes=10)
    """How long the canary revision may take to become Ready before the rollout rolls back."""
    on_insufficient_traffic: InsufficientTrafficAction = InsufficientTrafficAction.ROLLBACK
    """What to do when a step lacks canary requests for longer than `max_insufficient_duration`."""
    max_insufficient_duration: Duration = timedelta(minutes=10)
    """How long past `step_max_duration` a step may wait for `min_requests_per_step`."""
    notifications: tuple[NotificationTarget, ...] = ()
    """Targets told about this policy's rollouts, in addition to the global default."""

    @model_validator(mode="before")
    @classmethod
    def _floor_alone_means_fixed_steps(cls, data: Any) -> Any:
        """A policy written before steps could end early (`step_min_duration` only) keeps fixed steps."""
        if isinstance(data, Mapping) and "step_min_duration" in data and "step_max_duration" not in data:
            return {**data, "step_max_duration": data["step_min_duration"]}
        return data

    @field_validator("step_max_duration")
    @classmethod
    def _max_not_below_min(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        floor = info.data.get("step_min_duration")
        if isinstance(floor, timedelta) and value < floor:
            raise ValueError(f"must not be shorter than step_min_duration ({floor.total_seconds():g}s)")
        return value

    @field_validator("custom_metrics")
    @classmethod
    def _custom_metrics_with_custom_dialect(
        cls, value: CustomMetrics | None, info: ValidationInfo
    ) -> CustomMetrics | None:
        dialect = info.data.get("dialect")
        if dialect is Dialect.CUSTOM and value is None:
            raise ValueError("required with dialect custom: the queries for requests and latency buckets")
        if value is not None and dialect is not None and dialect is not Dialect.CUSTOM:
            raise ValueError(f"given, but dialect is {dialect.value}; set dialect: custom to use these queries")
        return value

    @property
    def metrics_source(self) -> Dialect | CustomMetrics:
        """What the metrics provider reads: a built-in dialect, or this policy's own queries."""
        return self.custom_metrics if self.custom_metrics is not None else self.dialect

    @property
    def ends_steps_early(self) -> bool:
        """Whether a step may end before `step_max_duration` once the canary is shown no worse."""
        return self.step_max_duration > self.step_min_duration

    @field_validator("steps")
    @classmethod
    def _steps_increase(cls, steps: tuple[Step, ...], info: ValidationInfo) -> tuple[Step, ...]:
        tag = info.data.get("canary_tag", "canary")
        for position, step in enumerate(steps):
            if isinstance(step, MatchStep) and step.match.tag is not None and step.match.tag != tag:
                raise ValueError(
                    f"step {position + 1} routes by tag {step.match.tag}, but the canary carries"
                    f" {'no tag' if not tag else 'the tag ' + repr(tag)} (canary_tag)"
                )
        for position in range(1, len(steps)):
            step, before = steps[position], steps[position - 1]
            if isinstance(step, MatchStep) and isinstance(before, int):
                raise ValueError(f"a match step comes before the weight steps: position {position} follows {before}")
            if isinstance(step, int) and isinstance(before, int) and step <= before:
                raise ValueError(f"must be strictly increasing: {step} follows {before} at position {position}")
        return steps

    def step_weight(self, index: int) -> int:
        """The canary's weight during step `index` (0 for a match step: only matching requests)."""
        step = self.steps[index]
        return step if isinstance(step, int) else 0

    def step_match(self, index: int) -> RequestMatchSpec | None:
        step = self.steps[index]
        return step.match if isinstance(step, MatchStep) else None

    @property
    def match_steps(self) -> list[int]:
        """The positions of the match steps."""
        return [index for index, step in enumerate(self.steps) if isinstance(step, MatchStep)]

    def describe_step(self, index: int) -> str:
        """`5 %`, or `requests with header end-user = jason`."""
        match = self.step_match(index)
        return f"requests with {match.describe()}" if match else f"{self.step_weight(index)} %"

    @field_validator("step_min_duration", "step_max_duration", "progress_deadline")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("max_insufficient_duration")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @field_validator("interval")
    @classmethod
    def _interval_fits_step(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s (Prometheus scrapes are seconds apart)")
        step = info.data.get("step_min_duration")
        if isinstance(step, timedelta) and value > step:
            raise ValueError(f"must not be longer than step_min_duration ({step.total_seconds():g}s)")
        return value

"""Request and response bodies of the HTTP API (they are also its OpenAPI description)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from policies import Policy
from rollouts.model import ManualAction
from rollouts.phase import Phase

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


def _inlined(node: Any, definitions: dict[str, Any]) -> Any:
    """The schema with every local `$ref` replaced by its definition (policies have no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inlined(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
        return {key: _inlined(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inlined(item, definitions) for item in node]
    return node


def _overrides_schema() -> dict[str, Any]:
    """Every policy field, all optional: the OpenAPI description of `policy_overrides` (validation
    itself is the policy library's, which names the field path and suggests misspelt names)."""
    full = Policy.model_json_schema(mode="validation")
    schema = _inlined({key: value for key, value in full.items() if key != "$defs"}, full.get("$defs", {}))
    properties = {name: value for name, value in schema["properties"].items() if name != "name"}
    return {
        "anyOf": [
            {"type": "object", "properties": properties, "additionalProperties": False, "title": "PolicyOverrides"},
            {"type": "null"},
        ],
        "description": "Fields to change on the named policy; any field of a policy, each optional.",
    }


class KnativeTargetIn(BaseModel):
    """A Knative Service and two of its revisions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    kind: Literal["knative"]
    namespace: Name
    service: Name
    """The Knative Service."""
    canary_revision: Name | None = None
    """Default: the Service's latest created revision."""
    stable_revision: Name | None = None
    """Default: the revision serving 100 % now."""


class IstioTargetIn(BaseModel):
    """Two Deployments behind an Istio VirtualService, as two subsets of its DestinationRule."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    kind: Literal["istio"]
    namespace: Name
    virtual_service: Name
    """The VirtualService whose route splits traffic between the subsets."""
    stable_subset: Name
    """The DestinationRule subset serving now (e.g. v1); what a rollback returns to."""
    canary_subset: Name
    """The subset being judged (e.g. v2)."""
    route: Name | None = None
    """The `name` of the VirtualService http route to manage. Default: the one route whose
    destinations are the two subsets."""
    destination_rule: Name | None = None
    """Default: the one DestinationRule for the route's host."""


class GatewayApiTargetIn(BaseModel):
    """Two backend Services of a Gateway API HTTPRoute rule."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    kind: Literal["gateway-api"]
    namespace: Name
    http_route: Name
    """The HTTPRoute (gateway.networking.k8s.io/v1) whose rule splits traffic between the backends."""
    stable_backend: Name
    """The Service serving now; what a rollback returns to."""
    canary_backend: Name
    """The Service being judged."""
    rule: Annotated[str, Field(pattern=r"^([0-9]{1,2}|[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$")] | None = None
    """The rule to manage: its `name`, or its index. Default: the one rule whose backendRefs name both Services."""


TargetIn = Annotated[KnativeTargetIn | IstioTargetIn | GatewayApiTargetIn, Field(discriminator="kind")]


class RolloutCreate(BaseModel):
    """What a deploy pipeline sends to register a canary rollout: a `target`, or (Knative, as
    before targets had kinds) `namespace`, `service` and optionally the two revisions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    target: TargetIn | None = None
    """What is rolled out; its `kind` says which fields it has (`knative`, `istio` or `gateway-api`)."""
    namespace: Name | None = None
    """Knative, without `target`: the Service's namespace."""
    service: Name | None = None
    """Knative, without `target`: the Knative Service."""
    canary_revision: Name | None = None
    """Knative, without `target`. Default: the Service's latest created revision."""
    stable_revision: Name | None = None
    """Knative, without `target`. Default: the revision serving 100 % now."""
    policy: Annotated[str, Field(min_length=1, max_length=63)] = "default"
    """A policy name, built-in or the installation's own (see GET /v1/policies)."""
    policy_overrides: Annotated[dict[str, Any] | None, WithJsonSchema(_overrides_schema())] = None
    """Fields to change on the named policy, e.g. {"steps": [10, 50]}: any field of a policy, each optional."""
    labels: dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=32
    )
    """Free-form context such as the pipeline run URL or the commit."""


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(max_length=1024)] = ""
    """Why, in a sentence (recorded with the actor in the event log)."""


class ActionAccepted(BaseModel):
    rollout_id: str
    action: str
    actor: str
    phase: Phase
    """The phase when the command was accepted; follow /events for the outcome."""
    command_id: str = ""
    """The stored command: durable before this answer, carried out by any worker even if one dies."""


class VerdictSummary(BaseModel):
    at: datetime
    outcome: str
    sentence: str
    evidence: float | None = None
    """The largest e-value against the canary so far (rolled back at 1/alpha)."""
    no_worse_evidence: float | None = None
    """The weakest e-value that the canary is no worse (a step may end early at 1/beta); null with fixed steps."""
    canary_requests: int | None = None
    stable_requests: int | None = None


class TargetPublic(BaseModel):
    kind: str
    """`knative`, `istio` or `gateway-api`."""
    namespace: str
    name: str
    """The Knative Service, the VirtualService, or the HTTPRoute."""
    stable: str
    """The stable revision, subset, or backend Service."""
    canary: str
    """The canary revision, subset, or backend Service."""
    route: str | None = None
    """Istio: the managed http route (null: the one to both subsets). Gateway API: the managed
    rule's name (null: the one rule to both backends)."""
    tag: str | None = None
    """Knative: the traffic tag the canary carries during the rollout (null: none)."""
    canary_url: str | None = None
    """Knative: the canary's tag URL, where people can try it whatever its weight (null until the
    controller has given the tag one, or without a tag)."""
    host: str | None = None
    """Istio: the subsets' destination host."""


class RolloutPublic(BaseModel):
    id: str
    target: TargetPublic
    namespace: str
    service: str
    """The Knative Service, or the VirtualService of an Istio rollout."""
    stable_revision: str
    """The stable revision, or subset."""
    canary_revision: str
    """The canary revision, or subset."""
    policy: str
    labels: dict[str, str]
    phase: Phase
    phase_doc: str
    step: int
    """Current step, 1-based (0 before the first step)."""
    steps: int
    canary_weight: int
    stable_weight: int
    time_in_step_seconds: float | None
    reason: str
    evidence: float | None
    """Largest e-value against the canary reached so far (from the last verdict; rolled back at 1/alpha)."""
    evidence_threshold: float
    """The e-value at which the policy rolls back (1/alpha_errors)."""
    no_worse_evidence: float | None
    """Evidence that the canary is no worse (from the last verdict: the weakest e-value of those
    tests); a step may end before its longest length once it reaches `no_worse_threshold`. Null
    when the policy has fixed steps or before the first comparison."""
    no_worse_threshold: float | None
    """1/beta, or null when the policy has fixed steps."""
    checks: dict[str, int]
    last_verdicts: list[VerdictSummary]
    last_action: ManualAction | None
    resolved_policy: Policy | None = None
    """The policy as resolved when the rollout was registered (only when one rollout is read)."""
    created_at: datetime
    updated_at: datetime
    step_started_at: datetime | None
    finished_at: datetime | None


class RolloutList(BaseModel):
    items: list[RolloutPublic]
    next_cursor: str | None
    """Pass as `cursor` to get the next page; null on the last page."""


class EventPublic(BaseModel):
    id: str
    kind: str
    message: str
    at: datetime
    phase: str
    actor: str
    data: dict[str, Any]


class ErrorBody(BaseModel):
    error: str
    """A stable code: validation_error, not_found, conflict, unauthorized, forbidden, ..."""
    message: str
    field: str | None = None
    """The request field at fault, as a path (e.g. policy_overrides.steps[1])."""
    rollout_id: str | None = None
    phase: str | None = None

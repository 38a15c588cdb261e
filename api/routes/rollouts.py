"""`/v1/rollouts`: register a rollout (deployer), list them, read one, read or stream its event log."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response

from adapters.redis_store import body_hash
from api.deps import Deployer, Deps, Egress, Settings, Shown, Viewer
from api.errors import ApiError
from api.registration import (
    check_notifications,
    check_steps,
    found,
    policy_for,
    refuse_unencodable,
    resolved_policy,
    resolved_target,
)
from api.schemas import ErrorBody, EventPublic, RolloutCreate, RolloutList, RolloutPublic
from api.sse import event_stream_response
from api.views import event_public, rollout_public
from rollouts.log import LogEntry
from rollouts.model import Rollout
from rollouts.phase import Phase

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    503: {"model": ErrorBody},
}


TARGET_KINDS: dict[str, Literal["knative", "istio", "gateway-api"]] = {
    "knative": "knative",
    "istio": "istio",
    "gateway-api": "gateway-api",
}
"""The target kinds a rollout can store, by the name the backends know them by."""


@router.post("", status_code=201, response_model=RolloutPublic, responses=_ERRORS)
def create_rollout(
    body: RolloutCreate,
    principal: Deployer,
    response: Response,
    deps: Deps,
    egress: Egress,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RolloutPublic:
    """Register a canary rollout (deployer): a Knative Service's revisions, an Istio VirtualService's
    subsets or a Gateway API HTTPRoute's backends, validated against the cluster before anything is stored."""
    refuse_unencodable(body.model_dump(mode="python"))
    policy = resolved_policy(body, deps.site_policies)
    check_notifications(body, policy, deps.site_policies, egress, deps.resolve)
    target = resolved_target(deps.backends, body)
    check_steps(policy, deps.backends, target, body)
    now = deps.clock()
    rollout = Rollout.new(
        id=uuid.uuid4().hex[:12],
        namespace=target.namespace,
        service=target.name,
        stable_revision=target.stable,
        canary_revision=target.canary,
        policy=policy_for(policy, target),
        now=now,
        labels=dict(body.labels),
        target_kind=TARGET_KINDS[target.kind],
        route=target.route,
        host=target.host,
        route_match=target.route_match,
    )
    message = f"registered by {principal.name}"
    event = LogEntry("created", message, now, rollout.phase.value, principal.name, dict(body.labels))
    # Keys are scoped per token: one pipeline's key never finds (or blocks) another's rollout.
    scoped_key = f"{principal.name}:{idempotency_key}" if idempotency_key else None
    stored, _ = deps.store.create(rollout, event, scoped_key, body_hash(body.model_dump(mode="json")))
    response.headers["Location"] = f"/v1/rollouts/{stored.id}"
    return rollout_public(stored, [], deps.clock())


@router.get("", response_model=RolloutList)
def list_rollouts(
    principal: Viewer,
    deps: Deps,
    namespace: str | None = None,
    service: str | None = None,
    phase: Phase | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[0-9.e+-]+:[A-Za-z0-9_-]+$")] = None,
    kind: Annotated[Literal["knative", "istio", "gateway-api"] | None, Query(description="The target kind.")] = None,
) -> RolloutList:
    """Newest first; filter by namespace, service, phase and target kind; page with `cursor` (viewer)."""
    page = deps.store.list_rollouts(namespace, service, phase, limit, cursor, kind)
    now = deps.clock()
    return RolloutList(items=[rollout_public(r, [], now) for r in page.rollouts], next_cursor=page.next_cursor)


@router.get("/{rollout_id}", response_model=RolloutPublic, responses={404: {"model": ErrorBody}})
async def get_rollout(rollout_id: str, principal: Viewer, deps: Deps, shown: Shown) -> Response:
    """Phase, step, weights, time in step, the last verdicts with their numbers, the last manual action."""
    # On the event loop, from what was last shown while it is current (`api.shown`): pollers.
    answer = await shown.answer(rollout_id, deps.clock()) if len(rollout_id) <= 64 else None
    if answer is None:
        raise ApiError(404, "not_found", f"no rollout {rollout_id}", "rollout_id")
    return Response(answer, media_type="application/json")


@router.get(
    "/{rollout_id}/events",
    response_model=list[EventPublic],
    responses={404: {"model": ErrorBody}, 200: {"content": {"text/event-stream": {}}}},
)
def rollout_events(
    rollout_id: str,
    principal: Viewer,
    deps: Deps,
    shown: Shown,
    settings: Settings,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(pattern=r"^\d{1,20}-\d{1,20}$")] = None,
) -> Any:
    """The event log; with `Accept: text/event-stream`, live Server-Sent Events until the rollout ends."""
    found(deps.store, rollout_id)
    if last_event_id and any(int(part) >= 2**64 for part in last_event_id.split("-")):
        raise ApiError(422, "validation_error", "not an event id from this stream", "last_event_id")
    if accept and "text/event-stream" in accept:
        return event_stream_response(shown, rollout_id, last_event_id or "0-0", settings.sse_poll_ms)
    return [event_public(e) for e in deps.store.events(rollout_id, after=last_event_id or "-", count=10_000)]

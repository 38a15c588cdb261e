"""The HTTP API: `create_app(settings, deps)` builds the FastAPI application.

Routes are versioned under `/v1`; every error is JSON `{"error", "message", "field"}` from one
handler, never a traceback. Dependencies that reach outside the process (the store, the cluster
through the `Backends` of each target kind, the task queue, readiness probes) are passed in, so the API's own
layer imports only the domain and the store; `api.main` wires the real ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import statistics
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.redis_store import RolloutStore, body_hash
from api.auth import AuthError, Principal, Role, TokenBook
from api.schemas import (
    ActionAccepted,
    ActionRequest,
    ErrorBody,
    EventPublic,
    RolloutCreate,
    RolloutList,
    RolloutPublic,
    VerdictSummary,
)
from api.settings import ApiSettings
from policies import (
    EgressRules,
    InvalidPolicy,
    Policy,
    Resolve,
    SitePolicies,
    field_path,
    load_policy,
    policy_names,
)
from rollouts import engine
from rollouts.errors import (
    ActiveRolloutExists,
    IdempotencyMismatch,
    InvalidTransition,
    PermanentError,
    TransientError,
    ValidationError,
)
from rollouts.events import Abort, Pause, PromoteNow, Resume
from rollouts.log import LogEntry
from rollouts.model import TARGET_KIND, ManualActionKind, Rollout
from rollouts.phase import Phase
from rollouts.ports import Backends, Target

log = logging.getLogger("autocanary.api")
CONTROL_TASK = "autocanary.control"
ACTIONS: dict[str, type[Abort | Pause | Resume | PromoteNow]] = {
    "abort": Abort,
    "pause": Pause,
    "resume": Resume,
    "promote": PromoteNow,
}

Enqueue = Callable[[str, list[Any]], None]
"""Sends a Celery task by name with its arguments (the API does not import the workers)."""


@dataclass(frozen=True)
class Dependencies:
    store: RolloutStore
    backends: Backends
    """The target, router and event recorder of each target kind (the API reads targets only)."""
    enqueue: Enqueue
    probes: Mapping[str, Callable[[], bool]]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    site_policies: SitePolicies = dataclasses.field(default_factory=dict)
    """The installation's own policies (AUTOCANARY_POLICIES_DIR), beside the built-ins."""
    resolve: Resolve = lambda host: ()
    """Host name to addresses, for the notification egress check (`api.main` passes DNS)."""


def _require(needed: Role) -> Callable[..., Principal]:
    def check(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
        tokens: TokenBook = request.app.state.tokens
        return tokens.authenticate(authorization, needed)

    return check


Viewer = Annotated[Principal, Depends(_require(Role.VIEWER))]
Deployer = Annotated[Principal, Depends(_require(Role.DEPLOYER))]
Operator = Annotated[Principal, Depends(_require(Role.OPERATOR))]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, **extra: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.extra = status, code, message, field, extra


def create_app(settings: ApiSettings, deps: Dependencies) -> FastAPI:
    app = FastAPI(
        # No trailing-slash redirects: they would echo the request's Host header into Location.
        redirect_slashes=False,
        title="autocanary",
        version="1",
        description="Progressive delivery for Knative Services. Authenticate with `Authorization: Bearer <token>`.",
        responses={
            401: {"model": ErrorBody, "description": "Missing or invalid token"},
            403: {"model": ErrorBody, "description": "The token's role is too weak"},
            413: {"model": ErrorBody, "description": "Request body too large"},
            422: {"model": ErrorBody, "description": "Invalid request"},
        },
    )
    app.state.tokens = TokenBook.load(settings.tokens, settings.tokens_file)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(CatchAll)  # added last: outermost of ours
    _install_error_handler(app)
    app.include_router(_rollouts(deps, settings))
    app.include_router(_actions(deps))
    app.include_router(_policies(deps.site_policies))
    app.include_router(_operations(deps, settings.metrics_token_required))
    return app


def _rollouts(deps: Dependencies, settings: ApiSettings) -> APIRouter:
    routes = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])
    egress = EgressRules.parse(settings.notify_allowed_hosts)

    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody},
        409: {"model": ErrorBody},
        503: {"model": ErrorBody},
    }

    @routes.post("", status_code=201, response_model=RolloutPublic, responses=errors)
    def create_rollout(
        body: RolloutCreate,
        principal: Deployer,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> RolloutPublic:
        """Register a canary rollout (deployer); validated against the cluster before anything is stored."""
        _refuse_unencodable(body.model_dump(mode="python"))
        policy = _policy(body, deps.site_policies)
        _check_notifications(body, policy, deps, egress)
        stable, canary = _revisions(deps.backends.of(TARGET_KIND).target, body)
        now = deps.clock()
        rollout = Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=body.namespace,
            service=body.service,
            stable_revision=stable,
            canary_revision=canary,
            policy=policy,
            now=now,
            labels=dict(body.labels),
        )
        message = f"registered by {principal.name}"
        event = LogEntry("created", message, now, rollout.phase.value, principal.name, dict(body.labels))
        # Keys are scoped per token: one pipeline's key never finds (or blocks) another's rollout.
        scoped_key = f"{principal.name}:{idempotency_key}" if idempotency_key else None
        stored, _ = deps.store.create(rollout, event, scoped_key, body_hash(body.model_dump(mode="json")))
        response.headers["Location"] = f"/v1/rollouts/{stored.id}"
        return _public(stored, [], deps.clock())

    @routes.get("", response_model=RolloutList)
    def list_rollouts(
        principal: Viewer,
        namespace: str | None = None,
        service: str | None = None,
        phase: Phase | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[0-9.e+-]+:[A-Za-z0-9_-]+$")] = None,
    ) -> RolloutList:
        """Newest first; filter by namespace, service and phase; page with `cursor` (viewer)."""
        page = deps.store.list_rollouts(namespace, service, phase, limit, cursor)
        now = deps.clock()
        return RolloutList(items=[_public(r, [], now) for r in page.rollouts], next_cursor=page.next_cursor)

    @routes.get("/{rollout_id}", response_model=RolloutPublic, responses={404: {"model": ErrorBody}})
    def get_rollout(rollout_id: str, principal: Viewer) -> RolloutPublic:
        """Phase, step, weights, time in step, the last verdicts with their numbers, the last manual action."""
        rollout = _found(deps.store, rollout_id)
        return _public(rollout, deps.store.recent_events(rollout_id, 50), deps.clock())

    @routes.get(
        "/{rollout_id}/events",
        response_model=list[EventPublic],
        responses={404: {"model": ErrorBody}, 200: {"content": {"text/event-stream": {}}}},
    )
    def rollout_events(
        rollout_id: str,
        principal: Viewer,
        accept: Annotated[str | None, Header()] = None,
        last_event_id: Annotated[str | None, Header(pattern=r"^\d{1,20}-\d{1,20}$")] = None,
    ) -> Any:
        """The event log; with `Accept: text/event-stream`, live Server-Sent Events until the rollout ends."""
        _found(deps.store, rollout_id)
        if last_event_id and any(int(part) >= 2**64 for part in last_event_id.split("-")):
            raise ApiError(422, "validation_error", "not an event id from this stream", "last_event_id")
        if accept and "text/event-stream" in accept:
            stream = _event_stream(deps.store, rollout_id, last_event_id or "0-0", settings.sse_poll_ms)
            return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return [_event_public(e) for e in deps.store.events(rollout_id, after=last_event_id or "-", count=10_000)]

    return routes


def _actions(deps: Dependencies) -> APIRouter:
    routes = APIRouter(prefix="/v1/rollouts", tags=["actions"])

    def act(action: str) -> Callable[..., ActionAccepted]:
        def endpoint(rollout_id: str, principal: Operator, body: ActionRequest | None = None) -> ActionAccepted:
            rollout = _found(deps.store, rollout_id)
            reason = body.reason if body else ""
            try:  # the same transition table the worker uses: refuse now what it would refuse later
                engine.handle(rollout, ACTIONS[action](principal.name, reason), deps.clock())
            except InvalidTransition as exc:
                raise ApiError(409, "conflict", str(exc), rollout_id=rollout_id, phase=rollout.phase.value) from exc
            kind = ManualActionKind(action)
            # Durable before the 202: the Celery message is only a wake-up, and if it is lost (or
            # the worker that takes it dies) the scheduler sends the stored command again.
            command_id = deps.store.commands.submit(rollout_id, kind, principal.name, reason, deps.clock().timestamp())
            try:
                deps.enqueue(CONTROL_TASK, [command_id])
            except Exception:  # the broker's client raises its own errors; the command is stored
                log.warning("could not send command %s now; the scheduler will", command_id, exc_info=True)
            return ActionAccepted(
                rollout_id=rollout_id, action=action, actor=principal.name, phase=rollout.phase, command_id=command_id
            )

        endpoint.__doc__ = (
            f"{action.capitalize()} the rollout (operator); it takes effect within a second."
            " The command is stored before the 202, so it is carried out even if the worker that"
            " takes it dies. 409 when the rollout's phase does not allow it."
        )
        return endpoint

    for action in ACTIONS:
        routes.add_api_route(
            f"/{{rollout_id}}/{action}",
            act(action),
            methods=["POST"],
            status_code=202,
            response_model=ActionAccepted,
            name=f"{action}_rollout",
            responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
        )
    return routes


def _policies(site: SitePolicies) -> APIRouter:
    routes = APIRouter(prefix="/v1/policies", tags=["policies"])

    @routes.get("")
    def policies(principal: Viewer) -> dict[str, Policy]:
        """Every policy, built-in and the installation's own, resolved (viewer)."""
        return {name: load_policy(name, site=site) for name in policy_names(site)}

    @routes.get("/{name}", responses={404: {"model": ErrorBody}})
    def policy(name: str, principal: Viewer) -> Policy:
        """One policy, resolved (viewer)."""
        if name not in policy_names(site):
            known = ", ".join(policy_names(site))
            raise ApiError(404, "not_found", f"no policy {name!r}; policies are: {known}", "name")
        return load_policy(name, site=site)

    return routes


def _operations(deps: Dependencies, metrics_token_required: bool) -> APIRouter:
    routes = APIRouter(tags=["operations"])

    @routes.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @routes.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
    def readyz(
        required: Annotated[
            str | None,
            Query(
                description="Comma-separated checks that decide the status (default: all). Every check is"
                " reported either way. Kubernetes probes use `required=redis`: an API that cannot reach"
                " Prometheus can still take an abort, so it must stay in the Service."
            ),
        ] = None,
    ) -> JSONResponse:
        """Redis, Prometheus and the Kubernetes API reachable, each reported."""
        checks = {name: _safe(name, probe) for name, probe in deps.probes.items()}
        deciding = set(checks) if required is None else {name.strip() for name in required.split(",") if name.strip()}
        if not deciding:  # `?required=` would otherwise answer ready whatever the checks say
            raise ApiError(422, "validation_error", f"name at least one check: {', '.join(sorted(checks))}", "required")
        unknown = deciding - set(checks)
        if unknown:
            known = ", ".join(sorted(checks))
            raise ApiError(
                422, "validation_error", f"unknown check {sorted(unknown)[0]!r}; checks are: {known}", "required"
            )
        status = 200 if all(checks[name] for name in deciding) else 503
        return JSONResponse({"ready": status == 200, "checks": checks}, status_code=status)

    @routes.get("/metrics", response_class=PlainTextResponse, responses={401: {"model": ErrorBody}})
    def metrics(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
        """Prometheus exposition: rollouts by phase, canary weights, checks, tick lateness, abort latency.

        Open by default, for Prometheus; with AUTOCANARY_METRICS_TOKEN_REQUIRED=true it needs a
        viewer token, since it names every active rollout's namespace, service and revision."""
        if metrics_token_required:
            tokens: TokenBook = request.app.state.tokens
            tokens.authenticate(authorization, Role.VIEWER)
        return exposition(deps.store)

    return routes


# --- request handling ------------------------------------------------------------------------


def _policy(body: RolloutCreate, site: SitePolicies) -> Policy:
    try:
        return load_policy(body.policy, body.policy_overrides, site=site)
    except InvalidPolicy as exc:
        if any(problem.field == "policy" for problem in exc.problems):  # the name itself is unknown
            raise ValidationError(exc.problems) from exc
        raise ValidationError.from_invalid_policy(exc, "policy_overrides") from exc


def _refuse_unencodable(value: object, path: tuple[str | int, ...] = ()) -> None:
    """A lone surrogate (valid JSON, "\\ud800") cannot be stored as UTF-8: refused, naming where it is."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError.single(field_path(path), "contains a lone surrogate, not text") from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_unencodable(key, path)
            _refuse_unencodable(item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_unencodable(item, (*path, index))


def _check_notifications(body: RolloutCreate, policy: Policy, deps: Dependencies, egress: EgressRules) -> None:
    """A notification target the rollout brings (not one of the named policy's) must be allowed."""
    if not policy.notifications:
        return
    trusted = set(load_policy(body.policy, site=deps.site_policies).notifications)
    for index, target in enumerate(policy.notifications):
        if target in trusted:
            continue
        problem = egress.problem(target.url, deps.resolve)
        if problem:
            raise ValidationError.single(f"policy_overrides.notifications[{index}].url", problem)


def _revisions(target: Target, body: RolloutCreate) -> tuple[str, str]:
    where = f"{body.namespace}/{body.service}"
    try:
        state = target.get(body.namespace, body.service)
    except PermanentError as exc:
        raise ApiError(404, "not_found", f"service {where} not found", "service") from exc
    canary = body.canary_revision or state.newest_version
    if not canary:
        raise ApiError(422, "validation_error", f"service {where} has no revision yet", "canary_revision")
    stable = body.stable_revision or next((rev for rev, pct in state.split.items() if pct == 100), None)
    if not stable:
        split = ", ".join(f"{rev} {pct} %" for rev, pct in state.split.items()) or "nothing"
        raise ApiError(
            422,
            "validation_error",
            f"no revision serves 100 % of {where} (it serves {split}); name one",
            "stable_revision",
        )
    if canary == stable:
        raise ApiError(422, "validation_error", f"canary and stable are both {canary}", "canary_revision")
    for field, revision in (("stable_revision", stable), ("canary_revision", canary)):
        try:
            target.version(body.namespace, revision)
        except PermanentError as exc:
            raise ApiError(404, "not_found", f"revision {revision} not found in {body.namespace}", field) from exc
    return stable, canary


def _found(store: RolloutStore, rollout_id: str) -> Rollout:
    rollout = store.get(rollout_id) if len(rollout_id) <= 64 else None
    if rollout is None:
        raise ApiError(404, "not_found", f"no rollout {rollout_id}", "rollout_id")
    return rollout


def _public(rollout: Rollout, recent: list[LogEntry], now: datetime) -> RolloutPublic:
    verdicts = [e for e in recent if e.kind == "verdict"][:10]
    evidence = verdicts[0].data.get("evidence") if verdicts else None
    in_step = (
        (now - rollout.step_started_at).total_seconds() if rollout.step_started_at and not rollout.is_terminal else None
    )
    return RolloutPublic(
        id=rollout.id,
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
        checks=rollout.checks.model_dump(),
        last_verdicts=[
            VerdictSummary(
                at=e.at,
                outcome=str(e.data.get("outcome", "")),
                sentence=e.message,
                evidence=e.data.get("evidence"),
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


def _event_public(event: LogEntry) -> EventPublic:
    return EventPublic(
        id=event.id,
        kind=event.kind,
        message=event.message,
        at=event.at,
        phase=event.phase,
        actor=event.actor,
        data=dict(event.data),
    )


async def _event_stream(store: RolloutStore, rollout_id: str, after: str, poll_ms: int) -> AsyncIterator[str]:
    """Server-Sent Events: what happened after `after`, then live until the rollout has ended."""
    last = after
    for event in await run_in_threadpool(store.events, rollout_id, last if last != "0-0" else "-", 10_000):
        last = event.id
        yield _sse(event)
    while True:
        events = await run_in_threadpool(store.wait_events, rollout_id, last, poll_ms)
        for event in events:
            last = event.id
            yield _sse(event)
        if not events:
            rollout = await run_in_threadpool(store.get, rollout_id)
            if rollout is None or rollout.is_terminal:
                # The final save writes the document and its events at once; it may have landed
                # after the wait above, so send what came after `last` before ending.
                for event in await run_in_threadpool(store.events, rollout_id, last, 10_000):
                    last = event.id
                    yield _sse(event)
                yield "event: end\ndata: {}\n\n"
                return
            yield ": keep-alive\n\n"
        await asyncio.sleep(0)


def _sse(event: LogEntry) -> str:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {_event_public(event).model_dump_json()}\n\n"


def _safe(name: str, probe: Callable[[], bool]) -> bool:
    try:
        return bool(probe())
    except Exception as exc:  # a probe that raises is a dependency that is not ready: one line, no traceback
        log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        return False


def exposition(store: RolloutStore) -> str:
    """The `/metrics` body. It reads every stored rollout (bench/metrics_scrape.py measures what that costs)."""
    rollouts = store.list_rollouts(limit=100_000).rollouts
    phases = Counter(r.phase.value for r in rollouts)
    checks = Counter[str]()
    for rollout in rollouts:
        for outcome, count in rollout.checks.model_dump().items():
            checks[outcome] += count
    lines = ["# HELP autocanary_rollouts Rollouts by phase.", "# TYPE autocanary_rollouts gauge"]
    lines += [f'autocanary_rollouts{{phase="{phase.value}"}} {phases.get(phase.value, 0)}' for phase in Phase]
    lines += [
        "# HELP autocanary_canary_weight Canary weight of each active rollout, percent.",
        "# TYPE autocanary_canary_weight gauge",
    ]
    active = [r for r in rollouts if not r.is_terminal]
    labels = {
        r.id: f'rollout="{r.id}",namespace="{r.namespace}",service="{r.service}",canary="{r.canary_revision}"'
        for r in active
    }
    lines += [f"autocanary_canary_weight{{{labels[r.id]}}} {r.canary_weight}" for r in active]
    lines += [
        "# HELP autocanary_evidence Evidence against the canary of each active rollout (e-value; 1 = none;"
        " the policy rolls back at 1/alpha).",
        "# TYPE autocanary_evidence gauge",
    ]
    lines += [f"autocanary_evidence{{{labels[r.id]}}} {r.evidence:.6g}" for r in active]
    lines += [
        "# HELP autocanary_evidence_threshold The e-value at which each active rollout's policy rolls back"
        " (1/alpha_errors).",
        "# TYPE autocanary_evidence_threshold gauge",
    ]
    lines += [f"autocanary_evidence_threshold{{{labels[r.id]}}} {1 / r.policy.alpha_errors:.6g}" for r in active]
    lines += [
        "# HELP autocanary_checks Ticks by verdict outcome over the rollouts in the store.",
        "# TYPE autocanary_checks gauge",
    ]
    lines += [
        f'autocanary_checks{{outcome="{outcome}"}} {checks.get(outcome, 0)}'
        for outcome in ("passed", "failed", "inconclusive", "errored")
    ]
    for name, metric, help_text in (
        ("lateness", "autocanary_tick_lateness_seconds", "When a tick started minus when it was due."),
        ("abort_latency", "autocanary_abort_latency_seconds", "From an abort's request to stable 100 % confirmed."),
    ):
        samples = store.samples(name, 5000)
        lines += [f"# HELP {metric} {help_text} Latest samples.", f"# TYPE {metric} summary"]
        for q in (0.5, 0.9, 0.99):
            value = (
                statistics.quantiles(samples, n=100)[round(q * 100) - 1]
                if len(samples) > 1
                else (samples[0] if samples else 0.0)
            )
            lines.append(f'{metric}{{quantile="{q}"}} {value:.6f}')
        lines += [f"{metric}_sum {sum(samples):.6f}", f"{metric}_count {len(samples)}"]
    return "\n".join(lines) + "\n"


# --- errors ----------------------------------------------------------------------------------

_DOMAIN: dict[type[Exception], tuple[int, str]] = {
    ValidationError: (422, "validation_error"),
    InvalidPolicy: (422, "validation_error"),
    IdempotencyMismatch: (422, "idempotency_key_reused"),
    ActiveRolloutExists: (409, "conflict"),
    InvalidTransition: (409, "conflict"),
    TransientError: (503, "unavailable"),
    PermanentError: (502, "upstream_error"),
}


def _install_error_handler(app: FastAPI) -> None:
    """One handler for every error: JSON {error, message, field}, never a traceback."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        body: dict[str, Any]
        if isinstance(exc, ApiError):
            status, body = exc.status, {"error": exc.code, "message": exc.message, "field": exc.field, **exc.extra}
        elif isinstance(exc, AuthError):
            status = exc.status
            body = {"error": "unauthorized" if status == 401 else "forbidden", "message": exc.message, "field": None}
        elif isinstance(exc, RequestValidationError) and (refusal := _unauthenticated(request)) is not None:
            status = 401  # authenticate first: a stranger learns nothing about what the route accepts
            body = {"error": "unauthorized", "message": refusal.message, "field": None}
        elif isinstance(exc, RequestValidationError):
            first = exc.errors()[0]
            location = tuple(part for part in first["loc"] if part not in ("body", "query", "path", "header"))
            status = 422
            body = {"error": "validation_error", "message": str(first["msg"]), "field": field_path(location) or None}
        elif isinstance(exc, StarletteHTTPException):
            status = exc.status_code
            code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(status, "http_error")
            body = {"error": code, "message": str(exc.detail), "field": None}
        else:
            status, code = next(
                ((s, c) for kind, (s, c) in _DOMAIN.items() if isinstance(exc, kind)), (500, "internal_error")
            )
            message = str(exc) if status != 500 else "internal error; the server log has the details"
            if status == 500:
                log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
            body = {"error": code, "message": message, "field": None}
            if isinstance(exc, ValidationError | InvalidPolicy):
                body["field"] = exc.problems[0].field or None
            if isinstance(exc, ActiveRolloutExists | IdempotencyMismatch):
                body["rollout_id"] = exc.rollout_id
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(body, status_code=status, headers=headers)

    # Each class by name: Starlette treats a handler for bare Exception as the server-error
    # handler, which answers and then re-raises (a traceback in the log for a mere 422).
    for kind in (ApiError, AuthError, RequestValidationError, StarletteHTTPException, *_DOMAIN):
        app.add_exception_handler(kind, handle)
    # Anything else reaches `CatchAll`: one JSON 500, logged once, the connection kept.


_OPEN_PATHS = ("/healthz", "/readyz", "/docs", "/openapi.json", "/redoc")


def _unauthenticated(request: Request) -> AuthError | None:
    """Why a request to a token-protected route has no valid token (None: it has one, or needs none)."""
    if request.url.path.startswith(_OPEN_PATHS):
        return None
    tokens: TokenBook = request.app.state.tokens
    try:
        tokens.authenticate(request.headers.get("authorization"), Role.VIEWER)
    except AuthError as exc:
        return exc
    return None


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, whether or not Content-Length is sent.

    The body is read here, before the app (bodies are small: 64 KiB by default), so a chunked
    body over the limit gets the same 413 as a declared one, never the framework's 400.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)  # streams (SSE) must keep their receive for disconnects
            return
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            received += len(message.get("body", b""))
            if received > self.limit:
                await _too_large(send, self.limit)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


class CatchAll:
    """The outermost guard: an error nothing else handled becomes one logged JSON 500.

    Without it Starlette answers through its handler and then re-raises to the server, which logs
    the error a second time and closes the keep-alive connection without `Connection: close`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:  # the truly unexpected: answered once, logged once, connection kept
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            body = json.dumps(
                {"error": "internal_error", "message": "internal error; the server log has the details", "field": None}
            ).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": "payload_too_large", "message": f"request body over {limit} bytes", "field": None})
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body.encode()})

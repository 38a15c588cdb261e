"""Operations: `/healthz`, `/readyz` (each dependency reported) and the `/metrics` exposition."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from api.auth import Role, TokenBook
from api.deps import Deps, Settings
from api.errors import ApiError
from api.exposition import exposition
from api.schemas import ErrorBody

log = logging.getLogger("autocanary.api")

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
def readyz(
    deps: Deps,
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


@router.get("/metrics", response_class=PlainTextResponse, responses={401: {"model": ErrorBody}})
def metrics(
    request: Request, deps: Deps, settings: Settings, authorization: Annotated[str | None, Header()] = None
) -> str:
    """Prometheus exposition: rollouts by phase, canary weights, checks, tick lateness, abort latency.

    Open by default, for Prometheus; with AUTOCANARY_METRICS_TOKEN_REQUIRED=true it needs a
    viewer token, since it names every active rollout's namespace, service and revision."""
    if settings.metrics_token_required:
        tokens: TokenBook = request.app.state.tokens
        tokens.authenticate(authorization, Role.VIEWER)
    return exposition(deps.store)


def _safe(name: str, probe: Callable[[], bool]) -> bool:
    try:
        return bool(probe())
    except Exception as exc:  # a probe that raises is a dependency that is not ready: one line, no traceback
        log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        return False

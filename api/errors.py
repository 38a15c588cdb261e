"""Every error the API answers, as JSON `{"error", "message", "field"}` from one place, never a traceback.

Domain errors map to statuses by what the caller should do (`DOMAIN`): bad input 422, a conflict
with the rollout's state 409, a dependency away 503. A request without a valid token is answered
401 before anything about its body is said.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import AuthError, Role
from api.deps import identify
from policies import InvalidPolicy, field_path
from rollouts.errors import (
    ActiveRolloutExists,
    IdempotencyMismatch,
    InvalidTransition,
    PermanentError,
    TransientError,
    ValidationError,
)

log = logging.getLogger("autocanary.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, **extra: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.extra = status, code, message, field, extra


DOMAIN: dict[type[Exception], tuple[int, str]] = {
    ValidationError: (422, "validation_error"),
    InvalidPolicy: (422, "validation_error"),
    IdempotencyMismatch: (422, "idempotency_key_reused"),
    ActiveRolloutExists: (409, "conflict"),
    InvalidTransition: (409, "conflict"),
    TransientError: (503, "unavailable"),
    PermanentError: (502, "upstream_error"),
}


def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The JSON answer to an error of one of the `HANDLED` kinds (and of any other, as a 500)."""
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
        if location[:1] == ("target",) and location[1:2] in (("knative",), ("istio",), ("gateway-api",)):
            location = location[:1] + location[2:]  # the union's tag: the body has no such level
        status = 422
        body = {"error": "validation_error", "message": str(first["msg"]), "field": field_path(location) or None}
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(status, "http_error")
        body = {"error": code, "message": str(exc.detail), "field": None}
    else:
        status, code = next(
            ((s, c) for kind, (s, c) in DOMAIN.items() if isinstance(exc, kind)), (500, "internal_error")
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


HANDLED: tuple[type[Exception], ...] = (ApiError, AuthError, RequestValidationError, StarletteHTTPException, *DOMAIN)
"""The errors answered by `error_response`; anything else reaches `CatchAll`."""


def install_error_handlers(app: FastAPI) -> None:
    """One handler for every error: JSON {error, message, field}, never a traceback."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, exc)

    # Each class by name: Starlette treats a handler for bare Exception as the server-error
    # handler, which answers and then re-raises (a traceback in the log for a mere 422).
    for kind in HANDLED:
        app.add_exception_handler(kind, handle)
    # Anything else reaches `CatchAll`: one JSON 500, logged once, the connection kept.


_OPEN_PATHS = ("/healthz", "/readyz", "/docs", "/openapi.json", "/redoc", "/ui/")


def _unauthenticated(request: Request) -> AuthError | None:
    """Why a request to a token-protected route has no valid token (None: it has one, or needs none)."""
    if request.url.path.startswith(_OPEN_PATHS):
        return None
    try:
        identify(request, Role.VIEWER)
    except AuthError as exc:
        return exc
    return None

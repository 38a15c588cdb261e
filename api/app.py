"""The HTTP API: `create_app(settings, deps)` builds the FastAPI application.

Routes are versioned under `/v1`, one module per resource (`api.routes`); every error is JSON
`{"error", "message", "field"}` from one handler (`api.errors`), never a traceback. What reaches
outside the process (the store, the cluster through the `Backends` of each target kind, the task
queue, readiness probes) comes in as `Dependencies`, put on `app.state` and handed to routes by
`Depends` (`api.deps`), so the API's own layer imports only the domain and the store; `api.main`
wires the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.auth import TokenBook
from api.deps import Dependencies
from api.errors import install_error_handlers
from api.fast_reads import RolloutReads
from api.middleware import BodyLimit, CatchAll, PageHeaders
from api.routes import actions, operations, policies, rollouts
from api.schemas import ErrorBody
from api.settings import ApiSettings
from api.shown import ShownRollouts
from api.ui import routes as dashboard
from api.ui.session import SessionSigner
from policies import EgressRules


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the application serves, its answers follow the store's announcements of changes."""
    shown: ShownRollouts = app.state.shown
    following = asyncio.create_task(shown.follow_changes())
    try:
        yield
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following


def create_app(settings: ApiSettings, deps: Dependencies) -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
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
    app.state.deps = deps
    app.state.shown = ShownRollouts(deps.store.reads, deps.store.changes_channel)
    app.state.settings = settings
    app.state.tokens = TokenBook.load(settings.tokens, settings.tokens_file)
    app.state.sessions = SessionSigner(app.state.tokens.secrets)
    app.state.egress = EgressRules.parse(settings.notify_allowed_hosts)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(PageHeaders, prefix=dashboard.router.prefix)
    app.add_middleware(RolloutReads)  # the dashboards' polls, before FastAPI's routing
    app.add_middleware(CatchAll)  # added last: outermost of ours
    install_error_handlers(app)
    for resource in (rollouts, actions, policies, operations, dashboard):
        app.include_router(resource.router)
    return app

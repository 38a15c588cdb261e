"""What the routes depend on, as FastAPI dependencies: the `Dependencies` that reach outside the
process (store, backends, task queue, probes, clock), the settings, and the token roles.

`create_app` puts them on `app.state`; routes take them through `Depends`, so a test can swap
any of them with `app.dependency_overrides`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from adapters.redis_store import RolloutStore
from api.auth import AuthError, Principal, Role, TokenBook, authorize
from api.settings import ApiSettings
from api.shown import ShownRollouts
from api.ui.session import COOKIE, CSRF_HEADER, SessionSigner
from policies import EgressRules, Resolve, SitePolicies
from rollouts.ports import Backends

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


def identify(request: Request, needed: Role) -> Principal:
    """Who sends the request, by its bearer token or else its dashboard session; AuthError if
    nobody known, or a role weaker than `needed`."""
    tokens: TokenBook = request.app.state.tokens
    authorization = request.headers.get("authorization")
    if authorization or COOKIE not in request.cookies:
        return tokens.authenticate(authorization, needed)
    return authorize(_session_principal(request, tokens), needed)


def _require(needed: Role) -> Callable[..., Any]:
    # The header is declared so that the OpenAPI description shows it; `identify` reads it.
    # Async, as every dependency here: they do no I/O, and a sync one would cost each request a
    # hop through the thread pool (which 200 pollers queue on).
    async def check(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
        return identify(request, needed)

    return check


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _session_principal(request: Request, tokens: TokenBook) -> Principal:
    """Who a dashboard session cookie belongs to; a state-changing request also needs its CSRF token
    and, when the browser says where it comes from, this origin."""
    signer: SessionSigner = request.app.state.sessions
    cookie = request.cookies[COOKIE]
    session = signer.session(cookie, time.time())
    if session is None or not tokens.holds(session.principal):
        raise AuthError(401, "the dashboard session has expired or was signed out: sign in again")
    unsafe = request.method not in _SAFE_METHODS
    if unsafe and not (signer.csrf_matches(cookie, request.headers.get(CSRF_HEADER)) and same_origin(request)):
        raise AuthError(403, f"a dashboard request that changes something needs the {CSRF_HEADER} header")
    return session.principal


def same_origin(request: Request) -> bool:
    """False only when the browser names another site than the one it asked (Origin header).

    Host and port are compared, not the scheme: behind an ingress that ends TLS the API sees
    plain HTTP for a page the browser loaded over HTTPS."""
    origin = request.headers.get("origin")
    return origin is None or origin.partition("://")[2] == request.headers.get("host", request.url.netloc)


Viewer = Annotated[Principal, Depends(_require(Role.VIEWER))]
Deployer = Annotated[Principal, Depends(_require(Role.DEPLOYER))]
Operator = Annotated[Principal, Depends(_require(Role.OPERATOR))]


async def get_deps(request: Request) -> Dependencies:
    deps: Dependencies = request.app.state.deps
    return deps


async def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def get_egress(request: Request) -> EgressRules:
    egress: EgressRules = request.app.state.egress
    return egress


async def get_shown(request: Request) -> ShownRollouts:
    shown: ShownRollouts = request.app.state.shown
    return shown


Deps = Annotated[Dependencies, Depends(get_deps)]
Shown = Annotated[ShownRollouts, Depends(get_shown)]
Settings = Annotated[ApiSettings, Depends(get_settings)]
Egress = Annotated[EgressRules, Depends(get_egress)]

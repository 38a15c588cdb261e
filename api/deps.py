"""What the routes depend on, as FastAPI dependencies: the `Dependencies` that reach outside the
process (store, backends, task queue, probes, clock), the settings, and the token roles.

`create_app` puts them on `app.state`; routes take them through `Depends`, so a test can swap
any of them with `app.dependency_overrides`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from adapters.redis_store import RolloutStore
from api.auth import Principal, Role, TokenBook
from api.settings import ApiSettings
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


def _require(needed: Role) -> Callable[..., Principal]:
    def check(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
        tokens: TokenBook = request.app.state.tokens
        return tokens.authenticate(authorization, needed)

    return check


Viewer = Annotated[Principal, Depends(_require(Role.VIEWER))]
Deployer = Annotated[Principal, Depends(_require(Role.DEPLOYER))]
Operator = Annotated[Principal, Depends(_require(Role.OPERATOR))]


def get_deps(request: Request) -> Dependencies:
    deps: Dependencies = request.app.state.deps
    return deps


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def get_egress(request: Request) -> EgressRules:
    egress: EgressRules = request.app.state.egress
    return egress


Deps = Annotated[Dependencies, Depends(get_deps)]
Settings = Annotated[ApiSettings, Depends(get_settings)]
Egress = Annotated[EgressRules, Depends(get_egress)]

"""`GET /v1/rollouts/{id}` answered before FastAPI's routing (`api.fast_reads`) and from JSON cut
around the time in step (`api.shown.Rendered`): the same answers as the route gives, and the route
still decides whatever is not a plain authorised read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.redis_store import RolloutStore
from api.app import create_app
from api.deps import Dependencies, get_deps
from api.fast_reads import RolloutReads
from api.settings import ApiSettings
from api.shown import Rendered
from api.views import rollout_public
from rollouts import Phase, Rollout
from rollouts.log import LogEntry
from tests.factories import rollout
from tests.fakes import FakeCluster

NOW = datetime(2026, 12, 3, 12, 0, 0, 250_000, tzinfo=UTC)
TOKENS = "grafana:viewer:view-secret"
VIEW = {"Authorization": "Bearer view-secret"}
TRICKY_LABELS = {"time_in_step_seconds": "-1.25e-300", "note": '"time_in_step_seconds":-1.25e-300'}
"""Labels that spell the cut's mark: the cut must still find the field, not a label."""


def running(started: datetime) -> Rollout:
    return rollout(now=started, labels=TRICKY_LABELS, phase=Phase.PROGRESSING, step_started_at=started)


@pytest.mark.parametrize("seconds", [0.0, 1e-6, 1.5, 0.1 + 0.2, 12_345.678, 86_400 * 365.0, -0.5])
def test_an_answer_joined_around_the_time_in_step_is_the_answer_serialised_whole(seconds: float) -> None:
    started = NOW - timedelta(hours=1)
    answer = rollout_public(running(started), [], started)
    later = started + timedelta(seconds=seconds)
    whole = answer.model_copy(update={"time_in_step_seconds": (later - started).total_seconds()})
    assert Rendered.of(answer, started).at(later) == whole.model_dump_json().encode()


def test_an_ended_rollout_is_rendered_once_with_no_time_in_step() -> None:
    ended = running(NOW).with_phase(Phase.SUCCEEDED, NOW, "promoted")
    answer = rollout_public(ended, [], NOW)
    rendered = Rendered.of(answer, None)
    assert rendered.at(NOW) == rendered.at(NOW + timedelta(days=1)) == answer.model_dump_json().encode()
    assert b'"time_in_step_seconds":null' in rendered.at(NOW)


class PastTheFastPath:
    """Notes each request that went on to FastAPI's routing."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


@pytest.fixture
def routed() -> list[str]:
    return []


@pytest.fixture
def app(store: RolloutStore, routed: list[str]) -> FastAPI:
    deps = Dependencies(store, FakeCluster().backends(), lambda task, args: None, {}, clock=lambda: NOW)
    app = create_app(ApiSettings(tokens=TOKENS), deps)
    fast = next(i for i, m in enumerate(app.user_middleware) if m.cls == RolloutReads)  # type: ignore[comparison-overlap]
    app.user_middleware.insert(fast + 1, Middleware(PastTheFastPath, seen=routed))  # just inside it
    return app


@pytest.fixture
def client(app: FastAPI, store: RolloutStore) -> Iterator[TestClient]:
    stored = running(NOW - timedelta(seconds=90))
    store.create(stored, LogEntry("created", "test", stored.created_at, stored.phase.value))
    verdict = LogEntry("verdict", "errors: canary 0.1 % vs stable 0.2 %", NOW, "progressing", data={"evidence": 1.5})
    store.append_events(stored.id, [verdict])
    with TestClient(app) as client:
        yield client


def test_a_poll_is_answered_before_routing_with_the_bytes_and_headers_of_the_route(
    client: TestClient, app: FastAPI, routed: list[str]
) -> None:
    fast = client.get("/v1/rollouts/r1", headers=VIEW)
    assert routed == []
    app.dependency_overrides[get_deps] = lambda: app.state.deps  # the same deps: only the path differs
    via_route = client.get("/v1/rollouts/r1", headers=VIEW)
    assert routed == ["GET /v1/rollouts/r1"]
    assert (fast.status_code, fast.content) == (via_route.status_code, via_route.content) == (200, fast.content)
    assert {k: fast.headers[k] for k in ("content-type", "content-length")} == {
        k: via_route.headers[k] for k in ("content-type", "content-length")
    }
    shown: dict[str, Any] = fast.json()
    assert (shown["time_in_step_seconds"], shown["labels"], shown["evidence"]) == (90.0, TRICKY_LABELS, 1.5)


@pytest.mark.parametrize(
    ("path", "headers", "status", "error"),
    [
        ("/v1/rollouts/r1", {}, 401, "unauthorized"),
        ("/v1/rollouts/r1", {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        ("/v1/rollouts/nope", VIEW, 404, "not_found"),
        ("/v1/rollouts/" + "x" * 65, VIEW, 404, "not_found"),
    ],
)
def test_what_is_not_a_plain_authorised_read_is_left_to_the_route(
    client: TestClient, routed: list[str], path: str, headers: dict[str, str], status: int, error: str
) -> None:
    answer = client.get(path, headers=headers)
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert routed == [f"GET {path}"]


def test_other_paths_and_methods_under_the_prefix_go_to_their_routes(client: TestClient, routed: list[str]) -> None:
    events = client.get("/v1/rollouts/r1/events", headers=VIEW)
    assert events.status_code == 200 and [e["kind"] for e in events.json()] == ["created", "verdict"]
    assert client.delete("/v1/rollouts/r1", headers=VIEW).status_code == 405
    assert routed == ["GET /v1/rollouts/r1/events", "DELETE /v1/rollouts/r1"]

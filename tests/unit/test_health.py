"""The worker's and scheduler's probe endpoints, over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import httpx
import pytest

from workers.health import Check, HealthServer


def _raises() -> bool:
    raise ConnectionError("redis: connection refused")


Serve = Callable[[Mapping[str, Check]], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[HealthServer] = []

    def start(checks: Mapping[str, Check]) -> str:
        server = HealthServer(checks, host="127.0.0.1", port=0).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.stop()


def test_ready_when_every_check_passes(serve: Serve) -> None:
    base = serve({"redis": lambda: True})
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    answer = httpx.get(f"{base}/readyz")
    assert (answer.status_code, answer.json()) == (200, {"ready": True, "checks": {"redis": True}})


def test_a_failing_or_raising_check_is_503_and_named(serve: Serve) -> None:
    base = serve({"redis": _raises, "other": lambda: False})
    answer = httpx.get(f"{base}/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"ready": False, "checks": {"redis": False, "other": False}}
    assert httpx.get(f"{base}/healthz").status_code == 200  # alive, just not ready


def test_unknown_paths_are_404_json(serve: Serve) -> None:
    answer = httpx.get(f"{serve({})}/nope")
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"

"""Fixtures that start real local services: the sandbox cluster (with its private Prometheus).

Each is started once per test session as a real subprocess on loopback ports and stopped at
the end; tests isolate themselves by namespace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from adapters.redis_store import RolloutStore
from sandbox.cluster import Endpoints
from sandbox.processes import RedisProcess, SandboxProcess


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """`autocanary sandbox up` as a subprocess, with Prometheus scraping every second."""
    process = SandboxProcess(tmp_path_factory.mktemp("sandbox"), "--reconcile-delay", "0.05", "--ready-after", "0.2")
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture
def namespace() -> str:
    """A fresh namespace name per test, so tests sharing the sandbox never see each other."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port (the machine's own Redis is left alone)."""
    server = RedisProcess(tmp_path_factory.mktemp("redis"), durable=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def store(redis_server: str) -> RolloutStore:
    """A store with a prefix of its own: tests sharing the Redis never see each other's keys."""
    return RolloutStore.from_url(redis_server, prefix=f"test-{uuid.uuid4().hex[:8]}")

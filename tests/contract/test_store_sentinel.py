"""The store on Redis as production runs it: a primary, two replicas and three Sentinels, all real
`redis-server` and `redis-sentinel` processes on loopback.

What must hold: the store finds the primary through the Sentinels; a write the store makes
durable (`AUTOCANARY_REDIS_WAIT_REPLICAS`) is on the replicas when it returns; when the replicas
cannot confirm it, the caller is told, naming the replicas; after the primary is SIGKILLed the
same store and a live event reader carry on against the promoted replica with every durable
write in place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from adapters.redis_store import RolloutStore
from adapters.redis_store.connection import RedisLocation
from rollouts import ManualActionKind, Rollout
from rollouts.errors import TransientError
from rollouts.log import LogEntry
from sandbox.processes import SentinelGroup
from tests.factories import registered
from tests.knative import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    started = SentinelGroup(tmp_path / "redis", replicas=2)
    try:
        started.start()
        yield started
    finally:
        started.stop()


def _location(group: SentinelGroup, wait_replicas: int = 2, wait_timeout_ms: int = 3000) -> RedisLocation:
    """Through the Sentinels; the timeout leaves room for a loaded CI machine's replicas."""
    return RedisLocation.parse(
        "redis://ignored:1/0",
        group.addresses,
        group.master_name,
        wait_replicas=wait_replicas,
        wait_timeout_ms=wait_timeout_ms,
    )


def _rollout(service: str) -> tuple[Rollout, LogEntry]:
    now = datetime.now(UTC)
    return registered(service, now), LogEntry("created", "test", now, "pending", actor="test")


def _on(port: int) -> Any:
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True)


def test_durable_writes_are_on_every_replica_when_they_return(group: SentinelGroup) -> None:
    store = RolloutStore.at(_location(group), prefix="t")
    rollout, created = _rollout("cart")
    store.create(rollout, created)
    command = store.commands.submit(rollout.id, ManualActionKind.ABORT, "oncall", "test", time.time())
    tokens = store.acquire_leases([rollout.id], "worker-a", 3000)
    for replica in group.replicas:  # read at once: WAIT returned only after each replica had them
        node = _on(replica.port)
        assert node.hget(f"t:r:{rollout.id}", "version") == "1"
        assert node.hget(f"t:cmd:{command}", "kind") == "abort"
        assert node.get(f"t:fence:{rollout.id}") == str(tokens[rollout.id])


def test_a_write_the_replicas_cannot_confirm_is_reported_and_repeats_safely(group: SentinelGroup) -> None:
    store = RolloutStore.at(_location(group, wait_timeout_ms=500), prefix="t")
    group.replicas[0].stop()
    rollout, created = _rollout("cart")
    # At most the live replica confirms (on a loaded machine not always within the 500 ms).
    with pytest.raises(
        TransientError, match=r"create the rollout: [01] of 2 replicas confirmed the write within 500 ms"
    ):
        store.create(rollout, created, idempotency_key="deploy-7", request_hash="h")
    group.replicas[0].start()  # back, it catches up; the caller's retry answers as the first time
    wait_for(lambda: group.replicas_online(group.primary.port) == 2, 15, "two replicas online")
    again, fresh = store.create(rollout, created, idempotency_key="deploy-7", request_hash="h")
    assert (again.id, fresh) == (rollout.id, False)


def test_the_store_follows_a_failover_with_its_durable_writes(group: SentinelGroup) -> None:
    # One replica to wait for, as with three nodes in production: after the failover one is left.
    store = RolloutStore.at(_location(group, wait_replicas=1), prefix="t")
    stored = []
    for service in ("cart", "checkout", "search"):
        rollout, created = _rollout(service)
        store.create(rollout, created)
        stored.append(rollout.id)
    command = store.commands.submit(stored[0], ManualActionKind.ABORT, "oncall", "test", time.time())
    old_primary = group.primary.port
    group.primary.kill()  # SIGKILL: the Sentinels see it silent for a second, then promote a replica

    def promoted() -> int | None:
        port = group.current_primary()
        return port if port not in (None, old_primary) else None

    new_primary = wait_for(promoted, 30, "a replica promoted by the Sentinels")
    assert new_primary in {replica.port for replica in group.replicas}

    def read_again() -> list[Rollout | None] | None:  # what a task retried on TransientError does
        try:
            return store.get_many(stored)
        except TransientError:
            return None

    found = wait_for(read_again, 30, "the store reading from the new primary")
    assert [r.id if r else None for r in found] == stored
    assert store.commands.rollout_of(command) == stored[0]
    # Writes go on, still waiting for a replica: the Sentinels pointed the other one at the new primary.
    rollout, created = _rollout("payments")
    wait_for(lambda: _created(store, rollout, created), 30, "a durable write on the new primary")

    async def live_read() -> list[str]:  # as the API's event streams read, through the Sentinels
        return [entry.kind for entry in await store.reads.events_after(stored[1], "-")]

    assert asyncio.run(live_read()) == ["created"]


def _created(store: RolloutStore, rollout: Rollout, created: LogEntry) -> bool:
    try:
        store.create(rollout, created, idempotency_key=f"k-{rollout.id}", request_hash="h")
    except TransientError:
        return False
    return True


@pytest.mark.parametrize(
    ("sentinels", "master", "wait", "message"),
    [
        ("127.0.0.1", "mymaster", 0, "AUTOCANARY_REDIS_SENTINELS: '127.0.0.1' is not host:port"),
        ("a:1,b:99999", "mymaster", 0, "AUTOCANARY_REDIS_SENTINELS: 'b:99999' is not host:port"),
        ("a:1", "", 0, "AUTOCANARY_REDIS_MASTER_NAME: empty"),
        ("", "mymaster", -1, "AUTOCANARY_REDIS_WAIT_REPLICAS: must be 0 or more"),
    ],
)
def test_settings_that_cannot_work_name_the_variable(sentinels: str, master: str, wait: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisLocation.parse("redis://x:1/0", sentinels, master, wait_replicas=wait)


def test_the_broker_reaches_the_primary_through_every_sentinel_with_the_data_nodes_password() -> None:
    location = RedisLocation.parse("redis://:s3cr%40t@ignored/2", "10.0.0.1:26379, 10.0.0.2:26379", "redis-ha", "sp")
    url, options = location.celery_broker()
    assert url == "sentinel://:s3cr%40t@10.0.0.1:26379/2;sentinel://:s3cr%40t@10.0.0.2:26379/2"
    assert options == {"master_name": "redis-ha", "sentinel_kwargs": {"password": "sp"}}
    assert RedisLocation("redis://h:1/0").celery_broker() == ("redis://h:1/0", {})

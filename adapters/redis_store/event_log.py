"""The event log: each rollout's append-only history (who, what, when, why, each verdict's numbers).

| key | type | holds |
|---|---|---|
| `ev:{id}` | stream | the rollout's log entries |

Entries a decision produces are written by the save itself, atomically with the rollout; these
methods read the log and append what no save carries (a refused command). `LiveEventLog` reads
it for an event stream, on `redis.asyncio`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio

from adapters.redis_store.base import StoreBase
from adapters.redis_store.base import transient as _transient
from adapters.redis_store.connection import RedisLocation
from rollouts.log import LogEntry
from rollouts.model import Rollout

_CONNECTION_SETTINGS = (
    "host",
    "port",
    "db",
    "username",
    "password",
    "unix_socket_path",
    "decode_responses",
    "socket_timeout",
    "socket_connect_timeout",
)
"""What a live reader takes over from the store's client (redis-py adds internal keys of its own)."""


class EventLog(StoreBase):
    location: RedisLocation | None = None

    def async_client(self) -> redis.asyncio.Redis:
        """A new `redis.asyncio` client on the same Redis (through the Sentinels when the store's
        location names them, so it follows a failover)."""
        if self.location is not None:
            return self.location.async_client()
        given = self.redis.connection_pool.connection_kwargs
        return redis.asyncio.Redis(**{key: given[key] for key in _CONNECTION_SETTINGS if key in given})

    def live_event_log(self) -> LiveEventLog:
        """A reader of its own for one event stream, on the same Redis and prefix."""
        return LiveEventLog(self.async_client(), self.prefix)

    def append_events(self, rollout_id: str, events: Sequence[LogEntry]) -> None:
        with _transient("append events"):
            pipe = self.redis.pipeline(transaction=False)
            for event in events:
                pipe.xadd(self._key("ev", rollout_id), {"event": event.to_json()})
            pipe.publish(self.changes_channel, rollout_id)
            pipe.execute()

    def events(self, rollout_id: str, after: str = "-", count: int = 1000) -> list[LogEntry]:
        start = "-" if after in ("-", "0", "0-0") else f"({after}"
        with _transient("read events"):
            entries = self.redis.xrange(self._key("ev", rollout_id), start, "+", count=count)
        return [LogEntry.from_stream(entry_id, fields["event"]) for entry_id, fields in entries]

    def recent_events(self, rollout_id: str, count: int) -> list[LogEntry]:
        """The newest `count` events, newest first."""
        with _transient("read events"):
            entries = self.redis.xrevrange(self._key("ev", rollout_id), count=count)
        return [LogEntry.from_stream(entry_id, fields["event"]) for entry_id, fields in entries]


class LiveEventLog:
    """One rollout's log read without a thread, for an event stream (`redis.asyncio`).

    Each stream has a client of its own (a blocking read holds its connection while it waits),
    made from the store's connection settings and closed when the stream ends.
    """

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        # redis-py's type hints do not follow decode_responses=True (every answer is str here).
        self.redis: Any = client
        self.prefix = prefix

    async def read(self, rollout_id: str, after: str, count: int = 10_000) -> list[LogEntry]:
        start = "-" if after in ("-", "0", "0-0") else f"({after}"
        with _transient("read events"):
            entries = await self.redis.xrange(f"{self.prefix}:ev:{rollout_id}", start, "+", count=count)
        return [LogEntry.from_stream(entry_id, fields["event"]) for entry_id, fields in entries]

    async def wait(self, rollout_id: str, after: str, block_ms: int) -> list[LogEntry]:
        """Entries after `after`, waiting up to `block_ms` for the first one."""
        with _transient("wait for events"):
            answer = await self.redis.xread({f"{self.prefix}:ev:{rollout_id}": after}, block=block_ms, count=100)
        return [
            LogEntry.from_stream(entry_id, fields["event"]) for _, items in answer or [] for entry_id, fields in items
        ]

    async def ended(self, rollout_id: str) -> bool:
        """The rollout is gone or in a terminal phase: its log has nothing more to come."""
        with _transient("read the rollout"):
            doc = await self.redis.hget(f"{self.prefix}:r:{rollout_id}", "doc")
        return doc is None or Rollout.from_stored(doc).is_terminal

    async def aclose(self) -> None:
        await self.redis.aclose()

"""The event log: each rollout's append-only history (who, what, when, why, each verdict's numbers).

| key | type | holds |
|---|---|---|
| `ev:{id}` | stream | the rollout's log entries |

Entries a decision produces are written by the save itself, atomically with the rollout; these
methods read the log and append what no save carries (a refused command); `AsyncReads`
(`reads.py`) reads it for the API's event streams, on `redis.asyncio`.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio

from adapters.redis_store.base import StoreBase
from adapters.redis_store.base import transient as _transient
from adapters.redis_store.connection import RedisLocation
from rollouts.log import LogEntry

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

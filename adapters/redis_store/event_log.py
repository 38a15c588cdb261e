"""The event log: each rollout's append-only history (who, what, when, why, each verdict's numbers).

| key | type | holds |
|---|---|---|
| `ev:{id}` | stream | the rollout's log entries |

Entries a decision produces are written by the save itself, atomically with the rollout; these
methods read the log and append what no save carries (a refused command).
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.redis_store.base import StoreBase
from adapters.redis_store.base import transient as _transient
from rollouts.log import LogEntry


class EventLog(StoreBase):
    def append_events(self, rollout_id: str, events: Sequence[LogEntry]) -> None:
        with _transient("append events"):
            pipe = self.redis.pipeline(transaction=False)
            for event in events:
                pipe.xadd(self._key("ev", rollout_id), {"event": event.to_json()})
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

    def wait_events(self, rollout_id: str, after: str, block_ms: int) -> list[LogEntry]:
        """Events after `after`, waiting up to `block_ms` for the first one (for live streams)."""
        with _transient("wait for events"):
            answer = self.redis.xread({self._key("ev", rollout_id): after}, block=block_ms, count=100)
        return [
            LogEntry.from_stream(entry_id, fields["event"])
            for _, entries in answer or []
            for entry_id, fields in entries
        ]

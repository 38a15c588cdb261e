"""The Redis store: rollouts, their event logs, the notification outbox, the schedule, leases and
fencing, and the manual command inbox, each in its own module; `RolloutStore` (`store.py`) is the
facade that holds them, with the atomic create and save that must stay together.

Every key lies under a prefix (`autocanary` by default), so installations can share one Redis.
Redis persistence (AOF) is how state survives restarts. Redis errors become `TransientError`s.
"""

from adapters.redis_store.reads import AsyncReads, Freshness
from adapters.redis_store.store import RolloutStore, body_hash

__all__ = ["AsyncReads", "Freshness", "RolloutStore", "body_hash"]

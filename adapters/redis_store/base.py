"""What every part of the store shares: the Redis client, the key prefix, Redis errors turned
into the `TransientError` the callers retry on (saying what was being done), and the writes that
wait for replicas so that a failover cannot take them back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import redis

from rollouts.errors import TransientError


@contextmanager
def transient(what: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise TransientError(f"Redis: cannot {what}: {exc}") from exc


class StoreBase:
    """The client and the key prefix; each part of the store registers its own Lua scripts."""

    def __init__(
        self, client: redis.Redis, prefix: str = "autocanary", *, wait_replicas: int = 0, wait_timeout_ms: int = 1000
    ) -> None:
        # redis-py's type hints do not follow decode_responses=True (every answer is str here).
        self.redis: Any = client
        self.prefix = prefix
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    def _durably(self, pipe: Any, what: str) -> list[Any]:
        """Run `pipe` (made with `transaction=False`); with replicas to wait for, `WAIT` ends it.

        Redis replicates asynchronously: a write the primary acknowledged can vanish when a
        replica is promoted. `WAIT n` on the connection that wrote returns once n replicas hold
        every write of that connection, so it goes in the same pipeline (one connection, one
        round trip more to the replicas). Fewer replicas in time: the write is done but may not
        survive a failover, and the caller is told so as a `TransientError` (and retries: every
        write that waits is safe to repeat, or answers the repeat as the first time).
        """
        if not self.wait_replicas:
            return list(pipe.execute())
        pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        results = list(pipe.execute())
        confirmed = int(results.pop())
        if confirmed < self.wait_replicas:
            raise TransientError(
                f"Redis: {what}: {confirmed} of {self.wait_replicas} replicas confirmed the write within "
                f"{self.wait_timeout_ms} ms; a failover now could lose it"
            )
        return results

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def changes_channel(self) -> str:
        """The pub/sub channel each change of a rollout is announced on (its id)."""
        return self._key("changed")


def lua(source: str) -> Any:
    """A Lua script as a class attribute, registered on the store's client when first used."""
    return cached_property(lambda store: store.redis.register_script(source))

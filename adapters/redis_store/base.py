"""What every part of the store shares: the Redis client, the key prefix, and Redis errors
turned into the `TransientError` the callers retry on, saying what was being done."""

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

    def __init__(self, client: redis.Redis, prefix: str = "autocanary") -> None:
        # redis-py's type hints do not follow decode_responses=True (every answer is str here).
        self.redis: Any = client
        self.prefix = prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))


def lua(source: str) -> Any:
    """A Lua script as a class attribute, registered on the store's client when first used."""
    return cached_property(lambda store: store.redis.register_script(source))

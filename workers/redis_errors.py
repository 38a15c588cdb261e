"""Redis errors, turned into the `TransientError` the callers retry on, saying what was being done."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from rollouts.errors import TransientError


@contextmanager
def transient(what: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise TransientError(f"Redis: cannot {what}: {exc}") from exc

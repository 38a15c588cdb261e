"""The API's hot reads on `redis.asyncio`: a poller's `GET /v1/rollouts/{id}` runs on the event
loop, in one round trip, without a thread of the pool.

Dashboards poll the same few rollouts many times a second, and a rollout changes once a tick at
most, so the API keeps what it last showed of each and asks Redis only whether it is still
current: the document's `version` (every save bumps it) and the id of the newest log entry (a
refused command appends one without a save). Both come back in one pipelined round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio

from adapters.redis_store.base import transient
from rollouts.log import LogEntry
from rollouts.model import Rollout

Freshness = tuple[str, str]
"""(the document's version, the id of the newest log entry, '' when the log is empty)."""


CONCURRENT_READS = 32
"""Reads in flight at once per API process; more wait their turn (microseconds each) rather than
open connection after connection (redis-py's pool refuses past its limit: "Too many connections")."""


class AsyncReads:
    """Reads of one store for async code; a client per event loop (a client cannot change loops)."""

    def __init__(self, connect: Callable[[], redis.asyncio.Redis], prefix: str) -> None:
        self._connect = connect
        self.prefix = prefix
        self._clients: dict[int, tuple[Any, asyncio.Semaphore]] = {}

    def _client(self) -> tuple[Any, asyncio.Semaphore]:
        loop = id(asyncio.get_running_loop())
        found = self._clients.get(loop)
        if found is None:
            found = (self._connect(), asyncio.Semaphore(CONCURRENT_READS))
            self._clients = {loop: found}  # the loops before this one are gone
        return found

    async def freshness(self, rollout_id: str) -> Freshness | None:
        """What tells whether a shown rollout is current; None when there is no such rollout."""
        client, turn = self._client()
        with transient("read the rollout"):
            async with turn:
                pipe = client.pipeline(transaction=False)
                pipe.hget(f"{self.prefix}:r:{rollout_id}", "version")
                pipe.xrevrange(f"{self.prefix}:ev:{rollout_id}", count=1)
                version, newest = await pipe.execute()
        if version is None:
            return None
        return str(version), newest[0][0] if newest else ""

    async def rollout_with_recent(
        self, rollout_id: str, count: int
    ) -> tuple[Rollout, list[LogEntry], Freshness] | None:
        """The rollout, its newest `count` log entries (newest first) and their freshness, read together."""
        client, turn = self._client()
        with transient("read the rollout"):
            async with turn:
                pipe = client.pipeline(transaction=True)  # the document and its log as of one moment
                pipe.hmget(f"{self.prefix}:r:{rollout_id}", ["doc", "version"])
                pipe.xrevrange(f"{self.prefix}:ev:{rollout_id}", count=count)
                (doc, version), entries = await pipe.execute()
        if doc is None:
            return None
        recent = [LogEntry.from_stream(entry_id, fields["event"]) for entry_id, fields in entries]
        return Rollout.from_stored(doc), recent, (str(version), entries[0][0] if entries else "")

    async def events_after(self, rollout_id: str, after: str, count: int = 10_000) -> list[LogEntry]:
        """The rollout's log entries after the id `after` ('0-0' or '-': from the start)."""
        start = "-" if after in ("-", "0", "0-0") else f"({after}"
        client, turn = self._client()
        with transient("read events"):
            async with turn:
                entries = await client.xrange(f"{self.prefix}:ev:{rollout_id}", start, "+", count=count)
        return [LogEntry.from_stream(entry_id, fields["event"]) for entry_id, fields in entries]

    async def ended(self, rollout_id: str) -> bool:
        """The rollout is gone or in a terminal phase: its log has nothing more to come."""
        client, turn = self._client()
        with transient("read the rollout"):
            async with turn:
                doc = await client.hget(f"{self.prefix}:r:{rollout_id}", "doc")
        return doc is None or Rollout.from_stored(doc).is_terminal

    async def changes(self, channel: str, subscribed: Callable[[], None]) -> AsyncIterator[str]:
        """The ids of rollouts as they change (created, saved, deleted, given a log entry), from
        the store's pub/sub channel, on a connection of its own; `subscribed` is called once the
        subscription holds (changes before it are not told). Ends with the connection (a
        `TransientError`), after which the caller must trust nothing it was not told."""
        client = self._connect()
        pubsub: Any = client.pubsub()  # redis-py's PubSub is partly untyped
        try:
            with transient("follow rollout changes"):
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        subscribed()
                    elif message["type"] == "message":
                        yield str(message["data"])
        finally:
            await pubsub.aclose()
            await client.aclose()

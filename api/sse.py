"""Server-Sent Events of a rollout's log: what happened after the client's last event, then live
until the rollout has ended (`Last-Event-ID` resumes a stream cut by a restart)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi.concurrency import run_in_threadpool

from adapters.redis_store import RolloutStore
from api.views import event_public
from rollouts.log import LogEntry


async def event_stream(store: RolloutStore, rollout_id: str, after: str, poll_ms: int) -> AsyncIterator[str]:
    """Server-Sent Events: what happened after `after`, then live until the rollout has ended."""
    last = after
    for event in await run_in_threadpool(store.events, rollout_id, last if last != "0-0" else "-", 10_000):
        last = event.id
        yield _frame(event)
    while True:
        events = await run_in_threadpool(store.wait_events, rollout_id, last, poll_ms)
        for event in events:
            last = event.id
            yield _frame(event)
        if not events:
            rollout = await run_in_threadpool(store.get, rollout_id)
            if rollout is None or rollout.is_terminal:
                # The final save writes the document and its events at once; it may have landed
                # after the wait above, so send what came after `last` before ending.
                for event in await run_in_threadpool(store.events, rollout_id, last, 10_000):
                    last = event.id
                    yield _frame(event)
                yield "event: end\ndata: {}\n\n"
                return
            yield ": keep-alive\n\n"
        await asyncio.sleep(0)


def _frame(event: LogEntry) -> str:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {event_public(event).model_dump_json()}\n\n"

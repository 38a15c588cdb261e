"""Server-Sent Events of a rollout's log: what happened after the client's last event, then live
until the rollout has ended (`Last-Event-ID` resumes a stream cut by a restart).

Served by `sse-starlette` from a `redis.asyncio` reader: an open stream holds no thread, only
its own Redis connection while it waits for news.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent

from adapters.redis_store import RolloutStore
from adapters.redis_store.event_log import LiveEventLog
from api.views import event_public
from rollouts.log import LogEntry


def event_stream_response(store: RolloutStore, rollout_id: str, after: str, poll_ms: int) -> EventSourceResponse:
    stream = _events(store.live_event_log(), rollout_id, after, poll_ms)
    return EventSourceResponse(stream, headers={"Cache-Control": "no-cache"}, sep="\n")


async def _events(log: LiveEventLog, rollout_id: str, after: str, poll_ms: int) -> AsyncIterator[ServerSentEvent]:
    last = after
    try:
        for entry in await log.read(rollout_id, last):
            last = entry.id
            yield _frame(entry)
        while True:
            entries = await log.wait(rollout_id, last, poll_ms)
            for entry in entries:
                last = entry.id
                yield _frame(entry)
            if entries:
                continue
            if await log.ended(rollout_id):
                # The final save writes the document and its entries at once; it may have landed
                # after the wait above, so send what came after `last` before ending.
                for entry in await log.read(rollout_id, last):
                    last = entry.id
                    yield _frame(entry)
                yield ServerSentEvent("{}", event="end")
                return
            yield ServerSentEvent(comment="keep-alive")
    finally:
        await log.aclose()


def _frame(entry: LogEntry) -> ServerSentEvent:
    return ServerSentEvent(event_public(entry).model_dump_json(), event=entry.kind, id=entry.id)

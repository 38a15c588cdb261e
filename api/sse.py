"""Server-Sent Events of a rollout's log: what happened after the client's last event, then live
until the rollout has ended (`Last-Event-ID` resumes a stream cut by a restart).

Served by `sse-starlette` on the event loop: an open stream holds no thread and no Redis
connection. It reads through the API's shared async reads (streams of one rollout share each
read) and, between reads, waits to be woken by the store's announcement of a change of its
rollout (`api.shown.Followers`), reading anyway every `QUIET_READ_SECONDS`; while the API cannot
follow the announcements, it reads every `poll_ms` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent

from api.shown import ShownRollouts
from api.views import event_public
from rollouts.log import LogEntry
from rollouts.phase import TERMINAL_PHASES

QUIET_READ_SECONDS = 15.0
"""While announcements are followed, the longest a stream with no news waits before it reads anyway
and sends a keep-alive comment (at rest a stream reads about once in 12 s, not every `poll_ms`).
Each wait is drawn between two thirds of it and all of it: streams woken together (by one
announcement, or opened together) do not read and write together again."""


def event_stream_response(shown: ShownRollouts, rollout_id: str, after: str, poll_ms: int) -> EventSourceResponse:
    stream = _events(FollowedLog(shown), rollout_id, after, poll_ms)
    # No sse-starlette ping (ping=0): its timers, started together when many streams open together,
    # wrote to all of them in one instant every 15 s (1,000 streams: pollers' p99 112 ms in
    # bench.api_load). The keep-alive comment after each quiet wait keeps proxies from closing it.
    return EventSourceResponse(stream, headers={"Cache-Control": "no-cache"}, sep="\n", ping=0)


class FollowedLog:
    """One stream's reads of its rollout's log: shared reads, woken by announcements."""

    def __init__(self, shown: ShownRollouts) -> None:
        self.shown = shown
        self.reads = shown.reads
        self._signal: tuple[str, asyncio.Event] | None = None

    async def read(self, rollout_id: str, after: str) -> list[LogEntry]:
        return await self.shown.events_after(rollout_id, after)

    async def wait(self, rollout_id: str, after: str, block_ms: int) -> list[LogEntry]:
        """Entries after `after`, waiting up to `block_ms` for the first one."""
        if self._signal is None:
            self._signal = (rollout_id, self.shown.followers.signal(rollout_id))
        signal = self._signal[1]
        signal.clear()  # before the read: an announcement during it wakes the wait below
        entries = await self.read(rollout_id, after)
        if entries:
            return entries
        if self.shown.following:
            with contextlib.suppress(TimeoutError):
                quiet = random.uniform(QUIET_READ_SECONDS * 2 / 3, QUIET_READ_SECONDS)
                await asyncio.wait_for(signal.wait(), max(block_ms / 1000, quiet))
        else:
            await asyncio.sleep(block_ms / 1000)
        return await self.read(rollout_id, after)

    async def ended(self, rollout_id: str) -> bool:
        return await self.reads.ended(rollout_id)

    async def aclose(self) -> None:
        if self._signal is not None:
            self.shown.followers.forget(*self._signal)


async def _events(log: FollowedLog, rollout_id: str, after: str, poll_ms: int) -> AsyncIterator[ServerSentEvent]:
    last = after
    try:
        for entry in await log.read(rollout_id, last):
            last = entry.id
            yield _frame(entry)
        # Whether the rollout may have ended: at the start, after an entry of a terminal phase,
        # and after a wait with no news (no announcement follows the final save's entries).
        may_have_ended = True
        while True:
            if may_have_ended and await log.ended(rollout_id):
                # The final save writes the document and its entries at once; it may have landed
                # after the last read, so send what came after `last` before ending.
                for entry in await log.read(rollout_id, last):
                    last = entry.id
                    yield _frame(entry)
                yield ServerSentEvent("{}", event="end")
                return
            entries = await log.wait(rollout_id, last, poll_ms)
            for entry in entries:
                last = entry.id
                yield _frame(entry)
            may_have_ended = not entries or entries[-1].phase in _TERMINAL
            if not entries:
                yield ServerSentEvent(comment="keep-alive")
    finally:
        await log.aclose()


_TERMINAL = frozenset(phase.value for phase in TERMINAL_PHASES)


def _frame(entry: LogEntry) -> ServerSentEvent:
    return ServerSentEvent(event_public(entry).model_dump_json(), event=entry.kind, id=entry.id)

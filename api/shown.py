"""What the API last showed of each rollout, so most polls cost no Redis round trip at all.

`GET /v1/rollouts/{id}` builds its answer from the rollout and its newest 50 log entries: the
reading, parsing and validating are most of a request's cost, and dashboards repeat them many
times a second for a rollout that changes once a tick. `ShownRollouts` keeps the built answer of
each rollout read, with what says whether it is still current (`AsyncReads.freshness`: the
document's version and the newest log entry), and rebuilds only when either moved.

Better still, the store announces every change of a rollout on a pub/sub channel. While the
process follows it (`follow_changes`, started with the application), an answer built since the
subscription began and not announced as changed is served as it is, without asking Redis. Any
doubt falls back to asking: an answer whose build overlapped an announcement, and every answer
once the subscription breaks (a Redis restart or failover) until it holds again. An answer is
then at most as old as the announcements the process has not read yet (milliseconds). The one
field that moves with the clock, the time in the current step, is set at each answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import pydantic_core

from adapters.redis_store import AsyncReads, Freshness
from api.schemas import RolloutPublic
from api.views import rollout_public
from rollouts.log import LogEntry

RECENT_EVENTS = 50
"""Log entries an answer is built from (its last verdicts are among them)."""

UNTRUSTED = -1
"""The epoch of an answer that must be checked against Redis before it is served."""

log = logging.getLogger("autocanary.api")


_IN_STEP_MARK = -1.25e-300
"""A time in step no answer has: where the JSON is cut to put each answer's own."""


@dataclass(frozen=True)
class Rendered:
    """An answer's JSON, cut around its time in step, so that each poll joins bytes instead of
    serialising the rollout again (the serialising was a tenth of a poll's CPU)."""

    before: bytes
    after: bytes
    step_started_at: datetime | None
    """Set while the rollout runs: the time in step is counted from it at each answer."""

    @classmethod
    def of(cls, answer: RolloutPublic, step_started_at: datetime | None) -> Rendered:
        if step_started_at is None:
            return cls(answer.model_dump_json().encode(), b"", None)
        marked = answer.model_copy(update={"time_in_step_seconds": _IN_STEP_MARK}).model_dump_json().encode()
        mark = b'"time_in_step_seconds":' + pydantic_core.to_json(_IN_STEP_MARK)
        before, found, after = marked.partition(mark)
        if not found or mark in after:  # the mark is a key and a value no label or policy can hold
            raise AssertionError("the time in step is not where the answer's JSON was cut")
        return cls(before + b'"time_in_step_seconds":', after, step_started_at)

    def at(self, now: datetime) -> bytes:
        if self.step_started_at is None:
            return self.before
        in_step = (now - self.step_started_at).total_seconds()
        return b"".join((self.before, pydantic_core.to_json(in_step), self.after))  # as pydantic writes floats


@dataclass(frozen=True)
class _Shown:
    freshness: Freshness
    rendered: Rendered
    epoch: int
    """The subscription it may be served under without asking Redis, or `UNTRUSTED`."""

    def at(self, now: datetime) -> bytes:
        return self.rendered.at(now)


class Followers:
    """The event streams waiting for news of a rollout, woken when the store announces a change
    of it: at rest a stream costs nothing, and one announcement reaches all of a rollout's."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def signal(self, rollout_id: str) -> asyncio.Event:
        signal = asyncio.Event()
        self._waiting.setdefault(rollout_id, set()).add(signal)
        return signal

    def forget(self, rollout_id: str, signal: asyncio.Event) -> None:
        waiting = self._waiting.get(rollout_id)
        if waiting is not None:
            waiting.discard(signal)
            if not waiting:
                del self._waiting[rollout_id]

    def notify(self, rollout_id: str) -> None:
        for signal in self._waiting.get(rollout_id, ()):
            signal.set()


class ShownRollouts:
    """The answers of the `capacity` rollouts read last (least recently read leave first)."""

    def __init__(self, reads: AsyncReads, channel: str, capacity: int = 10_000) -> None:
        self.reads = reads
        self.channel = channel
        self.capacity = capacity
        self.followers = Followers()
        self._shown: OrderedDict[str, _Shown] = OrderedDict()
        self._checking: dict[str, asyncio.Future[Freshness | None]] = {}
        self._reading: dict[tuple[str, str], asyncio.Future[list[LogEntry]]] = {}
        self._epoch = 0
        """Bumped at each subscription; answers of an earlier one are not trusted."""
        self._listening = False
        self._announced = 0
        """Announcements read so far: a build that saw this number move may have missed one."""

    async def answer(self, rollout_id: str, now: datetime) -> bytes | None:
        """The JSON of `GET /v1/rollouts/{id}` now; None when there is no such rollout."""
        shown = self._shown.get(rollout_id)
        if shown is not None and self._listening and shown.epoch == self._epoch:
            self._shown.move_to_end(rollout_id)
            return shown.at(now)
        epoch, announced = (self._epoch if self._listening else UNTRUSTED), self._announced
        freshness = await self._freshness(rollout_id)
        if freshness is None:
            self._shown.pop(rollout_id, None)
            return None
        shown = self._shown.get(rollout_id)
        if shown is None or shown.freshness != freshness:
            loaded = await self.reads.rollout_with_recent(rollout_id, RECENT_EVENTS)
            if loaded is None:
                return None
            rollout, recent, freshness = loaded
            answer = rollout_public(rollout, recent, now).model_copy(update={"resolved_policy": rollout.policy})
            running_since = None if rollout.is_terminal else rollout.step_started_at
            shown = _Shown(freshness, Rendered.of(answer, running_since), UNTRUSTED)
        if epoch != self._epoch or announced != self._announced:
            epoch = UNTRUSTED  # an announcement (of this rollout or another) came while reading
        self._shown[rollout_id] = dataclasses.replace(shown, epoch=epoch)
        self._shown.move_to_end(rollout_id)
        if len(self._shown) > self.capacity:
            self._shown.popitem(last=False)
        return shown.at(now)

    async def _freshness(self, rollout_id: str) -> Freshness | None:
        """Requests for one rollout arriving while its check is in flight share that check: what
        they are told is at most one Redis round trip older than their arrival."""
        check = self._checking.get(rollout_id)
        if check is None:
            check = asyncio.ensure_future(self.reads.freshness(rollout_id))
            self._checking[rollout_id] = check
            check.add_done_callback(lambda _: self._checking.pop(rollout_id, None))
        return await asyncio.shield(check)

    async def events_after(self, rollout_id: str, after: str) -> list[LogEntry]:
        """A rollout's log after `after`; streams of one rollout woken together share one read."""
        key = (rollout_id, after)
        read = self._reading.get(key)
        if read is None:
            read = asyncio.ensure_future(self.reads.events_after(rollout_id, after))
            self._reading[key] = read
            read.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(read)

    async def follow_changes(self) -> None:
        """Read the store's announcements for as long as the application runs, subscribing again
        a second after the connection breaks; while it is broken, every answer is checked."""
        while True:
            try:
                async for rollout_id in self.reads.changes(self.channel, self._subscribed):
                    self._announced += 1
                    self.followers.notify(rollout_id)
                    shown = self._shown.get(rollout_id)
                    if shown is not None:
                        self._shown[rollout_id] = dataclasses.replace(shown, epoch=UNTRUSTED)
            except Exception:
                log.warning("not following rollout changes; every read asks Redis until it resumes", exc_info=True)
            self._listening = False
            await asyncio.sleep(1)

    def _subscribed(self) -> None:
        self._epoch += 1
        self._listening = True

    @property
    def following(self) -> bool:
        """The store's announcements are being read now (streams may wait for them)."""
        return self._listening

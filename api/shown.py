"""What the API last showed of each rollout, so a poller's read costs one small Redis round trip.

`GET /v1/rollouts/{id}` builds its answer from the rollout and its newest 50 log entries: the
reading, parsing and validating are most of a request's cost, and dashboards repeat them many
times a second for a rollout that changes once a tick. `ShownRollouts` keeps the built answer
of each rollout read, keyed by what says whether it is still current (`AsyncReads.freshness`:
the document's version and the newest log entry), and rebuilds only when either moved. The one
field that moves with the clock, the time in the current step, is set at each answer.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from adapters.redis_store import AsyncReads, Freshness
from api.schemas import RolloutPublic
from api.views import rollout_public

RECENT_EVENTS = 50
"""Log entries an answer is built from (its last verdicts are among them)."""


@dataclass(frozen=True)
class _Shown:
    freshness: Freshness
    answer: RolloutPublic
    step_started_at: datetime | None
    """Set while the rollout runs: the time in step is counted from it at each answer."""

    def at(self, now: datetime) -> bytes:
        answer = self.answer
        if self.step_started_at is not None:
            in_step = (now - self.step_started_at).total_seconds()
            answer = answer.model_copy(update={"time_in_step_seconds": in_step})
        return answer.model_dump_json().encode()


class ShownRollouts:
    """The answers of the `capacity` rollouts read last (least recently read leave first)."""

    def __init__(self, reads: AsyncReads, capacity: int = 10_000) -> None:
        self.reads = reads
        self.capacity = capacity
        self._shown: OrderedDict[str, _Shown] = OrderedDict()
        self._checking: dict[str, asyncio.Future[Freshness | None]] = {}

    async def _freshness(self, rollout_id: str) -> Freshness | None:
        """Requests for one rollout arriving while its check is in flight share that check: what
        they are told is at most one Redis round trip older than their arrival."""
        check = self._checking.get(rollout_id)
        if check is None:
            check = asyncio.ensure_future(self.reads.freshness(rollout_id))
            self._checking[rollout_id] = check
            check.add_done_callback(lambda _: self._checking.pop(rollout_id, None))
        return await asyncio.shield(check)

    async def answer(self, rollout_id: str, now: datetime) -> bytes | None:
        """The JSON of `GET /v1/rollouts/{id}` now; None when there is no such rollout."""
        freshness = await self._freshness(rollout_id)
        shown = self._shown.get(rollout_id)
        if freshness is None:
            self._shown.pop(rollout_id, None)
            return None
        if shown is None or shown.freshness != freshness:
            loaded = await self.reads.rollout_with_recent(rollout_id, RECENT_EVENTS)
            if loaded is None:
                return None
            rollout, recent, freshness = loaded
            answer = rollout_public(rollout, recent, now).model_copy(update={"resolved_policy": rollout.policy})
            shown = _Shown(freshness, answer, None if rollout.is_terminal else rollout.step_started_at)
            self._shown[rollout_id] = shown
            if len(self._shown) > self.capacity:
                self._shown.popitem(last=False)
        self._shown.move_to_end(rollout_id)
        return shown.at(now)

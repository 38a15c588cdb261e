"""The schedule: when each active rollout next needs a tick, claimed by the scheduler in rounds.

| key | type | holds |
|---|---|---|
| `due` | sorted set | active rollout ids, scored by when they next need a tick |
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from adapters.redis_store.base import StoreBase, lua
from adapters.redis_store.base import transient as _transient

_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], due[i]) end
return due
"""


class Schedule(StoreBase):
    _claim_due = lua(_CLAIM_DUE)

    def schedule(self, rollout_id: str, at: datetime) -> None:
        with _transient("schedule a tick"):
            self.redis.zadd(self._key("due"), {rollout_id: at.timestamp()}, xx=True)

    def schedule_many(self, times: Mapping[str, datetime]) -> None:
        """`schedule` for many rollouts in one command (only those still scheduled: XX)."""
        if not times:
            return
        with _transient("schedule ticks"):
            self.redis.zadd(self._key("due"), {i: at.timestamp() for i, at in times.items()}, xx=True)

    def claim_due(self, now: datetime, limit: int, claim_until: datetime) -> list[tuple[str, float]]:
        """Due (id, due time) pairs, pushed to `claim_until` so the next scheduler round skips them.

        If the tick they are sent to never happens (a worker killed, a message lost), they are
        due again at `claim_until` and sent again: nothing is lost.
        """
        with _transient("claim due rollouts"):
            flat = self._claim_due(keys=[self._key("due")], args=[now.timestamp(), limit, claim_until.timestamp()])
        return [(str(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]

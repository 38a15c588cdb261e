"""Leases and fencing: which worker holds a rollout now, and the token that fences out an older one.

| key | type | holds |
|---|---|---|
| `lease:{id}` | string | the worker holding the rollout now (expires by itself) |
| `fence:{id}` | string | the newest fencing token issued for the rollout |
| `leader:{role}` | string | the one active instance of a role (the scheduler) |

Taking a lease and preempting wait for replicas when the store is told to (`_durably`): a fencing
token lost in a failover would be issued a second time, to a second worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.redis_store.base import StoreBase, lua
from adapters.redis_store.base import transient as _transient

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('INCR', KEYS[2]) end
return 0
"""

_PREEMPT = """
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return token
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_LEAD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""


class Leases(StoreBase):
    _acquire = lua(_ACQUIRE)
    _preempt = lua(_PREEMPT)
    _release = lua(_RELEASE)
    _lead = lua(_LEAD)

    def lead(self, role: str, owner: str, ttl_ms: int) -> bool:
        """Take or keep the lease that makes `owner` the one active `role` (e.g. the scheduler)."""
        with _transient(f"elect the {role}"):
            return bool(self._lead(keys=[self._key("leader", role)], args=[owner, ttl_ms]))

    def acquire_leases(self, ids: Sequence[str], owner: str, ttl_ms: int) -> dict[str, int]:
        """Leases on every free rollout among `ids`: {id: fencing token}; held ones are left out."""
        with _transient("take leases"):
            pipe = self.redis.pipeline(transaction=False)
            for rollout_id in ids:
                self._acquire(
                    keys=[self._key("lease", rollout_id), self._key("fence", rollout_id)],
                    args=[owner, ttl_ms],
                    client=pipe,
                )
            tokens = self._durably(pipe, "take leases")
        return {rollout_id: int(token) for rollout_id, token in zip(ids, tokens, strict=True) if int(token)}

    def preempt(self, rollout_id: str, owner: str, ttl_ms: int) -> int:
        """Take a rollout over whoever holds it (for aborts): a new token that fences the old one out."""
        with _transient("preempt the rollout"):
            pipe = self.redis.pipeline(transaction=False)
            self._preempt(
                keys=[self._key("lease", rollout_id), self._key("fence", rollout_id)], args=[owner, ttl_ms], client=pipe
            )
            [token] = self._durably(pipe, "preempt the rollout")
        return int(token)

    def release_leases(self, ids: Sequence[str], owner: str) -> None:
        with _transient("release leases"):
            pipe = self.redis.pipeline(transaction=False)
            for rollout_id in ids:
                self._release(keys=[self._key("lease", rollout_id)], args=[owner], client=pipe)
            pipe.execute()

    def holds_token(self, rollout_id: str, token: int) -> bool:
        """True while `token` is still the newest issued for the rollout (the fencing check)."""
        with _transient("check the fencing token"):
            return bool(self.redis.get(self._key("fence", rollout_id)) == str(token))
